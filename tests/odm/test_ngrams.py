"""The two sides of the ODM loss against brute force."""

import itertools
import math

import numpy as np
import pytest
import torch

from usrasr.lang.lm import ArpaLM
from usrasr.odm.ngrams import (
    expected_ngrams,
    history_chain,
    lm_ngram_tables,
    ngram_starts,
)


def _all_ngrams(labels: int, order: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(labels), repeat=order)), dtype=torch.long)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_expected_ngrams_equal_enumeration_of_label_sequences(order):
    """Expected n-gram distribution = average, over every labelling weighted by its
    probability, of that labelling's n-gram histogram (positions within one utterance)."""
    gen = torch.Generator().manual_seed(order)
    labels, lengths = 3, torch.tensor([3, 2, 4])
    posteriors = torch.softmax(torch.randn(2, int(lengths.sum()), labels, generator=gen, dtype=torch.float64), -1)
    ngrams = _all_ngrams(labels, order)
    got = expected_ngrams(posteriors, ngram_starts(lengths, order), ngrams)
    starts = [t for t, ok in enumerate(ngram_starts(lengths, order).tolist()) if ok]
    index = {tuple(g): k for k, g in enumerate(ngrams.tolist())}
    for r in range(posteriors.shape[0]):
        want = np.zeros(len(ngrams))
        for seq in itertools.product(range(labels), repeat=posteriors.shape[1]):
            prob = math.prod(float(posteriors[r, t, c]) for t, c in enumerate(seq))
            for t in starts:
                want[index[seq[t:t + order]]] += prob / len(starts)
        np.testing.assert_allclose(got[r].numpy(), want, rtol=1e-9, atol=1e-12)


def test_expected_ngrams_are_differentiable_through_the_chunks(monkeypatch):
    import usrasr.odm.ngrams as ngrams_module

    monkeypatch.setattr(ngrams_module, "CHUNK", 2)  # several checkpointed chunks
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    lengths, table = torch.tensor([4, 3]), _all_ngrams(3, 3)[::4]
    fn = lambda z: expected_ngrams(torch.softmax(z, -1), ngram_starts(lengths, 3), table).pow(2).sum()
    assert torch.autograd.gradcheck(fn, (logits,))


def _tiny_lm() -> ArpaLM:
    """A bigram LM over a, b, c in natural-log probabilities (no back-off needed)."""
    conditional = {"a": {"a": 0.1, "b": 0.6, "c": 0.3}, "b": {"a": 0.5, "b": 0.2, "c": 0.3},
                   "c": {"a": 0.3, "b": 0.3, "c": 0.4}}
    logprob = {(p,): math.log(1 / 3) for p in "abc"}
    logprob.update({(h, c): math.log(p) for h, row in conditional.items() for c, p in row.items()})
    return ArpaLM(order=2, logprob=logprob, backoff={})


@pytest.mark.parametrize("stay", [0.0, 0.4])
def test_lm_tables_equal_the_step_chain_distribution(stay):
    """Every n-gram of steps, with a step staying in its phone with probability ``stay``:
    the tables equal the stationary chain of (phone, stay-or-move) steps, enumerated."""
    lm, symbols = _tiny_lm(), ["a", "b", "c"]
    stationary, transition = history_chain(lm, symbols)
    step = stay * np.eye(3) + (1 - stay) * transition
    tables = lm_ngram_tables(lm, symbols, max_order=3, top=27, stay=stay)
    for table in tables:
        got = dict(zip(map(tuple, table.ngrams.tolist()), table.probs.tolist()))
        for seq in itertools.product(range(3), repeat=table.order):
            want = stationary[seq[0]] * math.prod(step[a, b] for a, b in itertools.pairwise(seq))
            assert got.get(seq, 0.0) == pytest.approx(want, abs=1e-12)
        assert table.rest == pytest.approx(0.0, abs=1e-9)


def test_lm_tables_keep_the_most_likely_ngrams():
    lm, symbols = _tiny_lm(), ["a", "b", "c"]
    full = lm_ngram_tables(lm, symbols, 3, top=27)[2]
    top = lm_ngram_tables(lm, symbols, 3, top=5)[2]
    assert top.probs.tolist() == pytest.approx(sorted(full.probs.tolist(), reverse=True)[:5])
    assert top.rest == pytest.approx(1 - sum(top.probs.tolist()))


def test_trigram_lm_tables_follow_its_highest_order_with_back_off():
    """A trigram LM whose bigram entries are no marginals (as in a Kneser-Ney ARPA) and some of
    whose trigrams back off: the tables are the stationary chain over two-symbol histories,
    built here with ``ArpaLM.conditional`` one history at a time."""
    symbols = ["a", "b", "c"]
    logprob = {(p,): math.log(q) for p, q in zip(symbols, [0.2, 0.3, 0.5])}
    logprob.update({(h, c): math.log(1 / 3) for h in symbols for c in symbols})
    rng = np.random.default_rng(0)
    for h in itertools.product(symbols, repeat=2):
        row = rng.dirichlet(np.ones(3))
        for c, q in zip(symbols, row):
            if rng.random() < 0.7:  # the rest backs off
                logprob[h + (c,)] = math.log(q)
    backoff = {h: math.log(0.5) for h in itertools.product(symbols, repeat=2)}
    lm = ArpaLM(order=3, logprob=logprob, backoff=backoff)
    histories = list(itertools.product(range(3), repeat=2))
    step = np.zeros((9, 9))
    for i, (x, y) in enumerate(histories):
        row = np.array([math.exp(lm.conditional((symbols[x], symbols[y]), c)) for c in symbols])
        for c, q in enumerate(row / row.sum()):
            step[i, histories.index((y, c))] = q
    values, vectors = np.linalg.eig(step.T)
    stationary = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    stationary /= stationary.sum()
    tables = lm_ngram_tables(lm, symbols, max_order=4, top=81)
    for table in tables:
        got = dict(zip(map(tuple, table.ngrams.tolist()), table.probs.tolist()))
        for seq in itertools.product(range(3), repeat=table.order):
            if table.order == 1:
                want = sum(stationary[i] for i, h in enumerate(histories) if h[1] == seq[0])
            else:
                want = stationary[histories.index(seq[:2])]
                for j in range(2, table.order):
                    want *= step[histories.index(seq[j - 2:j]), histories.index(seq[j - 1:j + 1])]
            assert got.get(seq, 0.0) == pytest.approx(want, abs=1e-9)

