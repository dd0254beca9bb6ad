"""Fault injection: `usrasr prepare` killed with SIGKILL at random points, then re-run, gives a
corpus byte for byte the same as an uninterrupted run, with no temporary files left and no
worker process outliving its parent."""

import filecmp
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.prepare.test_prepare_inputs import random_text


def _inputs(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    audio = root / "recordings"
    audio.mkdir()
    for i in range(60):
        rate = (8000, 16000, 22050, 44100)[i % 4]
        t = np.arange(int(rng.uniform(0.5, 2.0) * rate)) / rate
        sf.write(audio / f"utt{i:02d}.wav", 0.3 * np.sin(2 * np.pi * rng.uniform(100, 800) * t), rate)
    text = root / "corpus.txt"
    text.write_text("\n".join(random_text(3000)) + "\n", encoding="utf-8")
    return audio, text


def _commands(audio: Path, text: Path, corpus: Path) -> list[list[str]]:
    usrasr = [sys.executable, "-m", "usrasr", "-q"]
    return [[*usrasr, "prepare", "audio", str(audio), "--out", str(corpus), "-j", "2"],
            [*usrasr, "prepare", "text", str(text), "--out", str(corpus)]]


def _processes_naming(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def _differences(left: Path, right: Path) -> list[str]:
    files = {p.relative_to(left) for p in left.rglob("*") if p.is_file()}
    other = {p.relative_to(right) for p in right.rglob("*") if p.is_file()}
    if files != other:
        return sorted(map(str, files ^ other))
    return sorted(str(p) for p in files if not filecmp.cmp(left / p, right / p, shallow=False))


@pytest.mark.slow
def test_prepare_killed_at_random_points_resumes_to_the_same_corpus(tmp_path):
    audio, text = _inputs(tmp_path)
    corpus = tmp_path / "corpus"  # one path for both runs: the manifests name their files absolutely
    env = {**os.environ, "USRASR_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    durations = []
    for command in _commands(audio, text, corpus):
        start = time.time()
        subprocess.run(command, check=True, env=env, capture_output=True)
        durations.append(time.time() - start)
    reference = tmp_path / "reference"
    corpus.rename(reference)

    rng = random.Random(0)
    kills = 0
    for command, duration in zip(_commands(audio, text, corpus), durations):
        for _ in range(3):
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, duration))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)  # the parent alone: its workers must follow it
                kills += 1
            proc.wait()
            deadline = time.time() + 10
            while _processes_naming(str(corpus)) and time.time() < deadline:
                time.sleep(0.1)
            orphans = _processes_naming(str(corpus))
            for pid in orphans:  # the test's own leftovers, should it fail
                os.kill(pid, signal.SIGKILL)
            assert orphans == [], "a worker outlived its killed parent"
        subprocess.run(command, check=True, env=env, capture_output=True)
    assert kills >= 3
    assert _differences(reference, corpus) == []
    leftovers = [p for p in corpus.rglob("*") if p.name.startswith((".tmp.", "chunk_")) or p.suffix == ".partial"]
    assert leftovers == []
    shutil.rmtree(reference)
