"""What training may read of a prepared corpus, and (apart) what only scoring may read.

:func:`load_audio` opens the blind manifests: features and speaker ids, never
text.  :class:`ScoringData` is the one door to transcripts and alignments; the
unsupervised path never constructs it, which the no-leak test checks by
poisoning those files.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from usrasr.train.units import FRAME_SHIFT
from usrasr.utils.errors import UsrasrError


@dataclass
class AudioSplit:
    ids: list[str]
    feats: list[torch.Tensor]  # (T, 80) fbank per utterance
    speakers: list[str]
    voices: list[str]

    def speakers_from(self, field: str, clusters: int = 0, tag: str = "", seed: int = 0) -> "AudioSplit":
        """The split with ``speakers`` read from ``field``: "speaker" (as is), "voice", or
        "cluster": pseudo-speakers clustered from the audio alone (``clusters`` of them, 0 =
        chosen by the silhouette), named ``<tag>-spk<i>`` so that no two splits share one."""
        if field == "speaker":
            return self
        if field == "voice":
            return dataclasses.replace(self, speakers=list(self.voices))
        from usrasr.train.speakers import cluster_speakers
        from usrasr.utils.console import log

        found = cluster_speakers(self.feats, clusters, seed)
        log.info("%s: %d pseudo-speakers clustered from the audio (silhouette %.3f%s)", tag or "audio",
                 found.num_clusters, found.silhouette, ", the best of 2..20" if found.chosen else "")
        return dataclasses.replace(self, speakers=[f"{tag}-spk{c}" for c in found.labels])

    def seconds(self) -> float:
        """Audio duration (10 ms fbank frames)."""
        return sum(len(f) for f in self.feats) * FRAME_SHIFT


def load_audio(corpus: str | Path, split: str) -> AudioSplit:
    from lhotse import load_manifest

    path = Path(corpus) / "manifests" / f"cuts_{split}.jsonl.gz"
    if not path.exists():
        raise UsrasrError(f"{path} not found: run `usrasr prepare` first")
    ids, feats, speakers, voices = [], [], [], []
    for cut in load_manifest(path):
        if not cut.has_features:
            raise UsrasrError(f"cut {cut.id} in {path} has no features")
        ids.append(cut.id)
        feats.append(torch.from_numpy(cut.load_features()).float())
        sup = cut.supervisions[0] if cut.supervisions else None
        speakers.append(sup.speaker if sup and sup.speaker else cut.id)
        voices.append((sup.custom or {}).get("voice", speakers[-1]) if sup else cut.id)
    if not ids:
        raise UsrasrError(f"{path} has no cuts")
    return AudioSplit(ids, feats, speakers, voices)


class ScoringData:
    """Transcripts, reference phones and phone alignments, for scoring and oracles only."""

    def __init__(self, corpus: str | Path):
        self.corpus = Path(corpus)
        self._cache: dict[str, dict] = {}
        self._frames: dict[str, dict[str, np.ndarray]] = {}

    def _supervisions(self, split: str) -> dict:
        if split not in self._cache:
            from lhotse import load_manifest

            folder = "scoring" if split == "train_audio" else "manifests"
            path = self.corpus / folder / f"supervisions_{split}.jsonl.gz"
            if not path.exists():
                raise UsrasrError(f"{path} not found: scoring needs the corpus transcripts")
            self._cache[split] = {s.recording_id: s for s in load_manifest(path)}
        return self._cache[split]

    def texts(self, split: str) -> dict[str, str]:
        return {k: s.text for k, s in self._supervisions(split).items() if s.text}

    def phones(self, split: str) -> dict[str, str]:
        """Reference phone strings (the lexicon pronunciation of the transcript)."""
        return {k: s.custom["phones"] for k, s in self._supervisions(split).items() if s.custom and "phones" in s.custom}

    def frame_phones(self, split: str, num_frames: dict[str, int]) -> dict[str, np.ndarray]:
        """Phone index per 10 ms frame from the engines' alignments (utterances that have one)."""
        from usrasr.train.units import frame_phones

        if split not in self._frames:  # units and their scoring both need it
            self._frames[split] = {k: frame_phones(s.alignment["phone"], num_frames[k])
                                   for k, s in self._supervisions(split).items() if s.alignment and k in num_frames}
        return self._frames[split]
