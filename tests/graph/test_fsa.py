"""Fsa containers, ARPA -> FSA expansion and topology graphs."""

from __future__ import annotations

import logging
import math
import random
import subprocess
from pathlib import Path

import kaldifst
import numpy as np
import pytest
import torch

from usrasr.graph.fsa import Fsa, FsaVec
from usrasr.graph.marginals import best_path, total_scores
from usrasr.graph.topo import (
    arpa_to_fsa,
    bigram_lm_fsa,
    ctc_lm_graph,
    hmm_lm_graph,
    hmm_topo,
)

WORDS = "a b c d e f g h".split()
SYMBOLS = {w: i + 1 for i, w in enumerate(WORDS)}


def small_fsa() -> Fsa:
    # Arcs grouped by source state, the order OpenFst keeps them in.
    return Fsa.from_arcs(
        [(0, 1, 0, 3, -0.5), (0, 2, 2, 0, -2.0), (1, 1, 2, 0, -1.25), (1, 2, 1, 4, 0.75)],
        final={2: -0.1, 1: 0.0},
    )


# ---------------------------------------------------------------- containers


def test_from_arcs_fields():
    fsa = small_fsa()
    assert (fsa.num_states, fsa.num_arcs, fsa.start) == (3, 4, 0)
    assert fsa.final.tolist() == pytest.approx([-math.inf, 0.0, -0.1])
    assert fsa.label.tolist() == [0, 2, 2, 1]
    assert fsa.score.dtype == torch.float32


def test_kaldifst_round_trip_shifts_labels_and_negates_weights():
    fsa = small_fsa()
    fst = fsa.to_kaldifst()
    arcs = []
    for state in range(fst.num_states):
        it = kaldifst.ArcIterator(fst, state)
        while not it.done:
            arcs.append((state, it.value.nextstate, it.value.ilabel, it.value.olabel, it.value.weight.value))
            it.next()
    assert arcs[0] == (0, 1, 1, 3, pytest.approx(0.5))  # ilabel = label + 1, weight = -score
    assert math.isinf(fst.final(0).value) and fst.final(2).value == pytest.approx(0.1)
    back = Fsa.from_kaldifst(fst)
    for name in ("src", "dst", "label", "aux_label"):
        assert torch.equal(getattr(back, name), getattr(fsa, name))
    assert torch.allclose(back.score, fsa.score) and torch.equal(back.final, fsa.final)


def test_from_kaldifst_rejects_input_epsilons():
    fst = kaldifst.StdVectorFst()
    fst.add_state(), fst.add_state()
    fst.start = 0
    fst.add_arc(0, kaldifst.StdArc(0, 5, 0.0, 1))
    fst.set_final(1, 0.0)
    with pytest.raises(ValueError, match="epsilon"):
        Fsa.from_kaldifst(fst)


def test_fsa_vec_stacks_and_splits():
    one, two = small_fsa(), Fsa.from_arcs([(0, 0, 1, 1, 0.5)], final=[0.0])
    vec = FsaVec([one, two, one])
    assert (len(vec), vec.num_states, vec.num_arcs) == (3, 7, 9)
    assert vec.start.tolist() == [0, 3, 4]
    assert vec.src[4].item() == 3  # second graph's arc, offset by the first graph's 3 states
    for i, original in enumerate([one, two, one]):
        part = vec[i]
        for name in ("src", "dst", "label", "aux_label", "score", "final"):
            assert torch.equal(getattr(part, name), getattr(original, name))
    assert vec.to("cpu").num_arcs == 9


# ---------------------------------------------------------------- ARPA


def _write_corpus(path: Path, sparse: bool, sentences: int = 150) -> None:
    """Random sentences; with ``sparse``, each word may only be followed by three
    others, so every history leaves some word unseen and keeps a backoff weight."""
    rng = random.Random(0)
    follow = {w: rng.sample(WORDS, 3) for w in WORDS}
    lines = []
    for _ in range(sentences):
        word = rng.choice(WORDS[:4] if sparse else WORDS)
        sentence = [word]
        for _ in range(rng.randint(0, 6)):
            word = rng.choice(follow[word] if sparse else WORDS)
            sentence.append(word)
        lines.append(" ".join(sentence))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def arpa_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arpa")
    files = {}
    for name, sparse, order in [("bigram", True, 2), ("trigram", True, 3), ("dense_bigram", False, 2)]:
        corpus, arpa = root / f"{name}.txt", root / f"{name}.arpa"
        _write_corpus(corpus, sparse, 600 if not sparse else 150)
        subprocess.run(
            ["kaldingram", "train", "--ngram-order", str(order), "--text", str(corpus), "--lm", str(arpa)],
            check=True,
            capture_output=True,
        )
        files[name] = arpa
    return files


