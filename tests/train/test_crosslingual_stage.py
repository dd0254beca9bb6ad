"""`usrasr train --objective crosslingual` end to end on the tiny corpus, with a random-weight just encoder."""

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from usrasr.cli import cli
from usrasr.corpus.reader import load_audio
from usrasr.models.acoustic import load_model
from usrasr.lang.ipa import articulatory_features
from usrasr.models.crosslingual import expected_lengths, universal_phone_model
from usrasr.models.encoder import ArticulatoryFeatures, EncoderConfig, SslEncoder, save_encoder

UNIVERSAL = ["<blk>", "s", "a", "i", "m", "t", "ʃ", "u", "o", "e", "n", "k", "d", "l", "r", "ə", "ɪ"]
FAST = ["--set", "ctc_steps=5", "--set", "hidden_dim=32", "--set", "num_layers=2", "--set", "supervised_oracle=false",
        "--set", "self_training_labels=phone"]


def _just_encoder(path, features=True):
    """A random-weight just encoder; ``features``: with the articulatory part of its head (panphon's)."""
    torch.manual_seed(0)
    names, rows = articulatory_features(UNIVERSAL[1:])
    kept = ArticulatoryFeatures(nn.Linear(16, len(names)), names, torch.tensor([[0] * len(names)] + rows).float())
    save_encoder(path, SslEncoder(EncoderConfig(arch="tdnn", hidden_dim=16, num_layers=2, dropout=0.0)),
                 {"method": "just"}, nn.Linear(16, len(UNIVERSAL)), UNIVERSAL, kept if features else None)
    return path


def _train(*args):
    return CliRunner().invoke(cli, ["train", *map(str, args)])


def test_crosslingual_start_labels_train_audio_and_self_trains(tiny_corpus, tmp_path):
    encoder = _just_encoder(tmp_path / "encoder.pt")
    out = tmp_path / "exp"
    result = _train("--corpus", tiny_corpus, "--out", out, "--objective", "crosslingual", "--set", f"encoder={encoder}",
                    "--set", "crosslingual_prior_scale=1", *FAST)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    start = summary["crosslingual"]
    reads = start["mapping"]["SH"]
    assert max(reads, key=reads.get) == "ʃ" and start["mapping"]["SIL"] == {"<blk>": 1.0}
    assert "per_test" in start and start["prior_scale"] == 1
    assert (out / "crosslingual" / "model.pt").exists() and "seqce" not in summary and "odm" not in summary
    labelled = {line.split()[0] for line in (out / "pseudo_labels" / "round0.txt").read_text().splitlines()}
    assert labelled <= set(load_audio(tiny_corpus, "train_audio").ids)
    kept = (out / "crosslingual" / "labels.txt").read_text()  # what --resume reads instead of decoding again
    assert kept == (out / "pseudo_labels" / "round0.txt").read_text()
    assert 0 <= summary["labels"]["round0"]["labels_per_train"] and "cross-lingual start" in result.output
    assert (out / "round1" / "model.pt").exists()
    # the LM scale the model decodes with, chosen without labels: its decodes as probable per word as held-out text
    lm_choice = json.loads((out / "crosslingual" / "lm_scale.json").read_text())
    checkpoint = torch.load(out / "crosslingual" / "model.pt")
    per_word, target = lm_choice["decoded_logprob_per_word"], lm_choice["held_out_logprob_per_word"]
    assert set(per_word) == {"1.0", "1.25", "1.5", "1.75", "2.0"} and start["lm_scale"] == lm_choice["lm_scale"]
    assert abs(per_word[str(lm_choice["lm_scale"])] - target) == min(abs(v - target) for v in per_word.values())
    # the phone graph's: its phone decodes closest to the word decodes spelled with the lexicon
    edits = lm_choice["phone_edits_from_spelled_words"]
    assert set(edits) == set(per_word) and all(0 <= v for v in edits.values())
    assert edits[str(lm_choice["phone_lm_scale"])] == min(edits.values())
    for key in ("lm_scale", "phone_lm_scale"):
        assert checkpoint[key] == lm_choice[key] == start[key]


