"""Diagnostic only: true word boundaries and labels from the scoring alignments.

This is the one module of :mod:`usrasr.align` that reads transcripts (the
import contracts allow it alone).  It gives the oracle segmentation, the upper
bound that Chung et al. (2018) also report, and the true word of any segment,
with which spoken-word classification is scored.  Nothing here feeds the
unsupervised alignment itself.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import kaldialign
import numpy as np

from usrasr.align.segments import Segment
from usrasr.corpus.features import FRAME_SHIFT
from usrasr.corpus.layout import CorpusLayout
from usrasr.corpus.scoring import ScoringData
from usrasr.lang.lexicon import read_lexicon
from usrasr.lang.phones import SILENCE
from usrasr.utils.errors import UsrasrError

SPLIT = "train_audio"
GAP = "*"


def word_spans(words: list[str], phones: list[str], alignment) -> list[tuple[str, int, int]]:
    """``(word, first frame, end frame)`` of each word of a transcript.

    ``phones`` is the lexicon pronunciation of ``words`` (one run per word, in order);
    ``alignment`` the engine's timed phones, which may differ from it.  The two phone
    strings are aligned by edit distance; each timed phone belongs to the word of the
    pronunciation phone it is paired with (an inserted phone to the word before it).
    Words with no timed phone are left out.
    """
    owner = [i for i, word_phones in enumerate(phones) for _ in word_phones]
    flat = [p for word_phones in phones for p in word_phones]
    timed = [item for item in alignment if item.symbol != SILENCE]
    pairs = kaldialign.align(flat, [item.symbol for item in timed], GAP)
    spans: dict[int, list[int]] = {}
    ref, hyp, current = 0, 0, 0
    for a, b in pairs:
        if a != GAP:
            current = owner[ref]
            ref += 1
        if b != GAP:
            first_or_all = spans.setdefault(current, [hyp, hyp])
            first_or_all[1] = hyp
            hyp += 1
    out = []
    for i, (first, last) in sorted(spans.items()):
        start = int(round(timed[first].start / FRAME_SHIFT))
        end = int(round((timed[last].start + timed[last].duration) / FRAME_SHIFT))
        if end > start:
            out.append((words[i], start, end))
    return out


class OracleWords:
    """True words of train-audio, read through :class:`ScoringData` (diagnostic only)."""

    def __init__(self, corpus: str | Path, num_frames: dict[str, int]):
        lexicon = read_lexicon(CorpusLayout(corpus).lexicon)
        aligned = ScoringData(corpus).aligned_texts(SPLIT)
        self.spans: dict[str, list[tuple[str, int, int]]] = {}
        for utt, frames in num_frames.items():
            if utt not in aligned:
                continue
            text, alignment = aligned[utt]
            words = text.split()
            if any(w not in lexicon for w in words):
                continue
            spans = word_spans(words, [lexicon[w] for w in words], alignment)
            self.spans[utt] = [(w, s, min(e, frames)) for w, s, e in spans if min(e, frames) > s]
        if not self.spans:
            raise UsrasrError(f"{corpus}: no train-audio utterance has a transcript with a phone alignment")

    def segments(self, min_frames: int = 1) -> tuple[list[Segment], list[str]]:
        """The oracle segmentation and the true word of each segment."""
        segments, words = [], []
        for utt, spans in self.spans.items():
            for word, start, end in spans:
                if end - start >= min_frames:
                    segments.append(Segment(utt, start, end))
                    words.append(word)
        return segments, words

    def label(self, segment: Segment, min_overlap: float = 0.5) -> str | None:
        """The true word covering most of ``segment``, if it covers at least ``min_overlap``
        of the segment and of the word; otherwise ``None``."""
        best, best_overlap = None, 0
        for word, start, end in self.spans.get(segment.utterance, []):
            overlap = min(end, segment.end) - max(start, segment.start)
            if overlap > best_overlap and overlap >= min_overlap * max(end - start, segment.end - segment.start):
                best, best_overlap = word, overlap
        return best

    def labels(self, segments: list[Segment]) -> list[str | None]:
        return [self.label(s) for s in segments]


def majority_words(types: np.ndarray, words: list[str | None], num_types: int) -> list[tuple[str | None, float]]:
    """The most frequent true word of each spoken-word type and the share of its segments it has."""
    counts = [Counter() for _ in range(num_types)]
    for t, w in zip(types.tolist(), words):
        counts[t][w] += 1
    out = []
    for c in counts:
        total = sum(c.values())
        word, n = next(((w, n) for w, n in c.most_common() if w is not None), (None, 0))
        out.append((word, n / total if total else 0.0))
    return out
