"""What the ODM classifier sees: the speech steps of each utterance, projected.

Silence is left out before matching, since the phone LM has no silence: a
step (segment) whose mean log-mel energy lies more than ``margin`` below its
utterance's median is silent.  The rest are projected on their principal
components and scaled to unit variance per component (one projection for all
utterances, fitted on the training features).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def speech_mask(energies: list[Tensor], margin: float) -> list[Tensor]:
    """True for the steps within ``margin`` of their utterance's median energy, or above it."""
    return [e >= e.median() - margin if len(e) else e.bool() for e in energies]


@dataclass
class Projection:
    mean: Tensor  # (D,)
    basis: Tensor  # (D, d)
    scale: Tensor  # (d,)

    @classmethod
    def fit(cls, features: Tensor, dim: int, seed: int = 0) -> Projection:
        """Principal components (``dim`` <= 0 or >= D: all dimensions, unrotated)."""
        mean = features.mean(0)
        centred = features - mean
        if 0 < dim < features.shape[1]:
            torch.manual_seed(seed)  # pca_lowrank's random sketch
            _, _, basis = torch.pca_lowrank(centred, q=dim, center=False, niter=4)
        else:
            basis = torch.eye(features.shape[1])
        scale = (centred @ basis).std(0).clamp_min(1e-6)
        return cls(mean, basis, scale)

    def __call__(self, features: Tensor) -> Tensor:
        return (features - self.mean) @ self.basis / self.scale
