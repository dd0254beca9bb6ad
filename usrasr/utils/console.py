"""Logging and progress on stderr, so stdout stays clean for shell pipelines."""

from __future__ import annotations

import logging
import os
import random
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

stderr = Console(stderr=True)
log = logging.getLogger("usrasr")

_quiet = False


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    global _quiet
    _quiet = quiet
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    if stderr.is_terminal:
        handler: logging.Handler = RichHandler(console=stderr, show_time=False, show_path=False, markup=False)
    else:
        # Pipelines and log files get one unwrapped line per message.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("usrasr %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    # A library that logs through logging.info() (lhotse does) makes the logging module install
    # a stderr handler on the root logger the first time, and every usrasr record would then be
    # printed twice.  A root handler that prints nothing prevents that and keeps propagation
    # (which pytest's caplog and users' own handlers rely on).
    if not logging.root.handlers:
        logging.root.addHandler(logging.NullHandler())


def progress(**kwargs) -> Progress:
    """A rich progress bar on stderr (hidden with --quiet or when not a terminal under CI)."""
    disable = _quiet or bool(os.environ.get("USRASR_NO_PROGRESS"))
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=stderr,
        disable=disable,
        transient=False,
        **kwargs,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress() as bar:
        task = bar.add_task(description, total=total, status="")
        for item in items:
            yield item
            bar.advance(task)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
