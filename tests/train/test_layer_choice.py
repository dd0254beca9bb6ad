"""The label-free layer scores and choice (usrasr.train.units.layer_choice)."""

import numpy as np
import pytest
import torch

from usrasr.corpus.reader import AudioSplit
from usrasr.train.units.kmeans import UnitSequences
from usrasr.models.pretrained import POSTERIORS
from usrasr.train.units.layer_choice import (
    CRITERIA,
    CRITERION,
    PHONE_HEAD_CRITERION,
    LayerJudge,
    bigram_entropy,
    choose_layer_and_k,
    pseudo_phone_information,
)


def _units(seqs, k):
    return UnitSequences([str(i) for i in range(len(seqs))], [np.array(s) for s in seqs],
                         [np.arange(len(s)) for s in seqs], k)


def test_bigram_entropy_against_a_direct_count():
    assert bigram_entropy(_units([[0, 1, 0, 1, 0, 1]], 2)) == pytest.approx(0.0)  # each unit fixes the next
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 4, 400) for _ in range(5)]
    pairs = np.concatenate([np.stack([s[:-1], s[1:]], 1) for s in seqs])
    joint = np.zeros((4, 4))
    np.add.at(joint, (pairs[:, 0], pairs[:, 1]), 1)
    p = joint / joint.sum()
    conditional = -(p * np.log(p / p.sum(1, keepdims=True))).sum()
    assert bigram_entropy(_units(seqs, 4)) == pytest.approx(conditional)


def test_units_that_follow_the_voice_have_more_pseudo_speaker_information():
    rng = np.random.default_rng(0)
    # two clearly different voices (fbank levels), so the pseudo-speaker clusters find them
    feats = [torch.randn(50, 8) + (5.0 if i % 2 else -5.0) for i in range(20)]
    judge = LayerJudge(AudioSplit([str(i) for i in range(20)], feats, ["s"] * 20, ["v"] * 20))
    content = [rng.integers(0, 6, 50) for _ in range(20)]
    voiced = [u % 3 + 3 * (i % 2) for i, u in enumerate(content)]  # unit ids split by voice
    units = _units(content, 6)
    plain = judge.scores(units, content, 1.5, 1.0)["pseudo_speaker_information"]
    by_voice = judge.scores(units, voiced, 1.5, 1.0)["pseudo_speaker_information"]
    assert plain < 0.05 and by_voice > 0.3


def test_the_choice_takes_the_best_layer_by_the_criterion_then_the_k_of_highest_gain():
    _, sign = CRITERIA[CRITERION]
    scores = [{"layer": layer, "k": k, "gain": 0.1 * k + layer, CRITERION: sign * (layer == 1) + 0.01 * k}
              for layer in range(3) for k in (1, 2)]
    (layer, k), reason = choose_layer_and_k(scores)
    assert (layer, k) == (1, 2) and CRITERION.replace("_", " ") in reason
    assert choose_layer_and_k([s for s in scores if s["layer"] == 0])[0] == (0, 2)


def test_phone_posteriors_face_the_chosen_layer_on_warp_consistency():
    """The bigram entropy ranks k-means layers only: posteriors (another inventory) would win it on rate alone."""
    layers = [{"layer": layer, "k": 100, "gain": 0.1, "bigram_entropy": 2.7 - 0.1 * layer,
               "warp_consistency": 0.63 + 0.01 * layer} for layer in range(3)]
    posteriors = {"layer": POSTERIORS, "k": 54, "gain": 0.03, "bigram_entropy": 2.84, "warp_consistency": 0.47}
    (layer, k), reason = choose_layer_and_k([*layers, posteriors])
    assert (layer, k) == (0, 100) and "bigram entropy" in reason and "phone posteriors" in reason
    (layer, k), reason = choose_layer_and_k([*layers, {**posteriors, "warp_consistency": 0.9}])
    assert (layer, k) == (POSTERIORS, 54)
    assert choose_layer_and_k([posteriors])[0] == (POSTERIORS, 54)


def test_pseudo_phone_information_is_pnmi_against_the_pseudo_phones():
    rng = np.random.default_rng(0)
    phones = [rng.integers(0, 5, 300) for _ in range(4)]
    assert pseudo_phone_information([p * 2 + 1 for p in phones], phones, 11) == pytest.approx(1.0)  # relabelled
    assert pseudo_phone_information([rng.integers(0, 10, 300) for _ in phones], phones, 10) < 0.03
    halves = [p // 2 for p in phones]  # units merge pairs of phones: part of the information
    joint = np.zeros((3, 5))
    for u, p in zip(halves, phones):
        np.add.at(joint, (u, p), 1)
    q = joint / joint.sum()
    mutual = (q[q > 0] * np.log(q[q > 0] / (q.sum(1, keepdims=True) @ q.sum(0, keepdims=True))[q > 0])).sum()
    h = -(q.sum(0) * np.log(q.sum(0))).sum()
    assert pseudo_phone_information(halves, phones, 3) == pytest.approx(mutual / h)


def test_an_encoder_with_a_phone_head_is_judged_by_its_pseudo_phones():
    layers = [{"layer": layer, "k": 100, "gain": 0.1, "bigram_entropy": 2.7 - 0.1 * layer,
               PHONE_HEAD_CRITERION: 0.40 + 0.01 * layer, "warp_consistency": 0.6} for layer in range(4)]
    (layer, _), reason = choose_layer_and_k(layers)
    assert layer == 3 and "pseudo phone information" in reason
    assert choose_layer_and_k(layers, CRITERION)[0][0] == 0
    without_head = [{k: v for k, v in s.items() if k != PHONE_HEAD_CRITERION} for s in layers]
    assert choose_layer_and_k(without_head)[0][0] == 0
