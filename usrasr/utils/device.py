"""Choosing the torch device every stage runs on."""

from __future__ import annotations

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