def test_given_scales_are_used_and_a_resume_keeps_the_choice(tiny_corpus, tmp_path):
    encoder = _just_encoder(tmp_path / "encoder.pt")
    out = tmp_path / "exp"
    args = ["--corpus", tiny_corpus, "--out", out, "--objective", "crosslingual", "--set", f"encoder={encoder}",
            "--set", "self_training_rounds=0", "--set", "crosslingual_prior_scale=0.5",
            "--set", "crosslingual_lm_scale=1.5", *FAST]
    assert _train(*args).exit_code == 0
    assert json.loads((out / "crosslingual" / "prior_scale.json").read_text()) == {"prior_scale": 0.5}
    assert json.loads((out / "crosslingual" / "lm_scale.json").read_text()) == {"lm_scale": 1.5}
    assert torch.load(out / "crosslingual" / "model.pt")["lm_scale"] == 1.5
    assert load_model(out / "crosslingual" / "model.pt").default_lm_scale("phone") == 1.5  # one scale for both
    model = torch.load(out / "crosslingual" / "model.pt")["state_dict"]
    result = _train(*args, "--resume")
    assert result.exit_code == 0, result.output
    resumed = torch.load(out / "crosslingual" / "model.pt")["state_dict"]
    assert all(torch.equal(model[k], resumed[k]) for k in model)


@pytest.mark.slow
def test_the_prior_scale_is_chosen_without_labels(tiny_corpus, tmp_path):
    encoder = _just_encoder(tmp_path / "encoder.pt")
    out = tmp_path / "exp"
    result = _train("--corpus", tiny_corpus, "--out", out, "--objective", "crosslingual", "--no-score",
                    "--set", f"encoder={encoder}", "--set", "self_training_rounds=0", *FAST)
    assert result.exit_code == 0, result.output
    choice = json.loads((out / "crosslingual" / "prior_scale.json").read_text())
    ratios = choice["phones_over_expected"]
    assert set(ratios) == {str(k / 8) for k in range(9)}  # 0, 0.125, ..., 1
    # the largest scale whose decodes hold no more than the expected phones, else the smallest
    at_most = [float(k) for k, r in ratios.items() if r <= 1]
    assert choice["prior_scale"] == (max(at_most) if at_most else 0.0)


@pytest.mark.slow
def test_the_features_reading_takes_its_prior_scale_from_the_universal_recognisers_expected_length(
        tiny_corpus, tmp_path):
    encoder = _just_encoder(tmp_path / "encoder.pt", features=True)
    out = tmp_path / "exp"
    result = _train("--corpus", tiny_corpus, "--out", out, "--objective", "crosslingual", "--no-score",
                    "--set", f"encoder={encoder}", "--set", "self_training_rounds=0",
                    "--set", "crosslingual_reading=features", "--set", "crosslingual_lm_scale=1", *FAST)
    assert result.exit_code == 0, result.output
    model = load_model(out / "crosslingual" / "model.pt").model
    # a class per spoken phone and the blank, which silence reads too; spoken noise has none
    assert model.config.classes == model.config.num_tokens - 2 == model.token_map.shape[1]
    # the tiny corpus's train-audio is the whole calibration sample; the recogniser's own expected length
    audio = load_audio(tiny_corpus, "train_audio")
    universal, _ = universal_phone_model(encoder)
    with torch.no_grad():
        target = sum(expected_lengths(universal.class_scores(f[None], torch.tensor([len(f)])) for f in audio.feats))
    ratios = json.loads((out / "crosslingual" / "prior_scale.json").read_text())["phones_over_expected"]
    counts = [r * target for r in ratios.values()]  # phones decoded at each scale: whole numbers
    assert all(abs(c - round(c)) <= 5e-5 * target for c in counts) and max(counts) > 0, (counts, target)


def test_crosslingual_without_scoring_reads_no_labels(tiny_corpus, tmp_path):
    encoder = _just_encoder(tmp_path / "encoder.pt")
    out = tmp_path / "exp"
    result = _train("--corpus", tiny_corpus, "--out", out, "--objective", "crosslingual", "--no-score",
                    "--set", f"encoder={encoder}", "--set", "self_training_rounds=0",
                    "--set", "crosslingual_prior_scale=1", "--set", "crosslingual_lm_scale=1", *FAST)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert "labels" not in summary and "per_test" not in summary["crosslingual"]
    assert summary["model"] == summary["crosslingual"]["model"]  # no self-training: the start is the recogniser


def test_crosslingual_needs_a_just_encoder(tiny_corpus, tmp_path):
    result = _train("--corpus", tiny_corpus, "--out", tmp_path / "exp", "--objective", "crosslingual")
    assert result.exit_code != 0 and "encoder=" in result.output
