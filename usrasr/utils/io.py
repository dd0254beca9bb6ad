"""Atomic file output: nothing half-written ever appears under its final name."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

from usrasr.utils.errors import UsrasrError

# Prefix of the temporary files of atomic_path: a killed run leaves them behind, and
# remove_stale_temporaries clears them.
TEMP_PREFIX = ".tmp."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The temporary file lives in the same directory so the final ``os.replace``
    is atomic on POSIX.  On any exception the temporary file is removed.
    """
    path = Path(path)
    if path.is_dir():
        raise UsrasrError(f"cannot write {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Keep the real suffix(es) at the end: libraries such as Lhotse pick the
        # format (e.g. gzip) from the file name.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.",
                                   suffix="".join(path.suffixes[-2:]))
    except OSError as e:
        raise UsrasrError(f"cannot write {path}: {e.strerror or e}") from None
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
        if not str(path).endswith(".gz"):
            with open(tmp, mode, encoding=encoding) as f:
                yield f
            return
        # No file name and time in the gzip header: the same content gives the same bytes.
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
            if "b" in mode:
                yield packed
            else:
                with io.TextIOWrapper(packed, encoding=encoding) as f:
                    yield f


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def save_lhotse_atomic(manifest, path: str | os.PathLike) -> None:
    """Write a Lhotse manifest (RecordingSet, SupervisionSet, CutSet, ...) atomically;
    a gzipped one byte for byte the same for the same manifest (see :func:`atomic_open`)."""
    if not str(path).endswith(".gz"):
        with atomic_path(path) as tmp:
            manifest.to_file(tmp)
        return
    with tempfile.TemporaryDirectory() as scratch:
        plain = Path(scratch) / Path(str(path)[:-3]).name
        manifest.to_file(plain)
        with atomic_open(path, "wb") as f, open(plain, "rb") as src:
            shutil.copyfileobj(src, f)


def read_utf8_text(path: str | os.PathLike, what: str = "file") -> str:
    """The text of a UTF-8 file, or one clear error (UTF-16, other encodings, unreadable)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsrasrError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if b"\x00" in data:
        raise UsrasrError(f"{what} {path} is not UTF-8 text (it has NUL bytes: UTF-16?); convert it, "
                          f"e.g. iconv -f UTF-16 -t UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UsrasrError(f"{what} {path} is not UTF-8 text (line {line}); convert it to UTF-8") from None


def remove_stale_temporaries(directory: str | os.PathLike) -> int:
    """Remove the temporary files that a killed :func:`atomic_path` left in ``directory``
    (not below it); returns how many."""
    directory = Path(directory)
    stale = list(directory.glob(f"{TEMP_PREFIX}*")) if directory.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
