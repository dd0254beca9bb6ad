"""A user's own corpus keeps what it should and nothing else: ids per split, steps redone
exactly when their inputs change, unsafe ids and encodings refused in one line."""

import json

import soundfile as sf
from lhotse import load_manifest

from tests.prepare.test_prepare_inputs import _tone, files_under, random_text, run


def _write_text(path, n=400, seed=0):
    path.write_text("\n".join(random_text(n, seed)) + "\n", encoding="utf-8")
    return path


def test_same_file_name_in_two_splits_keeps_each_splits_audio(tmp_path):
    for split, seconds in (("train", 2.4), ("test", 2.0)):
        (tmp_path / split).mkdir()
        sf.write(tmp_path / split / "utt01.wav", _tone(seconds, 16000), 16000)
    corpus = tmp_path / "c"
    assert run("prepare", "audio", tmp_path / "train", "--out", corpus)[0] == 0
    code, out = run("prepare", "audio", tmp_path / "test", "--out", corpus, "--name", "test")
    assert code == 0, out
    durations = {split: load_manifest(corpus / "manifests" / f"cuts_{split}.jsonl.gz")["utt01"].duration
                 for split in ("train_audio", "test")}
    assert durations == {"train_audio": 2.4, "test": 2.0}
    assert (corpus / "audio" / "test" / "utt01.wav").is_file()


