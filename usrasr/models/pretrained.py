"""Speech representations the user brings: a pretrained model's layers, or features
computed elsewhere, read per utterance of a Lhotse cut set.

:func:`open_layer_source` recognises what a path holds:

- a ``usrasr pretrain`` output (``encoder.pt``, or its directory): fbank in;
- a local Hugging Face ``transformers`` model directory (``config.json``) of a
  wav2vec 2.0, HuBERT, WavLM or data2vec-audio model: raw waveform in, at the
  sample rate of its feature-extractor config (16 kHz without one), normalised
  as that config says;
- precomputed features: a Kaldi ``feats.scp`` (or a Kaldi data dir holding
  one), a folder of ``<utt-id>.npy``, or Lhotse cut manifests with features
  (a ``.jsonl.gz`` file, or a folder of ``cuts_*.jsonl.gz`` such as
  ``usrasr features`` writes).

A ``usrasr pretrain --method just`` encoder also gives its universal-phone
posteriors: the pseudo-layer :data:`POSTERIORS` (read as a layer is read) is
the phone head's log-softmax over the last layer, one column per phone of
``source.phones`` (column 0 the CTC blank).

Each source says its frame shift and number of layers, read from the model or
the features, never assumed: a ``transformers`` model's frame shift is the
product of its convolution strides over its sample rate (20 ms for every
published wav2vec 2.0-style model); Lhotse features carry theirs; Kaldi and
numpy arrays carry none, so it is the audio's duration over their frames,
to the millisecond.  Layer ``n`` of a ``transformers`` model is its
``hidden_states[n]``: 0 is the convolutional features after the projection,
``n`` the output of transformer block ``n`` (fairseq's 0-based ``layer=n-1``).

``transformers`` and ``kaldiio`` are optional (``pip install 'usrasr[encoders]'``)
and imported only when a source needs them.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from usrasr.corpus.features import FRAME_SHIFT, cut_mono
from usrasr.models.ctc_train import warp_frequency
from usrasr.models.encoder import layer_features, length_batches, load_encoder, load_phone_head
from usrasr.utils.console import log
from usrasr.utils.device import resolve_device
from usrasr.utils.errors import UsrasrError

ENCODERS_EXTRA = "pip install 'usrasr[encoders]'"

# transformers model_type -> the model class that gives its hidden states
TRANSFORMERS_MODELS = {
    "wav2vec2": "Wav2Vec2Model",
    "hubert": "HubertModel",
    "wavlm": "WavLMModel",
    "data2vec-audio": "Data2VecAudioModel",
}

POSTERIORS = "posteriors"  # the pseudo-layer of a JUST encoder's phone log-posteriors

WARP_FACTORS = (0.9, 1.1)  # alternate utterances; about the spread of adult vocal-tract lengths

WHAT_IS_ACCEPTED = ("a `usrasr pretrain` output, a transformers model dir (config.json), a Kaldi feats.scp, "
                    "a folder of <utt-id>.npy, or a Lhotse cuts manifest with features")


def optional_import(module: str, what: str):
    """``module``, or a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsrasrError(f"{what} needs the optional package '{module}': {ENCODERS_EXTRA}") from None


def warped_copies(feats: list[Tensor]) -> list[Tensor]:
    """Each utterance's fbank warped along frequency by the next of ``WARP_FACTORS``: a change of voice."""
    return [warp_frequency(f[None], torch.tensor([WARP_FACTORS[i % len(WARP_FACTORS)]]))[0]
            for i, f in enumerate(feats)]


def stretch_frames(feats: Tensor, num_frames: int) -> Tensor:
    """``feats`` (T, C) resampled in time to ``num_frames`` rows by nearest frame."""
    index = torch.div(torch.arange(num_frames) * len(feats), num_frames, rounding_mode="floor")
    return feats[index.clamp(max=len(feats) - 1)]


def cut_samples(cut, sample_rate: int, told_rates: set[int]) -> Tensor:
    """A cut's mono samples at ``sample_rate``: Lhotse resamples, and says so once per source
    rate (the rates said so far are in ``told_rates``)."""
    if cut.sampling_rate != sample_rate and cut.sampling_rate not in told_rates:
        log.warning("audio at %d Hz resampled to the model's %d Hz (%s)", cut.sampling_rate, sample_rate, cut.id)
        told_rates.add(cut.sampling_rate)
    return torch.from_numpy(cut_mono(cut, sample_rate))


