"""Choosing the torch device every stage runs on, and its CPU threads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from usrasr.utils.errors import UsrasrError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsrasrError(f"unknown device '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsrasrError("--device cuda requested but CUDA is not available")
    return device


PRECISIONS = ("auto", "bf16", "fp32")


def has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 in hardware: a GPU that supports it, or a CPU with AMX
    or AVX-512 BF16 units (elsewhere a CPU emulates bf16, slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # torch.cpu exposes these checks without a public name; an older torch without them: no
    probes = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return device.type == "cpu" and any(probe is not None and probe() for probe in probes)


def check_precision(precision: str) -> None:
    """A one-line error unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise UsrasrError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` (one of :data:`PRECISIONS`) means bf16 autocast on ``device``: bf16, or
    auto on a device with bf16 in hardware."""
    check_precision(precision)
    return precision == "bf16" or (precision == "auto" and has_native_bf16(device))


@contextmanager
def torch_threads(default: int) -> Iterator[int]:
    """Run the block with ``default`` torch intra-op threads, unless the user chose a
    count: ``OMP_NUM_THREADS`` (which ``usrasr train --threads`` sets, and torchrun sets to
    1) wins.  The previous count comes back afterwards: ``torch.set_num_threads`` is
    process-wide, so each stage sets its own for its duration.  Yields the count used."""
    chosen = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if chosen and not (chosen.isdigit() and int(chosen) > 0):
        raise UsrasrError(f"OMP_NUM_THREADS must be a positive integer, got '{os.environ['OMP_NUM_THREADS']}'")
    count = int(chosen) if chosen else default
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)
