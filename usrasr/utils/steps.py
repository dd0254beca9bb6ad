"""Steps that are redone exactly when their inputs change.

A step (e.g. "import the audio of split train_audio") records a fingerprint of
its inputs and options, and the outputs it makes, in a small JSON file.  Run
again, it is skipped when the fingerprint is the same and it finished; it
resumes (keeping the finished files, which are written atomically) when it
was interrupted with the same inputs; and it removes everything it made
before starting over when an input or option changed, so no stale artefact
of an earlier run survives beside the new ones.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from usrasr.utils.io import remove_stale_temporaries, write_json_atomic


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_stamp(path: str | Path) -> list:
    """Size and modification time of a file: cheap for many large audio files."""
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def remove_outputs(paths) -> None:
    for path in map(Path, paths):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@dataclass
class Step:
    """One step of the work under ``root``: its name, a JSON-able description of its inputs,
    and what it makes; its record is ``root/steps/<name>.json``."""

    root: Path
    name: str
    inputs: dict
    outputs: list[Path] = field(default_factory=list)

    @property
    def record(self) -> Path:
        return self.root / "steps" / f"{self.name}.json"

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.inputs, sort_keys=True).encode()).hexdigest()

    def _recorded(self) -> dict:
        try:
            return json.loads(self.record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def done(self) -> bool:
        """Finished before with the same inputs, and every output still there."""
        recorded = self._recorded()
        return (recorded.get("fingerprint") == self.fingerprint and recorded.get("complete") is True
                and all(p.exists() for p in self.outputs))

    def begin(self, force: bool = False) -> None:
        """Start (or resume) the step: what an earlier run with other inputs made, or
        everything with ``force``, is removed first; temporary files of a killed run always."""
        recorded = self._recorded()
        if force or recorded.get("fingerprint") != self.fingerprint:
            remove_outputs([self.root / p for p in recorded.get("outputs", [])] + self.outputs)
        for directory in {p if p.is_dir() else p.parent for p in self.outputs}:
            remove_stale_temporaries(directory)
        self._write(complete=False)

    def finish(self) -> None:
        self._write(complete=True)

    def _write(self, complete: bool) -> None:
        write_json_atomic(self.record, {
            "fingerprint": self.fingerprint, "complete": complete, "inputs": self.inputs,
            "outputs": sorted(str(p.relative_to(self.root)) for p in self.outputs),
        })


def run_steps(steps: list[Step], force: bool = False) -> list[bool]:
    """Which of ``steps`` (a chain: each depends on the ones before) must run: from the first
    that is not done on, every step is begun (so a redone step never leaves a later one's
    stale output).  Returns one flag per step; the caller runs the flagged ones and
    :meth:`Step.finish` es them."""
    first = next((i for i, step in enumerate(steps) if force or not step.done()), len(steps))
    for step in steps[first:]:
        step.begin(force)
    return [i >= first for i in range(len(steps))]
