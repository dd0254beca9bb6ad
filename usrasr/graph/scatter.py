"""Grouped reductions over arcs (by destination state, utterance or state pair)
shared by the arc kernel and the dense chain."""

from __future__ import annotations

import torch
from torch import Tensor

NEG_INF = float("-inf")


def scatter_logsumexp_(values: Tensor, index: Tensor, size: int, scratch: Tensor | None = None) -> Tensor:
    """``log(sum(exp(values)))`` grouped by ``index``; ``-inf`` for empty or
    all-``-inf`` groups, never NaN.  Overwrites ``values``; ``scratch`` is an
    optional buffer shaped like it (the hot loops reuse their buffers instead
    of allocating several arc-sized tensors per frame)."""
    peak = values.new_full((size,), NEG_INF).scatter_reduce_(0, index, values, "amax")
    # A group whose max is -inf sums only zeros; shift it by 0 instead of -inf.
    peak.masked_fill_(peak == NEG_INF, 0.0)
    values -= torch.index_select(peak, 0, index, out=scratch)
    sums = values.new_zeros(size).scatter_add_(0, index, values.exp_())
    return sums.log_().add_(peak)


def scatter_max(values: Tensor, index: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Max of ``values`` grouped by ``index``, and the position of the
    maximising element (the largest position on ties; -1 for empty groups)."""
    best = values.new_full((size,), NEG_INF).scatter_reduce_(0, index, values, "amax")
    positions = torch.arange(values.numel(), device=values.device)
    candidates = torch.where(values == best.index_select(0, index), positions, -1)
    argbest = torch.full((size,), -1, dtype=torch.long, device=values.device)
    return best, argbest.scatter_reduce_(0, index, candidates, "amax")
