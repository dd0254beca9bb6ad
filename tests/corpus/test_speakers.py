"""Pseudo-speakers clustered from the audio (speaker_field=cluster)."""

import json
import itertools

import numpy as np
import pytest
import torch

from tests.train.test_train import FAST, train
from usrasr.train.config import TrainConfig
from usrasr.corpus.speakers import cluster_purity, cluster_speakers, silhouette
from usrasr.utils.errors import UsrasrError


def synthetic_voices(voices=3, per_voice=12, seed=0):
    """Utterances whose long-term spectrum is their voice's, plus frame and utterance noise."""
    generator = torch.Generator().manual_seed(seed)
    spectra = torch.randn(voices, 80, generator=generator) * 3
    feats, labels = [], []
    for voice, utterance in itertools.product(range(voices), range(per_voice)):
        frames = int(torch.randint(40, 160, (1,), generator=generator))
        tilt = torch.randn(80, generator=generator) * 0.3  # sentence-to-sentence variation
        feats.append(spectra[voice] + tilt + torch.randn(frames, 80, generator=generator))
        labels.append(f"voice{voice}")
    return feats, labels


def test_clusters_recover_voices_and_choose_their_number():
    feats, labels = synthetic_voices()
    found = cluster_speakers(feats)
    assert found.chosen and found.num_clusters == 3
    assert cluster_purity(found.labels, labels) == 1.0 and cluster_purity(labels, found.labels) == 1.0
    given = cluster_speakers(feats, num_clusters=5)
    assert not given.chosen and given.num_clusters == 5 and cluster_purity(given.labels, labels) == 1.0


def test_large_splits_cluster_a_sample_and_place_the_rest():
    feats, labels = synthetic_voices(voices=4, per_voice=15, seed=1)
    found = cluster_speakers(feats, max_clustered=20)
    assert found.num_clusters == 4 and len(found.labels) == len(feats)
    assert cluster_purity(found.labels, labels) == 1.0


def test_silhouette_matches_its_definition():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(9, 2))
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    distances = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    values = []
    for i in range(len(points)):
        same = [distances[i, j] for j in range(len(points)) if labels[j] == labels[i] and j != i]
        own = sum(same) / len(same)
        other = min(np.mean([distances[i, j] for j in range(len(points)) if labels[j] == c])
                    for c in set(labels) - {labels[i]})
        values.append((other - own) / max(own, other))
    assert silhouette(distances, labels) == pytest.approx(np.mean(values))


def test_cluster_options_are_checked():
    TrainConfig(speaker_field="cluster", speaker_clusters=4)
    for bad in (dict(speaker_clusters=1), dict(speaker_clusters=-2), dict(speaker_field="diarised")):
        with pytest.raises(UsrasrError):
            TrainConfig(**bad)
    with pytest.raises(UsrasrError, match="at least 2 utterances"):
        cluster_speakers([torch.zeros(10, 80)])


def test_train_with_clustered_speakers(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    train("--corpus", tiny_corpus, "--out", out, *FAST, "--set", "speaker_field=cluster", "--set", "cmvn=speaker",
          "--set", "codebook_per_speaker=true", "--set", "speaker_emissions=true",
          "--set", "self_training_rounds=0", "--set", "supervised_oracle=false")
    speakers = json.loads((out / "summary.json").read_text())["speakers"]
    train_audio = speakers["train_audio"]
    assert 2 <= train_audio["count"] <= 20 and 0 < train_audio["purity_vs_voice"] <= 1
    assert speakers["test"]["count"] >= 2
