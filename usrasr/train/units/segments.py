"""Phone-like segments: unsupervised segmentation of fbank and one feature vector per segment.

Frame-level k-means units of one phone follow each other in a fixed order
and change with the voice, and a categorical emission per phone treats them
as independent: the model then prefers labellings that explain those
within-phone regularities over the phones (see
``docs/results/2026-11-22-em-from-the-oracle.md``).  One unit
per segment removes that structure: each step of the sequence model is one
stretch of audio about a phone long, which is what condition (1) of the
method asks for.

The segmentation is the optimal piecewise-constant fit of the (normalised)
frames: it minimises the squared distance of every frame to its segment's
mean plus a fixed ``penalty`` per segment, by dynamic programming over
segment ends (lengths ``min_frames..max_frames``).  No labels, no model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from usrasr.utils.console import track

# Utterances segmented together: the DP's tables are (batch, frames + 1, dim) float64.
_BATCH = 128


def segment_boundaries(feats: list[Tensor], penalty: float, min_frames: int = 2,
                       max_frames: int = 30) -> list[np.ndarray]:
    """Segment boundaries per utterance: ``[0, b_1, ..., T]`` (starts, then the end).

    ``penalty`` trades segments for fit: higher gives fewer, longer segments.
    An utterance shorter than ``min_frames`` is one segment.
    """
    if penalty <= 0 or min_frames < 1 or max_frames < min_frames:
        raise ValueError("need penalty > 0 and 1 <= min_frames <= max_frames")
    out: list[np.ndarray] = []
    for begin in track(range(0, len(feats), _BATCH), "segmenting"):
        out.extend(_segment_batch(feats[begin:begin + _BATCH], penalty, min_frames, max_frames))
    return out


def _segment_batch(feats: list[Tensor], penalty: float, min_frames: int, max_frames: int) -> list[np.ndarray]:
    longest = max(len(f) for f in feats)
    x = torch.zeros(len(feats), longest, feats[0].shape[1], dtype=torch.float64)
    for i, f in enumerate(feats):
        x[i, :len(f)] = f.double()
    # prefix sums give any segment's squared error in O(dim)
    sums = torch.cat([x.new_zeros(len(feats), 1, x.shape[2]), x.cumsum(1)], 1)
    squares = torch.cat([x.new_zeros(len(feats), 1), (x * x).sum(-1).cumsum(1)], 1)
    best = torch.full((len(feats), longest + 1), float("inf"), dtype=torch.float64)
    best[:, 0] = 0.0
    back = torch.zeros(len(feats), longest + 1, dtype=torch.long)
    lengths = torch.arange(min_frames, max_frames + 1)
    for end in range(1, longest + 1):
        starts = end - lengths
        usable = starts >= 0
        if not usable.any():
            continue  # no segment can end this early
        starts, span = starts[usable], lengths[usable]
        total = sums[:, end, None] - sums[:, starts]
        error = squares[:, end, None] - squares[:, starts] - (total * total).sum(-1) / span.double()
        cost, choice = (best[:, starts] + error + penalty).min(1)
        best[:, end] = cost
        back[:, end] = starts[choice]
    result = []
    for i, f in enumerate(feats):
        if not torch.isfinite(best[i, len(f)]):  # shorter than min_frames (or no legal split): one segment
            result.append(np.array([0, len(f)], dtype=np.int64))
            continue
        bounds, t = [len(f)], len(f)
        while t > 0:
            t = int(back[i, t])
            bounds.append(t)
        result.append(np.array(bounds[::-1], dtype=np.int64))
    return result


def segment_features(feats: list[Tensor], boundaries: list[np.ndarray], parts: int = 3) -> list[Tensor]:
    """One vector per segment: the means of ``parts`` equal sub-spans, concatenated
    (the shape of the phone's trajectory, e.g. a diphthong's or a stop's)."""
    out = []
    for f, bounds in zip(feats, boundaries):
        rows = []
        for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            edges = np.linspace(start, end, parts + 1)
            pieces = []
            for lo, hi in zip(edges[:-1], edges[1:]):
                lo_frame = int(np.floor(lo))
                pieces.append(f[lo_frame:max(int(np.ceil(hi)), lo_frame + 1)].mean(0))
            rows.append(torch.cat(pieces))
        out.append(torch.stack(rows) if rows else f.new_zeros(0, f.shape[1] * parts))
    return out
