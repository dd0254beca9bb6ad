"""Simulation experiments show the method's conditions; `usrasr check` verdicts."""

import csv
import math

import numpy as np
from click.testing import CliRunner

from usrasr.cli import cli
from usrasr.simulate import experiments

SMALL = dict(num_phones=5, tokens=4000, length=10)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_bound_mismatch_shrinks_with_marginal_distance(tmp_path):
    rows = experiments.experiment_bound(tmp_path, noises=(0.1, 0.2), seeds=(0,), **SMALL)
    assert (tmp_path / "bound.png").stat().st_size > 0 and len(_rows(tmp_path / "bound.csv")) == len(rows)
    tv = np.array([r["tv"] for r in rows])
    mismatch = np.array([r["mismatch"] for r in rows])
    near, far = tv <= np.quantile(tv, 0.25), tv >= np.quantile(tv, 0.75)
    assert mismatch[near].mean() < mismatch[far].mean()
    assert rows[0]["slope"] > 0


def test_rank_deficient_lm_matches_marginals_but_not_errors(tmp_path):
    rows = {(r["lm"], r["model"]): r for r in experiments.experiment_rank(tmp_path, **SMALL)}
    unigram = rows[("unigram", "trained")]
    assert unigram["rank"] == 1 and unigram["loss"] <= unigram["oracle_loss"] + 0.01
    assert unigram["mismatch"] > 0.1
    swapped = rows[("swapped pair", "truth, rows swapped")]
    assert swapped["tv"] < 1e-6 and swapped["mismatch"] > 0.05
    assert rows[("full", "trained")]["mismatch"] < 0.03
    assert (tmp_path / "rank.png").exists()


def test_broken_factorisation_degrades_learning(tmp_path):
    rows = {r["world"]: r for r in experiments.experiment_structure(tmp_path, **SMALL)}
    assert rows["factorises"]["mismatch"] < 0.03
    assert rows["context-dependent data"]["mismatch"] > 0.2
    assert rows["context-dependent data"]["oracle_error"] < 0.2


def test_restarts_chance_grows_with_restarts(tmp_path):
    rows = experiments.experiment_restarts(tmp_path, restarts=4, seeds=(0,), **SMALL)
    chance = [r["chance"] for r in rows if r["kind"] == "selection"]
    assert len(chance) == 4 and chance[-1] >= chance[0]


def _write_corpus(root, transition, phones):
    """A prepared-corpus skeleton with an exact bigram ARPA over ``phones``."""
    (root / "lm").mkdir(parents=True)
    (root / "text").mkdir()
    (root / "lang").mkdir()
    vocabulary = ["</s>", "<s>", *phones]
    lines = ["\\data\\", f"ngram 1={len(vocabulary)}", f"ngram 2={len(phones) * (len(phones) + 1)}", "", "\\1-grams:"]
    lines += [f"{-1.0 if w != '<s>' else -99:.4f} {w} 0.0" for w in vocabulary]
    lines += ["", "\\2-grams:"]
    for h, row in zip(["<s>", *phones], np.vstack([np.full(len(phones), 1 / len(phones)), transition])):
        lines += [f"{math.log10(p):.6f} {h} {c}" for c, p in zip(phones, row)]
    lines += ["", "\\end\\"]
    (root / "lm/phone_2gram.arpa").write_text("\n".join(lines) + "\n")
    (root / "lang/lexicon.txt").write_text("".join(f"W{p} {p}\n" for p in phones))
    rng = np.random.default_rng(0)
    words = [" ".join(f"W{phones[i]}" for i in rng.integers(0, len(phones), 30)) for _ in range(200)]
    (root / "text/train_text.txt").write_text("\n".join(words) + "\n")


def test_check_passes_full_rank_and_fails_unigram(tmp_path):
    phones = ["AA", "B", "K"]
    full = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    _write_corpus(tmp_path / "good", full, phones)
    _write_corpus(tmp_path / "bad", np.full((3, 3), 1 / 3), phones)
    runner = CliRunner()
    good = runner.invoke(cli, ["check", str(tmp_path / "good")])
    assert good.exit_code == 0, good.output
    assert "verdict: OK" in good.output and "2-grams" in good.output and "no units file" in good.output
    bad = runner.invoke(cli, ["check", str(tmp_path / "bad")])
    assert bad.exit_code == 1 and "FAIL" in bad.output


def test_simulate_command_reports_error_oracle_and_tv():
    result = CliRunner().invoke(cli, ["simulate", "--phones", "4", "--tokens", "1000", "--length", "8",
                                      "--restarts", "1", "--iterations", "3"])
    assert result.exit_code == 0, result.output
    for key in ("error", "oracle_error", "mismatch", "tv", "loss"):
        assert f'"{key}"' in result.output
