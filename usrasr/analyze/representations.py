"""What the analyses read: a corpus's utterances and their representations, layer by layer.

A representation is ``fbank`` (the corpus's own 80-dim features of the split) or
anything :func:`usrasr.models.pretrained.open_layer_source` opens: a ``usrasr
pretrain`` output, a ``transformers`` model dir, a Kaldi ``feats.scp``, a folder
of ``.npy`` files or Lhotse cuts with features.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from usrasr.corpus.layout import CorpusLayout
from usrasr.models.pretrained import LayerSource, encode_all, open_layer_source
from usrasr.utils.errors import UsrasrError

FBANK = "fbank"
CHUNK_UTTERANCES = 32  # utterances encoded at once: bounds the memory whatever the corpus's size


def pick_cuts(corpus: Path, split: str, utterances: int, seed: int) -> list:
    """Up to ``utterances`` cuts of ``split`` (0: all), a seeded random choice in manifest order."""
    from lhotse import load_manifest

    path = CorpusLayout(corpus).cuts(split)
    if not path.exists():
        raise UsrasrError(f"{path} not found: no split '{split}' in {corpus} (run `usrasr prepare` first)")
    cuts = list(load_manifest(path))
    if not cuts:
        raise UsrasrError(f"{path} has no cuts")
    if 0 < utterances < len(cuts):
        keep = np.sort(np.random.default_rng(seed).choice(len(cuts), utterances, replace=False))
        cuts = [cuts[i] for i in keep]
    return cuts


def open_representation(spec: str, corpus: Path, split: str, cuts: Sequence) -> LayerSource:
    """The source ``spec`` names (``fbank`` or a path), checked to cover ``cuts``."""
    path = CorpusLayout(corpus).cuts(split) if spec == FBANK else Path(spec)
    source = open_layer_source(path)
    source.check_cuts(cuts, str(CorpusLayout(corpus).cuts(split)))
    return source


def parse_layers(text: str, source: LayerSource, option: str) -> list[int]:
    """``text``: comma-separated layer numbers, or "" / "all" for every layer of ``source``."""
    if text.strip() in ("", "all"):
        return list(range(source.num_layers))
    try:
        layers = [int(x) for x in text.split(",")]
    except ValueError:
        raise UsrasrError(f"{option} must be comma-separated layer numbers or 'all', got '{text}'") from None
    for layer in layers:
        source.check_layer(layer, option)
    return layers


def normalized(feats: Tensor) -> Tensor:
    """Per-utterance mean and variance normalisation (what the units and the encoders see)."""
    return (feats - feats.mean(0)) / feats.std(0, unbiased=False).clamp(min=1e-5)


def layer_chunks(source: LayerSource, cuts: Sequence, layers: Sequence[int],
                 cmvn: bool = True) -> Iterator[tuple[list, list[list[Tensor]]]]:
    """``(chunk of cuts, feats[layer slot][utterance])``, ``CHUNK_UTTERANCES`` cuts at a time."""
    for begin in range(0, len(cuts), CHUNK_UTTERANCES):
        chunk = list(cuts[begin: begin + CHUNK_UTTERANCES])
        feats = encode_all(source, chunk, layers)
        yield chunk, [[normalized(f) if cmvn else f.float() for f in per_layer] for per_layer in feats]


def layer_name(spec: str, layer: int, source: LayerSource) -> str:
    return FBANK if spec == FBANK else f"L{layer}" if source.num_layers > 1 else Path(spec).name