def test_prepare_audio_redoes_changed_input_and_skips_unchanged(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b"):
        sf.write(src / f"{name}.wav", _tone(1.0, 16000), 16000)
    corpus = tmp_path / "c"
    assert run("prepare", "audio", src, "--out", corpus)[0] == 0
    before = {p: p.stat().st_mtime_ns for p in files_under(corpus)}
    assert run("prepare", "audio", src, "--out", corpus)[0] == 0
    assert before == {p: p.stat().st_mtime_ns for p in files_under(corpus)}  # unchanged: skipped
    (src / "b.wav").unlink()
    sf.write(src / "c.wav", _tone(0.5, 16000), 16000)
    code, out = run("prepare", "audio", src, "--out", corpus)  # no --force
    assert code == 0, out
    cuts = load_manifest(corpus / "manifests" / "cuts_train_audio.jsonl.gz")
    assert sorted(c.id for c in cuts) == ["a", "c"]
    assert sorted(p.name for p in (corpus / "audio" / "train_audio").iterdir()) == ["a.wav", "c.wav"]
    assert not [p for p in files_under(corpus) if p.name.startswith((".tmp", "chunk_"))]


def test_prepare_text_redoes_changed_input_and_option_and_removes_stale_lms(tmp_path):
    corpus = tmp_path / "c"
    text = _write_text(tmp_path / "t.txt")
    assert run("prepare", "text", text, "--out", corpus)[0] == 0
    code, out = run("prepare", "text", text, "--out", corpus, "--phone-lm-order", "3")
    assert code == 0, out
    assert sorted(p.name for p in (corpus / "lm").iterdir()) == ["phone_3gram.arpa", "phone_5gram.arpa", "rank.json", "word_3gram.arpa"]
    _write_text(text, seed=1)  # new text, no --force
    assert run("prepare", "text", text, "--out", corpus, "--phone-lm-order", "3")[0] == 0
    assert (corpus / "text" / "train_text.txt").read_text() == "".join(
        line.upper().rstrip(".") + "\n" for line in random_text(400, 1))


def test_failed_forced_prepare_text_leaves_no_stale_lm(tmp_path, monkeypatch):
    import usrasr.prepare.text as text_stage
    from usrasr.utils.errors import UsrasrError

    corpus = tmp_path / "c"
    assert run("prepare", "text", _write_text(tmp_path / "old.txt", seed=0), "--out", corpus)[0] == 0
    new_text = _write_text(tmp_path / "new.txt", 300, seed=1)

    def failing(*args, **kwargs):
        raise UsrasrError("the LM could not be trained")

    monkeypatch.setattr(text_stage, "train_arpa", failing)
    code, out = run("prepare", "text", new_text, "--out", corpus, "--force")
    assert code == 2 and "could not be trained" in out
    assert not (corpus / "lm" / "rank.json").exists()  # the old LMs are not left beside the new lang dir
    monkeypatch.undo()
    code, out = run("prepare", "text", new_text, "--out", corpus)  # no --force: the unfinished step is redone
    assert code == 0, out
    assert json.loads((corpus / "text" / "report.json").read_text())["sentences"] == 300
    assert (corpus / "lm" / "rank.json").is_file()
    # a lexicon that is refused leaves the corpus as it was
    lexicon = tmp_path / "lex.txt"
    lexicon.write_text("THE DH AH\nCAT K AE QQ\n", encoding="utf-8")
    before = {p: p.stat().st_mtime_ns for p in files_under(corpus)}
    code, out = run("prepare", "text", new_text, "--out", corpus, "--lexicon", lexicon, "--force")
    assert code == 2 and "unknown phone(s) QQ" in out
    assert before == {p: p.stat().st_mtime_ns for p in files_under(corpus)}


def test_ids_that_are_not_file_names_are_refused_or_made_safe(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(0.5, 16000), 16000)
    scp = tmp_path / "wav.scp"
    scp.write_text(f"../../x {tmp_path / 'a.wav'}\n")
    code, out = run("prepare", "audio", scp, "--out", tmp_path / "deep" / "er" / "c")
    assert code == 2 and "utterance id '../../x'" in out and len(out.strip().splitlines()) == 1
    assert not (tmp_path / "deep" / "x.wav").exists() and not (tmp_path / "deep").exists()
    src = tmp_path / "src"
    src.mkdir()
    sf.write(src / "my file.wav", _tone(0.5, 16000), 16000)
    assert run("prepare", "audio", src, "--out", tmp_path / "c")[0] == 0
    assert [c.id for c in load_manifest(tmp_path / "c" / "manifests" / "cuts_train_audio.jsonl.gz")] == ["my_file"]


def test_utf16_text_lexicon_and_wav_scp_are_refused_in_one_line(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(random_text(200)) + "\n", encoding="utf-16")
    code, out = run("prepare", "text", text, "--out", tmp_path / "c")
    assert code == 2 and "not UTF-8" in out and len(out.strip().splitlines()) == 1
    good = _write_text(tmp_path / "good.txt", 50)
    lexicon = tmp_path / "lex.txt"
    lexicon.write_text("THE DH AH\n", encoding="utf-16")
    code, out = run("prepare", "text", good, "--out", tmp_path / "c", "--lexicon", lexicon)
    assert code == 2 and "not UTF-8" in out and len(out.strip().splitlines()) == 1
    scp = tmp_path / "wav.scp"
    scp.write_text("a /x.wav\n", encoding="utf-16")
    code, out = run("prepare", "audio", scp, "--out", tmp_path / "c")
    assert code == 2 and "not UTF-8" in out and len(out.strip().splitlines()) == 1
    assert files_under(tmp_path / "c") == []


def test_lower_case_stressed_and_lexiconp_lexicons_are_read(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat\nthe mat sat on the cat\n", encoding="utf-8")
    for name, lines in (("lower", "the dh ah\ncat k ae t\nsat s ae t\non aa n\nmat m ae t\n"),
                        ("stress", "THE DH AH0\nCAT K AE1 T\nSAT S AE1 T\nON AA1 N\nMAT M AE1 T\n"),
                        ("lexiconp", "THE 1.0 DH AH0\nCAT 0.8 0.1 0.2 0.9 K AE1 T\nSAT 1.0 S AE1 T\n"
                                     "ON 1 AA1 N\nMAT 1.0 M AE1 T\n")):
        lexicon = tmp_path / f"{name}.txt"
        lexicon.write_text(lines, encoding="utf-8")
        code, out = run("prepare", "text", text, "--out", tmp_path / name, "--lexicon", lexicon, "--no-g2p")
        assert code == 0, out
        entries = (tmp_path / name / "lang" / "lexicon.txt").read_text().splitlines()
        assert "CAT K AE T" in entries and "THE DH AH" in entries, (name, entries)
        assert json.loads((tmp_path / name / "lang" / "oov.json").read_text())["unpronounceable"] == []


def test_check_says_when_a_corpus_has_no_audio(tmp_path):
    text = _write_text(tmp_path / "t.txt", 2000)
    assert run("prepare", "text", text, "--out", tmp_path / "c")[0] == 0
    code, out = run("check", tmp_path / "c")
    assert "audio: none: run `usrasr prepare audio" in out and "unit extraction" not in out, out
