"""Both sides of output-distribution matching: the LM's n-gram distribution and the
classifier's batch-expected one.

**LM side.**  The distribution of n consecutive *steps* of the recogniser's
output (segments or frames), not of phones: a phone lasts one or more steps, so
each step stays in its phone with probability ``stay`` and otherwise moves on
along the phone LM.  An n-gram of steps ``s`` whose repeats collapse to the
phones ``c_1..c_m`` then has probability

    P(s) = P_LM(c_1..c_m) * stay^(n - m) * (1 - stay)^(m - 1)

with ``P_LM(c_1..c_m) = pi(c_1) prod_i P(c_i | c_<i)`` read from the ARPA LM
(``pi`` the stationary distribution of its bigram chain; sentence ends are
left out, since the steps of one utterance are matched in the middle as much
as at its ends).  ``stay = 0`` is the phone LM's own n-gram distribution.
Silence is no symbol here: the features leave silent steps out before
matching (see :mod:`usrasr.odm.features`), so the phone LM's vocabulary is the
classifier's label set.

**Classifier side.**  For posteriors ``P[t]`` over the labels of the steps of
a batch, the expected count of n-gram ``g`` is ``sum_t prod_j P[t + j, g_j]``
over the positions ``t`` whose n steps lie in one utterance; divided by the
number of such positions it is the expected n-gram distribution of label
sequences drawn from the posteriors independently per step.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from usrasr.lang.lm import BOS, EOS, ArpaLM

# Positions of the step sequence per checkpointed chunk of the expected-count sum:
# the (restarts, chunk, n-grams) intermediates are recomputed in backward, not kept.
CHUNK = 2048


@dataclass
class NgramTable:
    """The ``top`` most likely n-grams of one order with their LM probabilities.

    ``ngrams[k]`` are label indices (0-based, into the classifier's labels),
    ``probs[k]`` their probability under the LM; ``probs.sum() <= 1``, the rest
    being the mass of the n-grams left out."""

    order: int
    ngrams: Tensor  # (K, order) long
    probs: Tensor  # (K,) float64

    @property
    def rest(self) -> float:
        return max(0.0, 1.0 - float(self.probs.sum()))


def phone_chain(lm: ArpaLM, symbols: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The LM's bigram chain over ``symbols``: (stationary distribution, transition matrix),
    each row renormalised over the symbols (sentence ends and unlisted tokens left out)."""
    transition = np.array([[math.exp(lm.conditional((h,), c)) for c in symbols] for h in symbols])
    transition /= np.maximum(transition.sum(1, keepdims=True), 1e-300)
    stationary = np.full(len(symbols), 1.0 / len(symbols))
    for _ in range(500):
        stationary = stationary @ transition
    return stationary / stationary.sum(), transition


def _phone_ngram_logprobs(lm: ArpaLM, symbols: list[str], order: int, keep: int) -> dict[tuple[int, ...], float]:
    """ln P_LM(c_1..c_m) for m = 1..order: every sequence for m <= 2, then the ``keep`` most
    likely ones of each order (extending the kept sequences of the order below: a sequence
    is at most as likely as its prefix)."""
    stationary, _ = phone_chain(lm, symbols)
    with np.errstate(divide="ignore"):
        log_start = np.log(stationary)
    names = list(symbols)
    conditional: dict[tuple[int, ...], np.ndarray] = {}

    def next_logprobs(history: tuple[int, ...]) -> np.ndarray:
        key = history[-(lm.order - 1):] if lm.order > 1 else ()
        if key not in conditional:
            ctx = tuple(names[i] for i in key)
            scores = np.array([lm.conditional(ctx, c) for c in names])
            conditional[key] = scores - np.logaddexp.reduce(scores)  # renormalised without </s>
        return conditional[key]

    found = {(i,): float(log_start[i]) for i in range(len(symbols)) if np.isfinite(log_start[i])}
    frontier = dict(found)
    for m in range(2, order + 1):
        grown = {}
        for seq, lp in frontier.items():
            scores = next_logprobs(seq)
            for c in np.flatnonzero(np.isfinite(scores)):
                grown[seq + (int(c),)] = lp + float(scores[c])
        if m > 2 and len(grown) > keep:
            grown = dict(sorted(grown.items(), key=lambda kv: -kv[1])[:keep])
        found.update(grown)
        frontier = grown
    return found


def lm_ngram_tables(lm: ArpaLM, symbols: list[str], max_order: int, top: int = 2000,
                    stay: float = 0.0) -> list[NgramTable]:
    """The LM's n-gram distribution of output steps for n = 1..``max_order`` (see the module
    docstring), each order's ``top`` most likely n-grams.  ``symbols`` name the labels in
    order; they must be in the LM's vocabulary (``<s>``, ``</s>`` are never symbols)."""
    if not 0.0 <= stay < 1.0:
        raise ValueError(f"stay must be in [0, 1), got {stay}")
    unknown = [s for s in symbols if s in (BOS, EOS) or (s,) not in lm.logprob]
    if unknown:
        raise ValueError(f"labels not in the LM's vocabulary: {' '.join(unknown)}")
    phones = _phone_ngram_logprobs(lm, symbols, max_order, keep=4 * top)
    tables = []
    for n in range(1, max_order + 1):
        steps: dict[tuple[int, ...], float] = {}
        # every pattern of stays (True) and moves between the n steps
        for pattern in itertools.product((True, False), repeat=n - 1):
            stays = sum(pattern)
            if stay == 0.0 and stays:
                continue
            moves = n - 1 - stays
            weight = (stays * math.log(stay) if stays else 0.0) + moves * math.log1p(-stay)
            for seq, lp in phones.items():
                if len(seq) != moves + 1:
                    continue
                expanded, i = [seq[0]], 0
                for stays in pattern:
                    i += 0 if stays else 1
                    expanded.append(seq[i])
                key = tuple(expanded)
                steps[key] = np.logaddexp(steps.get(key, -np.inf), lp + weight)
        best = sorted(steps.items(), key=lambda kv: -kv[1])[:top]
        tables.append(NgramTable(n, torch.tensor([k for k, _ in best], dtype=torch.long).reshape(-1, n),
                                 torch.tensor([math.exp(v) for _, v in best], dtype=torch.float64)))
    return tables


def ngram_starts(lengths: Tensor, order: int) -> Tensor:
    """Boolean mask over the concatenated steps: True where ``order`` steps from there lie
    in one utterance."""
    starts = torch.zeros(int(lengths.sum()), dtype=torch.bool)
    offset = 0
    for length in lengths.tolist():
        if length >= order:
            starts[offset:offset + length - order + 1] = True
        offset += length
    return starts


def _chunk_counts(posteriors: Tensor, ngrams: Tensor, weights: Tensor) -> Tensor:
    """sum_t weights[t] prod_j posteriors[:, t + j, ngrams[:, j]] over this chunk's starts."""
    order = ngrams.shape[1]
    span = weights.shape[0]
    product = posteriors[:, :span, ngrams[:, 0]]
    for j in range(1, order):
        product = product * posteriors[:, j:j + span, ngrams[:, j]]
    return torch.einsum("rtk,t->rk", product, weights)


def expected_ngrams(posteriors: Tensor, starts: Tensor, ngrams: Tensor) -> Tensor:
    """Expected distribution of the listed n-grams under per-step posteriors.

    ``posteriors`` is (restarts, steps, labels) over the concatenated steps of a batch,
    ``starts`` the mask of :func:`ngram_starts` for this order, ``ngrams`` (K, n).
    Returns (restarts, K): expected count over the number of starts."""
    order = ngrams.shape[1]
    total = posteriors.shape[1]
    weights = starts.to(posteriors.dtype)
    count = weights.sum().clamp_min(1.0)
    if order == 1:
        return torch.einsum("rtv,t->rv", posteriors, weights)[:, ngrams[:, 0]] / count
    if order == 2:  # every pair at once: one batched matrix product
        pairs = torch.einsum("rta,rtb->rab", posteriors[:, :-1] * weights[:-1, None], posteriors[:, 1:])
        return pairs[:, ngrams[:, 0], ngrams[:, 1]] / count
    out = posteriors.new_zeros(posteriors.shape[0], ngrams.shape[0])
    for begin in range(0, total - order + 1, CHUNK):
        end = min(begin + CHUNK, total - order + 1)
        window = posteriors[:, begin:end + order - 1]
        if posteriors.requires_grad:
            out = out + checkpoint(_chunk_counts, window, ngrams, weights[begin:end], use_reentrant=False)
        else:
            out = out + _chunk_counts(window, ngrams, weights[begin:end])
    return out / count
