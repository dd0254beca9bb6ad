"""Helpers shared by the tests (fixtures are in tests/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TINY_CORPUS_ARGS = ["--utterances", "30", "--dev-utterances", "6", "--test-utterances", "6",
                    "--text-sentences", "3000"]


def kill_once_written(command: list[str], written: Path, env: dict) -> None:
    """Start ``command``, SIGKILL its whole process group as soon as ``written`` exists
    (a first checkpoint), and fail if it finished before that."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    deadline = time.time() + 300
    while not written.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def pretrain_killed_and_resumed(args: list[str], out: Path) -> tuple[Path, Path]:
    """``usrasr pretrain ARGS`` run through (``out/reference``), and run again killed at its first
    checkpoint then resumed (``out/killed``), in one thread for bit-reproducible sums."""
    base = [sys.executable, "-m", "usrasr", "-q", "pretrain"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference, killed = out / "reference", out / "killed"
    subprocess.run([*base, "--out", str(reference), *args], check=True, capture_output=True, env=env)
    kill_once_written([*base, "--out", str(killed), *args], killed / "train_state.pt", env)
    assert not (killed / "encoder.pt").exists()
    subprocess.run([*base, "--out", str(killed), "--resume", *args], check=True, capture_output=True, env=env)
    return reference, killed
