"""Agreement of phone transcriptions with an align dictionary's claims."""

import pytest

from usrasr.align.agreement import DictionaryAgreement, read_claims
from usrasr.utils.errors import UsrasrError

LEXICON = "CAT K AE T\nDOG D AO G\nA AH\n"


@pytest.fixture
def align_dir(tmp_path):
    """s1 = CAT (spoken in u1, u2), s2 = DOG (in u3), s3 unnamed (in u4); A is named for s4 (in u1)."""
    (tmp_path / "lexicon.txt").write_text(LEXICON)
    (tmp_path / "dictionary.tsv").write_text(
        "spoken_word\tsegments\texample\tword\tcsls\tcosine\n"
        "s1\t2\tu1:0-9\tCAT\t0.5\t0.6\ns2\t1\tu3:0-9\tDOG\t0.4\t0.5\ns4\t1\tu1:20-29\tA\t0.1\t0.2\n")
    (tmp_path / "segments.tsv").write_text(
        "utterance\tstart_frame\tend_frame\tspoken_word\n"
        "u1\t0\t9\ts1\nu2\t0\t9\ts1\nu3\t0\t9\ts2\nu4\t0\t9\ts3\nu1\t20\t29\ts4\n")
    return tmp_path


def test_claims_join_segments_and_dictionary(align_dir):
    assert read_claims(align_dir) == [("u1", "CAT"), ("u2", "CAT"), ("u3", "DOG"), ("u1", "A")]


def test_agreement_is_hits_above_each_words_base_rate(align_dir):
    agreement = DictionaryAgreement(align_dir, align_dir / "lexicon.txt")
    right = {"u1": "K AE T AH", "u2": "SIL K AE T", "u3": "D AO G", "u4": "AH"}
    # Hits: CAT in u1, u2 (base 2/4), DOG in u3 (base 1/4), A in u1 (in u1 and u4: base 2/4; "AE" is not "AH").
    assert agreement(right) == pytest.approx(((1 - 0.5) * 2 + (1 - 0.25) + (1 - 0.5)) / 4)
    # The same phones in other utterances: the claims no longer hold.
    swapped = {"u1": "D AO G", "u2": "AH", "u3": "K AE T AH", "u4": "SIL K AE T"}
    assert agreement(swapped) < 0 < agreement(right)
    # A word that is everywhere says nothing; a partial match ("K AE" of "K AE T") is no hit.
    assert agreement({u: "K AE T D AO G AH" for u in right}) == 0
    assert agreement({"u1": "K AE", "u2": "K AE", "u3": "AO G", "u4": ""}) == 0


def test_unusable_inputs_are_named(align_dir, tmp_path):
    agreement = DictionaryAgreement(align_dir, align_dir / "lexicon.txt")
    with pytest.raises(UsrasrError, match="no utterance"):
        agreement({"other": "K AE T"})
    with pytest.raises(UsrasrError, match="not a `usrasr align --out` dir"):
        DictionaryAgreement(tmp_path / "nowhere", align_dir / "lexicon.txt")
    (tmp_path / "other.txt").write_text("BIRD B ER D\n")
    with pytest.raises(UsrasrError, match="names no segment"):
        DictionaryAgreement(align_dir, tmp_path / "other.txt")


@pytest.mark.slow
def test_train_keeps_the_seqce_restart_that_agrees_best_with_the_dictionary(tiny_corpus, tmp_path, monkeypatch):
    import json

    import torch
    from click.testing import CliRunner

    from usrasr.cli import cli

    # The real agreement of each restart's phones, then a scripted one that favours the middle restart
    # (on the tiny corpus the real ones may favour the lowest loss, which would prove nothing).
    scripted, real = iter([0.0, 1.0, 0.5]), []

    def agreement(self, phones):
        real.append(original(self, phones))
        return next(scripted)

    original = DictionaryAgreement.__call__
    monkeypatch.setattr(DictionaryAgreement, "__call__", agreement)

    def run(*args):
        return CliRunner().invoke(cli, [*map(str, args)])

    aligned = run("align", "--corpus", tiny_corpus, "--segments", "pauses", "--out", tmp_path / "align",
                  "--min-count", "2", "--clusters", "20", "--text-words", "60", "--dim", "8", "--restarts", "1",
                  "--epochs", "1", "--steps", "30")
    assert aligned.exit_code == 0, aligned.output
    out = tmp_path / "exp"
    trained = run("train", "--corpus", tiny_corpus, "--out", out, "--no-score", "--set", "num_units=20",
                  "--set", "kmeans_iterations=5", "--set", "restarts=3", "--set", "iterations=5",
                  "--set", "self_training_rounds=0", "--set", f"align_dictionary={tmp_path / 'align'}")
    assert trained.exit_code == 0, trained.output
    seqce = json.loads((out / "summary.json").read_text())["seqce"]
    assert seqce["dictionary_agreement"] == [0.0, 1.0, 0.5] and len(real) == 3 and all(-1 <= a <= 1 for a in real)
    assert seqce["best_restart"] == torch.load(out / "seqce" / "model.pt")["restart"] == 1
    refused = run("train", "--corpus", tiny_corpus, "--out", tmp_path / "odm", "--set", "objective=odm",
                  "--set", f"align_dictionary={tmp_path / 'align'}")
    assert refused.exit_code == 2 and "needs objective=seqce" in refused.output