def normalized_samples(samples: Tensor) -> Tensor:
    """Zero mean, unit variance: what a ``do_normalize`` feature extractor does to an utterance."""
    return (samples - samples.mean()) / torch.sqrt(samples.var(unbiased=False) + 1e-7)


class LayerSource:
    """Features of one or more layers for each cut, in the cuts' order.

    ``frame_shift`` is seconds per feature frame, ``num_layers`` how many layers
    (1 for precomputed features), ``dim`` the feature dimension (None until read),
    ``phones`` the symbols of the :data:`POSTERIORS` columns (None: the source has none).
    """

    description: str
    frame_shift: float
    num_layers: int
    dim: int | None = None
    phones: list[str] | None = None
    chunk = 64  # cuts read per call of encode by encode_all: bounds the audio held at once

    def check_posteriors(self) -> None:
        if self.phones is None:
            raise UsrasrError(f"{self.description} has no phone posteriors: posterior units need an encoder "
                              f"trained with phone labels (`usrasr pretrain --method just`)")

    def check_layer(self, layer: int, key: str = "unit_layer") -> None:
        if not 0 <= layer < self.num_layers:
            raise UsrasrError(f"layer {layer} is out of range: {self.description} has layers 0..{self.num_layers - 1}; "
                              f"set {key} to one of them")

    def check_cuts(self, cuts: Sequence, name: str) -> None:
        """Raise if features are missing for some of ``cuts`` (``name``: where they come from)."""

    def encode(self, cuts: Sequence, layers: Sequence[int]) -> list[list[Tensor]]:
        """``out[i][utt]``: layer ``layers[i]``'s features ``(T, dim)`` of each cut."""
        raise NotImplementedError

    def warped(self, cuts: Sequence, layers: Sequence[int]) -> list[list[Tensor]] | None:
        """The same for each cut under a change of voice, with the unwarped cut's number of
        frames (so frames pair up); None where the source cannot warp (precomputed features)."""
        return None


class UsrasrEncoderSource(LayerSource):
    """A ``usrasr pretrain`` encoder over the cuts' fbank (held at once, as training holds it anyway)."""

    chunk = 1 << 30

    def __init__(self, path: Path):
        self.encoder, info = load_encoder(path)
        c = self.encoder.config
        self.description = f"the usrasr encoder {path} ({info.get('method')}, {info.get('steps')} steps)"
        self.frame_shift, self.num_layers, self.dim = c.subsampling * FRAME_SHIFT, c.num_layers + 1, c.hidden_dim
        head = load_phone_head(path)
        self.phone_head, self.phones = head if head is not None else (None, None)

    @staticmethod
    def _fbank(cuts: Sequence) -> list[Tensor]:
        return [torch.from_numpy(cut.load_features()).float() for cut in cuts]

    def _select(self, every: list[list[Tensor]], layers: Sequence) -> list[list[Tensor]]:
        """The ``layers`` (indices or :data:`POSTERIORS`) of every layer's output."""
        if POSTERIORS in layers:
            self.check_posteriors()
            with torch.inference_mode():
                posteriors = [self.phone_head(f).log_softmax(-1) for f in every[-1]]
        return [posteriors if layer == POSTERIORS else every[layer] for layer in layers]

    def encode(self, cuts, layers):
        return self._select(layer_features(self.encoder, self._fbank(cuts)), layers)

    def warped(self, cuts, layers):
        return self._select(layer_features(self.encoder, warped_copies(self._fbank(cuts))), layers)


