"""CTC acoustic models on fbank: the interface decode and self-training share.

A model maps 80-dim fbank frames to per-frame log-posteriors over the tokens
of a lang dir's ``tokens.txt`` *without* its disambiguation symbols: index 0
is ``<eps>``, used as the CTC blank, then the phones.  Two architectures:

* ``tdnn``: a stack of 1-D convolutions (short, local receptive field: the
  "structure" condition of the method holds by construction);
* ``conformer``: a small conformer (sees the whole utterance).

Both start with a convolutional front end that subsamples time by 1, 2 or 4.
Padded frames are zeroed after every layer, so an utterance gives the same
output alone or inside a padded batch.

A model declares what it reads (``input``) and its seconds per output frame
(``frame_shift``).  The checkpoint of :func:`save_model` records the input, so
:func:`load_model` also rebuilds a CTC model on the waveform
(:class:`usrasr.models.waveform_ctc.WaveformCtcModel`, a fine-tuned
``transformers`` encoder), the other kind that decode and self-training take.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from usrasr.corpus.features import FRAME_SHIFT
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_path

CHECKPOINT_FORMAT = "usrasr-ctc-acoustic-v1"
ARCHITECTURES = ("tdnn", "conformer")
UNREACHABLE = 1e-30  # posterior floor of a token its classes cannot reach (the log stays finite)


@dataclass
class AcousticModelConfig:
    """Hyper-parameters; stored in the checkpoint so ``load_model`` can rebuild the network."""

    num_tokens: int
    arch: str = "tdnn"
    feat_dim: int = 80
    hidden_dim: int = 256
    num_layers: int = 6
    subsampling: int = 2
    dropout: float = 0.1
    # tdnn: kernel of every layer; dilations cycle through 1, 2, 3 for context.
    kernel_size: int = 3
    # conformer
    num_heads: int = 4
    conv_kernel_size: int = 15
    ff_multiplier: int = 4
    # Output classes read through a fixed token map (0: one output per token): a token scores the
    # log of its classes' posteriors summed with the map's weights (the cross-lingual start reads
    # the target's phones off universal phones this way).
    classes: int = 0
    # With classes: each class's posteriors are first divided by their mean over the utterance's
    # frames raised to this power (scaled likelihoods against the utterance's own prior at 1).
    utterance_prior_scale: float = 0.0

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise UsrasrError(f"unknown acoustic model arch '{self.arch}' (choose from {', '.join(ARCHITECTURES)})")
        if self.subsampling not in (1, 2, 4):
            raise UsrasrError(f"subsampling must be 1, 2 or 4, got {self.subsampling}")
        if self.num_tokens < 2:
            raise UsrasrError("an acoustic model needs the blank and at least one token")


def valid_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) bool mask, True on real frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def utterance_cmvn(feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-utterance mean/variance normalisation over real frames only."""
    m = mask.unsqueeze(-1).to(feats.dtype)
    count = m.sum(dim=1, keepdim=True).clamp(min=1.0)
    mean = (feats * m).sum(dim=1, keepdim=True) / count
    var = (((feats - mean) * m) ** 2).sum(dim=1, keepdim=True) / count
    return (feats - mean) / (var + 1e-5).sqrt() * m


class Subsampler(nn.Module):
    """Stride-2 convolutions (kernel 3, padding 1): T -> ceil(T / 2) each."""

    def __init__(self, in_dim: int, out_dim: int, factor: int):
        super().__init__()
        self.num_strided = int(math.log2(factor))
        layers, dim = [], in_dim
        for _ in range(self.num_strided):
            layers.append(nn.Conv1d(dim, out_dim, kernel_size=3, stride=2, padding=1))
            dim = out_dim
        self.convs = nn.ModuleList(layers)
        self.proj = nn.Conv1d(dim, out_dim, kernel_size=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, C, T)
        for conv in self.convs:
            x = torch.relu(conv(x))
            lengths = (lengths - 1) // 2 + 1
            x = x * valid_mask(lengths, x.shape[-1]).unsqueeze(1)
        return self.proj(x), lengths


