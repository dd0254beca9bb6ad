"""Fast log-semiring totals for small graphs whose arcs' labels depend only on
their destination state (HMM-style: every arc into state ``j`` emits ``j``'s
label).

Such a graph is a Markov chain: ``alpha_t = (alpha_{t-1} @ A) * e_t(label)``,
so one time step is a dense matrix product instead of a gather and a
scatter-logsumexp over arcs.  Alphas are kept in probability space and
renormalised every frame (the classic scaled forward-backward); the log scales
are accumulated in float64.  The backward pass is the scaled beta recursion
and returns state occupation posteriors summed per label, like
:func:`usrasr.graph.marginals.total_scores`, whose semantics (one arc per
frame, final weights, ``-inf`` and zero gradient for impossible sequences)
this follows exactly.  Use it through :func:`total_scores`, which falls back
to the general kernel when the graph does not qualify.
"""

from __future__ import annotations

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
    label_onehot: Tensor  # (N, L) state -> label indicator
    start_final: float  # final weight of the start state: the total of an empty sequence
    start: int
    best_arc: Tensor  # (N, N) id of the highest-scoring arc i -> j, -1 where none
    best_arc_score: Tensor  # (N, N) its log score, -inf where none
    log_final: Tensor  # (N,) final log weights

    @classmethod
    def from_fsa(cls, fsa: Fsa, num_labels: int) -> "DenseChain | None":
        """The chain of ``fsa``, or ``None`` when labels are not a function of the destination."""
        n = fsa.num_states
        if n > MAX_DENSE_STATES or fsa.num_arcs == 0 or fsa.score.requires_grad or fsa.final.requires_grad:
            return None
        state_label = torch.full((n,), -1, dtype=torch.long, device=fsa.src.device)
        state_label.scatter_(0, fsa.dst, fsa.label)
        if not torch.equal(state_label[fsa.dst], fsa.label):
            return None
        weights = fsa.score.double().exp()
        transition = torch.zeros(n * n, dtype=torch.float64, device=fsa.src.device)
        transition.index_add_(0, fsa.src * n + fsa.dst, weights)
        transition = transition.view(n, n)
        entered = state_label >= 0
        state_label = state_label.clamp(min=0)
        onehot = torch.zeros(n, num_labels, dtype=torch.float64, device=fsa.src.device)
        onehot[entered.nonzero().squeeze(1), state_label[entered]] = 1.0
        # Viterbi needs the single best arc between two states, not their sum.  Parallel arcs
        # (a self-loop beside an LM arc back into the same phone) differ in score and aux label,
        # so the pick must be an explicit max: an indexed write with repeated indices keeps an
        # unspecified one of them.
        best_score, best_arc = scatter_max(fsa.score.double(), fsa.src * n + fsa.dst, n * n)
        best_arc, best_score = best_arc.view(n, n), best_score.view(n, n)
        return cls(transition, transition[fsa.start].clone(), fsa.final.double().exp(), state_label, onehot,
                   float(fsa.final[fsa.start]), fsa.start, best_arc, best_score, fsa.final.double())


class _ChainTotals(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dense: Tensor, lengths: Tensor, chain: DenseChain) -> Tensor:
        batch, frames, _ = dense.shape
        dtype = dense.dtype
        transition = chain.transition.to(dtype)
        # Per-frame emission scores of every state, shifted by their max for exp().
        scores = dense.index_select(2, chain.state_label)  # (B, T, N)
        shift = scores.amax(2, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        emissions = (scores - shift).exp()
        log_scale = torch.zeros(batch, dtype=torch.float64, device=dense.device)
        alphas = dense.new_zeros(frames, batch, chain.transition.shape[0])
        scales = dense.new_ones(frames, batch)
        alpha = None
        for t in range(frames):
            active = t < lengths
            step = (chain.initial.to(dtype).expand(batch, -1) if t == 0 else alpha @ transition) * emissions[:, t]
            norm = step.sum(1)
            ok = active & (norm > 0)
            step = step / torch.where(ok, norm, torch.ones_like(norm))[:, None]
            alpha = step if t == 0 else torch.where(active[:, None], step, alpha)
            scales[t] = torch.where(active, norm, torch.ones_like(norm))
            log_scale += torch.where(active, norm.double().clamp_min(1e-300).log() + shift[:, t, 0].double(),
                                     torch.zeros_like(log_scale))
            log_scale = torch.where(active & (norm <= 0), torch.full_like(log_scale, float("-inf")), log_scale)
            alphas[t] = alpha
        closing = (alpha * chain.final.to(dtype)).sum(1)
        totals = log_scale + closing.double().log()
        totals = torch.where(lengths > 0, totals, torch.full_like(totals, chain.start_final))
        ctx.save_for_backward(alphas, scales, emissions, lengths, closing)
        ctx.chain = chain
        return totals.to(dtype)

    @staticmethod
    def backward(ctx, grad_totals: Tensor):
        alphas, scales, emissions, lengths, closing = ctx.saved_tensors
        chain = ctx.chain
        frames, batch, _ = alphas.shape
        dtype = alphas.dtype
        transition_t = chain.transition.to(dtype).t()
        possible = torch.isfinite(closing.log()) & (closing > 0) & (lengths > 0)
        weight = torch.where(possible, grad_totals.to(dtype), torch.zeros_like(grad_totals, dtype=dtype))
        final = chain.final.to(dtype)
        safe_closing = torch.where(possible, closing, torch.ones_like(closing))
        onehot = chain.label_onehot.to(dtype)
        grad = alphas.new_zeros(batch, frames, onehot.shape[1])
        beta = None
        for t in reversed(range(frames)):
            last = (t == lengths - 1)[:, None]
            inside = (t < lengths - 1)[:, None]
            if beta is None:
                beta = alphas.new_zeros(batch, alphas.shape[2])
            carried = ((emissions[:, t + 1] * beta) @ transition_t) / scales[t + 1][:, None] if t + 1 < frames else beta
            beta = torch.where(last, final[None, :] / safe_closing[:, None], torch.where(inside, carried, beta))
            occupancy = alphas[t] * beta * weight[:, None]
            occupancy = torch.where((t < lengths)[:, None], occupancy, torch.zeros_like(occupancy))
            grad[:, t] = occupancy @ onehot
        return grad, None, None


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
