"""Word-like segments from energy, from decoded word times, and from the oracle alignments."""

import json
from types import SimpleNamespace

import pytest
import torch

from usrasr.align.oracle import word_spans
from usrasr.align.segments import PauseConfig, Segment, decoded_segments, pause_segments, read_decoded_words
from usrasr.utils.errors import UsrasrError


def _energy_track(levels: list[tuple[float, int]]) -> torch.Tensor:
    """fbank-like frames whose mean log-mel energy follows ``(level, frames)`` runs."""
    return torch.cat([torch.full((n, 80), level) for level, n in levels])


def test_pauses_split_segments_and_short_dips_do_not():
    feats = _energy_track([(-10, 20), (5, 30), (-10, 10), (5, 15), (-10, 2), (5, 15), (-10, 20)])
    segments = pause_segments("u", feats, PauseConfig(min_pause=3, min_frames=8, max_frames=60))
    assert segments == [Segment("u", 20, 50), Segment("u", 60, 92)]


def test_long_speech_is_cut_at_its_deepest_dip():
    feats = _energy_track([(-10, 10), (5, 40), (2, 4), (5, 40), (-10, 10)])
    segments = pause_segments("u", feats, PauseConfig(max_frames=60, smoothing=3))
    assert len(segments) == 2 and segments[0].start == 10 and segments[-1].end == 94
    assert 50 <= segments[0].end <= 54 and segments[0].end == segments[1].start


def test_decoded_word_times_become_segments(tmp_path):
    path = tmp_path / "hyp.jsonl"
    records = [{"id": "a", "text": "X Y", "duration": 1.0, "words": [
        {"word": "X", "start": 0.1, "end": 0.4, "confidence": 1.0},
        {"word": "Y", "start": 0.4, "end": 0.43, "confidence": 1.0}]},
        {"id": "other", "text": "", "duration": 1.0, "words": []}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    times = read_decoded_words(path)
    assert decoded_segments(times, {"a": 100}) == [Segment("a", 10, 40)]  # Y is shorter than min_frames
    path.write_text('{"id": "a", "text": "X"}\n')
    with pytest.raises(UsrasrError, match="hyp.jsonl:1"):
        read_decoded_words(path)


def _timed(*items):
    return [SimpleNamespace(symbol=s, start=a, duration=d) for s, a, d in items]


def test_oracle_word_spans_follow_the_timed_phones_through_substitutions_and_insertions():
    words = ["THE", "CAT"]
    pronunciations = [("DH", "AH"), ("K", "AE", "T")]
    # The engine said DH IH (a substitution), paused, and added an extra phone to CAT.
    alignment = _timed(("SIL", 0.0, 0.1), ("DH", 0.1, 0.05), ("IH", 0.15, 0.05), ("SIL", 0.2, 0.1),
                       ("K", 0.3, 0.1), ("AE", 0.4, 0.1), ("T", 0.5, 0.1), ("AH", 0.6, 0.1))
    assert word_spans(words, pronunciations, alignment) == [("THE", 10, 20), ("CAT", 30, 70)]
