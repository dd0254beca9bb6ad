"""What training may read of a prepared corpus: the blind manifests.

:func:`load_audio` opens features and speaker ids, never text.  Transcripts
and alignments are behind :mod:`usrasr.corpus.scoring` alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from usrasr.corpus.features import FRAME_SHIFT
from usrasr.utils.errors import UsrasrError
from usrasr.corpus.layout import CorpusLayout


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
        from usrasr.corpus.speakers import cluster_speakers
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

    path = CorpusLayout(corpus).cuts(split)
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
