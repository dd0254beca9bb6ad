"""Fixtures shared by every test package (helpers that are not fixtures: tests/support.py)."""

import os
from pathlib import Path

import pytest

from tests.support import TINY_CORPUS_ARGS

os.environ.setdefault("USRASR_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A tiny default corpus (30 train-audio utterances), built once per test session."""
    from click.testing import CliRunner

    from usrasr.cli import cli

    out = tmp_path_factory.mktemp("default") / "corpus"
    result = CliRunner().invoke(cli, ["prepare", "default", "--out", str(out), *TINY_CORPUS_ARGS])
    assert result.exit_code == 0, result.output
    return out
