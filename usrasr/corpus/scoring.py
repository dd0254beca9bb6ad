"""The one door to transcripts, reference phones and phone alignments.

Scoring and the diagnostic oracles read them through :class:`ScoringData`;
the unsupervised path never imports this module, which the import contracts
(``pyproject.toml``) and the no-leak test (poisoned transcripts) both check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from usrasr.corpus.features import FRAME_SHIFT
from usrasr.corpus.layout import CorpusLayout
from usrasr.lang.phones import PHONES, SILENCE
from usrasr.utils.errors import UsrasrError


def frame_phones(alignment, num_frames: int) -> np.ndarray:
    """Phone index (into ``PHONES``) of every frame from a Lhotse phone alignment; SIL elsewhere."""
    index = {p: i for i, p in enumerate(PHONES)}
    out = np.full(num_frames, index[SILENCE], dtype=np.int64)
    for item in alignment:
        begin = int(round(item.start / FRAME_SHIFT))
        end = int(round((item.start + item.duration) / FRAME_SHIFT))
        out[begin:min(end, num_frames)] = index[item.symbol]
    return out


class ScoringData:
    """Transcripts, reference phones and phone alignments, for scoring and oracles only."""

    def __init__(self, corpus: str | Path):
        self.corpus = Path(corpus)
        self._cache: dict[str, dict] = {}
        self._frames: dict[str, dict[str, np.ndarray]] = {}

    def _supervisions(self, split: str) -> dict:
        if split not in self._cache:
            from lhotse import load_manifest

            path = CorpusLayout(self.corpus).scoring_supervisions(split)
            if not path.exists():
                raise UsrasrError(f"{path} not found: scoring needs the corpus transcripts")
            self._cache[split] = {s.recording_id: s for s in load_manifest(path)}
        return self._cache[split]

    def aligned_texts(self, split: str) -> dict[str, tuple[str, list]]:
        """Transcript and phone alignment (Lhotse alignment items) of the utterances that have both."""
        return {k: (s.text, s.alignment["phone"]) for k, s in self._supervisions(split).items()
                if s.text and s.alignment and "phone" in s.alignment}

    def texts(self, split: str) -> dict[str, str]:
        return {k: s.text for k, s in self._supervisions(split).items() if s.text}

    def phones(self, split: str) -> dict[str, str]:
        """Reference phone strings (the lexicon pronunciation of the transcript)."""
        return {k: s.custom["phones"] for k, s in self._supervisions(split).items() if s.custom and "phones" in s.custom}

    def frame_phones(self, split: str, num_frames: dict[str, int]) -> dict[str, np.ndarray]:
        """Phone index per 10 ms frame from the engines' alignments (utterances that have one)."""
        if split not in self._frames:  # units and their scoring both need it
            self._frames[split] = {k: frame_phones(s.alignment["phone"], num_frames[k])
                                   for k, s in self._supervisions(split).items() if s.alignment and k in num_frames}
        return self._frames[split]
