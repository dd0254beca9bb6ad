"""Atomic file output: nothing half-written ever appears under its final name."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The temporary file lives in the same directory so the final ``os.replace``
    is atomic on POSIX.  On any exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix(es) at the end: libraries such as Lhotse pick the
    # format (e.g. gzip) from the file name.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix="".join(path.suffixes[-2:]))
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates 0600; outputs get the usual permissions (umask applies).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a file for writing that only appears at ``path`` once closed cleanly.

    ``*.gz`` paths are gzip-compressed.
    """
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp:
        opener = gzip.open if str(path).endswith(".gz") else open
        if opener is gzip.open and "b" not in mode:
            mode = mode + "t"
        with opener(tmp, mode, encoding=encoding) as f:
            yield f


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def save_lhotse_atomic(manifest, path: str | os.PathLike) -> None:
    """Write a Lhotse manifest (RecordingSet, SupervisionSet, CutSet, ...) atomically."""
    with atomic_path(path) as tmp:
        manifest.to_file(tmp)
