"""`usrasr pretrain --method just`: the TDNN encoder, its checkpoint with the phone CTC head,
the joint objective, training, resume and the no-leak rule."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from tests.support import pretrain_killed_and_resumed
from usrasr.cli import cli
from usrasr.corpus.layout import CorpusLayout
from usrasr.models.encoder import (
    ArticulatoryFeatures, EncoderConfig, SslEncoder, ctc_model_from_encoder, layer_features,
    load_articulatory_features, load_encoder, load_phone_head, save_encoder,
)
from usrasr.pretrain.just import (
    ArticulatoryPhoneHead, JustModel, articulatory_matrix, greedy_phones, is_target_step, load_labelled, read_phones,
)
from usrasr.pretrain.objectives import PretrainModel, span_mask, subsampled_valid
from usrasr.utils.errors import UsrasrError

PHONES = ["<blk>", "a", "i", "p", "t", "ʃ"]


def run_cli(*args):
    result = CliRunner().invoke(cli, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result.output


def _tdnn(**kw):
    torch.manual_seed(0)
    return SslEncoder(EncoderConfig(arch="tdnn", hidden_dim=16, num_layers=3, dropout=0.0, **kw))


def test_checkpoint_keeps_the_phone_head_and_its_symbols(tmp_path):
    encoder, head = _tdnn(), nn.Linear(16, len(PHONES))
    save_encoder(tmp_path / "encoder.pt", encoder, {"method": "just"}, phone_head=head, phones=PHONES)
    loaded_head, phones = load_phone_head(tmp_path)
    assert phones == PHONES and isinstance(loaded_head, nn.Linear)
    assert torch.equal(loaded_head.weight, head.weight) and torch.equal(loaded_head.bias, head.bias)
    loaded, info = load_encoder(tmp_path / "encoder.pt")
    assert info["method"] == "just" and loaded.config.arch == "tdnn"
    for name, value in encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    save_encoder(tmp_path / "plain.pt", encoder, {"method": "bestrq"})
    assert load_phone_head(tmp_path / "plain.pt") is None


def test_checkpoint_refuses_a_head_that_does_not_fit(tmp_path):
    with pytest.raises(UsrasrError, match="phone head maps"):
        save_encoder(tmp_path / "e.pt", _tdnn(), {}, phone_head=nn.Linear(16, 4), phones=PHONES)
    with pytest.raises(UsrasrError, match="phone symbols"):
        save_encoder(tmp_path / "e.pt", _tdnn(), {}, phone_head=nn.Linear(16, len(PHONES)))
    features = ArticulatoryFeatures(nn.Linear(16, 3), ["syl", "son", "cons"], torch.zeros(len(PHONES) - 1, 3))
    with pytest.raises(UsrasrError, match="a row of values per phone"):
        save_encoder(tmp_path / "e.pt", _tdnn(), {}, nn.Linear(16, len(PHONES)), PHONES, features)
    with pytest.raises(UsrasrError, match="unknown encoder arch"):
        EncoderConfig(arch="lstm")


def test_tdnn_encoder_gives_every_layer_and_ignores_padding():
    encoder = _tdnn().eval()
    feats = torch.randn(2, 50, 80)
    outputs, lengths = encoder(feats, torch.tensor([50, 31]))
    assert len(outputs) == 4 and lengths.tolist() == [25, 16]
    assert all(o.shape == (2, 25, 16) for o in outputs)
    alone, _ = encoder(feats[1:, :31], torch.tensor([31]))
    for batched, single in zip(outputs, alone):
        torch.testing.assert_close(batched[1, :16], single[0])
        assert not batched[1, 16:].any()  # padding stays zero


def test_ctc_model_from_a_tdnn_encoder_computes_its_last_layer(tmp_path):
    encoder = _tdnn()
    save_encoder(tmp_path / "encoder.pt", encoder, {"method": "just"})
    model = ctc_model_from_encoder(tmp_path, num_tokens=len(PHONES)).eval()
    assert model.config.arch == "tdnn"
    feats, lens = torch.randn(1, 40, 80), torch.tensor([40])
    last = load_encoder(tmp_path)[0](feats, lens)[0][-1]
    log_probs, _ = model(feats, lens)
    torch.testing.assert_close(log_probs, model.output(last).log_softmax(-1))


# --- a tiny multilingual corpus of spec A: cuts with fbank and universal-phone supervisions ---

ML_PHONES = ["<blk>", "a", "i", "u", "p", "t", "k", "m", "s"]
FEATURES = ["syl", "son", "cons", "lab"]


def write_multilingual(root, utterances=24, seed=0):
    """Two languages, two engines; train voices v0-v3, held-out voice v4.  Each phone's frames
    are its own random mean plus a voice offset and noise, so phone CTC has something to learn."""
    from lhotse import CutSet, MonoCut, SupervisionSegment
    from lhotse.features import Features
    from lhotse.features.io import NumpyFilesWriter

    from usrasr.corpus.layout import CorpusLayout

    rng = np.random.default_rng(seed)
    layout = CorpusLayout(root)
    layout.lang_dir.mkdir(parents=True)
    layout.manifests_dir.mkdir()
    (layout.lang_dir / "phones.txt").write_text("".join(f"{p} {i}\n" for i, p in enumerate(ML_PHONES)))
    rows = ["\t".join(["phone", *FEATURES])]
    rows += ["\t".join([p, *map(str, rng.integers(-1, 2, len(FEATURES)))]) for p in ML_PHONES[1:]]
    (layout.lang_dir / "articulatory.tsv").write_text("\n".join(rows) + "\n")
    means = rng.normal(size=(len(ML_PHONES), 80)) * 2
    for split, voices, count in (("train", ["v0", "v1", "v2", "v3"], utterances), ("heldout", ["v4"], 6)):
        cuts = []
        with NumpyFilesWriter(root / "features" / split) as writer:
            for i in range(count):
                language, engine, voice = ("cs", "fi")[i % 2], ("espeak-ng", "festival")[i // 2 % 2], voices[i % len(voices)]
                phones = rng.integers(1, len(ML_PHONES), rng.integers(4, 9))
                frames = np.repeat(means[phones], rng.integers(6, 10), axis=0)
                frames = (frames + rng.normal(size=80) + rng.normal(size=frames.shape)).astype(np.float32)
                cut_id = f"{split}-{voice}-{i}"
                duration = len(frames) * 0.01
                features = Features(type="fbank", num_frames=len(frames), num_features=80, frame_shift=0.01,
                                    sampling_rate=16000, start=0, duration=duration, storage_type=writer.name,
                                    storage_path=str(writer.storage_path), storage_key=writer.write(cut_id, frames))
                text = " ".join(ML_PHONES[p] for p in phones)
                cuts.append(MonoCut(cut_id, start=0, duration=duration, channel=0, features=features, supervisions=[
                    SupervisionSegment(cut_id, cut_id, 0, duration, text=text, language=language, speaker=voice,
                                       custom={"voice": voice, "engine": engine, "orthography": "x"})]))
        CutSet.from_cuts(cuts).to_file(layout.cuts(split))
    return root


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory):
    return write_multilingual(tmp_path_factory.mktemp("multilingual") / "corpus")


def test_articulatory_head_folds_into_one_linear_layer():
    torch.manual_seed(0)
    features = torch.randint(-1, 2, (len(PHONES), 4)).float()
    features[0] = 0
    head = ArticulatoryPhoneHead(16, features)
    hidden = torch.randn(7, 16)
    torch.testing.assert_close(head.folded()(hidden), head(hidden))
    # the shared part: a phone's logit moves with the feature weights of every phone that shares its features
    torch.testing.assert_close(head(hidden) - head.phone(hidden), head.feature(hidden) @ features.t())


def _just_model(weight):
    torch.manual_seed(0)
    encoder = SslEncoder(EncoderConfig(arch="tdnn", hidden_dim=16, num_layers=2, dropout=0.0))
    features = torch.randint(-1, 2, (len(ML_PHONES), 4)).float()
    return JustModel(PretrainModel(encoder, 16, 4, seed=0), ArticulatoryPhoneHead(16, features), weight)


def test_ctc_part_is_torch_ctc_on_the_saved_phone_head_and_masked_prediction_adds_lambda_times_its_loss():
    feats, lens = torch.randn(2, 60, 80, generator=torch.Generator().manual_seed(1)), torch.tensor([60, 41])
    labels = [torch.tensor([1, 2, 2, 5]), torch.tensor([3, 8, 4])]
    model = _just_model(0.5).eval()
    loss, parts = model.loss(feats, lens, None, labels)
    outputs, out_lens = model.encoder(feats, lens)
    log_probs = model.phone_head.folded()(outputs[-1]).log_softmax(-1)
    reference = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), torch.cat(labels), out_lens,
                                             torch.tensor([4, 3]), blank=0, reduction="mean")
    torch.testing.assert_close(loss, reference)
    assert parts == {"ctc_loss": pytest.approx(reference.item())}
    masked = span_mask(subsampled_valid(lens, 2), 0.2, 3, torch.Generator().manual_seed(0))
    joint, parts = model.loss(feats, lens, masked, labels)
    assert joint.item() == pytest.approx(parts["ctc_loss"] + 0.5 * parts["anchor_loss"], rel=1e-5)
    target, parts = model.loss(feats, lens, masked)
    assert set(parts) == {"anchor_loss", "anchor_accuracy"} and target.item() == pytest.approx(0.5 * parts["anchor_loss"])


def test_target_steps_take_their_share_evenly():
    steps = [is_target_step(s, 0.3) for s in range(100)]
    assert sum(steps) == 30 and sum(steps[:10]) == 3
    assert not any(is_target_step(s, 0.0) for s in range(100))


def test_greedy_phones_merge_repeats_and_drop_blanks():
    path = torch.tensor([0, 3, 3, 0, 3, 5, 5, 0])
    assert greedy_phones(torch.nn.functional.one_hot(path, 6).float().log()) == [3, 3, 5]


def test_load_labelled_keeps_the_chosen_languages_and_engines(multilingual):
    table = read_phones(multilingual)
    every = load_labelled(multilingual, "train", table)
    assert len(every.ids) == 24 and set(every.languages) == {"cs", "fi"}
    czech = load_labelled(multilingual, "train", table, languages="cs", engines="festival")
    assert set(czech.languages) == {"cs"} and set(czech.engines) == {"festival"} and len(czech.ids) == 6
    assert all(t.min() >= 1 for t in czech.labels)
    with pytest.raises(UsrasrError, match="no language it"):
        load_labelled(multilingual, "train", table, languages="cs,it")


JUST_TINY = ["--method", "just", "--set", "hidden_dim=32", "--set", "num_layers=3", "--set", "codebook_size=32",
             "--set", "batch_frames=2000", "--set", "warmup_steps=5", "--set", "lr=0.003", "--set", "dropout=0.0"]


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_just_training_lowers_the_phone_ctc_loss_and_saves_the_phone_head(tiny_corpus, multilingual, tmp_path):
    out = tmp_path / "just"
    output = run_cli("-q", "pretrain", "--corpus", tiny_corpus, "--out", out, *JUST_TINY,
                     "--set", f"multilingual={multilingual}", "--set", "steps=60")
    assert "60 steps" in output and "held-out voices" in output
    ctc = [r["ctc_loss"] for r in _rows(out) if "ctc_loss" in r]
    target = [r for r in _rows(out) if "target_anchor_loss" in r]
    assert len(target) == 18 and len(ctc) == 42  # 30% of the steps read the target's train-audio
    assert np.mean(ctc[-5:]) < 0.7 * np.mean(ctc[:5])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arch"] == "tdnn" and summary["languages"] == ["cs", "fi"]
    heldout = summary["evaluation"]["heldout"]
    assert heldout["utterances"] == 6 and 0 <= heldout["per"] < 100 and 0 <= heldout["masked_accuracy"] <= 1
    head, phones = load_phone_head(out)
    assert phones == ML_PHONES and head.out_features == len(ML_PHONES)
    # the articulatory part of the head is kept, with the corpus's features of each phone
    features = load_articulatory_features(out)
    names, values = articulatory_matrix(Path(multilingual) / "lang" / "articulatory.tsv", ML_PHONES)
    assert features.names == names and torch.equal(features.values, values)
    assert features.head.in_features == head.in_features and features.head.out_features == len(names)
    encoder, info = load_encoder(out)
    assert info["method"] == "just" and len(layer_features(encoder, [torch.randn(50, 80)])) == 4
    assert (out / "losses.png").stat().st_size > 0


def test_supervised_only_reads_no_target_audio_batches(tiny_corpus, multilingual, tmp_path):
    out = tmp_path / "supervised"
    run_cli("-q", "pretrain", "--corpus", tiny_corpus, "--out", out, *JUST_TINY, "--set", f"multilingual={multilingual}",
            "--set", "steps=6", "--set", "just_weight=0", "--set", "languages=fi", "--set", "engines=espeak-ng")
    rows = _rows(out)
    assert len(rows) == 6 and all(set(r) >= {"ctc_loss"} and "anchor_loss" not in r for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["languages"] == ["fi"] and summary["engines"] == ["espeak-ng"] and summary["labelled_utterances"] == 6


@pytest.mark.parametrize("args, message", [
    (["--method", "just"], "needs --set multilingual=DIR"),
    (["--method", "bestrq", "--set", "multilingual=x"], "read by method just only"),
    (["--method", "just", "--set", "multilingual=x", "--set", "just_weight=-1"], "just_weight >= 0"),
    (["--method", "just", "--set", "multilingual=x", "--set", "target_share=1"], "target_share in"),
    (["--method", "just", "--set", "arch=lstm"], "arch must be one of"),
    (["--method", "just", "--set", "multilingual=x", "--set", "speaker_adversary_weight=1"], "bestrq and birq"),
    (["--method", "just", "--set", "multilingual=/nonexistent"], "multilingual corpus not found"),
])
def test_config_errors_are_one_line(tiny_corpus, tmp_path, args, message):
    result = CliRunner().invoke(cli, ["pretrain", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "e"), *args])
    assert result.exit_code != 0 and message in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_just_resumes_after_kill_with_the_same_weights(tiny_corpus, multilingual, tmp_path):
    # killed at step 10, after both samplers have drawn batches (7 labelled, 3 target): both must resume
    args = ["--corpus", str(tiny_corpus), *JUST_TINY, "--set", f"multilingual={multilingual}", "--set", "steps=40",
            "--set", "checkpoint_every=10"]
    _assert_same_encoder(*pretrain_killed_and_resumed(args, tmp_path))


def _assert_same_encoder(a, b):
    (encoder_a, _), (encoder_b, _) = load_encoder(a), load_encoder(b)
    for name, value in encoder_a.state_dict().items():
        assert torch.equal(encoder_b.state_dict()[name], value), name
    (head_a, _), (head_b, _) = load_phone_head(a), load_phone_head(b)
    assert torch.equal(head_a.weight, head_b.weight)


def _poison(corpus: Path) -> None:
    """Overwrite every file of the target corpus that JUST must not read: its train-audio
    transcripts and alignments, its text, lexicon and LMs (a read of any of them fails or differs)."""
    layout = CorpusLayout(corpus)
    for folder in (layout.scoring_dir, layout.text_dir, layout.lang_dir, layout.lm_dir):
        assert any(folder.rglob("*"))
        for path in folder.rglob("*"):
            if path.is_file():
                path.write_bytes(b"POISON\n" * 7)


def test_just_reads_no_transcript_alignment_text_or_lm_of_the_target(tiny_corpus, multilingual, tmp_path):
    poisoned = tmp_path / "poisoned"
    shutil.copytree(tiny_corpus, poisoned)
    _poison(poisoned)
    args = [*JUST_TINY, "--set", f"multilingual={multilingual}", "--set", "steps=12"]
    for name, corpus in (("clean", tiny_corpus), ("poisoned", poisoned)):
        subprocess.run([sys.executable, "-m", "usrasr", "-q", "pretrain", "--corpus", str(corpus),
                        "--out", str(tmp_path / name), *args], check=True, capture_output=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert any("target_anchor_loss" in r for r in _rows(tmp_path / "clean"))  # the target's audio was read
    _assert_same_encoder(tmp_path / "clean", tmp_path / "poisoned")


def test_the_main_jobs_encoder_config_is_a_just_configuration():
    from usrasr.pretrain.config import PretrainConfig
    from usrasr.utils.shipped import SHIPPED_DATA

    config = PretrainConfig.load(SHIPPED_DATA / "conf" / "pretrain-just.yaml", {"multilingual": "data/multilingual"})
    assert config.method == "just" and config.steps > 0 and config.time_budget_minutes > 0
