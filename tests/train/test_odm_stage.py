"""`usrasr train --objective odm` end to end on the tiny corpus."""

import json

from click.testing import CliRunner

from usrasr.cli import cli
from usrasr.corpus.reader import load_audio
from usrasr.lang.phones import ARPABET

FAST_ODM = ["--set", "odm_restarts=2", "--set", "odm_steps=5", "--set", "odm_batch_utterances=0",
            "--set", "odm_top=200", "--set", "odm_dim=8", "--set", "hidden_dim=32", "--set", "num_layers=2",
            "--set", "ctc_steps=5", "--set", "supervised_oracle=false"]


def _train(*args) -> str:
    result = CliRunner().invoke(cli, ["train", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_odm_objective_labels_train_audio_and_self_trains_a_model(tiny_corpus, tmp_path):
    out = tmp_path / "exp"
    output = _train("--corpus", tiny_corpus, "--out", out, "--objective", "odm", *FAST_ODM)
    summary = json.loads((out / "summary.json").read_text())
    odm = summary["odm"]
    assert len(odm["restart_losses"]) == 2 and odm["loss"] == min(odm["restart_losses"])
    assert [r["restart"] for r in odm["restarts"]] == [0, 1] and all(r["per_train"] >= 0 for r in odm["restarts"])
    assert len(odm["true_labels"]["order_losses"]) == 3  # the truth's loss, to tell search from specification
    assert (out / "odm" / "phone_3gram.arpa").exists()  # the corpus has a bigram: a trigram is trained
    labels = [line.split() for line in (out / "pseudo_labels" / "round0.txt").read_text().splitlines()]
    assert sorted(row[0] for row in labels) == sorted(load_audio(tiny_corpus, "train_audio").ids)
    assert all(len(row) >= 2 and set(row[1:]) <= set(ARPABET) for row in labels)  # phones, no silence
    assert (out / "round1" / "model.pt").exists() and "per_test" in summary["self_training"][0]
    assert "seqce" not in summary and "ODM (lowest loss)" in output


def test_odm_objective_without_scoring_reads_no_labels(tiny_corpus, tmp_path):
    out = tmp_path / "exp"
    _train("--corpus", tiny_corpus, "--out", out, "--objective", "odm", "--no-score", *FAST_ODM,
           "--set", "self_training_rounds=0")
    odm = json.loads((out / "summary.json").read_text())["odm"]
    assert "restarts" not in odm and "true_labels" not in odm and odm["best_restart"] in (0, 1)
