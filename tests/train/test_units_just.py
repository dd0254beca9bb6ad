"""Units from a JUST encoder (`usrasr pretrain --method just`): its phone posteriors beside its layers."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from usrasr.cli import cli
from usrasr.corpus.reader import load_audio
from usrasr.models.encoder import EncoderConfig, SslEncoder, layer_features, save_encoder
from usrasr.models.pretrained import POSTERIORS, open_layer_source
from usrasr.train.config import TrainConfig
from usrasr.train.odm_stage import segment_split
from usrasr.train.units.sources import encoder_frames, encoder_units
from usrasr.utils.errors import UsrasrError

PHONES = ["<blk>", "a", "e", "i", "k", "s", "t"]
FAST = ["--set", "num_units=6", "--set", "kmeans_iterations=3", "--set", "select_iterations=2",
        "--set", "restarts=1", "--set", "iterations=3", "--set", "oracle_iterations=2",
        "--set", "supervised_oracle=false", "--set", "self_training_rounds=0"]


def _encoder(path, subsampling: int, phone_head: bool = True):
    torch.manual_seed(subsampling)
    encoder = SslEncoder(EncoderConfig(arch="tdnn", hidden_dim=16, num_layers=2, subsampling=subsampling))
    head = nn.Linear(16, len(PHONES)) if phone_head else None
    save_encoder(path, encoder, {"method": "just" if phone_head else "bestrq", "steps": 0}, phone_head=head,
                 phones=PHONES if phone_head else None)
    return encoder, head


def _train(*args, ok: bool = True) -> str:
    result = CliRunner().invoke(cli, ["train", *map(str, args)])
    assert (result.exit_code == 0) == ok, result.output
    return result.output


@pytest.mark.parametrize("subsampling", [1, 2])  # 10 and 20 ms encoders
def test_posterior_units_are_each_fbank_frames_best_non_blank_phone(tiny_corpus, tmp_path, subsampling):
    encoder, head = _encoder(tmp_path / "encoder.pt", subsampling)
    source = open_layer_source(tmp_path / "encoder.pt")
    assert source.phones == PHONES and source.frame_shift == pytest.approx(0.01 * subsampling)
    split = load_audio(tiny_corpus, "train_audio")
    config = TrainConfig(units="encoder", encoder=str(tmp_path / "encoder.pt"), encoder_units="posteriors",
                         merge_runs=False, mode_width=1)
    units = encoder_units(config, {"train_audio": split}, tiny_corpus, tmp_path / "exp")["train_audio"]
    assert units.num_units == len(PHONES) - 1 and units.ids == split.ids
    last = layer_features(encoder, split.feats)[-1]
    for fbank, frames, starts, top in zip(split.feats, units.units, units.starts, last):
        # independent reference: the head's best non-blank phone (id - 1) of each encoder frame, held for
        # `subsampling` fbank frames, the last encoder frame covering any fbank frames left over
        with torch.inference_mode():
            best = head(top)[:, 1:].argmax(-1).numpy()
        expected = np.repeat(best, subsampling)[: len(fbank)]
        expected = np.concatenate([expected, np.full(len(fbank) - len(expected), best[-1])])
        assert np.array_equal(frames, expected) and np.array_equal(starts, np.arange(len(fbank)))
    assert torch.load(tmp_path / "exp" / "units" / "codebook.pt")["phones"] == PHONES


def test_merged_posterior_units_start_on_fbank_frames(tiny_corpus, tmp_path):
    _encoder(tmp_path / "encoder.pt", 2)
    split = load_audio(tiny_corpus, "train_audio")
    config = TrainConfig(units="encoder", encoder=str(tmp_path / "encoder.pt"), encoder_units="posteriors",
                         mode_width=1)
    units = encoder_units(config, {"train_audio": split}, tiny_corpus, tmp_path / "exp")["train_audio"]
    for fbank, seq, starts in zip(split.feats, units.units, units.starts):
        assert starts[0] == 0 and np.all(np.diff(starts) > 0) and starts[-1] < len(fbank)
        assert np.all(np.diff(starts) % 2 == 0)  # a 20 ms unit changes only on every second fbank frame
        assert np.all(seq[1:] != seq[:-1]) and seq.max() < len(PHONES) - 1


def test_auto_judges_the_posteriors_beside_the_layers_without_labels(tiny_corpus, tmp_path):
    _encoder(tmp_path / "encoder.pt", 2)
    exp = tmp_path / "exp"
    _train("--corpus", tiny_corpus, "--out", exp, "--units", "encoder", "--set", f"encoder={tmp_path / 'encoder.pt'}",
           *FAST)
    selection = json.loads((exp / "units" / "selection.json").read_text())
    candidates = selection["candidates"]
    assert [(c["layer"], c["k"]) for c in candidates] == [(0, 6), (1, 6), (2, 6), (POSTERIORS, len(PHONES) - 1)]
    assert all(0 <= c["warp_consistency"] <= 1 and 0 <= c["pnmi"] <= 1 for c in candidates)
    # the phone head judges the layers: PNMI against its own most likely phones
    best = max((c for c in candidates if c["layer"] != POSTERIORS), key=lambda c: c["pseudo_phone_information"])
    posteriors = candidates[-1]
    assert "pseudo_phone_information" not in posteriors
    expected = POSTERIORS if posteriors["warp_consistency"] > best["warp_consistency"] else best["layer"]
    assert selection["layer"] == expected and "pseudo phone information" in selection["reason"]
    summary = json.loads((exp / "summary.json").read_text())
    assert 0 < summary["unit_quality"]["train_audio"]["pnmi"] <= 1

    layers_only = tmp_path / "layers"
    _train("--corpus", tiny_corpus, "--out", layers_only, "--units", "encoder",
           "--set", f"encoder={tmp_path / 'encoder.pt'}", "--set", "encoder_units=layer", *FAST)
    chosen = json.loads((layers_only / "units" / "selection.json").read_text())
    assert POSTERIORS not in [c["layer"] for c in chosen["candidates"]]
    assert all(0 <= c["pseudo_phone_information"] <= 1 for c in chosen["candidates"])


def test_posteriors_of_an_encoder_without_a_phone_head_are_a_one_line_error(tiny_corpus, tmp_path):
    _encoder(tmp_path / "encoder.pt", 2, phone_head=False)
    assert open_layer_source(tmp_path / "encoder.pt").phones is None
    output = _train("--corpus", tiny_corpus, "--out", tmp_path / "exp", "--units", "encoder",
                    "--set", f"encoder={tmp_path / 'encoder.pt'}", "--set", "encoder_units=posteriors", *FAST,
                    ok=False)
    assert "has no phone posteriors" in output and "--method just" in output and "Traceback" not in output
    # auto: an encoder without a head offers its layers alone
    _train("--corpus", tiny_corpus, "--out", tmp_path / "auto", "--units", "encoder",
           "--set", f"encoder={tmp_path / 'encoder.pt'}", *FAST)
    selection = json.loads((tmp_path / "auto" / "units" / "selection.json").read_text())
    assert [c["layer"] for c in selection["candidates"]] == [0, 1, 2]
    assert "bigram entropy" in selection["reason"] and "pseudo_phone_information" not in selection["candidates"][0]


def test_encoder_units_config_surface():
    with pytest.raises(UsrasrError, match="encoder_units must be one of auto, layer, posteriors"):
        TrainConfig(encoder_units="phones")
    with pytest.raises(UsrasrError, match="set unit_layer=N or encoder_units=posteriors"):
        TrainConfig(units="encoder", encoder="x", objective="odm")
    TrainConfig(units="encoder", encoder="x", objective="odm", encoder_units="posteriors")
    TrainConfig(units="encoder", encoder="x", objective="odm", unit_layer=2)
    assert "encoder_units: auto" in TrainConfig.show() and "--method just" in TrainConfig.meanings()["encoder_units"]


def test_odm_classifies_the_posteriorgram_at_10_ms(tiny_corpus, tmp_path):
    encoder, head = _encoder(tmp_path / "encoder.pt", 2)
    split = load_audio(tiny_corpus, "train_audio")
    config = TrainConfig(units="encoder", encoder=str(tmp_path / "encoder.pt"), encoder_units="posteriors",
                         objective="odm", odm_dim=0)
    frames = encoder_frames(config, split, tiny_corpus, "train_audio")
    assert [f.shape for f in frames] == [(len(f), len(PHONES)) for f in split.feats]
    assert torch.allclose(frames[0].exp().sum(1), torch.ones(len(frames[0])), atol=1e-5)  # log-posteriors
    segmented = segment_split(split, config, frames)
    fbank_segments = segment_split(split, TrainConfig(odm_dim=0))
    assert [len(b) for b in segmented.boundaries] == [len(b) for b in fbank_segments.boundaries]  # fbank's segments
    assert segmented.features[0].shape[1] == len(PHONES) * config.segment_parts
    out = tmp_path / "odm"
    _train("--corpus", tiny_corpus, "--out", out, "--objective", "odm", "--units", "encoder",
           "--set", f"encoder={tmp_path / 'encoder.pt'}", "--set", "encoder_units=posteriors",
           "--set", "odm_restarts=2", "--set", "odm_steps=3", "--set", "odm_top=200", "--set", "odm_dim=8",
           "--set", "supervised_oracle=false", "--set", "self_training_rounds=0")
    assert json.loads((out / "summary.json").read_text())["odm"]["segments"] > 0
