"""Sequence-level marginals over an FSA with k2's ``intersect_dense`` semantics.

Given dense log-scores ``(B, T, S)``, per-utterance lengths ``(B,)`` and a graph
(one :class:`Fsa` shared by the batch, or an :class:`FsaVec` with one graph per
utterance), every path consumes exactly ``length`` frames, one per arc, and
ends in a final state whose final weight is added.  The score of a path is the
sum of its arc scores, the dense scores of the columns its arcs consume, and
its final weight.

* :func:`total_scores` — log-semiring (sum over paths) or tropical (best path)
  totals, differentiable wrt the dense scores, the arc scores and the final
  weights.  The log-semiring backward pass is a custom backward (beta)
  recursion that returns occupation posteriors; only the alphas are saved
  (O(T x states) memory, not O(T x arcs) of autograd nodes).
* :func:`best_path` — Viterbi path per utterance: arc ids, labels, aux labels.
* :func:`arc_posteriors` — expected arc counts and per-frame label and state
  occupancies.

Implementation: the batch is flattened into one big graph whose states are
(utterance, state) pairs, so shared and per-utterance graphs run the same
kernel.  One time step is a gather over arcs and a scatter-logsumexp (or
scatter-max) into destination states; the loop is over time only.
Utterances past their length keep their alphas frozen (and carry no
posterior back).  Alphas are rescaled per frame with float64 offsets, so
float32 keeps its precision on long utterances.

An utterance that no path can explain (a final state unreachable in exactly
``length`` frames) gets total ``-inf`` and zero gradient, and a warning is
logged.  No NaN is produced for unreachable states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from usrasr.graph.dense_chain import DenseChain, chain_best_arcs, chain_total_scores
from usrasr.graph.scatter import NEG_INF, scatter_logsumexp_, scatter_max
from usrasr.graph.fsa import Fsa, FsaVec
from usrasr.utils.console import log


@dataclass
class _FlatBatch:
    """A batch of graphs as one graph over (utterance, state) pairs.

    Flat arcs are interleaved across utterances (arc ``j`` of every utterance,
    then arc ``j + 1`` ...), so that neighbouring arcs scatter into different
    states: on CPU, runs of equal indices serialise a scatter (each add waits
    for the previous one), which made dst-sorted arcs much slower.
    """

    batch_size: int
    num_labels: int  # S, the width of the dense scores
    num_states: int  # flat states, all utterances together
    src: Tensor  # (E,) flat source state
    dst: Tensor  # (E,) flat destination state
    dense_col: Tensor  # (E,) column in one frame of dense scores flattened to (B*S,)
    graph_arc: Tensor  # (E,) index into the graph's arc arrays (score, label, ...)
    arc_local: Tensor  # (E,) arc id within its utterance's own graph
    arc_utt: Tensor  # (E,) utterance of each flat arc
    graph_state: Tensor  # (N,) index into the graph's final weights
    state_local: Tensor  # (N,) state id within its utterance's own graph
    state_utt: Tensor  # (N,) utterance of each flat state
    start: Tensor  # (B,) flat start state of each utterance
    max_arcs: int  # largest per-utterance arc count (for padded outputs)
    max_states: int  # largest per-utterance state count
    graph_arcs: int  # arcs in the graph (Fsa or whole FsaVec): size of its score gradient
    graph_states: int  # states in the graph: size of its final-weight gradient


def _flatten(graph: Fsa | FsaVec, batch_size: int, num_labels: int) -> _FlatBatch:
    device = graph.device
    utts = torch.arange(batch_size, device=device)
    if isinstance(graph, Fsa):
        # Shared graph: utterance b's copy of state s is flat state b * N + s.
        num_states = graph.num_states
        arc_local = torch.arange(graph.num_arcs, device=device).repeat_interleave(batch_size)
        arc_utt = utts.repeat(graph.num_arcs)
        graph_arc = arc_local
        state_shift = arc_utt * num_states
        state_utt = utts.repeat_interleave(num_states)
        state_local = torch.arange(num_states, device=device).repeat(batch_size)
        graph_state = state_local
        start = utts * num_states + graph.start
        max_arcs, max_states = graph.num_arcs, num_states
    else:
        if len(graph) != batch_size:
            raise ValueError(f"FsaVec has {len(graph)} graphs for a batch of {batch_size} utterances")
        arcs_per_utt, states_per_utt = graph.arc_offsets.diff(), graph.state_offsets.diff()
        stacked_utt = utts.repeat_interleave(arcs_per_utt)
        stacked_local = torch.arange(graph.num_arcs, device=device) - graph.arc_offsets[stacked_utt]
        graph_arc = torch.argsort(stacked_local * batch_size + stacked_utt)
        arc_local, arc_utt = stacked_local[graph_arc], stacked_utt[graph_arc]
        state_shift = 0  # FsaVec state ids are already global
        state_utt = utts.repeat_interleave(states_per_utt)
        graph_state = torch.arange(graph.num_states, device=device)
        state_local = graph_state - graph.state_offsets[state_utt]
        start = graph.start
        max_arcs, max_states = int(arcs_per_utt.max()), int(states_per_utt.max())
    return _FlatBatch(
        batch_size=batch_size,
        num_labels=num_labels,
        num_states=state_utt.numel(),
        src=graph.src[graph_arc] + state_shift,
        dst=graph.dst[graph_arc] + state_shift,
        dense_col=arc_utt * num_labels + graph.label[graph_arc],
        graph_arc=graph_arc,
        arc_local=arc_local,
        arc_utt=arc_utt,
        graph_state=graph_state,
        state_local=state_local,
        state_utt=state_utt,
        start=start,
        max_arcs=max_arcs,
        max_states=max_states,
        graph_arcs=graph.num_arcs,
        graph_states=graph.num_states,
    )


def _frames(dense: Tensor) -> Tensor:
    """(B, T, S) -> (T, B*S): one contiguous row of all utterances per frame."""
    batch, frames, labels = dense.shape
    return dense.transpose(0, 1).reshape(frames, batch * labels)


def _forward_scan(
    flat: _FlatBatch, dense: Tensor, arc_score: Tensor, lengths: Tensor, tropical: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the alpha recursion over time.

    The alphas are kept scaled: after every frame each utterance's largest
    alpha is subtracted and added to a float64 per-utterance offset instead.
    Unscaled alphas of a long utterance reach thousands, where a float32 ulp
    is ~1e-4; scaled ones stay near 0 for the states that matter, so totals
    and posteriors keep float32 precision over any length.

    Returns:
        the scaled alphas after each utterance's last frame ``(N,)``;
        the history: scaled alphas before every frame and after the last,
        ``(steps + 1, N)`` (log semiring, for the backward pass), or the best
        incoming flat arc of every state at every frame ``(steps, N)``
        (tropical, for backtracking);
        the offsets, float64 ``(steps + 1, B)``: true alpha = scaled alpha +
        offset of its utterance, before every frame and after the last.
    """
    frames = _frames(dense)
    steps = int(lengths.max()) if lengths.numel() else 0
    state_len = lengths.index_select(0, flat.state_utt)
    alpha = dense.new_full((flat.num_states,), NEG_INF)
    alpha[flat.start] = 0.0
    history = (
        torch.empty((steps, flat.num_states), dtype=torch.long, device=dense.device)
        if tropical
        else dense.new_empty((steps + 1, flat.num_states))
    )
    offsets = torch.zeros((steps + 1, flat.batch_size), dtype=torch.float64, device=dense.device)
    arc_value, scratch = torch.empty_like(arc_score), torch.empty_like(arc_score)
    for t in range(steps):
        torch.index_select(alpha, 0, flat.src, out=arc_value)
        arc_value += arc_score
        arc_value += torch.index_select(frames[t], 0, flat.dense_col, out=scratch)
        if tropical:
            new_alpha, history[t] = scatter_max(arc_value, flat.dst, flat.num_states)
        else:
            history[t] = alpha
            new_alpha = scatter_logsumexp_(arc_value, flat.dst, flat.num_states, scratch)
        shift = new_alpha.new_full((flat.batch_size,), NEG_INF).scatter_reduce_(0, flat.state_utt, new_alpha, "amax")
        shift = torch.where((t < lengths) & (shift > NEG_INF), shift, 0.0)
        alpha = torch.where(t < state_len, new_alpha - shift.index_select(0, flat.state_utt), alpha)
        offsets[t + 1] = offsets[t] + shift
    if not tropical:
        history[steps] = alpha
    return alpha, history, offsets


