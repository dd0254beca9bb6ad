"""The ODM loss: cross-entropy between the LM's n-gram distribution and the classifier's
expected one, summed over orders with weights (a weight of 0 leaves an order out:
the curriculum of :mod:`usrasr.odm.search` raises them in turn).

For one order with the listed n-grams ``k`` (LM probability ``p_k``, expected
probability ``e_k``) the cross-entropy is

    - sum_k p_k ln e_k - (1 - sum_k p_k) ln(1 - sum_k e_k)

the last term matching the mass of the n-grams not listed, so it is a proper
cross-entropy over ``K + 1`` outcomes, minimal (the LM's entropy over them) when
the two distributions agree.  The unigram order is the diversity term: it keeps
the outputs in the LM's proportions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from usrasr.odm.ngrams import NgramTable, expected_ngrams, ngram_starts

# Floor of an expected probability inside the logarithm.
EPS = 1e-8


def _outcomes(expected: Tensor, table: NgramTable) -> tuple[Tensor, Tensor]:
    """(restarts, K + 1) expected and (K + 1,) LM probabilities of the listed n-grams and the rest."""
    probs = torch.cat([table.probs, torch.tensor([table.rest], dtype=table.probs.dtype)]).to(expected)
    return torch.cat([expected, (1.0 - expected.sum(-1, keepdim=True))], -1), probs


def order_cross_entropy(expected: Tensor, table: NgramTable) -> Tensor:
    """(restarts,) cross-entropy of one order given the expected probabilities (restarts, K)."""
    outcomes, probs = _outcomes(expected, table)
    return -(outcomes.clamp_min(EPS).log() * probs).sum(-1)


def order_dual(expected: Tensor, table: NgramTable, dual: Tensor) -> Tensor:
    """(restarts,) the primal-dual form of :func:`order_cross_entropy` (Liu et al. 2017):
    ``-ln e = max_{v < 0} (v e + ln(-v) + 1)``, so the cross-entropy is the maximum over
    ``dual = ln(-v)`` (restarts, K + 1) of ``sum_k p_k (v_k e_k + ln(-v_k) + 1)``.  Linear
    in the expected distribution, its gradient is unbiased on minibatches, and descending
    in the model while ascending in the dual is said to cross the barriers of the primal."""
    outcomes, probs = _outcomes(expected, table)
    return ((-dual.exp() * outcomes + dual + 1.0) * probs).sum(-1)


class OdmObjective:
    """The LM side of the loss for one batch layout: the tables and each order's start mask.

    Build it once per batch of utterances (``lengths`` = steps per utterance, in the
    order the posteriors concatenate them)."""

    def __init__(self, tables: list[NgramTable], lengths: Tensor):
        self.tables = tables
        self.starts = [ngram_starts(lengths, t.order) for t in tables]

    def per_order(self, posteriors: Tensor, orders: list[int] | None = None) -> Tensor:
        """(restarts, orders) cross-entropy of each order (of ``orders``, 1-based; all by default)."""
        chosen = orders or [t.order for t in self.tables]
        rows = []
        for table, starts in zip(self.tables, self.starts):
            if table.order in chosen:
                rows.append(order_cross_entropy(expected_ngrams(posteriors, starts, table.ngrams), table))
        return torch.stack(rows, -1)

    def loss(self, posteriors: Tensor, weights: list[float], duals: list[Tensor] | None = None) -> Tensor:
        """(restarts,) weighted sum of the orders' cross-entropies (``weights[n - 1]`` for order n),
        or of their primal-dual forms at ``duals`` (one (restarts, K + 1) tensor per order)."""
        total = posteriors.new_zeros(posteriors.shape[0])
        for i, (table, starts, weight) in enumerate(zip(self.tables, self.starts, weights)):
            if weight > 0:
                expected = expected_ngrams(posteriors, starts, table.ngrams)
                term = order_dual(expected, table, duals[i]) if duals else order_cross_entropy(expected, table)
                total = total + weight * term
        return total

    def initial_duals(self, restarts: int) -> list[Tensor]:
        """Duals at which the primal-dual form is the cross-entropy when the expected
        distribution equals the LM's: ``v_k = -1 / p_k``."""
        return [(-torch.cat([t.probs, torch.tensor([t.rest])]).clamp_min(EPS).log()).float().repeat(restarts, 1)
                for t in self.tables]

    def entropy(self) -> list[float]:
        """The LM's entropy over each order's K + 1 outcomes: the floor of its cross-entropy."""
        out = []
        for t in self.tables:
            p = t.probs[t.probs > 0]
            out.append(float(-(p * p.log()).sum() - (t.rest * torch.log(torch.tensor(t.rest)) if t.rest > 0 else 0.0)))
        return out


def smoothness(posteriors: Tensor, lengths: Tensor) -> Tensor:
    """(restarts,) mean squared change of the posteriors between neighbouring steps of an
    utterance: for frame-level classifiers, whose neighbouring frames mostly share a phone."""
    diff = (posteriors[:, 1:] - posteriors[:, :-1]).pow(2).sum(-1)
    same = ngram_starts(lengths, 2)[:-1].to(diff)
    return (diff * same).sum(-1) / same.sum().clamp_min(1.0)
