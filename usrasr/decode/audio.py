"""What to decode: audio files, Kaldi ``wav.scp`` entries or Lhotse cuts, as fbank
or, for a model that reads it, as the 16 kHz waveform.

Every input becomes an :class:`Utterance` first (cheap: nothing is read);
features are computed per utterance when it is decoded, so one bad file
costs only itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, TextIO

import numpy as np
import torch

from usrasr.corpus.features import (
    FRAME_SHIFT, NUM_MEL_BINS, SAMPLE_RATE, cut_mono, fbank_extractor, load_mono_16k,
)
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import read_utf8_text



class BadInput(Exception):
    """An input that cannot be decoded; the message says why, in a few words."""


@dataclass(frozen=True)
class Utterance:
    """One thing to decode: an id and either an audio path or a Lhotse cut."""

    id: str
    path: Path | None = None
    cut: object | None = None

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else f"cut {self.id}"


def _fbank(samples: np.ndarray) -> torch.Tensor:
    feats = fbank_extractor().extract(samples, SAMPLE_RATE)
    if feats.shape[0] == 0:
        raise BadInput("audio too short for one feature frame")
    return torch.from_numpy(feats).float()


def _file_samples(path: Path) -> tuple[np.ndarray, int]:
    try:
        return load_mono_16k(path)
    except ValueError as e:  # the same checks and message as `usrasr prepare audio`
        raise BadInput(str(e)) from None


def _cut_samples(cut, missing: str) -> tuple[np.ndarray, int]:
    """16 kHz mono samples of ``cut`` and its own rate; ``missing``: what a cut without audio lacks."""
    if not cut.has_recording:
        raise BadInput(f"cut has {missing}")
    try:
        samples = cut_mono(cut)
    except Exception as e:
        raise BadInput(f"cannot load: {e}".splitlines()[0]) from None
    if samples.size == 0:
        raise BadInput("no audio samples")
    return samples, cut.sampling_rate


def _cut_features(cut) -> tuple[torch.Tensor, int]:
    try:
        if cut.has_features:
            feats = torch.from_numpy(cut.load_features()).float()
            if feats.shape[-1] != NUM_MEL_BINS:
                raise BadInput(f"stored features are {feats.shape[-1]}-dim, the model needs {NUM_MEL_BINS}-dim fbank")
            if feats.shape[0] == 0:
                raise BadInput("no feature frames")
            return feats, cut.sampling_rate
    except BadInput:
        raise
    except Exception as e:
        raise BadInput(f"cannot load: {e}".splitlines()[0]) from None
    samples, source_rate = _cut_samples(cut, "neither features nor audio")
    return _fbank(samples), source_rate


def load_features_and_rate(utterance: Utterance) -> tuple[torch.Tensor, int]:
    """Fbank ``(T, 80)`` at 16 kHz (resampled, stereo averaged) and the input's own sample
    rate; raises :class:`BadInput`."""
    if utterance.cut is not None:
        return _cut_features(utterance.cut)
    samples, source_rate = _file_samples(utterance.path)
    return _fbank(samples), source_rate


# seconds of one row of each model input
SECONDS_PER_ROW = {"fbank": FRAME_SHIFT, "waveform": 1 / SAMPLE_RATE}


def load_input_and_rate(utterance: Utterance, model_input: str) -> tuple[torch.Tensor, int]:
    """What a model reads (its ``input``): fbank as :func:`load_features_and_rate` gives it, or
    the waveform ``(S,)``, 16 kHz samples (resampled, stereo averaged; a cut's stored features
    unused); and the input's own sample rate. Raises :class:`BadInput`."""
    if model_input == "fbank":
        return load_features_and_rate(utterance)
    if utterance.cut is not None:
        samples, source_rate = _cut_samples(utterance.cut, "no audio")
    else:
        samples, source_rate = _file_samples(utterance.path)
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), source_rate


def load_features(utterance: Utterance) -> torch.Tensor:
    """Fbank ``(T, 80)`` at 16 kHz (resampled, stereo averaged); raises :class:`BadInput`."""
    return load_features_and_rate(utterance)[0]


def utterances_from_paths(paths: Iterable[str]) -> list[Utterance]:
    """Audio files named on the command line; the id is the file name without extension
    (spaces become ``_``: an id is one field of a Kaldi text line)."""
    return [Utterance("_".join(Path(p).stem.split()) or Path(p).stem, Path(p)) for p in paths]


def utterances_from_lines(lines: Iterable[str], origin: str) -> list[Utterance]:
    """Lines that are a path or ``id path`` (stdin; ``wav.scp`` when ``origin`` says so)."""
    utterances = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if os.path.isfile(line) or len(line.split(maxsplit=1)) == 1:
            utterances.extend(utterances_from_paths([line]))
            continue
        utt_id, location = line.split(maxsplit=1)
        if location.endswith("|"):
            raise UsrasrError(f"{origin}: '{utt_id}' is a command pipe; decode reads audio files only")
        utterances.append(Utterance(utt_id, Path(location)))
    return utterances


def utterances_from_stream(stream: TextIO, origin: str) -> list[Utterance]:
    return utterances_from_lines(stream.read().splitlines(), origin)


def utterances_from_cuts(path: Path) -> list[Utterance]:
    """Cuts of a Lhotse CutSet manifest, keyed by cut id."""
    from lhotse import CutSet

    if not path.is_file():
        raise UsrasrError(f"cuts manifest not found: {path}")
    try:
        cuts = CutSet.from_file(path)
    except Exception as e:
        raise UsrasrError(f"cannot read cuts {path}: {e}".splitlines()[0]) from None
    return [Utterance(cut.id, cut=cut) for cut in cuts]


def collect_utterances(files: Iterable[str], wav_scp: Path | None, cuts: Path | None,
                       stdin: TextIO | None = None) -> list[Utterance]:
    """Everything a ``usrasr decode`` call names: files (``-``: lines of ``stdin``), a wav.scp, a CutSet."""
    utterances = []
    for item in files:
        utterances += utterances_from_stream(stdin, "stdin") if item == "-" else utterances_from_paths([item])
    if wav_scp is not None:
        utterances += utterances_from_lines(read_utf8_text(wav_scp, "wav.scp").splitlines(), str(wav_scp))
    if cuts is not None:
        utterances += utterances_from_cuts(cuts)
    if not utterances:
        raise UsrasrError("nothing to decode: give audio FILES, '-', --cuts or --wav-scp")
    return utterances
