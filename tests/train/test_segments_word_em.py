"""Phone-like segments (DP against brute force) and word-level EM through HLG on the tiny corpus."""

import itertools
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from usrasr.cli import cli
from usrasr.lang.phones import PHONES
from usrasr.corpus.reader import load_audio
from usrasr.corpus.scoring import ScoringData
from usrasr.train.units.segments import segment_boundaries, segment_features
from usrasr.train.units.kmeans import UnitSequences
from usrasr.train.word_em import WordLevelEM


def _cost(x: torch.Tensor, bounds, penalty: float) -> float:
    total = 0.0
    for a, b in zip(bounds[:-1], bounds[1:]):
        seg = x[a:b].double()
        total += float(((seg - seg.mean(0)) ** 2).sum()) + penalty
    return total


@pytest.mark.parametrize("seed", range(4))
def test_segmentation_is_the_brute_force_optimum(seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(9, 3, generator=gen) + torch.repeat_interleave(torch.randn(3, 3, generator=gen) * 3,
                                                                    torch.tensor([3, 2, 4]), dim=0)
    penalty, low, high = 2.0, 2, 5
    found = segment_boundaries([x], penalty, min_frames=low, max_frames=high)[0]
    best = float("inf")
    for cuts in itertools.chain.from_iterable(itertools.combinations(range(1, 9), n) for n in range(9)):
        bounds = [0, *cuts, 9]
        if all(low <= b - a <= high for a, b in zip(bounds[:-1], bounds[1:])):
            best = min(best, _cost(x, bounds, penalty))
    assert _cost(x, found.tolist(), penalty) == pytest.approx(best)
    assert found[0] == 0 and found[-1] == 9


def test_segments_recover_piecewise_constant_frames_and_their_trajectories():
    gen = torch.Generator().manual_seed(0)
    lengths = [6, 9, 4, 12, 7]
    levels = torch.randn(len(lengths), 8, generator=gen) * 4
    x = torch.repeat_interleave(levels, torch.tensor(lengths), dim=0) + 0.05 * torch.randn(sum(lengths), 8,
                                                                                           generator=gen)
    bounds = segment_boundaries([x, x[:21], x[:1]], penalty=5.0)  # a batch of unequal lengths
    assert bounds[0].tolist() == [0, 6, 15, 19, 31, 38]
    assert bounds[1].tolist() == [0, 6, 15, 19, 21]
    assert bounds[2].tolist() == [0, 1]  # shorter than min_frames: one segment
    feats = segment_features([x], bounds[:1], parts=3)[0]
    assert feats.shape == (5, 24)
    assert torch.allclose(feats[1, 8:16], levels[1], atol=0.1)


@pytest.fixture(scope="module")
def pure_units(tiny_corpus):
    """Unit = phone of the step, one step per phone of the alignment (train-audio)."""
    split = load_audio(tiny_corpus, "train_audio")
    frames = ScoringData(tiny_corpus).frame_phones("train_audio", {i: len(f) for i, f in zip(split.ids, split.feats)})
    ids, units, starts = [], [], []
    for uid, phones in frames.items():
        change = np.flatnonzero(np.concatenate([[True], phones[1:] != phones[:-1]]))
        ids.append(uid)
        units.append(phones[change].astype(np.int64))
        starts.append(change)
    return UnitSequences(ids, units, starts, len(PHONES))


def _phone_error(em_phones, corpus):
    from usrasr.evaluate.scoring import compute_error_rate

    refs = ScoringData(corpus).phones("train_audio")
    return compute_error_rate({k: refs[k] for k in em_phones}, em_phones, unit="phone").error_rate


def test_word_em_repairs_a_table_with_swapped_phones(tiny_corpus, pure_units, tmp_path):
    em = WordLevelEM.from_corpus(tiny_corpus, tmp_path / "graphs")
    truth = torch.full((len(PHONES), len(PHONES)), -9.0)
    truth[torch.arange(len(PHONES)), torch.arange(len(PHONES))] = 0.0
    truth = truth.log_softmax(-1)
    decoded = em.decode(pure_units, truth)
    assert len(decoded.steps) == len(pure_units.ids)
    forked = WordLevelEM(em.lang, em.graph, workers=2).decode(pure_units, truth)  # two decoding processes
    assert forked.words == decoded.words and forked.cost == pytest.approx(decoded.cost)
    assert all((forked.steps[k] == v).all() for k, v in decoded.steps.items())
    assert _phone_error(decoded.phones(), tiny_corpus) < 10  # runs of one phone merge into one unit

    # Swap the emissions of two frequent vowels and two frequent consonants: the phone
    # bigram cannot tell all such swaps apart, the word LM must.
    swapped = truth.clone()
    for a, b in (("AH", "IH"), ("T", "D")):
        i, j = PHONES.index(a), PHONES.index(b)
        swapped[[i, j]] = swapped[[j, i]]
    before = em.decode(pure_units, swapped)
    tables, after, _ = em.iterate(pure_units, swapped, 3)
    assert after.cost_per_step < before.cost_per_step
    assert _phone_error(em.decode(pure_units, tables).phones(), tiny_corpus) < _phone_error(before.phones(),
                                                                                         tiny_corpus) - 5
    for phone in ("AH", "IH", "T", "D"):
        assert int(tables[PHONES.index(phone)].argmax()) == PHONES.index(phone)


def test_train_with_segment_units_and_word_em_writes_its_stage(tiny_corpus, tmp_path):
    out = tmp_path / "exp"
    result = CliRunner().invoke(cli, [
        "train", "--corpus", str(tiny_corpus), "--out", str(out), "--units", "segments",
        "--set", "num_units=20", "--set", "restarts=2", "--set", "iterations=3", "--set", "oracle_iterations=3",
        "--set", "word_em_iterations=2", "--set", "word_em_screen_iterations=1",
        "--set", "self_training_rounds=0", "--set", "supervised_oracle=false"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    word = summary["word_em"]
    assert word["chosen_restarts"][0] in (0, 1) and len(word["cost_history"]) == 2
    assert 0 <= word["per_train"] <= 100 and "cost_per_step" in word["oracle"]
    labels = (out / "pseudo_labels" / "round0.txt").read_text().splitlines()
    assert labels and all(p in PHONES for line in labels for p in line.split()[1:])
    assert "word-level EM" in result.output