class TdnnLayer(nn.Module):
    """A dilated 1-D convolution with a residual connection, on ``(B, C, T)``."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, C, T); residual keeps deep stacks trainable in a few steps.
        y = torch.relu(self.conv(x)).transpose(1, 2)
        y = self.dropout(self.norm(y)).transpose(1, 2)
        return (x + y) * mask.unsqueeze(1)


def tdnn_layers(dim: int, kernel_size: int, num_layers: int, dropout: float) -> nn.ModuleList:
    """The TDNN stack: dilations cycle through 1, 2, 3 for context."""
    return nn.ModuleList(TdnnLayer(dim, kernel_size, dilation=1 + i % 3, dropout=dropout) for i in range(num_layers))


class ConformerLayer(nn.Module):
    """Macaron FFN, self-attention, depthwise convolution, FFN (Gulati et al., 2020)."""

    def __init__(self, dim: int, heads: int, conv_kernel: int, ff_mult: int, dropout: float):
        super().__init__()

        def feed_forward() -> nn.Sequential:
            return nn.Sequential(
                nn.LayerNorm(dim), nn.Linear(dim, ff_mult * dim), nn.SiLU(), nn.Dropout(dropout),
                nn.Linear(ff_mult * dim, dim), nn.Dropout(dropout),
            )

        self.ff1 = feed_forward()
        self.ff2 = feed_forward()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.conv_norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, conv_kernel, padding=conv_kernel // 2, groups=dim)
        # LayerNorm rather than BatchNorm: statistics must not depend on padding or batch size.
        self.depthwise_norm = nn.LayerNorm(dim)
        self.pointwise_out = nn.Conv1d(dim, dim, 1)
        self.final_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, T, C)
        keep = mask.unsqueeze(-1).to(x.dtype)
        x = x + 0.5 * self.ff1(x)
        a = self.attn_norm(x)
        a, _ = self.attn(a, a, a, key_padding_mask=~mask, need_weights=False)
        x = (x + self.dropout(a)) * keep
        c = self.conv_norm(x).transpose(1, 2)
        c = F.glu(self.pointwise_in(c), dim=1) * mask.unsqueeze(1)
        c = self.depthwise(c).transpose(1, 2)
        c = self.pointwise_out(F.silu(self.depthwise_norm(c)).transpose(1, 2)).transpose(1, 2)
        x = x + self.dropout(c)
        x = x + 0.5 * self.ff2(x)
        return self.final_norm(x) * keep


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe


class CtcAcousticModel(nn.Module):
    """fbank (B, T, feat_dim) -> CTC log-posteriors (B, T', num_tokens), blank = 0."""

    input = "fbank"

    def __init__(self, config: AcousticModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.subsampler = Subsampler(c.feat_dim, c.hidden_dim, c.subsampling)
        if c.arch == "tdnn":
            self.layers = tdnn_layers(c.hidden_dim, c.kernel_size, c.num_layers, c.dropout)
        else:
            if c.hidden_dim % c.num_heads or c.hidden_dim % 2:
                raise UsrasrError("conformer hidden_dim must be even and divisible by num_heads")
            self.layers = nn.ModuleList(
                ConformerLayer(c.hidden_dim, c.num_heads, c.conv_kernel_size, c.ff_multiplier, c.dropout)
                for _ in range(c.num_layers)
            )
        self.output = nn.Linear(c.hidden_dim, c.classes or c.num_tokens)
        if c.classes:
            self.register_buffer("token_map", torch.zeros(c.num_tokens, c.classes))

    @property
    def subsampling(self) -> int:
        """Input frames per output frame."""
        return self.config.subsampling

    @property
    def frame_shift(self) -> float:
        """Seconds per output frame."""
        return FRAME_SHIFT * self.config.subsampling

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(log_probs (B, T', V), out_lens (B,))`` with ``T' = ceil(T / subsampling)``."""
        scores, lengths = self.class_scores(feats, feat_lens)
        return self.token_log_probs(scores, lengths), lengths

    def token_log_probs(self, scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The tokens' log-posteriors from the output layer's logits (B, T', ·) of utterances of
        ``lengths`` output frames (read through the token map, if any)."""
        if self.config.classes:
            posteriors = torch.softmax(scores, dim=-1)
            if self.config.utterance_prior_scale:
                mask = valid_mask(lengths, scores.shape[1])[..., None].to(posteriors.dtype)
                prior = (posteriors * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1.0)
                posteriors = posteriors * prior.clamp(min=UNREACHABLE).pow(-self.config.utterance_prior_scale)
            scores = torch.log((posteriors @ self.token_map.T).clamp(min=UNREACHABLE))
        return torch.log_softmax(scores, dim=-1)

    def class_scores(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The output layer's logits (B, T', classes or V) before any token map, and ``out_lens``."""
        hidden, lengths = self.hidden_states(feats, feat_lens)
        return self.output(hidden), lengths

    def hidden_states(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last layer's output (B, T', hidden_dim), what the output layer reads, and ``out_lens``."""
        feats = utterance_cmvn(feats, valid_mask(feat_lens, feats.shape[1]))
        x, lengths = self.subsampler(feats.transpose(1, 2), feat_lens)
        mask = valid_mask(lengths, x.shape[-1])
        if self.config.arch == "tdnn":
            x = x * mask.unsqueeze(1)
            for layer in self.layers:
                x = layer(x, mask)
            x = x.transpose(1, 2)
        else:
            x = x.transpose(1, 2) + sinusoidal_positions(x.shape[-1], x.shape[1], x.device)
            x = x * mask.unsqueeze(-1)
            for layer in self.layers:
                x = layer(x, mask)
        return x, lengths


def build_model(config: AcousticModelConfig) -> CtcAcousticModel:
    """A freshly initialised model for ``config``."""
    return CtcAcousticModel(config)


class LoadedModel(NamedTuple):
    """What ``load_model`` returns: the network in eval mode plus its metadata."""

    model: nn.Module  # a CtcAcousticModel, or a WaveformCtcModel (``model.input``: what it reads)
    tokens: list[str]  # tokens[i] is the name of output index i; tokens[0] is the blank
    lang_dir: Path | None  # the lang dir the model was trained for, when recorded
    lm_scale: float = 1.0  # the graph's weight against this model's log-posteriors that decoding takes by default
    phone_lm_scale: float | None = None  # the same for phone decoding (HP graph); None: ``lm_scale``

    def default_lm_scale(self, unit: str) -> float:
        """The LM scale that decoding to ``unit`` ("word" or "phone") takes unless told another."""
        return self.phone_lm_scale if unit == "phone" and self.phone_lm_scale is not None else self.lm_scale


def save_model(
    path: str | Path, model: nn.Module, tokens: list[str], lang_dir: str | Path | None = None, lm_scale: float = 1.0,
    phone_lm_scale: float | None = None,
) -> None:
    """Write config, weights, token table, (optionally) lang dir and the LM scales that decoding takes
    by default (words; phones, when it has its own) to ``path`` atomically."""
    if len(tokens) != model.config.num_tokens:
        raise UsrasrError(f"model has {model.config.num_tokens} outputs but {len(tokens)} token names were given")
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "input": model.input,
        "config": asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "tokens": list(tokens),
        "lang_dir": str(Path(lang_dir).resolve()) if lang_dir is not None else None,
        "lm_scale": float(lm_scale),
        "phone_lm_scale": None if phone_lm_scale is None else float(phone_lm_scale),
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint written by :func:`save_model`; the model is in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise UsrasrError(f"model not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise UsrasrError(f"cannot read model {path}: {e}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UsrasrError(f"{path} is not a usrasr acoustic model checkpoint")
    try:
        if checkpoint.get("input", CtcAcousticModel.input) == CtcAcousticModel.input:
            config = dict(checkpoint["config"])
            # the previous version recorded how many networks a model averaged; one is this version's model
            if config.pop("members", 1) != 1:
                raise TypeError("several networks read as one are no longer supported")
            model = build_model(AcousticModelConfig(**config))
        else:
            from usrasr.models.waveform_ctc import WaveformCtcConfig, WaveformCtcModel  # it imports this module

            model = WaveformCtcModel(WaveformCtcConfig(**checkpoint["config"]))
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, RuntimeError) as e:  # fields or weights this version does not know
        raise UsrasrError(f"{path} does not match this version of the model code: {str(e).splitlines()[0]}") from None
    model.to(device).eval()
    lang_dir = Path(checkpoint["lang_dir"]) if checkpoint.get("lang_dir") else None
    phone_lm_scale = checkpoint.get("phone_lm_scale")
    return LoadedModel(model, list(checkpoint["tokens"]), lang_dir, float(checkpoint.get("lm_scale", 1.0)),
                       None if phone_lm_scale is None else float(phone_lm_scale))
