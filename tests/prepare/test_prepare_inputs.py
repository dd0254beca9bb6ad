"""`usrasr prepare text|audio` on users' corpora, including every kind of bad input.

Each bad input gets a clear one-line message, and a failed command leaves no
partial output file behind.
"""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from usrasr.cli import cli
from usrasr.lang.lm import read_arpa
from usrasr.utils.io import atomic_open



def run(*args):
    result = CliRunner().invoke(cli, list(map(str, args)))
    return result.exit_code, result.output


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def random_text(n=2000, seed=0):
    """Sentences of random CMUdict words: a rich phone bigram with full rank."""
    from usrasr.lang.g2p import cmudict_lexicon

    rng = random.Random(seed)
    vocab = rng.sample(sorted(w for w in cmudict_lexicon() if w.isalpha() and 3 <= len(w) <= 7), 300)
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(4, 12))).lower() + "." for _ in range(n)]


def test_prepare_text_builds_lang_dir_lms_and_rank(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(random_text()) + "\n", encoding="utf-8")
    code, out = run("prepare", "text", corpus, "--out", tmp_path / "c")
    assert code == 0, out
    lang = tmp_path / "c" / "lang"
    for name in ("lexicon.txt", "lexicon_disambig.txt", "tokens.txt", "words.txt"):
        assert (lang / name).stat().st_size > 0
    tokens = dict(line.split() for line in (lang / "tokens.txt").read_text().splitlines())
    assert tokens["<eps>"] == "0" and "SIL" in tokens and "#0" in tokens
    words = [line.split()[0] for line in (lang / "words.txt").read_text().splitlines()]
    assert words[0] == "<eps>" and words[-3:] == ["#0", "<s>", "</s>"] and "!SIL" in words
    assert read_arpa(tmp_path / "c" / "lm" / "phone_2gram.arpa").order == 2
    assert read_arpa(tmp_path / "c" / "lm" / "word_3gram.arpa").order == 3
    rank = json.loads((tmp_path / "c" / "lm" / "rank.json").read_text())
    assert rank["full_rank"] and rank["rank"] == rank["size"]
    # idempotent: a second run does nothing and changes nothing
    before = {p: p.stat().st_mtime_ns for p in files_under(tmp_path / "c")}
    assert run("prepare", "text", corpus, "--out", tmp_path / "c")[0] == 0
    assert before == {p: p.stat().st_mtime_ns for p in files_under(tmp_path / "c")}


def test_prepare_text_skips_bad_lines_with_counts(tmp_path):
    corpus = tmp_path / "corpus.txt"
    good = "\n".join(random_text(200)).encode()
    corpus.write_bytes(good + b"\n\n   \n\xff\xfe not utf8 \xc3\x28\n!!! ???\n")
    code, out = run("prepare", "text", corpus, "--out", tmp_path / "c")
    assert code == 0, out
    assert "1 not UTF-8, 2 empty, 1 with no words" in out


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xff\xfe\xfa\n\xc3\x28\n"])
def test_prepare_text_nothing_usable_fails_cleanly(tmp_path, content):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    code, out = run("prepare", "text", corpus, "--out", tmp_path / "c")
    assert code != 0 and "no usable sentence" in out
    assert len(out.strip().splitlines()) == 1
    assert files_under(tmp_path / "c") == []