class TransformersSource(LayerSource):
    """A local ``transformers`` speech model (see the module doc), run on raw audio.

    ``keep_layers`` drops the transformer blocks above the highest layer read,
    so a low layer costs only its share of the model.  ``device``: where it runs
    (``auto``: CUDA when available); the features come back on the CPU.
    """

    def __init__(self, path: Path, keep_layers: int | None = None, batch_seconds: float = 60.0,
                 device: str = "auto"):
        transformers = optional_import("transformers", "a transformers model")
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        try:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        except Exception as e:  # transformers raises ValueError/OSError/KeyError for unreadable configs
            raise UsrasrError(f"{path}/config.json is not a readable transformers config ({str(e).splitlines()[0]})") \
                from None
        self.model_type = model_type = getattr(config, "model_type", None)
        if model_type not in TRANSFORMERS_MODELS:
            raise UsrasrError(f"{path}: unknown architecture '{model_type}' (architectures "
                              f"{getattr(config, 'architectures', None)}); supported: "
                              f"{', '.join(TRANSFORMERS_MODELS)}. Export the model as one of them, or compute its "
                              f"features elsewhere and give a feats.scp or a .npy folder")
        self.num_layers = config.num_hidden_layers + 1
        self.dim = config.hidden_size
        extractor = {}
        if (path / "preprocessor_config.json").is_file():
            extractor = json.loads((path / "preprocessor_config.json").read_text(encoding="utf-8"))
        self.sample_rate = int(extractor.get("sampling_rate", 16000))
        self.normalize = bool(extractor.get("do_normalize", False))
        # a padded batch is exact only where the model reads an attention mask (layer-norm feature encoders)
        self.reads_attention_mask = bool(extractor.get("return_attention_mask", False))
        self.batch_seconds = batch_seconds if self.reads_attention_mask else 0.0
        self.frame_shift = float(np.prod(config.conv_stride)) / self.sample_rate
        model = getattr(transformers, TRANSFORMERS_MODELS[model_type]).from_pretrained(path, local_files_only=True)
        if keep_layers is not None and keep_layers < self.num_layers:
            # hidden_states[n] is the input of block n: blocks n.. past the highest layer read are never needed
            model.encoder.layers = model.encoder.layers[:keep_layers]
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.description = (f"the {model_type} model {path} ({config.num_hidden_layers} blocks, "
                            f"{self.dim} dims, {self.frame_shift * 1000:g} ms frames)")
        self._told_rates: set[int] = set()

    def _audio(self, cut) -> Tensor:
        samples = cut_samples(cut, self.sample_rate, self._told_rates)
        return normalized_samples(samples) if self.normalize else samples

    @torch.inference_mode()
    def _run(self, waves: list[Tensor], layers: Sequence[int]) -> list[list[Tensor]]:
        out: list[list[Tensor]] = [[None] * len(waves) for _ in layers]  # type: ignore[list-item]
        max_samples = int(self.batch_seconds * self.sample_rate)
        for batch in length_batches([len(w) for w in waves], max(max_samples, 1)):
            x = nn.utils.rnn.pad_sequence([waves[i] for i in batch], batch_first=True)
            lengths = torch.tensor([len(waves[i]) for i in batch])
            mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).long() if len(batch) > 1 else None
            hidden = self.model(x.to(self.device), attention_mask=None if mask is None else mask.to(self.device),
                                output_hidden_states=True).hidden_states
            frames = self.model._get_feat_extract_output_lengths(lengths)
            for slot, layer in enumerate(layers):
                for row, i in enumerate(batch):
                    out[slot][i] = hidden[layer][row, : frames[row]].float().cpu().clone()
        return out

    def encode(self, cuts, layers):
        return self._run([self._audio(cut) for cut in cuts], layers)

    def warped(self, cuts, layers):
        """Speed perturbation by the ``WARP_FACTORS`` (it moves the formants as a change of vocal tract
        would, and the tempo with them), stretched back to the unwarped frame count."""
        frames = self.model._get_feat_extract_output_lengths(torch.tensor([len(self._audio(c)) for c in cuts]))
        waves = [self._audio(cut.drop_features().perturb_speed(WARP_FACTORS[i % len(WARP_FACTORS)]))
                 for i, cut in enumerate(cuts)]
        return [[stretch_frames(f, int(n)) for f, n in zip(per_layer, frames)]
                for per_layer in self._run(waves, layers)]


class FeatureSource(LayerSource):
    """Precomputed features (one layer) looked up by cut id: ``arrays`` maps an id to a loader.
    A ``frame_shift`` of None is measured by :meth:`check_cuts`, which must come first."""

    num_layers = 1

    def __init__(self, description: str, arrays: dict, frame_shift: float | None):
        self.description, self.arrays, self.frame_shift = description, arrays, frame_shift

    def check_cuts(self, cuts, name):
        missing = [cut.id for cut in cuts if cut.id not in self.arrays]
        if missing:
            raise UsrasrError(f"{self.description} has no features for {len(missing)} of the {len(cuts)} cuts of "
                              f"{name} (first: {missing[0]}): compute them for these cuts, e.g. "
                              f"`usrasr features --cuts {name} ...`")
        if self.frame_shift is None:  # Kaldi and numpy arrays carry no frame shift: duration over frames
            sample = list(cuts)[:200]
            frames = sum(len(self.arrays[cut.id]()) for cut in sample)
            self.frame_shift = round(sum(cut.duration for cut in sample) / max(frames, 1), 3)
            log.info("%s: %g ms per frame, from the audio's duration", self.description, self.frame_shift * 1000)

    def encode(self, cuts, layers):
        self.check_layer(max(layers))
        # np.array copies: kaldiio maps its arks read-only
        feats = [torch.from_numpy(np.array(self.arrays[cut.id](), dtype=np.float32)) for cut in cuts]
        for cut, f in zip(cuts, feats):
            if f.ndim != 2 or (self.dim is not None and f.shape[1] != self.dim):
                raise UsrasrError(f"{self.description}: features of {cut.id} have shape {tuple(f.shape)}, "
                                  f"expected (frames, {self.dim or 'dim'}); every utterance needs the same dimension")
            self.dim = f.shape[1]
        return [feats]


