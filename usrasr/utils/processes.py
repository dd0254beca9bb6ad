"""Worker processes that never outlive the process that started them, and directory locks."""

from __future__ import annotations

import concurrent.futures as futures
import ctypes
import errno
import fcntl
import multiprocessing
import os
import signal
from pathlib import Path

from usrasr.utils.errors import UsrasrError

_PR_SET_PDEATHSIG = 1
# Lock files held open by this process: the kernel releases them when it exits, killed or not.
_held: dict[Path, int] = {}


def _die_with_parent(parent: int) -> None:
    """Worker initializer: the kernel sends SIGKILL when the parent dies (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown is all there is
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


_forked_function = None  # what forked_map's workers call: they inherit it, it is never pickled


def _call_forked(chunk: list) -> list:
    return [_forked_function(item) for item in chunk]


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def forked_map(function, items: list, num_workers: int) -> list:
    """``[function(item) for item in items]``, in ``num_workers`` forked processes that inherit
    this process's memory (a decoding graph, say): only the items and the results are pickled.
    ``function`` must not use torch, whose thread pool does not survive a fork."""
    global _forked_function
    num_workers = min(num_workers, len(items))
    if num_workers <= 1:
        return [function(item) for item in items]
    _forked_function = function
    try:
        with multiprocessing.get_context("fork").Pool(num_workers, initializer=_die_with_parent,
                                                      initargs=(os.getpid(),)) as pool:
            parts = pool.map(_call_forked, [items[w::num_workers] for w in range(num_workers)])
    finally:
        _forked_function = None
    results = [None] * len(items)
    for w, part in enumerate(parts):
        results[w::num_workers] = part
    return results


def worker_pool(num_workers: int) -> futures.ProcessPoolExecutor:
    """A process pool whose workers are killed with the parent, even by ``kill -9``."""
    return futures.ProcessPoolExecutor(max(1, num_workers), initializer=_die_with_parent, initargs=(os.getpid(),))


def run_parallel(function, jobs: list[tuple], num_workers: int):
    """Yield ``function(*job)`` for every job as each finishes, computed in a :func:`worker_pool`;
    on an error or Ctrl-C in the caller, the jobs not yet started are cancelled."""
    pool = worker_pool(num_workers)
    try:
        for done in futures.as_completed([pool.submit(function, *job) for job in jobs]):
            yield done.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def lock_directory(directory: str | Path, what: str) -> None:
    """Hold ``directory/.lock`` until this process exits; fail at once when another process
    holds it (``what`` says what the directory is, for the message)."""
    directory = Path(directory).resolve()
    if directory in _held:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UsrasrError(f"cannot lock {what} {directory}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise UsrasrError(f"{what} {directory} is in use by another usrasr process; wait for it or use "
                              f"another directory") from None
        raise UsrasrError(f"cannot lock {what} {directory}: {e.strerror or e}") from None
    _held[directory] = fd


def unlock_directory(directory: str | Path) -> None:
    fd = _held.pop(Path(directory).resolve(), None)
    if fd is not None:
        os.close(fd)
