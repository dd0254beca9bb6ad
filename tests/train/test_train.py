"""`usrasr train` on the tiny corpus: diagnostic search, no leaks, resume after kill -9."""

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests.support import kill_once_written
from usrasr.cli import cli

FAST = ["--set", "num_units=20", "--set", "kmeans_iterations=5", "--set", "restarts=2",
        "--set", "iterations=5", "--set", "oracle_iterations=5", "--set", "hidden_dim=32", "--set", "num_layers=2"]


def train(*args):
    result = CliRunner().invoke(cli, ["train", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_diagnostic_pure_units_reach_the_oracle(tiny_corpus, tmp_path):
    out = tmp_path / "exp"
    train("--corpus", tiny_corpus, "--out", out, "--units", "diagnostic", "--set", "restarts=3",
          "--set", "iterations=20", "--set", "self_training_rounds=0", "--set", "supervised_oracle=false")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unit_quality"]["train_audio"]["purity"] > 0.99
    assert summary["seqce"]["per_train"] <= 2 * summary["oracle_hmm"]["per_train"] + 5
    assert (out / "losses.png").stat().st_size > 0
    assert (out / "pseudo_labels" / "round0.txt").read_text().strip()


def _poison(corpus: Path) -> None:
    """Scramble every transcript and alignment that training must not read."""
    path = corpus / "scoring" / "supervisions_train_audio.jsonl.gz"
    rows = [json.loads(line) for line in gzip.open(path, "rt")]
    for row in rows:
        row["text"] = "POISON " * 5
        row["custom"]["phones"] = "AA " * 5
        row["alignment"] = None
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    (corpus / "scoring" / "train_audio" / "text").write_text("poison\n")


@pytest.fixture
def one_thread():
    """Threaded float sums may add in another order from run to run; exact comparisons need one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_unsupervised_training_never_reads_train_audio_transcripts(tiny_corpus, tmp_path, one_thread):
    poisoned = tmp_path / "poisoned"
    shutil.copytree(tiny_corpus, poisoned)
    _poison(poisoned)
    results = {}
    for name, corpus in (("clean", tiny_corpus), ("poisoned", poisoned)):
        out = tmp_path / name
        train("--corpus", corpus, "--out", out, "--no-score", *FAST, "--set", "self_training_rounds=1",
              "--set", "ctc_steps=5")
        results[name] = (torch.load(out / "seqce" / "model.pt")["log_emissions"],
                         (out / "pseudo_labels" / "round0.txt").read_text(),
                         torch.load(out / "round1" / "model.pt")["state_dict"])
    clean, poisoned_result = results["clean"], results["poisoned"]
    assert torch.equal(clean[0], poisoned_result[0])
    assert clean[1] == poisoned_result[1]
    assert all(torch.equal(clean[2][k], poisoned_result[2][k]) for k in clean[2])
    # and with the scoring files gone altogether it still runs
    shutil.rmtree(poisoned / "scoring")
    train("--corpus", poisoned, "--out", tmp_path / "no_scoring", "--no-score", *FAST, "--set", "self_training_rounds=0")


def _ctc_losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r["loss"] for r in rows if r.get("stage") == "ctc"}
    return [by_step[s] for s in sorted(by_step)]


def test_resume_after_kill_matches_an_uninterrupted_run(tiny_corpus, tmp_path):
    args = ["--corpus", str(tiny_corpus), *FAST, "--set", "self_training_rounds=1", "--set", "ctc_steps=40",
            "--set", "checkpoint_every=5", "--set", "ctc_batch_size=4", "--no-score"]
    base = [sys.executable, "-m", "usrasr", "-q", "train"]
    # One thread: multi-threaded float reductions may sum in another order from run to run.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run([*base, "--out", str(reference), *args], check=True, capture_output=True, env=env)

    killed = tmp_path / "killed"
    state = killed / "round1" / "train_state.pt"
    kill_once_written([*base, "--out", str(killed), *args], state, env)
    assert not (killed / "round1" / "model.pt").exists()
    interrupted_at = torch.load(state)["step"]
    assert 0 < interrupted_at < 40

    again = subprocess.run([*base, "--out", str(killed), *args], capture_output=True, text=True, env=env)
    assert again.returncode != 0 and "--resume" in again.stderr  # refuses to overwrite silently
    subprocess.run([*base, "--out", str(killed), "--resume", *args], check=True, capture_output=True, env=env)
    assert _ctc_losses(killed)[-1] == pytest.approx(_ctc_losses(reference)[-1], abs=1e-6)
    a = torch.load(reference / "round1" / "model.pt")["state_dict"]
    b = torch.load(killed / "round1" / "model.pt")["state_dict"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_self_loop_is_set_from_the_units_rate_unless_given():
    import numpy as np

    from usrasr.train.config import TrainConfig
    from usrasr.train.seqce_stage import SELF_LOOP_RANGE, with_unit_rate
    from usrasr.train.units.kmeans import UnitSequences

    units = UnitSequences(["a", "b"], [np.zeros(30, dtype=np.int64), np.zeros(18, dtype=np.int64)],
                          [np.arange(30), np.arange(18)], num_units=1)
    # 48 steps in 2 s at 12 phones/s: two steps per phone, so a self-loop of 1/2
    assert with_unit_rate(TrainConfig(), units, 2.0).self_loop_prob == pytest.approx(0.5)
    assert with_unit_rate(TrainConfig(phones_per_second=48), units, 2.0).self_loop_prob == SELF_LOOP_RANGE[0]
    assert with_unit_rate(TrainConfig(self_loop_prob=0.3), units, 2.0).self_loop_prob == 0.3
    # two states per phone share the steps: one step per state, the lowest self-loop
    assert with_unit_rate(TrainConfig(states_per_phone=2), units, 2.0).self_loop_prob == SELF_LOOP_RANGE[0]
    assert with_unit_rate(TrainConfig(states_per_phone=2, phones_per_second=6), units, 2.0).self_loop_prob \
        == pytest.approx(0.5)


def test_adapted_codebooks_keep_unit_ids_and_empty_clusters():
    from usrasr.train.units.kmeans import Codebook, kmeans

    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    shared = Codebook(centres.clone())
    # a speaker whose sounds sit shifted from the shared centres and never visit the third
    data = torch.cat([centres[:2] + torch.tensor([1.0, 1.0])] * 50) + 0.1 * torch.randn(100, 2, generator=generator)
    adapted = kmeans(data, 3, iterations=5, init=shared)
    assert torch.allclose(adapted.centroids[:2], centres[:2] + 1.0, atol=0.1)  # unit k moved with the voice
    assert torch.equal(adapted.centroids[2], centres[2])  # the empty unit keeps its shared centre
    with pytest.raises(ValueError):
        kmeans(data, 2, iterations=1, init=shared)


def test_annealed_search_with_shorter_oracle_fits(tiny_corpus, tmp_path):
    # The oracle (oracle_iterations) and the candidate fits are shorter than the annealing:
    # they must not anneal, and the search itself must finish annealing.
    out = tmp_path / "annealed"
    train("--corpus", tiny_corpus, "--out", out, *FAST, "--set", "anneal_start=0.3", "--set", "anneal_iterations=5",
          "--set", "oracle_iterations=2", "--set", "self_training_rounds=0", "--set", "supervised_oracle=false")
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["seqce"]["restart_losses"]) == 2 and "oracle_hmm" in summary
    from usrasr.train.config import TrainConfig
    from usrasr.utils.errors import UsrasrError

    with pytest.raises(UsrasrError, match="must not exceed iterations"):
        TrainConfig(anneal_start=0.3, anneal_iterations=30, iterations=20)


def test_tying_needs_comparable_unit_ids_and_em():
    from usrasr.train.config import TrainConfig
    from usrasr.utils.errors import UsrasrError

    TrainConfig(speaker_emissions=True, codebook_per_speaker=True, adapt_speaker_codebooks=True, emission_tying=5)
    for bad in (dict(codebook_per_speaker=True), dict(optimizer="adam"), dict(emission_tying=-1.0)):
        with pytest.raises(UsrasrError):
            TrainConfig(**{"speaker_emissions": True, "emission_tying": 5.0, **bad})


def test_ctc_augmentation_warps_and_masks_real_frames_only():
    from usrasr.models.ctc_train import Augmentation

    torch.manual_seed(0)
    x = torch.randn(3, 50, 80)
    lengths = torch.tensor([50, 30, 10])
    x[1, 30:] = 0
    x[2, 10:] = 0
    identity = Augmentation(warp=0.0, freq_masks=0, time_masks=0)(x, lengths)
    assert torch.allclose(identity, x)
    warped = Augmentation(warp=0.2, freq_masks=0, time_masks=0)(x, lengths)
    assert warped.shape == x.shape and not torch.allclose(warped, x)
    assert torch.allclose(warped[:, :, 0], x[:, :, 0])  # the lowest bin stays put
    masked = Augmentation(warp=0.0, freq_masks=2, freq_width=10, time_masks=0)(x, lengths)
    changed = (masked != x).any(dim=1)  # (B, F): bins masked in some frame
    assert changed.any(dim=1).all() and (changed.sum(dim=1) <= 20).all()
    mean = x[0].mean(0)
    assert torch.allclose(masked[0][:, changed[0]], mean[changed[0]].expand(50, -1))
    for aug in (warped, masked):
        assert aug[1, 30:].abs().sum() == 0 and aug[2, 10:].abs().sum() == 0


def test_word_level_relabelling_spells_the_decoded_words(tiny_corpus, monkeypatch):
    from usrasr.lang.lexicon import read_lexicon
    from usrasr.train import self_training

    lexicon = read_lexicon(tiny_corpus / "lang" / "lexicon.txt")
    words = [w for w in lexicon if w.isalpha()][:3]
    decoded = {"u1": " ".join(words), "u2": "", "u3": f"{words[0]} !SIL {words[1]}"}
    asked = []

    def fake_decode(model, corpus, split, unit, graph_dir, device="auto"):
        asked.append(unit)
        return decoded if unit == "word" else {"u1": "AA B"}

    monkeypatch.setattr(self_training, "decode_split", fake_decode)
    labels = self_training.relabel_split(Path("m.pt"), tiny_corpus, "train_audio", "word", Path("g"))
    assert asked == ["word"]
    assert labels == {"u1": " ".join(p for w in words for p in lexicon[w]), "u2": "",
                      "u3": " ".join([*lexicon[words[0]], *lexicon[words[1]]])}
    assert self_training.relabel_split(Path("m.pt"), tiny_corpus, "train_audio", "phone", Path("g")) == {"u1": "AA B"}


def test_units_too_coarse_for_the_oracle_skip_its_diagnosis_with_a_warning(tiny_corpus, tmp_path):
    # A 301-frame majority filter leaves every utterance fewer unit steps than phones.
    out = tmp_path / "coarse"
    output = train("--corpus", tiny_corpus, "--out", out, *FAST, "--set", "mode_width=301",
                   "--set", "self_training_rounds=0", "--set", "supervised_oracle=false")
    summary = json.loads((out / "summary.json").read_text())
    assert "oracle HMM cannot be estimated" in summary["oracle_hmm"]["skipped"]
    assert summary["diagnosis"].startswith("unknown") and "seqce" in summary
    assert "oracle HMM cannot be estimated" in output


def test_oracle_objective_trains_only_the_supervised_oracle(tiny_corpus, tmp_path):
    out = tmp_path / "exp"
    output = train("--corpus", tiny_corpus, "--out", out, "--objective", "oracle", *FAST, "--set", "ctc_steps=20")
    summary = json.loads((out / "summary.json").read_text())
    assert "per_test" in summary["supervised"] and "model" not in summary
    assert (out / "supervised" / "model.pt").exists() and not (out / "pseudo_labels").exists()
    assert "supervised oracle (CTC)" in output
    result = CliRunner().invoke(cli, ["train", "--corpus", str(tiny_corpus), "--out", str(tmp_path / "blind"),
                                      "--objective", "oracle", "--no-score"])
    assert result.exit_code != 0 and "cannot run with --no-score" in result.output
    assert not (tmp_path / "blind").exists()
