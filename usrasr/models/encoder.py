"""The self-supervised speech encoder: what pretraining trains, and what units,
analysis and self-training read (its layers, or its weights as a CTC model's start).

The encoder is a network of :mod:`usrasr.models.acoustic` (per-utterance
CMVN, convolutional subsampling, then conformer or TDNN layers).  Masking
replaces whole spans of subsampled frames by a learned embedding, so no masked
frame leaks through the subsampler's receptive field.

A ``--method just`` encoder's checkpoint also holds its universal-phone CTC
head (an ``nn.Linear(hidden_dim, len(phones))``, index 0 the blank ``<blk>``)
and the phone symbols: :func:`load_phone_head` reads them back.  The head's
logits hold a part shared through the phones' articulatory features;
:func:`load_articulatory_features` reads that part, which scores a phone the
head's inventory lacks by its own features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from usrasr.models.acoustic import (
    ARCHITECTURES, AcousticModelConfig, ConformerLayer, CtcAcousticModel, Subsampler, sinusoidal_positions,
    tdnn_layers, utterance_cmvn, valid_mask,
)
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_path

ENCODER_FORMAT = "usrasr-ssl-encoder-v1"


@dataclass
class EncoderConfig:
    arch: str = "conformer"  # or "tdnn": 1-D convolutions, quick on a CPU
    feat_dim: int = 80
    hidden_dim: int = 192
    num_layers: int = 4
    num_heads: int = 4
    conv_kernel_size: int = 15
    ff_multiplier: int = 4
    subsampling: int = 2
    dropout: float = 0.1
    kernel_size: int = 3  # tdnn: of every layer (dilations cycle through 1, 2, 3)

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise UsrasrError(f"unknown encoder arch '{self.arch}' (choose from {', '.join(ARCHITECTURES)})")


class SslEncoder(nn.Module):
    """fbank (B, T, F) -> the outputs of every layer (B, T', C), layer 0 being the front end."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        c = self.config = config
        if c.arch == "conformer" and (c.hidden_dim % c.num_heads or c.hidden_dim % 2):
            raise UsrasrError("hidden_dim must be even and divisible by num_heads")
        self.subsampler = Subsampler(c.feat_dim, c.hidden_dim, c.subsampling)
        self.mask_embedding = nn.Parameter(torch.zeros(c.hidden_dim).normal_(std=0.1))
        if c.arch == "tdnn":
            self.layers = tdnn_layers(c.hidden_dim, c.kernel_size, c.num_layers, c.dropout)
        else:
            self.layers = nn.ModuleList(
                ConformerLayer(c.hidden_dim, c.num_heads, c.conv_kernel_size, c.ff_multiplier, c.dropout)
                for _ in range(c.num_layers)
            )

    def front_end(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised, subsampled frames ``(B, T', C)``, their lengths and validity mask."""
        feats = utterance_cmvn(feats, valid_mask(feat_lens, feats.shape[1]))
        x, lengths = self.subsampler(feats.transpose(1, 2), feat_lens)
        valid = valid_mask(lengths, x.shape[-1])
        return x.transpose(1, 2) * valid.unsqueeze(-1), lengths, valid

    def run_layers(self, x: Tensor, valid: Tensor, masked: Tensor | None = None,
                   num_layers: int | None = None) -> list[Tensor]:
        """Outputs of layers 1..``num_layers`` (all by default); ``masked`` frames see the mask embedding."""
        if masked is not None:
            x = torch.where(masked.unsqueeze(-1), self.mask_embedding.to(x.dtype), x)
        tdnn = self.config.arch == "tdnn"
        if tdnn:  # convolutions know where they are; the mask embedding must not leak into padding
            x = x * valid.unsqueeze(-1)
        else:
            x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device)
        outputs = []
        for layer in self.layers[: num_layers or len(self.layers)]:
            x = layer(x.transpose(1, 2), valid).transpose(1, 2) if tdnn else layer(x, valid)
            outputs.append(x)
        return outputs

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[list[Tensor], Tensor]:
        """Every layer's output, layer 0 (front end) first, and the output lengths."""
        x, lengths, valid = self.front_end(feats, feat_lens)
        return [x, *self.run_layers(x, valid)], lengths


def _weights(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def save_encoder(path: str | Path, encoder: SslEncoder, info: dict, phone_head: nn.Linear | None = None,
                 phones: list[str] | None = None, features: ArticulatoryFeatures | None = None) -> None:
    """The encoder alone (what units need), with its config and how it was trained; a
    ``just`` encoder adds its phone CTC head and the head's phone symbols (``phones[0]`` the blank),
    and ``features``, the articulatory part of that head."""
    checkpoint = {"format": ENCODER_FORMAT, "config": asdict(encoder.config), "state_dict": _weights(encoder),
                  "info": info}
    if (phone_head is None) != (phones is None):
        raise UsrasrError("a phone head needs its phone symbols, and phone symbols their head")
    if phone_head is not None:
        if phone_head.in_features != encoder.config.hidden_dim or phone_head.out_features != len(phones):
            raise UsrasrError(f"the phone head maps {phone_head.in_features} -> {phone_head.out_features}, "
                              f"not hidden_dim {encoder.config.hidden_dim} -> {len(phones)} phones")
        checkpoint.update(phone_head=_weights(phone_head), phones=list(phones))
    if features is not None:
        if phone_head is None or tuple(features.values.shape) != (len(phones), len(features.names)) \
                or features.head.in_features != encoder.config.hidden_dim:
            raise UsrasrError("articulatory features need the phone head they are part of, a row of values per "
                              "phone and a column per feature name")
        checkpoint.update(feature_head=_weights(features.head), feature_names=list(features.names),
                          phone_features=features.values.detach().cpu().clone())
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def _read_checkpoint(path: str | Path) -> tuple[Path, dict]:
    path = Path(path)
    if path.is_dir():
        if (path / "config.json").is_file() and not (path / "encoder.pt").is_file():
            # a transformers model reads the waveform, the models built from an encoder here fbank
            raise UsrasrError(f"{path} is a transformers model, not a `usrasr pretrain` encoder: it gives units and "
                              "features (--units encoder, usrasr features) and starts self-training's CTC model "
                              "(ctc_init), but the cross-lingual start needs a `usrasr pretrain --method just` "
                              "encoder")
        path = path / "encoder.pt"
    if not path.is_file():
        raise UsrasrError(f"encoder not found: {path} (run `usrasr pretrain` first)")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != ENCODER_FORMAT:
        raise UsrasrError(f"{path} is not a usrasr pretrained encoder")
    return path, checkpoint


def load_encoder(path: str | Path) -> tuple[SslEncoder, dict]:
    _, checkpoint = _read_checkpoint(path)
    encoder = SslEncoder(EncoderConfig(**checkpoint["config"]))
    encoder.load_state_dict(checkpoint["state_dict"])
    return encoder.eval(), checkpoint["info"]


def load_phone_head(path: str | Path) -> tuple[nn.Linear, list[str]] | None:
    """A ``just`` encoder's phone CTC head (last layer's output -> phone logits, index 0 the blank)
    and its phone symbols; None for an encoder trained without phone labels (bestrq, birq)."""
    _, checkpoint = _read_checkpoint(path)
    if "phone_head" not in checkpoint:
        return None
    return _linear(checkpoint["phone_head"]), list(checkpoint["phones"])


def _linear(weights: dict[str, Tensor]) -> nn.Linear:
    """An ``nn.Linear`` (eval mode) holding a saved layer's ``weight`` and ``bias``."""
    layer = nn.Linear(weights["weight"].shape[1], weights["weight"].shape[0])
    layer.load_state_dict(weights)
    return layer.eval()


@dataclass
class ArticulatoryFeatures:
    """The articulatory part of a ``just`` encoder's phone head: ``head`` maps the last layer to a
    score per articulatory feature (``names``, panphon's), and a phone's logit holds
    ``values[phone] @ head(hidden)`` beside a per-phone part (``values``: phones x features, -1/0/1,
    the blank's row zero).  A phone outside the head's inventory can be scored by its own features."""

    head: nn.Linear
    names: list[str]
    values: Tensor


def load_articulatory_features(path: str | Path) -> ArticulatoryFeatures | None:
    """The articulatory part of a ``just`` encoder's phone head; None for an encoder without one
    (bestrq, birq, or a ``just`` encoder saved before the part was kept)."""
    _, checkpoint = _read_checkpoint(path)
    if "feature_head" not in checkpoint:
        return None
    return ArticulatoryFeatures(_linear(checkpoint["feature_head"]), list(checkpoint["feature_names"]),
                                checkpoint["phone_features"].float())


def ctc_model_from_encoder(path: str | Path, num_tokens: int) -> CtcAcousticModel:
    """A CTC model (conformer or TDNN, as the encoder) whose front end and layers start as the
    pretrained encoder's (same module layout); only the output layer is new."""
    encoder, _ = load_encoder(path)
    c = encoder.config
    model = CtcAcousticModel(AcousticModelConfig(
        num_tokens=num_tokens, arch=c.arch, feat_dim=c.feat_dim, hidden_dim=c.hidden_dim,
        num_layers=c.num_layers, subsampling=c.subsampling, dropout=c.dropout, num_heads=c.num_heads,
        conv_kernel_size=c.conv_kernel_size, ff_multiplier=c.ff_multiplier, kernel_size=c.kernel_size))
    weights = {k: v for k, v in encoder.state_dict().items() if k != "mask_embedding"}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or any(not k.startswith("output.") for k in missing):
        raise UsrasrError(f"{path}: the encoder does not fit a CTC model (missing {missing}, unexpected {unexpected})")
    return model


def length_batches(lengths: list[int], max_frames: int) -> list[list[int]]:
    """Utterances sorted by length, cut into batches of at most ``max_frames`` padded frames."""
    batches, batch = [], []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if batch and (len(batch) + 1) * lengths[i] > max_frames:
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    return batches


@torch.inference_mode()
def layer_features(encoder: SslEncoder, feats: list[Tensor], batch_frames: int = 40000) -> list[list[Tensor]]:
    """Every layer's output for each utterance: ``out[layer][utt]`` is ``(T', C)``."""
    encoder.eval()
    per_utt: list[list[Tensor]] = [[] for _ in feats]
    for batch in length_batches([len(f) for f in feats], batch_frames):
        x = nn.utils.rnn.pad_sequence([feats[i] for i in batch], batch_first=True)
        outputs, out_lens = encoder(x, torch.tensor([len(feats[i]) for i in batch]))
        for row, i in enumerate(batch):
            per_utt[i] = [o[row, : out_lens[row]].clone() for o in outputs]
    return [[utt[layer] for utt in per_utt] for layer in range(len(encoder.layers) + 1)]