def test_missing_lexicon_entry_is_reported(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\nthe zorblax sat\n", encoding="utf-8")
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("THE DH AH\nCAT K AE T\nSAT S AE T\nON AA N\nMAT M AE T\n", encoding="utf-8")
    code, out = run("prepare", "text", corpus, "--out", tmp_path / "c", "--lexicon", lexicon, "--no-g2p")
    assert code == 0, out
    assert "1 word(s) (1 running) have no pronunciation" in out and "ZORBLAX" in out
    oov = json.loads((tmp_path / "c" / "lang" / "oov.json").read_text())
    assert oov["unpronounceable"] == ["ZORBLAX"]


def test_malformed_lexicon_fails_without_partial_files(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat\n", encoding="utf-8")
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("THE DH AH\nCAT K AE QQ\n", encoding="utf-8")
    code, out = run("prepare", "text", corpus, "--out", tmp_path / "c", "--lexicon", lexicon)
    assert code != 0 and "unknown phone(s) QQ for 'CAT'" in out
    assert files_under(tmp_path / "c") == []


def test_unigram_lm_is_flagged_rank_deficient(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(random_text()) + "\n", encoding="utf-8")
    code, out = run("prepare", "text", corpus, "--out", tmp_path / "c", "--phone-lm-order", "1")
    assert code == 0, out
    rank = json.loads((tmp_path / "c" / "lm" / "rank.json").read_text())
    assert not rank["full_rank"] and rank["rank"] < rank["size"]
    assert "LM condition (2) fails" in out and "RANK-DEFICIENT" in out


def _tone(seconds, rate, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 220 * t)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def test_prepare_audio_converts_and_skips_bad_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sf.write(src / "mono16k.wav", _tone(1.0, 16000), 16000)
    sf.write(src / "stereo44k.flac", _tone(1.5, 44100, channels=2), 44100)
    sf.write(src / "mono8k.wav", _tone(0.5, 8000), 8000)
    (src / "empty.wav").write_bytes(b"")
    (src / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    sf.write(src / "zero.wav", np.zeros(0), 16000)
    out_dir = tmp_path / "c"
    code, out = run("prepare", "audio", src, "--out", out_dir)
    assert code == 0, out
    from lhotse import load_manifest

    cuts = load_manifest(out_dir / "manifests" / "cuts_train_audio.jsonl.gz")
    assert sorted(c.id for c in cuts) == ["mono16k", "mono8k", "stereo44k"]
    for cut in cuts:
        assert cut.sampling_rate == 16000 and cut.num_channels == 1
        assert cut.has_features and cut.num_features == 80 and cut.features.type == "kaldi-fbank"
    assert abs(cuts["stereo44k"].duration - 1.5) < 0.01
    skipped = json.loads((out_dir / "logs" / "skipped_audio.json").read_text())
    assert sorted(s[0] for s in skipped) == ["corrupt", "empty", "zero"]
    assert "skipped 3 file(s)" in out


def test_prepared_audio_reads_from_another_working_directory(tmp_path, monkeypatch):
    from usrasr.corpus.reader import load_audio

    (tmp_path / "src").mkdir()
    sf.write(tmp_path / "src" / "a.wav", _tone(1.0, 16000), 16000)
    monkeypatch.chdir(tmp_path)
    code, out = run("prepare", "audio", "src", "--out", "rel")  # relative paths, as users type them
    assert code == 0, out
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    split = load_audio(tmp_path / "rel", "train_audio")
    assert split.ids == ["a"] and split.feats[0].shape[1] == 80


def test_prepare_audio_from_wav_scp_and_all_bad_fails(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(0.5, 16000), 16000)
    scp = tmp_path / "wav.scp"
    scp.write_text(f"utt1 {tmp_path / 'a.wav'}\nutt2 {tmp_path / 'missing.wav'}\n")
    code, out = run("prepare", "audio", scp, "--out", tmp_path / "ok")
    assert code == 0, out
    bad = tmp_path / "bad.scp"
    bad.write_text(f"utt2 {tmp_path / 'missing.wav'}\n")
    code, out = run("prepare", "audio", bad, "--out", tmp_path / "none")
    assert code != 0 and "no usable audio" in out
    assert not list((tmp_path / "none").rglob("*.jsonl.gz"))


def test_atomic_open_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert files_under(tmp_path) == []


def test_cli_version_and_every_stage_in_help():
    assert subprocess.run([sys.executable, "-m", "usrasr", "--version"], capture_output=True,
                          text=True).stdout.startswith("usrasr, version")
    code, out = run("--help")
    assert code == 0
    for stage in ("prepare", "pretrain", "train", "decode", "evaluate", "check", "simulate", "bench"):
        assert stage in out
