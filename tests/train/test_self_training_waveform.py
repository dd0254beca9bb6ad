"""`usrasr train --set ctc_init=DIR` from a local transformers model dir: self-training fine-tunes
it on the train-audio waveform, and `usrasr decode --model` reads its checkpoint alone."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from click.testing import CliRunner
from lhotse import Recording

from tests.models.test_pretrained import CONFIGS, save_tiny_model
from tests.train.test_train import FAST, train
from usrasr.cli import cli
from usrasr.corpus.layout import CorpusLayout
from usrasr.decode.pipeline import build_recognizer
from usrasr.decode.search import SearchOptions
from usrasr.models.acoustic import load_model

pytest.importorskip("transformers")

ONE_ROUND = [*FAST, "--no-score", "--set", "self_training_rounds=1", "--set", "ctc_steps=3",
             "--set", "ctc_batch_size=4", "--set", "supervised_oracle=false"]


@pytest.mark.parametrize("model_type", list(CONFIGS))
def test_self_training_fine_tunes_a_transformers_model_that_decode_reads_alone(tiny_corpus, tmp_path, model_type):
    folder = save_tiny_model(tmp_path / "hf", model_type)
    out = tmp_path / "exp"
    train("--corpus", tiny_corpus, "--out", out, *ONE_ROUND, "--set", f"ctc_init={folder}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r.get("stage") == "ctc"]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    loaded = load_model(out / "round1" / "model.pt")
    assert loaded.model.input == "waveform" and loaded.model.config.model_type == model_type
    shutil.rmtree(folder)  # the checkpoint is self-contained
    layout = CorpusLayout(tiny_corpus)
    recognizer = build_recognizer(loaded, layout.lang_dir, "phone", layout.lm("phone"), out / "graphs",
                                  SearchOptions(), torch.device("cpu"))
    assert recognizer.search.seconds_per_frame == 0.02  # the model's frames, not fbank's
    wav = sorted((tiny_corpus / "audio").glob("test-*.wav"))[0]
    result = CliRunner().invoke(cli, ["-q", "decode", "--model", str(out / "round1" / "model.pt"), "--unit", "phone",
                                      "--format", "jsonl", str(wav)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip())
    assert record["id"] == wav.stem and record["duration"] == pytest.approx(Recording.from_file(wav).duration, abs=1e-3)
    assert all(p["end"] <= record["duration"] + 0.02 for p in record["phones"])


def test_fbank_distortions_are_refused_for_a_waveform_model(tiny_corpus, tmp_path):
    folder = save_tiny_model(tmp_path / "hf", "hubert")
    result = CliRunner().invoke(cli, ["train", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "exp"),
                                      *ONE_ROUND, "--set", f"ctc_init={folder}", "--set", "ctc_warp=0.1"])
    assert result.exit_code != 0
    assert "ctc_warp and ctc_spec_augment distort fbank, and this model reads the waveform" in result.output


def test_ctc_init_layer_keeps_the_lower_blocks_and_a_layer_out_of_range_is_refused(tiny_corpus, tmp_path):
    folder = save_tiny_model(tmp_path / "hf", "wav2vec2")
    out = tmp_path / "exp"
    train("--corpus", tiny_corpus, "--out", out, *ONE_ROUND, "--set", f"ctc_init={folder}", "--set", "ctc_init_layer=1")
    assert len(load_model(out / "round1" / "model.pt").model.encoder.encoder.layers) == 1
    result = CliRunner().invoke(cli, ["train", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "exp2"),
                                      *ONE_ROUND, "--set", f"ctc_init={folder}", "--set", "ctc_init_layer=99"])
    assert result.exit_code != 0 and "ctc_init_layer" in result.output
