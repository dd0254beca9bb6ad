"""``usrasr decode``'s results are never held back or lost, and a bad output or LM path is
refused before any decoding."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.decode.test_decode import SPOKEN, corpus, model_path, parse_text_output, run_cli  # noqa: F401 (fixtures)
from usrasr.decode import pipeline
from usrasr.decode.audio import utterances_from_paths

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng makes the test audio")


def test_a_mistyped_lm_fails_even_with_a_cached_graph(corpus, model_path, tmp_path):
    wav = corpus / "audio" / "u0.wav"
    assert run_cli("decode", "--model", model_path, wav).exit_code == 0  # the graph is cached now
    result = run_cli("decode", "--model", model_path, "--lm", tmp_path / "typo.arpa", wav)
    assert result.exit_code == 2 and result.stdout == ""
    assert "typo.arpa not found" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["directory", "unwritable"])
def test_an_output_that_cannot_be_written_fails_before_decoding(corpus, model_path, tmp_path, monkeypatch, where):
    # root writes wherever chmod forbids it; /proc takes no new files from anyone
    output = tmp_path if where == "directory" else Path("/proc/usrasr-no-such-dir/hyp.txt")
    monkeypatch.setattr(pipeline, "load_model", lambda *a: pytest.fail("decoding started"))
    result = run_cli("decode", "--model", model_path, "--output", output, corpus / "audio" / "u0.wav")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert "--output" in result.stderr and "Traceback" not in result.output


def test_an_interrupted_decode_keeps_what_it_decoded(corpus, model_path, tmp_path, monkeypatch):
    finished = pipeline.Recognizer.decode

    def interrupted(self, utterances, batch_size=8):
        for n, decoded in enumerate(finished(self, utterances, 1)):
            if n == 2:
                raise KeyboardInterrupt
            yield decoded

    monkeypatch.setattr(pipeline.Recognizer, "decode", interrupted)
    output = tmp_path / "hyp.txt"
    utterances = utterances_from_paths([corpus / "audio" / f"u{i}.wav" for i in range(5)])
    with pytest.raises(KeyboardInterrupt):
        pipeline.decode_utterances(utterances, model_path, output=output)
    assert not output.exists()
    kept = (tmp_path / "hyp.txt.partial").read_text().splitlines()
    assert kept == [f"u{i} {SPOKEN[i]}" for i in range(2)]


def test_file_names_with_spaces_give_one_field_ids(corpus, model_path, tmp_path):
    shutil.copy(corpus / "audio" / "u1.wav", tmp_path / "my file.wav")
    result = run_cli("decode", "--model", model_path, "--output", tmp_path / "hyp.txt", tmp_path / "my file.wav")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "hyp.txt").read_text() == f"my_file {SPOKEN[1]}\n"


def test_a_utf16_wav_scp_is_a_one_line_error(model_path, tmp_path):
    scp = tmp_path / "wav.scp"
    scp.write_text("a /x.wav\n", encoding="utf-16")
    result = run_cli("decode", "--model", model_path, "--wav-scp", scp)
    assert result.exit_code == 2 and "not UTF-8" in result.stderr and len(result.stderr.strip().splitlines()) == 1