def _warn_impossible(totals: Tensor) -> None:
    impossible = int((totals == NEG_INF).sum())
    if impossible:
        log.warning(
            "%d of %d sequences are impossible for the graph (no path of exactly their length "
            "ends in a final state): total score -inf, zero gradient",
            impossible,
            totals.numel(),
        )


@dataclass
class _Statistics:
    """Posterior statistics from the backward scan, weighted per utterance."""

    dense: Tensor  # (B, T, S) expected count of each column at each frame
    arcs: Tensor | None  # (E,) expected count of each flat arc
    final: Tensor  # (N,) posterior of ending in each flat state
    states: Tensor | None  # (steps, N) posterior of each state after each frame


def _backward_scan(
    flat: _FlatBatch,
    dense: Tensor,
    arc_score: Tensor,
    final: Tensor,
    lengths: Tensor,
    alphas: Tensor,
    offsets: Tensor,
    totals: Tensor,
    weights: Tensor,
    with_arcs: bool,
    with_states: bool = False,
) -> _Statistics:
    """Accumulate ``weights[b] * posterior`` of every arc at every frame
    (``weights`` is the incoming gradient), from the saved alphas.

    The backward recursion runs on posteriors instead of log-betas:
    ``occupancy[s]`` is the weighted posterior of being in state ``s`` after
    frame ``t``; an arc into ``s`` at frame ``t`` takes the share
    ``exp(alpha_t[src] + arc + frame - alpha_{t+1}[s])`` (<= 1) of it, and
    the occupancy before frame ``t`` sums these shares by source state.  This
    is the beta recursion in disguise (``occupancy = exp(alpha + beta -
    total)``), but needs no logsumexp and every quantity stays in [0, weight].
    ``alphas`` are scaled as returned by :func:`_forward_scan`; ``totals``
    are float64.
    """
    possible = totals > NEG_INF
    weights = torch.where(possible, weights, 0.0)
    # Log-normaliser relative to the last offset: small, so exact enough in float32.
    scaled_norm = torch.where(possible, totals - offsets[-1], 0.0).to(dense.dtype)
    growth = offsets.diff(dim=0).to(dense.dtype)  # (steps, B): offset added by each frame
    state_len = lengths.index_select(0, flat.state_utt)
    frames = _frames(dense)
    steps = alphas.shape[0] - 1

    grad_frames = torch.zeros_like(frames)
    arc_counts = torch.zeros_like(arc_score) if with_arcs else None
    state_counts = dense.new_zeros((steps, flat.num_states)) if with_states else None
    end_value = alphas[steps] + final - scaled_norm.index_select(0, flat.state_utt)
    final_counts = end_value.exp() * weights.index_select(0, flat.state_utt)
    occupancy = final_counts
    post, scratch = torch.empty_like(arc_score), torch.empty_like(arc_score)
    for t in reversed(range(steps)):
        # Past an utterance's end its states carry nothing back (alphas are frozen there).
        occupancy = torch.where(t < state_len, occupancy, 0.0)
        if state_counts is not None:
            state_counts[t] = occupancy
        after = alphas[t + 1] + growth[t].index_select(0, flat.state_utt)  # on frame t's scale
        # An unreachable destination has no occupancy; +inf makes its share exp(-inf) = 0.
        after = after.masked_fill(after == NEG_INF, math.inf)
        torch.index_select(alphas[t], 0, flat.src, out=post)
        post += arc_score
        post += torch.index_select(frames[t], 0, flat.dense_col, out=scratch)
        post -= torch.index_select(after, 0, flat.dst, out=scratch)
        # The log share is <= 0 up to rounding; the clamp keeps masked-out garbage
        # finite so that multiplying it by a zero occupancy gives 0.
        post.clamp_max_(0.0).exp_()
        post *= torch.index_select(occupancy, 0, flat.dst, out=scratch)
        grad_frames[t].scatter_add_(0, flat.dense_col, post)
        if arc_counts is not None:
            arc_counts += post
        before = torch.zeros_like(occupancy).scatter_add_(0, flat.src, post)
        occupancy = torch.where(t < state_len, before, final_counts)
    grad_dense = grad_frames.reshape(dense.shape[1], dense.shape[0], dense.shape[2]).transpose(0, 1)
    return _Statistics(grad_dense, arc_counts, final_counts, state_counts)


