"""``usrasr analyze similarity | probe | correlate`` end to end on the tiny corpus, with a tiny
random-weight encoder (20 ms frames against fbank's 10 ms)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from lhotse import load_manifest

from usrasr.cli import cli
from usrasr.corpus.scoring import ScoringData
from usrasr.lang.phones import PHONES
from usrasr.models.encoder import EncoderConfig, SslEncoder, save_encoder

FAST_TRAIN = ["--set", "num_units=6", "--set", "kmeans_iterations=3", "--set", "restarts=1", "--set", "iterations=3",
              "--set", "oracle_iterations=2", "--set", "supervised_oracle=false", "--set", "self_training_rounds=0"]


def run(*args, code=0):
    result = CliRunner().invoke(cli, [*map(str, args)])
    assert result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("encoder") / "encoder.pt"
    torch.manual_seed(0)
    save_encoder(path, SslEncoder(EncoderConfig(hidden_dim=16, num_layers=2, num_heads=2, dropout=0.0)),
                 {"method": "bestrq", "steps": 0})
    return path


def test_similarity_of_fbank_and_every_layer_writes_json_and_heatmap(tiny_corpus, encoder, tmp_path):
    result = run("analyze", "similarity", "--corpus", tiny_corpus, "--a", "fbank", "--b", encoder,
                 "--utterances", 0, "--frames-per-utterance", 40, "--batch-frames", 200, "--out", tmp_path)
    record = json.loads((tmp_path / "similarity.json").read_text())
    assert record["a_layers"] == ["fbank"] and record["b_layers"] == ["L0", "L1", "L2"]
    assert record["frame_shifts"] == [0.01, 0.02]
    assert set(record["measures"]) == {"linear_cka", "rbf_cka", "svcca", "pwcca"}
    for matrix in record["measures"].values():
        assert np.array(matrix).shape == (1, 3) and np.all(np.abs(matrix) <= 1 + 1e-6)
    assert record["minibatches"] >= 3 and record["frames"] >= 3 * 200
    assert (tmp_path / "similarity.png").read_bytes()[:4] == b"\x89PNG"
    assert "linear_cka" in result.output


def test_layers_of_one_encoder_against_themselves_are_one_on_the_diagonal(tiny_corpus, encoder, tmp_path):
    run("analyze", "similarity", "--corpus", tiny_corpus, "--a", encoder, "--a-layers", "0,2", "--b-layers", "0,2",
        "--measures", "linear_cka,svcca", "--batch-frames", 100, "--out", tmp_path)
    record = json.loads((tmp_path / "similarity.json").read_text())
    for matrix in record["measures"].values():
        matrix = np.array(matrix)
        np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-6)
        np.testing.assert_allclose(matrix, matrix.T, atol=1e-9)


def test_bad_options_are_one_line_errors(tiny_corpus, encoder, tmp_path):
    result = run("analyze", "similarity", "--corpus", tiny_corpus, "--a", encoder, "--measures", "cka",
                 "--out", tmp_path, code=2)
    assert "unknown cka" in result.output and len(result.output.strip().splitlines()) == 1
    result = run("analyze", "similarity", "--corpus", tiny_corpus, "--a", encoder, "--a-layers", "5",
                 "--out", tmp_path, code=2)
    assert "layers 0..2" in result.output
    result = run("analyze", "probe", "--corpus", tiny_corpus, "--encoder", encoder, "--eval-split", "train_audio",
                 "--out", tmp_path, code=2)
    assert "unseen voices" in result.output


def _label_features(corpus, folder):
    """.npy features that are each 10 ms frame's one-hot phone and one-hot voice (from the scoring
    alignments): a linear probe must read both perfectly."""
    folder.mkdir()
    scoring = ScoringData(corpus)
    voices = {}
    for split in ("train_audio", "test"):
        cuts = list(load_manifest(corpus / "manifests" / f"cuts_{split}.jsonl.gz"))
        phones = scoring.frame_phones(split, {c.id: c.num_frames for c in cuts})
        for cut in cuts:
            voice = voices.setdefault(cut.supervisions[0].custom["voice"], len(voices))
            feats = np.zeros((cut.num_frames, len(PHONES) + 20), dtype=np.float32)
            feats[np.arange(cut.num_frames), phones[cut.id]] = 1
            feats[:, len(PHONES) + voice] = 1
            np.save(folder / f"{cut.id}.npy", feats + 0.01 * np.random.default_rng(0).normal(size=feats.shape))


def test_probe_reads_phones_and_voices_where_a_layer_carries_them(tiny_corpus, encoder, tmp_path):
    _label_features(tiny_corpus, tmp_path / "labels")
    run("analyze", "probe", "--corpus", tiny_corpus, "--encoder", tmp_path / "labels", "--utterances", 0,
        "--frames-per-utterance", 0,
        "--no-cmvn", "--out", tmp_path / "oracle")  # per-utterance normalisation would erase a constant voice
    oracle = json.loads((tmp_path / "oracle" / "probe.json").read_text())
    # every test frame whose phone train-audio has can be read; a tiny corpus's test may hold a phone it lacks
    scoring = ScoringData(tiny_corpus)
    frames = {split: np.concatenate(list(scoring.frame_phones(split, {
        c.id: c.num_frames for c in load_manifest(tiny_corpus / "manifests" / f"cuts_{split}.jsonl.gz")}).values()))
        for split in ("train_audio", "test")}
    readable = np.isin(frames["test"], frames["train_audio"]).mean()
    assert readable > 0.8 and oracle["layers"][0]["phone_accuracy"] > readable - 0.02
    assert oracle["layers"][0]["voice_accuracy"] > 0.99
    result = run("analyze", "probe", "--corpus", tiny_corpus, "--encoder", encoder, "--utterances", 0,
                 "--out", tmp_path / "encoder")
    record = json.loads((tmp_path / "encoder" / "probe.json").read_text())
    assert [r["layer"] for r in record["layers"]] == ["L0", "L1", "L2"]
    assert all(0 <= r["phone_accuracy"] <= 1 and 0 <= r["voice_accuracy"] <= 1 for r in record["layers"])
    assert 0 < record["chance"]["phone"] < 1 and record["voices"] >= 2
    assert "phone_accuracy" in result.output and (tmp_path / "encoder" / "probe.tsv").exists()
    assert (tmp_path / "encoder" / "probe.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_correlate_gathers_every_measure_of_train_runs(tiny_corpus, encoder, tmp_path):
    run("analyze", "probe", "--corpus", tiny_corpus, "--encoder", encoder, "--out", tmp_path / "probe")
    experiments = []
    for layer in range(3):
        exp = tmp_path / f"layer{layer}"
        run("train", "--corpus", tiny_corpus, "--out", exp, "--units", "encoder", "--set", f"encoder={encoder}",
            "--set", f"unit_layer={layer}", *FAST_TRAIN)
        experiments.append(exp)
    (encoder.parent / "summary.json").write_text(json.dumps({"final": {"anchor_loss": 5.0, "anchor_accuracy": 0.1}}))
    result = run("analyze", "correlate", *experiments, "--probe", tmp_path / "probe" / "probe.json",
                 "--out", tmp_path / "corr")
    record = json.loads((tmp_path / "corr" / "correlation.json").read_text())
    assert [r["layer"] for r in record["rows"]] == [0, 1, 2]
    for row in record["rows"]:
        assert all(row[m] is not None for m in ("phone_probe", "voice_probe", "pnmi", "oracle_hmm_per",
                                                "seqce_per", "pretrain_loss", "masked_accuracy"))
    table = record["spearman"]
    assert table["pnmi"]["pnmi"]["rho"] == pytest.approx(1.0) and table["pnmi"]["oracle_hmm_per"]["n"] == 3
    assert table["pretrain_loss"]["pnmi"]["rho"] is None  # one encoder: no variation to rank
    assert "spearman_rho" in result.output
    assert run("analyze", "correlate", experiments[0], code=2).output.count("\n") == 1
