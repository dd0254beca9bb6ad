"""Fast log-semiring totals for small graphs whose arcs' labels depend only on
their destination state (HMM-style: every arc into state ``j`` emits ``j``'s
label).

Such a graph is a Markov chain: ``alpha_t = (alpha_{t-1} @ A) * e_t(label)``,
so one time step is a dense matrix product instead of a gather and a
scatter-logsumexp over arcs.  Alphas are kept in probability space, scaled
every frame by a log-normaliser (the classic scaled forward-backward, see
:class:`_ChainTotals`).  The backward pass is the scaled beta recursion
and returns state occupation posteriors summed per label, like
:func:`usrasr.graph.marginals.total_scores`, whose semantics (one arc per
frame, final weights, ``-inf`` and zero gradient for impossible sequences)
this follows exactly.  Use it through :func:`total_scores`, which falls back
to the general kernel when the graph does not qualify.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from usrasr.graph.fsa import Fsa
from usrasr.graph.scatter import scatter_max

# Above this many states the dense (N x N) transition matrix stops paying off
# against the sparse arc kernel.
MAX_DENSE_STATES = 1024


@dataclass
class DenseChain:
    transition: Tensor  # (N, N) probabilities, parallel arcs summed
    initial: Tensor  # (N,) probability of entering each state on the first frame
    final: Tensor  # (N,) exp(final weight)
    state_label: Tensor  # (N,) label emitted on entering each state (0 for states never entered)
    start_final: float  # final weight of the start state: the total of an empty sequence
    start: int
    best_arc: Tensor  # (N, N) id of the highest-scoring arc i -> j, -1 where none
    best_arc_score: Tensor  # (N, N) its log score, -inf where none
    log_final: Tensor  # (N,) final log weights

    @classmethod
    def from_fsa(cls, fsa: Fsa, num_labels: int) -> DenseChain | None:
        """The chain of ``fsa``, or ``None`` when labels are not a function of the destination
        (or some label is out of range for ``num_labels`` columns: the arc kernel reports it)."""
        n = fsa.num_states
        if (n > MAX_DENSE_STATES or fsa.num_arcs == 0 or fsa.score.requires_grad or fsa.final.requires_grad
                or int(fsa.label.max()) >= num_labels):
            return None
        state_label = torch.full((n,), -1, dtype=torch.long, device=fsa.src.device)
        state_label.scatter_(0, fsa.dst, fsa.label)
        if not torch.equal(state_label[fsa.dst], fsa.label):
            return None
        weights = fsa.score.double().exp()
        transition = torch.zeros(n * n, dtype=torch.float64, device=fsa.src.device)
        transition.index_add_(0, fsa.src * n + fsa.dst, weights)
        transition = transition.view(n, n)
        state_label = state_label.clamp(min=0)
        # Viterbi needs the single best arc between two states, not their sum.  Parallel arcs
        # (a self-loop beside an LM arc back into the same phone) differ in score and aux label,
        # so the pick must be an explicit max: an indexed write with repeated indices keeps an
        # unspecified one of them.
        best_score, best_arc = scatter_max(fsa.score.double(), fsa.src * n + fsa.dst, n * n)
        best_arc, best_score = best_arc.view(n, n), best_score.view(n, n)
        return cls(transition, transition[fsa.start].clone(), fsa.final.double().exp(), state_label,
                   float(fsa.final[fsa.start]), fsa.start, best_arc, best_score, fsa.final.double())


class _ChainTotals(torch.autograd.Function):
    """Scaled forward-backward in float64.

    Frame ``t`` takes ``predicted = alpha_{t-1} @ transition`` and multiplies it
    by ``exp(scores_t - c_t)``, where the log-normaliser ``c_t = max_j(log
    predicted_j + scores_tj)`` is the best score actually reachable on that
    frame: the best state's term is exactly 1, so no gap between reachable and
    unreachable states can underflow the frame, and a frame that no reachable
    state can take gives all zeros (total ``-inf``, zero gradient) instead of
    NaN.  These scaled alphas need no further normalising (their largest is 1),
    and the total is ``sum_t c_t + log(alpha_T . final)``.

    The recursion runs in float64 whatever the input dtype: a state whose
    forward mass falls more than ~87 nats below the frame's best underflows in
    float32 (~708 in float64), and confident emissions that reverse the ranking
    on a later frame then need exactly that mass.  On graphs this small the
    per-frame overhead, not the arithmetic, sets the cost.
    """

    @staticmethod
    def forward(ctx, dense: Tensor, lengths: Tensor, chain: DenseChain) -> Tensor:
        batch, frames, _ = dense.shape
        # (T, B, N): one contiguous (B, N) block of state scores per frame.
        scores = dense.index_select(2, chain.state_label).transpose(0, 1).to(torch.float64).contiguous()
        alphas = torch.empty_like(scores)
        shifts = scores.new_empty(frames, batch, 1)
        lowest = torch.finfo(torch.float64).min  # the shift of a frame with no reachable state: exp(-inf - lowest) = 0
        log_initial = chain.initial.log()
        for t in range(frames):
            logit = log_initial + scores[0] if t == 0 else torch.mm(alphas[t - 1], chain.transition).log_().add_(scores[t])
            shift = torch.amax(logit, 1, keepdim=True, out=shifts[t]).clamp_min_(lowest)
            torch.exp(logit.sub_(shift), out=alphas[t])
        # Frames past an utterance's end were run on padding: they hold no mass and add nothing.
        active = (torch.arange(frames, device=dense.device)[:, None] < lengths)[:, :, None]  # (T, B, 1)
        alphas.masked_fill_(~active, 0.0)
        log_scale = torch.where(active, shifts, 0.0).sum((0, 2))
        if frames:
            last = alphas[(lengths - 1).clamp(min=0), torch.arange(batch, device=dense.device)]
        else:  # every sequence is empty and scores the start state's final weight
            last = alphas.new_zeros(batch, alphas.shape[2])
        closing = last @ chain.final
        totals = torch.where(lengths > 0, log_scale + closing.log(), chain.start_final)
        ctx.save_for_backward(dense, alphas, shifts, lengths, closing, totals)  # dense, not its float64 copy
        ctx.chain, ctx.num_labels = chain, dense.shape[2]
        return totals.to(dense.dtype)

    @staticmethod
    def backward(ctx, grad_totals: Tensor):
        dense, alphas, shifts, lengths, closing, totals = ctx.saved_tensors
        chain = ctx.chain
        frames, batch, _ = alphas.shape
        possible = (totals > float("-inf")) & (lengths > 0)
        # Scaled betas (occupancy = alpha * beta) start on the utterance's last frame from the
        # final weights over the closing sum, times the incoming gradient.
        weight = torch.where(possible, grad_totals.double() / torch.where(possible, closing, 1.0), 0.0)
        end = weight[:, None] * chain.final
        transition_t = chain.transition.t()
        is_last = (torch.arange(frames, device=alphas.device)[:, None] == lengths - 1).double()[:, :, None]
        # Frame t's factor exp(scores_t - c_t), for the states that hold forward mass only:
        # an unreached state's score is not bounded by c_t, so its factor may overflow, and its beta
        # must stay finite to give 0 when multiplied by its zero alpha.  The clamp matters only for
        # a state reached with probability ~ finfo.tiny.
        bound = math.log(torch.finfo(torch.float64).max) - 1.0
        emit = dense.index_select(2, chain.state_label).transpose(0, 1).double().sub_(shifts)
        emit.clamp_max_(bound).exp_().masked_fill_(alphas == 0, 0.0)
        betas = torch.empty_like(alphas)
        carried = torch.zeros_like(end)
        for t in reversed(range(frames)):
            beta = torch.addcmul(carried, is_last[t], end, out=betas[t])
            if t:
                carried = torch.mm(emit[t] * beta, transition_t)
        del emit  # before the label sums: the largest buffers are not all alive at once
        occupancy = betas.mul_(alphas)  # (T, B, N); zero past each end, where the alphas are
        grad = occupancy.new_zeros(frames, batch, ctx.num_labels).index_add_(2, chain.state_label, occupancy)
        return grad.transpose(0, 1).to(grad_totals.dtype), None, None


def chain_total_scores(dense: Tensor, lengths: Tensor, chain: DenseChain) -> Tensor:
    """Log-semiring totals ``(B,)``, differentiable wrt ``dense`` (posteriors in the backward)."""
    return _ChainTotals.apply(dense, torch.as_tensor(lengths, device=dense.device).long(), chain)


@torch.no_grad()
def chain_best_arcs(dense: Tensor, lengths: Tensor, chain: DenseChain) -> tuple[Tensor, Tensor]:
    """Viterbi over the chain: ``(B,)`` best path scores and ``(B, T)`` arc ids (-1 where none)."""
    batch, frames, _ = dense.shape
    lengths = torch.as_tensor(lengths, device=dense.device).long()
    weights = chain.best_arc_score.to(dense.dtype)
    scores = dense.index_select(2, chain.state_label)  # (B, T, N)
    neg_inf = torch.tensor(float("-inf"), dtype=dense.dtype, device=dense.device)
    backpointers = torch.zeros(frames, batch, weights.shape[0], dtype=torch.int32, device=dense.device)
    delta = weights[chain.start].expand(batch, -1) + scores[:, 0] if frames else None
    for t in range(1, frames):
        candidates, previous = (delta[:, :, None] + weights[None]).max(1)
        active = (t < lengths)[:, None]
        delta = torch.where(active, candidates + scores[:, t], delta)
        backpointers[t] = previous.int()
    arcs = torch.full((batch, frames), -1, dtype=torch.long, device=dense.device)
    if not frames:
        return torch.full((batch,), chain.start_final, dtype=dense.dtype), arcs
    best, state = (delta + chain.log_final.to(dense.dtype)[None]).max(1)
    best = torch.where(lengths > 0, best, torch.full_like(best, chain.start_final))
    possible = torch.isfinite(best) & (lengths > 0)
    for t in reversed(range(frames)):
        inside = possible & (t < lengths)
        previous = backpointers[t].gather(1, state[:, None]).squeeze(1).long() if t > 0 else torch.full_like(state, chain.start)
        arc = chain.best_arc[previous, state]
        arcs[:, t] = torch.where(inside, arc, -1)
        state = torch.where(inside & (t > 0), previous, state)
    return torch.where(possible | (lengths == 0), best, neg_inf), arcs