def _log_forward(
    flat: _FlatBatch, dense: Tensor, flat_score: Tensor, flat_final: Tensor, lengths: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Float64 log-semiring totals ``(B,)``, scaled alphas and their offsets."""
    last_alpha, alphas, offsets = _forward_scan(flat, dense, flat_score, lengths, tropical=False)
    scaled_totals = scatter_logsumexp_(last_alpha + flat_final, flat.state_utt, flat.batch_size)
    return scaled_totals.double() + offsets[-1], alphas, offsets


class _LogTotals(torch.autograd.Function):
    """Log-semiring totals; the backward pass is the backward recursion,
    returning occupation posteriors."""

    @staticmethod
    def forward(ctx, dense, arc_score, final, flat: _FlatBatch, lengths):
        flat_score = arc_score.index_select(0, flat.graph_arc)
        flat_final = final.index_select(0, flat.graph_state)
        totals, alphas, offsets = _log_forward(flat, dense, flat_score, flat_final, lengths)
        _save(ctx, flat, dense, flat_score, flat_final, lengths, alphas, offsets, totals)
        return totals.to(dense.dtype)

    @staticmethod
    def backward(ctx, grad_totals):
        flat, (dense, flat_score, flat_final, lengths, alphas, offsets, totals) = _saved(ctx)
        weights = grad_totals.to(dense.dtype)
        stats = _backward_scan(
            flat,
            dense,
            flat_score,
            flat_final,
            lengths,
            alphas,
            offsets,
            totals,
            weights,
            with_arcs=ctx.needs_input_grad[1],
        )
        return (
            stats.dense if ctx.needs_input_grad[0] else None,
            _gather_back(stats.arcs, flat.graph_arc, ctx.needs_input_grad[1], flat.graph_arcs),
            _gather_back(stats.final, flat.graph_state, ctx.needs_input_grad[2], flat.graph_states),
            None,
            None,
        )


def _save(ctx, flat: _FlatBatch, *tensors: Tensor) -> None:
    """``save_for_backward`` for ``tensors`` and the flat batch's tensors, so
    that autograd frees them after the backward pass even while the caller
    still holds the output (a plain ctx attribute would live on with it)."""
    names = [f.name for f in fields(flat) if isinstance(getattr(flat, f.name), Tensor)]
    ctx.flat_names, ctx.flat_template = names, replace(flat, **dict.fromkeys(names))
    ctx.save_for_backward(*tensors, *(getattr(flat, name) for name in names))


def _saved(ctx) -> tuple[_FlatBatch, tuple[Tensor, ...]]:
    """The flat batch and the other tensors given to :func:`_save`."""
    saved = ctx.saved_tensors
    count = len(saved) - len(ctx.flat_names)
    return replace(ctx.flat_template, **dict(zip(ctx.flat_names, saved[count:]))), saved[:count]


def _gather_back(flat_grad: Tensor, index: Tensor, needed: bool, size: int) -> Tensor | None:
    """Sum flat (per-utterance) gradients back onto the graph's own arcs/states."""
    if not needed:
        return None
    return flat_grad.new_zeros(size).index_add_(0, index, flat_grad)


class _ViterbiTotals(torch.autograd.Function):
    """Tropical totals and best paths; the gradient is the best path's indicator."""

    @staticmethod
    def forward(ctx, dense, arc_score, final, flat: _FlatBatch, lengths):
        flat_score = arc_score.index_select(0, flat.graph_arc)
        flat_final = final.index_select(0, flat.graph_state)
        last_alpha, backpointers, offsets = _forward_scan(flat, dense, flat_score, lengths, tropical=True)
        scaled_totals, best_end = scatter_max(last_alpha + flat_final, flat.state_utt, flat.batch_size)
        totals = (scaled_totals.double() + offsets[-1]).to(dense.dtype)
        best_end = torch.where(totals > NEG_INF, best_end, -1)
        path = _backtrack(flat, backpointers, best_end, lengths, dense.shape[1])
        _save(ctx, flat, path, best_end)
        ctx.mark_non_differentiable(path, best_end)
        return totals, path, best_end

    @staticmethod
    def backward(ctx, grad_totals, _grad_path, _grad_end):
        flat, (path, best_end) = _saved(ctx)
        on_path = path >= 0
        arcs = path[on_path]
        weights = grad_totals[:, None].expand_as(path)[on_path]
        grad_dense = grad_arc = grad_final = None
        if ctx.needs_input_grad[0]:
            batch, frames = path.shape
            grad_dense = grad_totals.new_zeros(batch * frames * flat.num_labels)
            frame_of = torch.arange(frames, device=path.device).expand_as(path)[on_path]
            utt = flat.arc_utt.index_select(0, arcs)
            column = flat.dense_col.index_select(0, arcs) - utt * flat.num_labels
            grad_dense.index_add_(0, (utt * frames + frame_of) * flat.num_labels + column, weights)
            grad_dense = grad_dense.view(batch, frames, flat.num_labels)
        if ctx.needs_input_grad[1]:
            grad_arc = grad_totals.new_zeros(flat.graph_arcs).index_add_(0, flat.graph_arc.index_select(0, arcs), weights)
        if ctx.needs_input_grad[2]:
            ended = best_end >= 0
            grad_final = grad_totals.new_zeros(flat.graph_states).index_add_(
                0, flat.graph_state.index_select(0, best_end[ended]), grad_totals[ended]
            )
        return grad_dense, grad_arc, grad_final, None, None


def _backtrack(flat: _FlatBatch, backpointers: Tensor, best_end: Tensor, lengths: Tensor, frames: int) -> Tensor:
    """Flat arc id of the best path at every frame, ``(B, T)``, -1 where none."""
    path = torch.full((flat.batch_size, frames), -1, dtype=torch.long, device=best_end.device)
    state = best_end
    for t in reversed(range(backpointers.shape[0])):
        active = (t < lengths) & (state >= 0)
        arc = torch.where(active, backpointers[t].index_select(0, state.clamp(min=0)), -1)
        path[:, t] = arc
        state = torch.where(active, flat.src.index_select(0, arc.clamp(min=0)), state)
    return path


def _prepare(dense: Tensor, lengths: Tensor, graph: Fsa | FsaVec) -> tuple[_FlatBatch, Tensor, Tensor, Tensor]:
    """Validate inputs; return the flat batch, lengths, arc scores and final
    weights (in the dtype of ``dense``, differentiably)."""
    if dense.dim() != 3 or not dense.is_floating_point():
        raise ValueError(f"dense scores must be a float tensor (B, T, S), got {tuple(dense.shape)} {dense.dtype}")
    if graph.device != dense.device:
        raise ValueError(f"graph is on {graph.device} but the dense scores are on {dense.device}; use graph.to()")
    batch, frames, labels = dense.shape
    lengths = torch.as_tensor(lengths, device=dense.device).long()
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    if batch and (int(lengths.min()) < 0 or int(lengths.max()) > frames):
        raise ValueError(f"lengths must lie in [0, {frames}]")
    if graph.num_arcs and int(graph.label.max()) >= labels:
        raise ValueError(f"graph label {int(graph.label.max())} is out of range for dense scores with {labels} columns")
    flat = _flatten(graph, batch, labels)
    return flat, lengths, graph.score.to(dense.dtype), graph.final.to(dense.dtype)


def _dense_chain(graph: Fsa | FsaVec, num_labels: int) -> DenseChain | None:
    """The dense-chain form of a small HMM-style shared graph (cached on the graph), else None."""
    if not isinstance(graph, Fsa):
        return None
    cached = graph.__dict__.get("_dense_chain")
    if cached is None or cached[0] != num_labels:
        cached = (num_labels, DenseChain.from_fsa(graph, num_labels))
        graph.__dict__["_dense_chain"] = cached
    return cached[1]


def total_scores(dense: Tensor, lengths: Tensor, graph: Fsa | FsaVec, log_semiring: bool = True) -> Tensor:
    """Total score of each utterance over all paths of exactly ``length`` frames.

    Args:
        dense: ``(B, T, S)`` log-scores; ``dense[b, t, label]`` is added when an
            arc with that label consumes frame ``t``.  float32 or float64.
        lengths: ``(B,)`` number of frames of each utterance (``<= T``).
        graph: one :class:`Fsa` shared by the batch, or an :class:`FsaVec`
            with ``B`` graphs.  Must be on the device of ``dense``.
        log_semiring: ``True``: log-sum over paths (like k2
            ``get_tot_scores(log_semiring=True)``); ``False``: best path score.

    Returns:
        ``(B,)`` totals, ``-inf`` for impossible utterances, differentiable wrt
        ``dense``, ``graph.score`` and ``graph.final``.  The log-semiring
        gradient wrt ``dense`` is the per-frame label occupancy (posterior);
        the tropical one is the best path's indicator.

    A small shared graph whose arc labels depend only on the destination state
    (HMM topologies) with fixed weights runs as a dense Markov chain
    (:mod:`usrasr.graph.dense_chain`): same result, matrix products per frame.
    """
    chain = _dense_chain(graph, dense.shape[2]) if log_semiring else None
    if chain is not None:
        totals = chain_total_scores(dense, lengths, chain)
        _warn_impossible(totals)
        return totals
    flat, lengths, arc_score, final = _prepare(dense, lengths, graph)
    if log_semiring:
        totals = _LogTotals.apply(dense, arc_score, final, flat, lengths)
    else:
        totals = _ViterbiTotals.apply(dense, arc_score, final, flat, lengths)[0]
    _warn_impossible(totals)
    return totals


@dataclass
class BestPath:
    """Viterbi result; per-frame tensors are ``-1`` past each utterance's
    length and for impossible utterances."""

    scores: Tensor  # (B,) tropical totals, differentiable like total_scores(log_semiring=False)
    arcs: Tensor  # (B, T) arc id within the utterance's graph
    labels: Tensor  # (B, T) label (dense column) of that arc
    aux_labels: Tensor  # (B, T) aux label of that arc (0 = none)


def best_path(dense: Tensor, lengths: Tensor, graph: Fsa | FsaVec) -> BestPath:
    """Viterbi decoding: the best path of every utterance (arguments as in
    :func:`total_scores`).  Ties go to the larger arc id (on the dense-chain
    path, used for small HMM-style graphs when no gradient is needed, ties
    may break otherwise)."""
    chain = None if dense.requires_grad else _dense_chain(graph, dense.shape[2])
    if chain is not None:
        scores, arcs = chain_best_arcs(dense, lengths, chain)
        _warn_impossible(scores)
        on_path = arcs >= 0
        safe = arcs.clamp(min=0)
        return BestPath(scores=scores, arcs=arcs, labels=torch.where(on_path, graph.label[safe], -1),
                        aux_labels=torch.where(on_path, graph.aux_label[safe], -1))
    flat, lengths, arc_score, final = _prepare(dense, lengths, graph)
    scores, path, _ = _ViterbiTotals.apply(dense, arc_score, final, flat, lengths)
    _warn_impossible(scores)
    on_path = path >= 0
    flat_arc = path.clamp(min=0)
    graph_arc = flat.graph_arc[flat_arc]
    return BestPath(
        scores=scores,
        arcs=torch.where(on_path, flat.arc_local[flat_arc], -1),
        labels=torch.where(on_path, graph.label[graph_arc], -1),
        aux_labels=torch.where(on_path, graph.aux_label[graph_arc], -1),
    )


@dataclass
class ArcPosteriors:
    """Posterior expectations under the log-semiring path distribution of each
    utterance (all zero for impossible utterances)."""

    totals: Tensor  # (B,) log-semiring totals
    arc_counts: Tensor  # (B, max arcs) expected number of traversals of each arc (0-padded)
    final_probs: Tensor  # (B, max states) posterior of ending in each state (0-padded)
    label_occupancy: Tensor  # (B, T, S) posterior of each dense column at each frame
    state_occupancy: Tensor  # (B, T, max states) posterior of each state after each frame


@torch.no_grad()
def arc_posteriors(dense: Tensor, lengths: Tensor, graph: Fsa | FsaVec) -> ArcPosteriors:
    """Forward-backward statistics (arguments as in :func:`total_scores`).

    For every possible utterance, ``arc_counts`` and ``label_occupancy`` each
    sum to its length, and ``final_probs`` and ``state_occupancy`` at every
    frame before its length sum to one.  Results carry no autograd history.
    """
    flat, lengths, arc_score, final = _prepare(dense, lengths, graph)
    flat_score = arc_score.index_select(0, flat.graph_arc)
    flat_final = final.index_select(0, flat.graph_state)
    totals, alphas, offsets = _log_forward(flat, dense, flat_score, flat_final, lengths)
    _warn_impossible(totals)
    weights = torch.ones_like(totals, dtype=dense.dtype)
    stats = _backward_scan(
        flat, dense, flat_score, flat_final, lengths, alphas, offsets, totals, weights, with_arcs=True, with_states=True
    )
    batch, frames = dense.shape[:2]
    arc_slot = flat.arc_utt * flat.max_arcs + flat.arc_local
    state_slot = flat.state_utt * flat.max_states + flat.state_local
    arc_counts = stats.arcs.new_zeros(batch * flat.max_arcs).index_copy_(0, arc_slot, stats.arcs)
    final_probs = stats.final.new_zeros(batch * flat.max_states).index_copy_(0, state_slot, stats.final)
    state_occupancy = dense.new_zeros((frames, batch * flat.max_states))
    state_occupancy[: stats.states.shape[0]].index_copy_(1, state_slot, stats.states)
    return ArcPosteriors(
        totals=totals.to(dense.dtype),
        arc_counts=arc_counts.view(batch, flat.max_arcs),
        final_probs=final_probs.view(batch, flat.max_states),
        label_occupancy=stats.dense,
        state_occupancy=state_occupancy.view(frames, batch, flat.max_states).transpose(0, 1),
    )
