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
    assert result.exit_code == 2 and "--segments decoded needs either --model" in result.output


@pytest.mark.slow
def test_decoded_segments_from_a_model_then_from_its_saved_word_times(tiny_corpus, tmp_path):
    import torch

    from usrasr.graph.hlg import read_lang
    from usrasr.models.acoustic import AcousticModelConfig, build_model, save_model

    # An untrained model: its decoding still spells words, with times, through HLG.
    lang = read_lang(tiny_corpus / "lang")
    torch.manual_seed(0)
    model = build_model(AcousticModelConfig(num_tokens=lang.num_model_tokens, hidden_dim=16, num_layers=2))
    save_model(tmp_path / "run" / "model.pt", model, lang.model_tokens, lang_dir=tiny_corpus / "lang")
    out = tmp_path / "decoded"
    result = _align("--corpus", tiny_corpus, "--segments", "decoded", "--model", tmp_path / "run" / "model.pt",
                    "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    words = [json.loads(line) for line in (out / "decoded_train_audio.jsonl").read_text().splitlines()]
    assert len(words) == 30
    report = json.loads((out / "report.json").read_text())
    assert report["segments"] == "decoded" and 0 <= report["diagnostic"]["unsupervised"]["p@1"] <= 1
    # Every segment is a decoded word span (its end cut at the last frame) of 8 frames or more.
    ends = {(w["id"], round(x["start"] * 100)): round(x["end"] * 100) for w in words for x in w["words"]}
    rows = [r.split("\t") for r in (out / "segments.tsv").read_text().splitlines()[1:]]
    assert len(rows) == report["num_segments"] >= 2
    assert all(int(b) <= ends[u, int(a)] and int(b) - int(a) >= 8 for u, a, b, _ in rows)

    again = tmp_path / "again"
    result = _align("--corpus", tiny_corpus, "--segments", "decoded", "--word-times",
                    out / "decoded_train_audio.jsonl", "--out", again, *FAST)
    assert result.exit_code == 0, result.output
    assert (again / "segments.tsv").read_text() == (out / "segments.tsv").read_text()
    assert not (again / "decoded_train_audio.jsonl").exists()


def test_word_times_of_other_utterances_are_refused(tiny_corpus, tmp_path):
    times = tmp_path / "other.jsonl"
    times.write_text(json.dumps({"id": "elsewhere", "words": [{"start": 0.0, "end": 0.5}]}) + "\n")
    result = _align("--corpus", tiny_corpus, "--segments", "decoded", "--word-times", times, "--out", tmp_path, *FAST)
    assert result.exit_code == 2 and "no word times of a train_audio utterance" in result.output


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