def _scp_source(path: Path) -> FeatureSource:
    kaldiio = optional_import("kaldiio", "a Kaldi feats.scp")
    table = kaldiio.load_scp(str(path))
    return FeatureSource(f"the Kaldi features {path}", {key: (lambda key=key: table[key]) for key in table}, None)


def _npy_source(path: Path) -> FeatureSource:
    files = {f.stem: f for f in sorted(path.glob("*.npy"))}
    return FeatureSource(f"the .npy features in {path}", {key: (lambda f=f: np.load(f)) for key, f in files.items()},
                         None)


def _cuts_source(paths: list[Path], description: str) -> FeatureSource:
    from lhotse import load_manifest

    by_id = {}
    for path in paths:
        try:
            cuts = load_manifest(path)
        except Exception as e:  # lhotse raises many types for files that are not manifests
            raise UsrasrError(f"{path} is not a readable Lhotse manifest ({str(e).splitlines()[0][:120]})") from None
        for cut in cuts:
            if not getattr(cut, "has_features", False):
                raise UsrasrError(f"cut {cut.id} in {path} has no features: compute them first "
                                  f"(`usrasr features --cuts {path} ...`)")
            by_id[cut.id] = cut
    shifts = {cut.features.frame_shift for cut in by_id.values()}
    if len(shifts) > 1:
        raise UsrasrError(f"{description} mixes frame shifts {sorted(shifts)}: use features of one kind")
    return FeatureSource(description, {key: cut.load_features for key, cut in by_id.items()},
                         shifts.pop() if shifts else FRAME_SHIFT)


def open_layer_source(path: str | Path, keep_layers: int | None = None, batch_seconds: float = 60.0,
                      device: str = "auto") -> LayerSource:
    """The encoder or features at ``path`` (see the module doc for what is recognised).

    ``keep_layers``, ``batch_seconds`` and ``device`` apply to ``transformers`` models
    (see :class:`TransformersSource`).
    """
    path = Path(path)
    if not path.exists():
        raise UsrasrError(f"encoder not found: {path} (give {WHAT_IS_ACCEPTED})")
    if path.is_file():
        if path.suffix == ".scp":
            return _scp_source(path)
        if path.name.endswith((".jsonl.gz", ".jsonl", ".json")):
            return _cuts_source([path], f"the Lhotse features of {path}")
        if path.suffix == ".pt":
            return UsrasrEncoderSource(path)
    elif (path / "encoder.pt").is_file():
        return UsrasrEncoderSource(path)
    elif (path / "config.json").is_file():
        return TransformersSource(path, keep_layers, batch_seconds, device)
    elif (path / "feats.scp").is_file():
        return _scp_source(path / "feats.scp")
    elif sorted(path.glob("cuts_*.jsonl.gz")):
        return _cuts_source(sorted(path.glob("cuts_*.jsonl.gz")), f"the Lhotse features in {path}")
    elif any(path.glob("*.npy")):
        return _npy_source(path)
    raise UsrasrError(f"{path} is not an encoder or features usrasr can read: give {WHAT_IS_ACCEPTED}")


def encode_all(source: LayerSource, cuts: Sequence, layers: Sequence[int],
               warped: bool = False) -> list[list[Tensor]] | None:
    """:meth:`LayerSource.encode` (or ``warped``) over ``cuts``, ``source.chunk`` at a time: ``out[i][utt]``."""
    cuts = list(cuts)
    out: list[list[Tensor]] = [[] for _ in layers]
    for begin in range(0, len(cuts), source.chunk):
        part = cuts[begin: begin + source.chunk]
        got = source.warped(part, layers) if warped else source.encode(part, layers)
        if got is None:
            return None
        for slot, feats in enumerate(got):
            out[slot].extend(feats)
    return out
