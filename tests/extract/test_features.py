"""`usrasr features` and `usrasr train --units encoder` through the real loading path: tiny
random-weight transformers models, Kaldi ark/scp and .npy folders written in the test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from lhotse import load_manifest

from tests.models.test_pretrained import CONFIGS, save_tiny_model, write_kaldi, write_npy
from usrasr.cli import cli
from usrasr.models.pretrained import open_layer_source

# small and fast, like tests/train/test_train.py's FAST, without scoring or self-training
FAST = ["--no-score", "--set", "num_units=12", "--set", "kmeans_iterations=5", "--set", "restarts=1",
        "--set", "iterations=3", "--set", "select_iterations=3", "--set", "self_training_rounds=0"]


def run(*args, ok: bool = True) -> str:
    result = CliRunner().invoke(cli, [*map(str, args)])
    assert (result.exit_code == 0) == ok, result.output
    return result.output


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("models")
    return {name: save_tiny_model(root / name, name, num_hidden_layers=2) for name in CONFIGS}


def cuts_path(corpus, split: str):
    return corpus / "manifests" / f"cuts_{split}.jsonl.gz"


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_features_stores_a_layer_that_lhotse_reads_back(tiny_corpus, tiny_models, tmp_path, model_type):
    out = tmp_path / "feats"
    output = run("features", "--encoder", tiny_models[model_type], "--layer", 1, "--cuts", cuts_path(tiny_corpus, "test"),
                 "--out", out)
    assert "test: 6 cuts" in output and "32-dim frames every 20 ms" in output
    cuts = list(load_manifest(out / "cuts_test.jsonl.gz"))
    expected = open_layer_source(tiny_models[model_type]).encode(cuts, [1])[0]
    for cut, reference in zip(cuts, expected):
        assert cut.features.frame_shift == 0.02 and cut.features.type == "encoder-layer1"
        stored = cut.load_features()
        assert len(stored) == cut.num_frames and abs(len(stored) - len(reference)) <= 1  # Lhotse's frame count
        n = min(len(stored), len(reference))
        # lilcom rounds to steps of 2^-8; the margin is the float rounding of encoding twice
        np.testing.assert_allclose(stored[:n], reference[:n].numpy(), rtol=0, atol=2 ** -9 * 1.01)


def test_features_resume_their_finished_shards_and_refuse_other_settings(tiny_corpus, tiny_models, tmp_path):
    out = tmp_path / "feats"
    args = ["features", "--encoder", tiny_models["hubert"], "--cuts", cuts_path(tiny_corpus, "test"), "--out", out,
            "--storage", "numpy", "--shard-size", 2]
    run(*args, "--layer", 2)
    first = {c.id: c.load_features() for c in load_manifest(out / "cuts_test.jsonl.gz")}
    (out / "test" / "shard-00002.jsonl.gz").unlink()  # as if killed while writing the last shard
    (out / "cuts_test.jsonl.gz").unlink()
    assert "(2 cuts, 2 shards reused)" in run(*args, "--layer", 2)
    again = {c.id: c.load_features() for c in load_manifest(out / "cuts_test.jsonl.gz")}
    assert again.keys() == first.keys() and all(np.array_equal(again[k], first[k]) for k in first)  # numpy: exact
    assert "holds other features (layer: 2 -> 1)" in run(*args, "--layer", 1, ok=False)
    assert "layer 3 is out of range" in run(*args[:-4], "--out", tmp_path / "other", "--layer", 3, ok=False)
    assert "cuts manifest not found" in run("features", "--encoder", tiny_models["hubert"], "--layer", 1, "--cuts",
                                            tmp_path / "none.jsonl.gz", "--out", tmp_path / "x", ok=False)


def test_train_takes_units_from_a_transformers_model_and_chooses_its_layer(tiny_corpus, tiny_models, tmp_path):
    out = tmp_path / "exp"
    run("-q", "train", "--corpus", tiny_corpus, "--out", out, "--units", "encoder",
        "--set", f"encoder={tiny_models['wavlm']}", *FAST)
    selection = json.loads((out / "units" / "selection.json").read_text())
    assert sorted(c["layer"] for c in selection["candidates"]) == [0, 1, 2]
    assert all(0 <= c["warp_consistency"] <= 1 for c in selection["candidates"])
    assert (out / "pseudo_labels" / "round0.txt").read_text().strip()
    output = run("train", "--corpus", tiny_corpus, "--out", tmp_path / "bad", "--units", "encoder",
                 "--set", f"encoder={tiny_models['wavlm']}", "--set", "unit_layer=3", *FAST, ok=False)
    assert "layer 3 is out of range" in output and "set unit_layer" in output


@pytest.mark.parametrize("kind", ["features", "scp", "npy"])
def test_train_takes_units_from_features_computed_elsewhere(tiny_corpus, tiny_models, tmp_path, kind):
    cuts = [c for split in ("train_audio", "test") for c in load_manifest(cuts_path(tiny_corpus, split))]
    if kind == "features":
        encoder = tmp_path / "feats"
        run("features", "--encoder", tiny_models["data2vec-audio"], "--layer", 2, "--out", encoder,
            "--cuts", cuts_path(tiny_corpus, "train_audio"), "--cuts", cuts_path(tiny_corpus, "test"))
    elif kind == "scp":
        write_kaldi(tmp_path / "kaldi", cuts)
        encoder = tmp_path / "kaldi" / "feats.scp"
    else:
        write_npy(tmp_path / "npy", cuts)
        encoder = tmp_path / "npy"
    out = tmp_path / "exp"
    run("-q", "train", "--corpus", tiny_corpus, "--out", out, "--units", "encoder", "--set", f"encoder={encoder}",
        "--set", "kmeans_k_choices=8,12", *FAST)
    selection = json.loads((out / "units" / "selection.json").read_text())
    assert selection["layer"] == 0 and selection["k"] in (8, 12) and "the only one" in selection["reason"]
    assert (out / "pseudo_labels" / "round0.txt").read_text().strip()


def test_train_names_the_cuts_that_the_features_miss(tiny_corpus, tmp_path):
    cuts = list(load_manifest(cuts_path(tiny_corpus, "train_audio")))
    write_npy(tmp_path / "npy", cuts)  # train-audio alone: the test split has none
    output = run("train", "--corpus", tiny_corpus, "--out", tmp_path / "exp", "--units", "encoder",
                 "--set", f"encoder={tmp_path / 'npy'}", *FAST, ok=False)
    assert "has no features for 6 of the 6 cuts of" in output and "cuts_test.jsonl.gz" in output
    assert "usrasr features" in output and "Traceback" not in output
