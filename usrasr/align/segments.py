"""Word-like segments of untranscribed audio.

A :class:`Segment` is a span of fbank frames (10 ms) of one utterance.  Two
sources need no transcripts:

* :func:`decoded_segments`: the word times of ``usrasr decode --format jsonl``;
* :func:`pause_segments`: pauses found by frame energy, with long stretches of
  speech cut again at their deepest energy dips, so that a segment is about a
  word long.

Oracle word boundaries (diagnostic only) are in :mod:`usrasr.align.oracle`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from usrasr.corpus.features import FRAME_SHIFT
from usrasr.utils.errors import UsrasrError


@dataclass(frozen=True)
class Segment:
    utterance: str
    start: int  # first frame
    end: int  # one past the last frame


@dataclass
class PauseConfig:
    """Energy segmentation: a frame is a pause when its mean log-mel energy lies below
    ``floor + threshold * (peak - floor)`` of its utterance (5th and 95th percentiles)."""

    threshold: float = 0.3
    min_pause: int = 3  # frames of pause that end a segment
    min_frames: int = 8  # shorter segments are dropped
    max_frames: int = 60  # longer ones are cut at their deepest smoothed energy dip
    smoothing: int = 5  # frames of the moving average that finds the dips


def frame_energy(feats: torch.Tensor) -> np.ndarray:
    """Mean log-mel energy of each frame."""
    return feats.double().mean(dim=1).numpy()


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of True."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _cut_at_dips(start: int, end: int, smoothed: np.ndarray, config: PauseConfig) -> list[tuple[int, int]]:
    if end - start <= config.max_frames:
        return [(start, end)]
    # The dip is searched away from the edges so that both halves stay word-sized.
    lo, hi = start + config.min_frames, end - config.min_frames
    cut = lo + int(np.argmin(smoothed[lo:hi]))
    return _cut_at_dips(start, cut, smoothed, config) + _cut_at_dips(cut, end, smoothed, config)


def pause_segments(utterance: str, feats: torch.Tensor, config: PauseConfig = PauseConfig()) -> list[Segment]:
    """Word-like segments of one utterance from its energy alone."""
    energy = frame_energy(feats)
    if len(energy) < config.min_frames:
        return []
    floor, peak = np.percentile(energy, [5, 95])
    speech = energy > floor + config.threshold * (peak - floor)
    # Pauses shorter than min_pause do not split a segment.
    for start, end in _runs(~speech):
        if end - start < config.min_pause and start > 0 and end < len(speech):
            speech[start:end] = True
    kernel = np.ones(config.smoothing) / config.smoothing
    smoothed = np.convolve(energy, kernel, mode="same")
    spans = [piece for start, end in _runs(speech) for piece in _cut_at_dips(start, end, smoothed, config)]
    return [Segment(utterance, s, e) for s, e in spans if e - s >= config.min_frames]


def read_decoded_words(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Word ``(start, end)`` seconds per utterance from ``usrasr decode --format jsonl`` output."""
    path = Path(path)
    if not path.is_file():
        raise UsrasrError(f"decoded word times not found: {path}")
    times: dict[str, list[tuple[float, float]]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            times[record["id"]] = [(float(w["start"]), float(w["end"])) for w in record["words"]]
        except (ValueError, KeyError, TypeError) as e:
            raise UsrasrError(f"{path}:{lineno}: not a `usrasr decode --format jsonl` word record ({e})") from None
    return times


def decoded_segments(times: dict[str, list[tuple[float, float]]], num_frames: dict[str, int],
                     min_frames: int = PauseConfig.min_frames) -> list[Segment]:
    """Segments at the decoded word times of the utterances in ``num_frames``."""
    segments = []
    for utt, frames in num_frames.items():
        for start, end in times.get(utt, []):
            first, last = int(round(start / FRAME_SHIFT)), min(frames, int(round(end / FRAME_SHIFT)))
            if last - first >= min_frames:
                segments.append(Segment(utt, first, last))
    return segments
