"""The one acoustic front end: 16 kHz mono audio in, 80-dim Lhotse fbank out.

``usrasr prepare`` stores these features, and ``usrasr decode`` computes the
same ones on the fly, so a model never meets features of another kind.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
NUM_MEL_BINS = 80
FRAME_SHIFT = 0.01  # seconds; Lhotse's Fbank default


@functools.cache
def fbank_extractor():
    """The Lhotse fbank extractor, built once per process (building it computes the mel filterbank)."""
    from lhotse import Fbank, FbankConfig

    return Fbank(FbankConfig(num_mel_bins=NUM_MEL_BINS))


def cut_mono(cut, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A Lhotse cut's audio as float32 mono at ``sample_rate`` (Lhotse resamples; stereo averaged)."""
    cut = cut.drop_features()  # lhotse would warn that a resampled cut detaches its features
    if cut.sampling_rate != sample_rate:
        cut = cut.resample(sample_rate)
    audio = cut.load_audio()
    return (audio.mean(axis=0) if audio.ndim == 2 else audio).astype(np.float32, copy=False)


def load_mono_16k(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode any common audio file to float32 mono at 16 kHz, and say its own sample rate;
    raise ValueError if unusable."""
    from lhotse import Recording

    path = Path(path)
    if not path.exists():
        raise ValueError("no such file")
    if not path.is_file():
        raise ValueError("not a file")
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    try:
        recording = Recording.from_file(path)
    except Exception:  # lhotse raises many exception types for unreadable files
        raise ValueError("not a readable audio file (corrupt or unsupported format)") from None
    if recording.num_samples == 0:
        raise ValueError("zero-length recording")
    source_rate = recording.sampling_rate
    if source_rate != SAMPLE_RATE:
        recording = recording.resample(SAMPLE_RATE)
    samples = recording.load_audio().mean(axis=0).astype(np.float32)
    if samples.size == 0:
        raise ValueError("zero-length recording")
    return samples, source_rate
