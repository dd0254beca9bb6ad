"""`usrasr align` end to end on the tiny corpus."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from usrasr.cli import cli

FAST = ["--min-count", "2", "--clusters", "20", "--text-words", "60", "--dim", "8", "--restarts", "2",
        "--epochs", "1", "--steps", "30"]


def _align(*args):
    result = CliRunner().invoke(cli, ["align", *map(str, args)])
    return result


@pytest.mark.parametrize("segments, options", [("oracle", []), ("pauses", []), ("oracle", ["--cluster-oracle"])])
def test_align_writes_the_map_the_dictionary_and_a_scored_report(tiny_corpus, tmp_path, segments, options):
    out = tmp_path / segments
    result = _align("--corpus", tiny_corpus, "--segments", segments, "--out", out, *FAST, *options)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["segments"] == segments and report["spoken_word_types"] >= 2
    assert report["criterion"] == max(report["criteria"]) and len(report["criteria"]) == 2
    saved = np.load(out / "mapping.npz")
    w = saved["w"]
    np.testing.assert_allclose(w @ w.T, np.eye(8), atol=1e-8)
    assert saved["speech"].shape == (report["spoken_word_types"], 8) and len(saved["text_words"]) <= 60
    rows = (out / "dictionary.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["spoken_word", "segments", "example", "word", "csls", "cosine"]
    assert len(rows) - 1 == report["dictionary_pairs"] >= 1
    assert {r.split("\t")[3] for r in rows[1:]} <= set(saved["text_words"].tolist())
    diagnostic = report["diagnostic"]
    for stage in ("unsupervised", "supervised"):
        scores = diagnostic[stage]
        assert 0 <= scores["p@1"] <= scores["p@5"] <= 1
        assert 0 <= scores["dictionary_correct"] <= scores["dictionary_pairs"]
    assert diagnostic["unsupervised"]["criterion"] == pytest.approx(report["criterion"])
    if segments == "oracle":
        assert diagnostic["labelled_segments"] == 1.0
        # Without --cluster-oracle the types are the true words.
        assert (diagnostic["type_purity"] == 1.0) == (not options)


def test_pauses_without_transcripts_align_and_oracle_says_what_is_missing(tiny_corpus, tmp_path):
    blind = tmp_path / "blind"
    shutil.copytree(tiny_corpus, blind)
    shutil.rmtree(blind / "scoring")
    result = _align("--corpus", blind, "--segments", "pauses", "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.output
    assert "diagnostic" not in json.loads((tmp_path / "out" / "report.json").read_text())
    result = _align("--corpus", blind, "--segments", "oracle", "--out", tmp_path / "oracle", *FAST)
    assert result.exit_code == 2 and "scoring needs the corpus transcripts" in result.output


def test_decoded_segments_need_a_model(tiny_corpus, tmp_path):
    result = _align("--corpus", tiny_corpus, "--segments", "decoded", "--out", tmp_path, *FAST)
    assert result.exit_code == 2 and "--segments decoded needs --model" in result.output


def test_segments_pool_a_pretrained_encoder_layer(tiny_corpus, tmp_path):
    import torch

    from usrasr.models.encoder import EncoderConfig, SslEncoder, save_encoder

    torch.manual_seed(0)
    save_encoder(tmp_path / "encoder.pt", SslEncoder(EncoderConfig(hidden_dim=16, num_layers=2, num_heads=2)), {})
    out = tmp_path / "out"
    result = _align("--corpus", tiny_corpus, "--segments", "pauses", "--encoder", tmp_path / "encoder.pt",
                    "--layer", "1", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["encoder"].endswith("encoder.pt")
    result = _align("--corpus", tiny_corpus, "--segments", "pauses", "--encoder", tmp_path / "encoder.pt",
                    "--layer", "7", "--out", out, *FAST)
    assert result.exit_code == 2 and "--layer 7" in result.output