class ArpaScorer:
    """An independent backoff n-gram scorer straight from the ARPA text."""

    def __init__(self, path: Path) -> None:
        self.prob, self.backoff, self.order = {}, {}, 0
        n = 0
        for line in path.read_text().splitlines():
            if line.startswith("\\") and "-grams" in line:
                n = int(line[1])
                self.order = n
            elif n and line.strip() and not line.startswith("\\"):
                parts = line.split()
                key = " ".join(parts[1 : n + 1])
                self.prob[key] = float(parts[0]) * math.log(10)
                if len(parts) > n + 1:
                    self.backoff[key] = float(parts[n + 1]) * math.log(10)

    def word(self, context: list[str], word: str) -> float:
        context = context[-(self.order - 1) :] if self.order > 1 else []
        for cut in range(len(context) + 1):
            key = " ".join(context[cut:] + [word])
            if key in self.prob:
                return self.prob[key] + sum(self.backoff.get(" ".join(context[c:]), 0.0) for c in range(cut))
        raise KeyError(word)

    def sentence(self, words: list[str]) -> float:
        context, total = ["<s>"], 0.0
        for word in words + ["</s>"]:
            total += self.word(context, word)
            context.append(word)
        return total


def _walk(lm: Fsa, phones: list[int]) -> float:
    """Score of a phone sequence in a deterministic acceptor, plus its final weight."""
    state, total = lm.start, 0.0
    for phone in phones:
        (arc,) = torch.nonzero((lm.src == state) & (lm.label == phone)).flatten().tolist()
        total += float(lm.score[arc])
        state = int(lm.dst[arc])
    return total + float(lm.final[state])


def _outgoing_mass(lm: Fsa) -> torch.Tensor:
    return torch.zeros(lm.num_states, dtype=torch.float64).index_add_(0, lm.src, lm.score.double().exp()) + lm.final.double().exp()


@pytest.mark.parametrize("name", ["bigram", "trigram"])
def test_arpa_histories_are_normalised(arpa_files, name, caplog):
    with caplog.at_level(logging.WARNING, logger="usrasr"):
        lm = arpa_to_fsa(arpa_files[name], SYMBOLS)
    assert not caplog.records
    assert lm.num_arcs == lm.num_states * len(WORDS)  # exact expansion: every word from every history
    assert torch.allclose(_outgoing_mass(lm), torch.ones(lm.num_states, dtype=torch.float64), atol=1e-4)
    assert torch.equal(lm.label, lm.aux_label)


@pytest.mark.parametrize("name", ["bigram", "trigram"])
def test_arpa_sentence_scores_match_independent_scorer(arpa_files, name):
    lm = arpa_to_fsa(arpa_files[name], SYMBOLS)
    scorer = ArpaScorer(arpa_files[name])
    rng = random.Random(1)
    sentences = [[rng.choice(WORDS) for _ in range(rng.randint(1, 7))] for _ in range(30)]
    for sentence in sentences:  # mostly unseen n-grams: exercises the backoff chains
        assert _walk(lm, [SYMBOLS[w] for w in sentence]) == pytest.approx(scorer.sentence(sentence), abs=1e-4)


def test_arpa_deficient_lm_is_reported(arpa_files, caplog):
    # Every bigram seen: kaldingram's backoff KN drops the discounted mass.
    with caplog.at_level(logging.WARNING, logger="usrasr"):
        arpa_to_fsa(arpa_files["dense_bigram"], SYMBOLS)
    assert any("instead of 1" in r.getMessage() for r in caplog.records)


def test_arpa_unknown_word_is_an_error(arpa_files):
    with pytest.raises(ValueError, match="phone id"):
        arpa_to_fsa(arpa_files["bigram"], {"a": 1})


# ---------------------------------------------------------------- bigram matrix and topologies


def _bigram(num_phones: int, seed: int = 0, repeats: bool = True):
    """A random stochastic bigram (transition, initial, final); without
    ``repeats`` no phone follows itself."""
    rng = np.random.default_rng(seed)
    final = rng.uniform(0.3, 0.6, num_phones)
    transition = rng.dirichlet(np.ones(num_phones), num_phones)
    if not repeats:
        np.fill_diagonal(transition, 0.0)
        transition /= transition.sum(1, keepdims=True)
    transition *= (1 - final)[:, None]
    initial = rng.dirichlet(np.ones(num_phones))
    return transition, initial, final


