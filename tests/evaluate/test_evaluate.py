"""``usrasr evaluate`` and ``compute_error_rate``: counts, Kaldi format, inputs, reports."""

from __future__ import annotations

import json
import random

import jiwer
import pytest
from click.testing import CliRunner

from usrasr.cli import cli
from usrasr.evaluate.report import compute_wer_lines
from usrasr.evaluate.scoring import compute_error_rate

VOCAB = "THE CAT SAT ON A MAT DOG RAN FAST SLOW RED BLUE".split()


def _corrupt(words: list[str], rng: random.Random) -> list[str]:
    """Random substitutions, deletions and insertions; sometimes everything is deleted."""
    if rng.random() < 0.1:
        return []
    out = []
    for w in words:
        r = rng.random()
        if r < 0.15:
            continue
        out.append(rng.choice(VOCAB) if r < 0.3 else w)
        if rng.random() < 0.1:
            out.append(rng.choice(VOCAB))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_wer_and_cer_equal_jiwer(seed):
    rng = random.Random(seed)
    refs, hyps = {}, {}
    for i in range(60):
        ref = [rng.choice(VOCAB) for _ in range(rng.randint(1, 12))]
        refs[f"u{i}"] = " ".join(ref)
        hyps[f"u{i}"] = " ".join(_corrupt(ref, rng))
    ids = list(refs)
    assert any(hyps[i] == "" for i in ids)  # empty hypotheses are covered

    word = compute_error_rate(refs, hyps, "word")
    assert abs(word.error_rate / 100 - jiwer.wer([refs[i] for i in ids], [hyps[i] for i in ids])) < 1e-9
    char = compute_error_rate(refs, hyps, "char")
    assert abs(char.error_rate / 100 - jiwer.cer([refs[i] for i in ids], [hyps[i] for i in ids])) < 1e-9
    assert word.insertions + word.deletions + word.substitutions == word.errors


def test_compute_wer_line_format():
    refs = {"a": "ONE TWO THREE FOUR", "b": "FIVE SIX", "c": "SEVEN"}
    hyps = {"a": "ONE TOO THREE FOUR EXTRA", "b": "SIX", "c": "SEVEN"}
    stats = compute_error_rate(refs, hyps, "word")
    assert compute_wer_lines(stats) == [
        "%WER 42.86 [ 3 / 7, 1 ins, 1 del, 1 sub ]",
        "%SER 66.67 [ 2 / 3 ]",
        "Scored 3 sentences, 0 not present in hyp.",
    ]
    partial = compute_error_rate(refs, {"a": "ONE TWO THREE FOUR"}, "word")
    assert compute_wer_lines(partial)[0] == "%WER 42.86 [ 3 / 7, 0 ins, 3 del, 0 sub ] [PARTIAL]"


def test_normalisation_applies_to_both_sides():
    stats = compute_error_rate({"u": "Hello, world! I've 2 cats."}, {"u": "hello world i've two cats"}, "word")
    assert stats.errors == 0 and stats.ref_len == 5


def test_phone_unit_strips_stress_and_silence():
    stats = compute_error_rate({"u": "SIL HH AH0 L OW1 SIL"}, {"u": "hh ah l ow sil"}, "phone")
    assert (stats.errors, stats.ref_len) == (0, 4)


def test_empty_reference_and_hypothesis():
    assert compute_error_rate({"u": ""}, {"u": ""}).error_rate == 0.0
    assert compute_error_rate({"u": ""}, {"u": "A"}).error_rate == float("inf")


def _run(args, stdin=None):
    result = CliRunner().invoke(cli, ["evaluate", *args], input=stdin)
    return result


