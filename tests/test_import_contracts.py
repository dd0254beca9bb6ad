"""The layer rules of usrasr/__init__.py hold, and the contracts that state them bite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the package under ``root`` with ``root``'s pyproject.toml contracts."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()"], cwd=root, env=env, capture_output=True, text=True)


def test_the_package_keeps_its_import_contracts():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def package_copy(tmp_path) -> Path:
    shutil.copytree(REPO / "usrasr", tmp_path / "usrasr", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return tmp_path


@pytest.mark.parametrize("module, line, broken", [
    ("graph/fsa.py", "import usrasr.train.pipeline", "usrasr.graph is not allowed to import usrasr.train"),
    ("decode/search.py", "import usrasr.evaluate.scoring", "usrasr.decode is not allowed to import usrasr.evaluate"),
    ("train/seqce_stage.py", "import usrasr.corpus.scoring",
     "Transcripts and alignments are read by the training diagnostics alone BROKEN"),
])
def test_a_deliberate_violation_breaks_a_contract(package_copy, module, line, broken):
    with open(package_copy / "usrasr" / module, "a", encoding="utf-8") as f:
        f.write(f"\n{line}\n")
    result = lint_imports(package_copy)
    assert result.returncode != 0 and broken in result.stdout, result.stdout + result.stderr