def test_bigram_lm_fsa_scores():
    transition, initial, final = _bigram(4)
    lm = bigram_lm_fsa(transition, initial, final)
    expected = math.log(initial[2]) + math.log(transition[2, 0]) + math.log(transition[0, 0]) + math.log(final[0])
    assert _walk(lm, [3, 1, 1]) == pytest.approx(expected, abs=1e-5)
    assert torch.allclose(_outgoing_mass(lm)[1:], torch.ones(4, dtype=torch.float64), atol=1e-5)
    default = bigram_lm_fsa(transition / transition.sum(1, keepdims=True))
    assert default.final[1:].tolist() == [0.0] * 4 and default.final[0] == -math.inf


@pytest.mark.parametrize("states_per_phone,silence", [(1, False), (2, True)])
def test_hmm_graph_is_a_distribution_over_lengths(states_per_phone, silence):
    """Stochastic topology x stochastic LM: with all emission scores 0 the
    totals over every length sum to one."""
    num_phones = 4
    transition, initial, final = _bigram(num_phones - 1)
    lm = bigram_lm_fsa(transition, initial, final)
    graph = hmm_lm_graph(
        lm, num_phones, states_per_phone, self_loop_prob=0.4, silence_phone=num_phones if silence else None, silence_prob=0.3
    )
    max_len = 160
    dense = torch.zeros(max_len, max_len, num_phones * states_per_phone, dtype=torch.float64)
    totals = total_scores(dense, torch.arange(1, max_len + 1), graph)
    assert totals.exp().sum().item() == pytest.approx(1.0, abs=1e-5)  # float32 LM scores


def test_hmm_graph_scores_an_alignment_like_the_formula():
    # Without LM repeats, a phone run is one phone occurrence: a single path.
    transition, initial, final = _bigram(3, repeats=False)
    lm = bigram_lm_fsa(transition, initial, final)
    loop = 0.3
    graph = hmm_lm_graph(lm, 3, self_loop_prob=loop)
    frames = [2, 2, 2, 1, 3, 3]  # phones per frame
    dense = torch.full((1, len(frames), 3), -math.inf, dtype=torch.float64)
    dense[0, torch.arange(len(frames)), torch.tensor(frames) - 1] = 0.0
    lm_score = math.log(initial[1] * transition[1, 0] * transition[0, 2] * final[2])
    duration = 3 * math.log(loop) + 3 * math.log(1 - loop)  # 3 self-loops, 3 phone exits
    assert total_scores(dense, torch.tensor([6]), graph).item() == pytest.approx(lm_score + duration, abs=1e-5)
    path = best_path(dense, torch.tensor([6]), graph)
    assert path.aux_labels[0].tolist() == [2, 0, 0, 1, 3, 0]  # phone on its first frame only
    assert path.labels[0].tolist() == [f - 1 for f in frames]


def test_hmm_emission_ids_and_silence_placement():
    topo = hmm_topo(3, states_per_phone=2, silence_phone=3)
    graph = Fsa.from_kaldifst(topo)
    assert graph.label.max().item() == 5  # (phone - 1) * 2 + state
    entering = graph.aux_label > 0
    assert torch.equal(graph.label[entering] % 2, torch.zeros_like(graph.label[entering]))
    # No silence straight after silence: the silence's last state never re-enters it.
    silence_end = 1 + 2 * 2 + 1
    assert not bool(((graph.src == silence_end) & (graph.aux_label == 3)).any())


def test_ctc_graph_collapses_repeats_and_needs_blank_between_equal_phones():
    transition, initial, final = _bigram(3)
    lm = bigram_lm_fsa(transition, initial, final)
    graph = ctc_lm_graph(lm, 3)

    def score(frames: list[int]) -> float:
        dense = torch.full((1, len(frames), 4), -math.inf, dtype=torch.float64)
        dense[0, torch.arange(len(frames)), torch.tensor(frames)] = 0.0
        return total_scores(dense, torch.tensor([len(frames)]), graph).item()

    assert score([1, 1, 0, 2]) == pytest.approx(math.log(initial[0] * transition[0, 1] * final[1]), abs=1e-5)
    assert score([0, 1, 0, 1]) == pytest.approx(math.log(initial[0] * transition[0, 0] * final[0]), abs=1e-5)
    assert score([2, 2, 2]) == pytest.approx(math.log(initial[1] * final[1]), abs=1e-5)


def test_hmm_lm_graph_from_arpa_path(arpa_files):
    num_phones = len(WORDS) + 1
    graph = hmm_lm_graph(arpa_files["trigram"], num_phones, silence_phone=num_phones, symbols=SYMBOLS)
    assert graph.label.max().item() < num_phones and set(graph.aux_label.unique().tolist()) <= set(range(num_phones + 1))
