"""CTC models on the raw waveform: a ``transformers`` speech encoder (wav2vec 2.0,
HuBERT, WavLM, data2vec-audio) with a linear CTC head, fine-tuned whole as the
field does, its convolutional feature encoder frozen by default.

:func:`ctc_model_from_transformers` starts one from a local model dir, read by
:class:`usrasr.models.pretrained.TransformersSource` (the one loader).  Its
checkpoint (:func:`usrasr.models.acoustic.save_model`, input "waveform") holds
the encoder's config and weights, so decoding needs neither the dir nor a
network.  It reads 16 kHz samples, not fbank, and its frame shift is the
encoder's (20 ms for every published wav2vec 2.0-style model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from usrasr.corpus.features import SAMPLE_RATE
from usrasr.models.acoustic import utterance_cmvn, valid_mask
from usrasr.models.encoder import ctc_model_from_encoder
from usrasr.models.pretrained import TRANSFORMERS_MODELS, TransformersSource, optional_import
from usrasr.utils.errors import UsrasrError


@dataclass
class WaveformCtcConfig:
    """What :class:`WaveformCtcModel` needs to rebuild itself; stored in the checkpoint."""

    num_tokens: int
    model_type: str  # a key of TRANSFORMERS_MODELS
    encoder: dict  # the transformers config (its to_dict()), blocks as kept
    frame_shift: float = 0.02  # seconds per output frame, the encoder's
    normalize: bool = False  # each utterance to zero mean, unit variance, as its feature extractor says
    # the encoder reads an attention mask, so a padded batch is exact; without one (group-norm
    # feature encoders) it trains on zero-padded batches, as such models were, and decodes one
    # utterance at a time, so a hypothesis never depends on its batch
    reads_attention_mask: bool = False
    freeze_feature_encoder: bool = True


class WaveformCtcModel(nn.Module):
    """16 kHz samples (B, S) -> CTC log-posteriors (B, T', num_tokens), blank = 0.

    ``encoder``: the transformers model to start from; None builds it (random weights)
    from ``config.encoder``, for :func:`usrasr.models.acoustic.load_model` to fill.
    """

    input = "waveform"

    def __init__(self, config: WaveformCtcConfig, encoder: nn.Module | None = None):
        super().__init__()
        self.config = config
        if encoder is None:
            transformers = optional_import("transformers", "a CTC model on a transformers encoder")
            settings = dict(config.encoder)
            encoder_config = transformers.AutoConfig.for_model(settings.pop("model_type"), **settings)
            encoder = getattr(transformers, TRANSFORMERS_MODELS[config.model_type])(encoder_config)
        self.encoder = encoder
        if config.freeze_feature_encoder:
            self.encoder.feature_extractor.requires_grad_(False)
        self.output = nn.Linear(encoder.config.hidden_size, config.num_tokens)
        receptive_field = 1
        for kernel, stride in reversed(list(zip(encoder.config.conv_kernel, encoder.config.conv_stride))):
            receptive_field = (receptive_field - 1) * stride + kernel
        self.receptive_field = receptive_field  # samples of one output frame

    @property
    def frame_shift(self) -> float:
        """Seconds per output frame."""
        return self.config.frame_shift

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``waves`` zero-padded to (B, S), ``lengths`` (B,) samples -> ``(log_probs (B, T', V), out_lens (B,))``;
        an utterance shorter than one frame's receptive field gets no frame."""
        if not self.training and not self.config.reads_attention_mask and len(waves) > 1:
            alone = [self.forward(wave[None, :n], n[None]) for wave, n in zip(waves, lengths)]
            return (pad_sequence([log_probs[0] for log_probs, _ in alone], batch_first=True),
                    torch.cat([out_lens for _, out_lens in alone]))
        mask = valid_mask(lengths, waves.shape[1])
        if self.config.normalize:
            waves = utterance_cmvn(waves[..., None], mask)[..., 0]
        waves = F.pad(waves, (0, max(0, self.receptive_field - waves.shape[1])))
        attention_mask = valid_mask(lengths, waves.shape[1]).long() if self.config.reads_attention_mask else None
        hidden = self.encoder(waves, attention_mask=attention_mask).last_hidden_state
        out_lens = self.encoder._get_feat_extract_output_lengths(lengths).clamp(min=0)
        return torch.log_softmax(self.output(hidden), dim=-1), out_lens


def ctc_model_from_transformers(path: str | Path, num_tokens: int, layer: int | None = None,
                                freeze_feature_encoder: bool = True) -> WaveformCtcModel:
    """A CTC model whose encoder starts as the transformers model at ``path`` (blocks
    1..``layer`` of it, all by default; layer 0 is the projected convolutional features),
    a new output layer on top."""
    source = TransformersSource(Path(path), keep_layers=layer, device="cpu")
    if layer is not None:
        source.check_layer(layer, "ctc_init_layer")
    if source.sample_rate != SAMPLE_RATE:
        raise UsrasrError(f"{source.description} reads {source.sample_rate} Hz audio; a CTC model is trained and "
                          f"decoded on {SAMPLE_RATE} Hz audio: start from a {SAMPLE_RATE // 1000} kHz model")
    encoder = source.model.train()
    encoder.config.num_hidden_layers = len(encoder.encoder.layers)
    return WaveformCtcModel(WaveformCtcConfig(
        num_tokens=num_tokens, model_type=source.model_type, encoder=encoder.config.to_dict(),
        frame_shift=source.frame_shift, normalize=source.normalize,
        reads_attention_mask=source.reads_attention_mask, freeze_feature_encoder=freeze_feature_encoder),
        encoder)


def ctc_model_from_pretrained(path: str | Path, num_tokens: int, layer: int = -1) -> nn.Module:
    """Self-training's start (``ctc_init``): a ``usrasr pretrain`` encoder's CTC model on fbank
    (:func:`usrasr.models.encoder.ctc_model_from_encoder`), or a transformers model dir's on the
    waveform, its blocks 1..``layer`` kept (-1: all)."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file() and not (path / "encoder.pt").is_file():
        return ctc_model_from_transformers(path, num_tokens, None if layer < 0 else layer)
    return ctc_model_from_encoder(path, num_tokens)
