"""Discrete acoustic units: k-means over features, and how good they are.

Units are the observations of the sequence-level model.  ``UnitSequences``
holds one unit id per (optionally run-merged) step of each utterance, plus the
frame where each step starts, so that scoring can line units up with the
phone alignments of the scoring manifests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from usrasr.utils.console import progress



@dataclass
class UnitSequences:
    """Unit ids per utterance; ``starts[i][j]`` is the frame where step ``j`` begins."""

    ids: list[str]
    units: list[np.ndarray]
    starts: list[np.ndarray]
    num_units: int
    groups: list[int] | None = None  # emission-table index per utterance (per-speaker tables)

    def group_tensor(self) -> Tensor | None:
        return None if self.groups is None else torch.tensor(self.groups, dtype=torch.long)

    def padded(self, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
        """``(B, T)`` unit ids padded with -1, and ``(B,)`` lengths."""
        lengths = torch.tensor([len(u) for u in self.units], dtype=torch.long)
        padded = torch.full((len(self.units), int(lengths.max())), -1, dtype=torch.long)
        for i, u in enumerate(self.units):
            padded[i, : len(u)] = torch.from_numpy(u.astype(np.int64))
        return padded.to(device), lengths.to(device)

    def subset(self, keep: Iterable[str]) -> "UnitSequences":
        keep = set(keep)
        rows = [i for i, uid in enumerate(self.ids) if uid in keep]
        return UnitSequences([self.ids[i] for i in rows], [self.units[i] for i in rows],
                             [self.starts[i] for i in rows], self.num_units,
                             None if self.groups is None else [self.groups[i] for i in rows])


def mode_filter(units: np.ndarray, width: int) -> np.ndarray:
    """Replace each frame's unit by the most frequent unit in a centred window (flicker removal)."""
    if width <= 1 or len(units) == 0:
        return units
    half = width // 2
    padded = np.pad(units, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    out = np.empty_like(units)
    for t, window in enumerate(windows):
        values, counts = np.unique(window, return_counts=True)
        best = values[counts == counts.max()]
        out[t] = units[t] if units[t] in best else best[0]
    return out


def merge_runs(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collapse repeated units; return the merged ids and the frame where each run starts."""
    if len(units) == 0:
        return units, np.zeros(0, dtype=np.int64)
    change = np.concatenate([[True], units[1:] != units[:-1]])
    starts = np.flatnonzero(change)
    return units[starts], starts


def to_sequences(ids: Sequence[str], frame_units: Sequence[np.ndarray], num_units: int,
                 merge: bool = True, mode_width: int = 1) -> UnitSequences:
    units, starts = [], []
    for frames in frame_units:
        frames = mode_filter(np.asarray(frames), mode_width)
        if merge:
            merged, begin = merge_runs(frames)
        else:
            merged, begin = frames, np.arange(len(frames))
        units.append(merged.astype(np.int64))
        starts.append(begin)
    return UnitSequences(list(ids), units, starts, num_units)


# --------------------------------------------------------------------------- features


def normalize_features(feats: list[Tensor], groups: Sequence[str] | None = None) -> list[Tensor]:
    """Mean/variance normalisation per utterance, or per group (e.g. speaker) when given.

    Per-speaker normalisation needs speaker labels; the default corpus has
    voice ids, users' audio may not (``speaker_field=cluster`` makes them
    from the audio, see :mod:`usrasr.corpus.speakers`).
    """
    keys = list(range(len(feats))) if groups is None else list(groups)
    stats: dict = {}
    for key, f in zip(keys, feats):
        s = stats.setdefault(key, [0.0, 0.0, 0])
        s[0] = s[0] + f.sum(0)
        s[1] = s[1] + (f * f).sum(0)
        s[2] += f.shape[0]
    out = []
    for key, f in zip(keys, feats):
        total, square, n = stats[key]
        mean = total / n
        std = (square / n - mean * mean).clamp_min(1e-5).sqrt()
        out.append((f - mean) / std)
    return out


# --------------------------------------------------------------------------- k-means


@dataclass
class Codebook:
    centroids: Tensor  # (K, D)

    @property
    def num_units(self) -> int:
        return self.centroids.shape[0]

    def assign(self, feats: Tensor, chunk: int = 65536) -> Tensor:
        """Nearest centroid of every row of ``feats`` (N, D)."""
        out = []
        c_norm = (self.centroids * self.centroids).sum(1)
        for block in feats.split(chunk):
            dist = c_norm[None, :] - 2 * block @ self.centroids.t()
            out.append(dist.argmin(1))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def kmeans(data: Tensor, k: int, iterations: int = 20, seed: int = 0, sample: int = 200_000,
           init: Codebook | None = None) -> Codebook:
    """Batched Lloyd k-means on a random sample of rows, from ``init`` or a k-means++ start."""
    generator = torch.Generator().manual_seed(seed)
    if data.shape[0] > sample:
        data = data[torch.randperm(data.shape[0], generator=generator)[:sample]]
    data = data.float()
    if data.shape[0] < k:
        raise ValueError(f"k-means needs at least k={k} frames, got {data.shape[0]}")
    if init is not None:
        if init.centroids.shape != (k, data.shape[1]):
            raise ValueError(f"k-means init has shape {tuple(init.centroids.shape)}, need ({k}, {data.shape[1]})")
        centroids = init.centroids.float().clone()
    else:
        first = torch.randint(data.shape[0], (1,), generator=generator)
        centroids = data[first]
        nearest = ((data - centroids[0]) ** 2).sum(1)
        for _ in range(1, k):  # k-means++: sample proportional to squared distance
            idx = torch.multinomial(nearest / nearest.sum(), 1, generator=generator)
            centroids = torch.cat([centroids, data[idx]])
            nearest = torch.minimum(nearest, ((data - data[idx]) ** 2).sum(1))
    codebook = Codebook(centroids)
    with progress() as bar:
        task = bar.add_task(f"k-means K={k}", total=iterations, status="")
        for _ in range(iterations):
            assignment = codebook.assign(data)
            sums = torch.zeros_like(centroids).index_add_(0, assignment, data)
            counts = torch.bincount(assignment, minlength=k).float()
            empty = counts == 0
            centroids = torch.where(empty[:, None], centroids, sums / counts.clamp_min(1)[:, None])
            # Re-seed empty clusters on random points, except when adapting a given codebook:
            # there an empty cluster keeps its centroid so that unit ids keep their meaning.
            if empty.any() and init is None:
                centroids[empty] = data[torch.randint(data.shape[0], (int(empty.sum()),), generator=generator)]
            codebook = Codebook(centroids)
            bar.advance(task)
    return codebook


# --------------------------------------------------------------------------- scoring against alignments


def mutual_information(joint: np.ndarray) -> tuple[float, float, float]:
    """I(row; column), H(row) and H(column) in nats, from a table of joint counts."""
    p = joint / joint.sum()
    rows, cols = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    entropy = lambda q: float(-(q[q > 0] * np.log(q[q > 0])).sum())  # noqa: E731
    return float((p[nz] * np.log(p[nz] / (rows @ cols)[nz])).sum()), entropy(rows), entropy(cols)