def test_missing_and_extra_ids_are_reported(tmp_path):
    ref = tmp_path / "ref.txt"
    ref.write_text("a ONE TWO\nb THREE\nc FOUR FIVE\nd SIX\n")
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("a\tONE TWO\nx WHAT\ny EVER\n")
    result = _run([str(ref), str(hyp), "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    # b, c, d are all deletions: 4 of 6 reference words
    assert result.stdout.splitlines()[0] == "%WER 66.67 [ 4 / 6, 0 ins, 4 del, 0 sub ] [PARTIAL]"
    assert "Scored 4 sentences, 3 not present in hyp." in result.stdout
    assert "3 reference(s) have no hypothesis" in result.stderr and "b, c, d" in result.stderr
    assert "2 hypothesis id(s) are not in the references" in result.stderr and "x, y" in result.stderr
    summary = json.loads((tmp_path / "out" / "wer-hyp.json").read_text())
    assert summary["missing_hypotheses"] == {"count": 3, "ids": ["b", "c", "d"]}
    assert summary["extra_hypotheses"] == {"count": 2, "ids": ["x", "y"]}
    errs = (tmp_path / "out" / "errs-hyp.txt").read_text()
    assert "b:\t(THREE->*)  [no hypothesis]" in errs
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_stdin_hypotheses_and_frequent_errors(tmp_path):
    ref = tmp_path / "ref.txt"
    ref.write_text("a THE CAT SAT\nb THE DOG\n")
    result = _run([str(ref), "-"], stdin="a A CAT SAT ON\nb A DOG\n")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("%WER 60.00 [ 3 / 5, 1 ins, 0 del, 2 sub ]\n")
    assert "Most frequent substitutions (ref -> hyp):\n     2  THE -> A" in out
    assert "Most frequent insertions:\n     1  ON" in out


def test_lhotse_manifests_give_speaker_and_voice_breakdowns(tmp_path):
    from lhotse import CutSet, SupervisionSegment, SupervisionSet
    from lhotse.testing.dummies import dummy_cut

    sups = [
        SupervisionSegment(f"s{i}", f"r{i}", 0, 1, text=text, speaker=spk, custom={"voice": voice, "phones": phones})
        for i, (text, spk, voice, phones) in enumerate([
            ("ONE TWO", "spk1", "slt", "W AH N T UW"),
            ("THREE", "spk1", "slt", "TH R IY"),
            ("FOUR FIVE", "spk2", "m3", "F AO R F AY V"),
        ])
    ]
    SupervisionSet.from_segments(sups).to_file(tmp_path / "sups.jsonl.gz")
    cuts = CutSet.from_cuts(dummy_cut(i, supervisions=[s]).with_id(f"c{i}") for i, s in enumerate(sups))
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    (tmp_path / "hyp_s.txt").write_text("s0 ONE TWO\ns1 THREE\ns2 FOUR\n")
    (tmp_path / "hyp_c.txt").write_text("c0 ONE TWO\nc1 THREE\nc2 FOUR\n")

    for ref, hyp in (("sups.jsonl.gz", "hyp_s.txt"), ("cuts.jsonl.gz", "hyp_c.txt")):
        result = _run([str(tmp_path / ref), str(tmp_path / hyp)])
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0] == "%WER 20.00 [ 1 / 5, 0 ins, 1 del, 0 sub ]"
        assert any(l.split()[:4] == ["spk2", "1", "2", "50.00"] for l in lines), result.stdout
        assert any(l.split()[:4] == ["slt", "2", "3", "0.00"] for l in lines), result.stdout

    # --unit phone scores the manifest's custom["phones"], not its words
    (tmp_path / "hyp_p.txt").write_text("s0 W AH N T UW\ns1 TH R IY\ns2 F AO R F AY\n")
    result = _run([str(tmp_path / "sups.jsonl.gz"), str(tmp_path / "hyp_p.txt"), "--unit", "phone"])
    assert result.stdout.startswith("%WER 7.14 [ 1 / 14, 0 ins, 1 del, 0 sub ]"), result.output


def test_utt2spk_and_decode_jsonl_hypotheses(tmp_path):
    (tmp_path / "ref.txt").write_text("a ONE\nb TWO\n")
    (tmp_path / "utt2spk").write_text("a alice\nb bob\n")
    (tmp_path / "hyp.jsonl").write_text(
        json.dumps({"id": "a", "text": "ONE", "words": []}) + "\n" + json.dumps({"id": "b", "text": "TOO"}) + "\n"
    )
    result = _run([str(tmp_path / "ref.txt"), str(tmp_path / "hyp.jsonl"), "--utt2spk", str(tmp_path / "utt2spk")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("%WER 50.00 [ 1 / 2, 0 ins, 0 del, 1 sub ]")
    assert any(l.split()[:4] == ["bob", "1", "1", "100.00"] for l in result.stdout.splitlines())


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "ref.txt").write_text("a ONE\na TWO\n")
    result = _run([str(tmp_path / "ref.txt"), str(tmp_path / "ref.txt")])
    assert result.exit_code == 2 and "duplicate utterance id 'a'" in result.stderr
    result = _run([str(tmp_path / "nope.txt"), "-"], stdin="")
    assert result.exit_code == 2 and "not found" in result.stderr
