"""Helpers shared by the tests (fixtures are in tests/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
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
