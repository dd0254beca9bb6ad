import os
from pathlib import Path

import pytest

os.environ.setdefault("USRASR_NO_PROGRESS", "1")

TINY_CORPUS_ARGS = ["--utterances", "30", "--dev-utterances", "6", "--test-utterances", "6",
                    "--text-sentences", "3000"]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A tiny default corpus (30 train-audio utterances), built once per test session."""
    from click.testing import CliRunner

    from usrasr.cli import cli

    out = tmp_path_factory.mktemp("default") / "corpus"
    result = CliRunner().invoke(cli, ["prepare", "default", "--out", str(out), *TINY_CORPUS_ARGS])
    assert result.exit_code == 0, result.output
    return out


def kill_once_written(command: list[str], written: Path, env: dict) -> None:
    """Start ``command``, SIGKILL its whole process group as soon as ``written`` exists
    (a first checkpoint), and fail if it finished before that."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    deadline = time.time() + 300
    while not written.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
