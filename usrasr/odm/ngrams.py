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
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from usrasr.lang.lexicon import phone_sentences, read_lexicon
from usrasr.lang.lm import BOS, EOS, ArpaLM, train_arpa

# Positions of the step sequence per checkpointed chunk of the expected-count sum:
# the (restarts, chunk, prefixes) intermediates are recomputed in backward, not kept.
CHUNK = 4096


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


# Above this many histories the chain of the LM's histories is too big to build densely.
MAX_HISTORIES = 200_000


def history_chain(lm: ArpaLM, symbols: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The LM as a Markov chain over its histories of ``s = max(order - 1, 1)`` symbols:
    (stationary distribution over the ``V^s`` histories, ``(V^s, V)`` transition
    probabilities), histories indexed in base ``V`` (oldest symbol most significant).

    The conditionals apply the ARPA's back-off level by level, vectorised (in a
    Kneser-Ney ARPA the lower orders are continuation distributions, right only as
    back-offs: the n-gram distribution must come from the highest order's
    conditionals); each row is renormalised over ``symbols`` (sentence ends left out)."""
    size = len(symbols)
    span = max(lm.order - 1, 1)
    if size ** span > MAX_HISTORIES:
        raise ValueError(f"{size}^{span} histories: use an LM of lower order")
    index = {s: i for i, s in enumerate(symbols)}
    unigram = np.full(size, -np.inf)
    for (word,), lp in ((k, v) for k, v in lm.logprob.items() if len(k) == 1):
        if word in index:
            unigram[index[word]] = lp
    level = unigram[None, :]  # ln P(c | history) for histories of length 0, then 1, ...
    for k in range(1, span + 1):
        backoff = np.zeros(size ** k)
        for key, bo in lm.backoff.items():
            if len(key) == k and all(w in index for w in key):
                backoff[_code([index[w] for w in key], size)] = bo
        shorter = np.arange(size ** k) % (size ** (k - 1))
        level = backoff[:, None] + level[shorter]
        for key, lp in lm.logprob.items():
            if len(key) == k + 1 and all(w in index for w in key):
                level[_code([index[w] for w in key[:-1]], size), index[key[-1]]] = lp
    transition = np.exp(level - level.max(1, keepdims=True))
    transition /= transition.sum(1, keepdims=True)
    following = (np.arange(size ** span) % (size ** (span - 1)))[:, None] * size + np.arange(size)[None, :]
    stationary = np.full(size ** span, 1.0 / size ** span)
    for _ in range(1000):
        updated = np.bincount(following.ravel(), (stationary[:, None] * transition).ravel(), size ** span)
        done = np.abs(updated - stationary).sum() < 1e-12
        stationary = updated
        if done:
            break
    return stationary / stationary.sum(), transition


def _code(digits: list[int] | tuple[int, ...], size: int) -> int:
    """Index of a sequence of symbols, in base ``size``."""
    value = 0
    for digit in digits:
        value = value * size + digit
    return value


def _top(logprobs: np.ndarray, length: int, size: int, keep: int) -> dict[tuple[int, ...], float]:
    """The ``keep`` largest entries of a dense array over sequences of ``length`` symbols."""
    finite = np.flatnonzero(np.isfinite(logprobs))
    if len(finite) > keep:
        finite = finite[np.argpartition(-logprobs[finite], keep - 1)[:keep]]
    return {tuple(int(d) for d in np.unravel_index(i, (size,) * length)): float(logprobs[i]) for i in finite}


def _phone_ngram_logprobs(lm: ArpaLM, symbols: list[str], order: int, keep: int) -> dict[tuple[int, ...], float]:
    """ln P_LM(c_1..c_m) for m = 1..order under the LM's stationary chain: every sequence for
    m <= 2, then the ``keep`` most likely ones of each order (beyond the LM's histories,
    extending the kept sequences of the order below: a sequence is at most as likely as
    its prefix)."""
    size = len(symbols)
    stationary, transition = history_chain(lm, symbols)
    span = max(lm.order - 1, 1)
    with np.errstate(divide="ignore"):
        log_transition = np.log(transition)
        joint = np.log(stationary)[:, None] + log_transition  # sequences of span + 1 symbols
    found: dict[tuple[int, ...], float] = {}
    for m in range(1, min(order, span + 1) + 1):
        if m <= span:
            with np.errstate(divide="ignore"):
                dense = np.log(stationary.reshape(size ** (span - m), size ** m).sum(0))
        else:
            dense = joint.ravel()
        found.update(_top(dense, m, size, keep if m > 2 else size ** m))
    frontier = {k: v for k, v in found.items() if len(k) == span + 1}
    for m in range(span + 2, order + 1):
        grown = {}
        for seq, lp in frontier.items():
            scores = log_transition[_code(seq[-span:], size)]
            for c in np.flatnonzero(np.isfinite(scores)):
                grown[seq + (int(c),)] = lp + float(scores[c])
        frontier = dict(sorted(grown.items(), key=lambda kv: -kv[1])[:keep])
        found.update(frontier)
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


def _chunk_counts(posteriors: Tensor, selections: list[Tensor], weights: Tensor) -> Tensor:
    """(restarts, prefixes, labels): sum_t weights[t] prod_j posteriors[:, t + j] @ selections[j]
    (the prefix's probability), times the next step's posteriors, over this chunk's starts."""
    span = weights.shape[0]
    product = (posteriors[:, :span] @ selections[0]) * weights[:, None]
    for j, selection in enumerate(selections[1:], 1):
        product = product * (posteriors[:, j:j + span] @ selection)
    last = len(selections)
    return torch.einsum("rtk,rtv->rkv", product, posteriors[:, last:last + span])


def expected_ngrams(posteriors: Tensor, starts: Tensor, ngrams: Tensor) -> Tensor:
    """Expected distribution of the listed n-grams under per-step posteriors.

    ``posteriors`` is (restarts, steps, labels) over the concatenated steps of a batch,
    ``starts`` the mask of :func:`ngram_starts` for this order, ``ngrams`` (K, n).
    Returns (restarts, K): expected count over the number of starts.

    The listed n-grams' distinct (n-1)-prefixes are scored by matrix products with
    one-hot selections (cheap in both directions, unlike a gather's backward), then
    every prefix is extended by every label at once."""
    order = ngrams.shape[1]
    total, labels = posteriors.shape[1], posteriors.shape[2]
    weights = starts.to(posteriors.dtype)
    count = weights.sum().clamp_min(1.0)
    if order == 1:
        return torch.einsum("rtv,t->rv", posteriors, weights)[:, ngrams[:, 0]] / count
    prefixes, which = torch.unique(ngrams[:, :-1], dim=0, return_inverse=True)
    selections = [torch.nn.functional.one_hot(prefixes[:, j], labels).T.to(posteriors.dtype)
                  for j in range(order - 1)]
    counts = posteriors.new_zeros(posteriors.shape[0], len(prefixes), labels)
    for begin in range(0, total - order + 1, CHUNK):
        end = min(begin + CHUNK, total - order + 1)
        window = posteriors[:, begin:end + order - 1]
        if posteriors.requires_grad:
            counts = counts + checkpoint(_chunk_counts, window, selections, weights[begin:end], use_reentrant=False)
        else:
            counts = counts + _chunk_counts(window, selections, weights[begin:end])
    return counts[:, which, ngrams[:, -1]] / count


def train_phone_lm(sentences: Path, lexicon: Path, order: int, out: Path) -> Path:
    """A phone ARPA LM of ``order`` over the lexicon pronunciations of a text file's
    sentences (those whose every word is in the lexicon), as `usrasr prepare` builds the
    corpus's own phone LM: for orders above the one the corpus has."""
    text = Path(sentences).read_text(encoding="utf-8").splitlines()
    return train_arpa(phone_sentences(text, read_lexicon(lexicon)), order, out)
