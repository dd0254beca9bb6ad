"""Speech embeddings of word-like segments, learnt from the audio alone (speech2vec style).

1. :func:`pooled_segments`: each segment becomes a fixed-size vector: the mean
   frame of each of ``parts`` equal stretches of it, and its log duration.
   Frames are fbank or any layer of a ``usrasr pretrain`` encoder.
2. :func:`cluster_types`: segments are grouped into spoken-word types by
   k-means on those vectors (the unsupervised stand-in for word identity).
3. :func:`train_skipgram`: a speech2vec-style skip-gram: an encoder maps a
   segment's acoustics to an embedding that predicts the spoken-word types of
   its neighbouring segments (negative sampling).  A type's embedding is the
   mean over its segments, as in speech2vec.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.cluster.vq import kmeans2
from torch import nn

from usrasr.align.segments import Segment


def pooled_segments(segments: list[Segment], frames: dict[str, torch.Tensor], parts: int = 4,
                    frame_ratio: dict[str, float] | None = None) -> np.ndarray:
    """``(len(segments), parts * C + 1)`` standardised vectors; ``frame_ratio[utt]`` maps
    fbank frame indices onto ``frames`` of another rate (an encoder layer)."""
    rows = []
    for seg in segments:
        x = frames[seg.utterance]
        ratio = frame_ratio[seg.utterance] if frame_ratio else 1.0
        start = min(int(seg.start * ratio), len(x) - 1)
        end = max(start + 1, min(len(x), int(round(seg.end * ratio))))
        edges = np.linspace(start, end, parts + 1)
        pieces = [x[int(a): max(int(a) + 1, int(b))].double().mean(dim=0) for a, b in zip(edges[:-1], edges[1:])]
        rows.append(torch.cat([*pieces, torch.tensor([np.log(seg.end - seg.start)], dtype=torch.float64)]))
    pooled = torch.stack(rows).numpy()
    return (pooled - pooled.mean(axis=0)) / np.maximum(pooled.std(axis=0), 1e-8)


def cluster_types(pooled: np.ndarray, clusters: int, seed: int = 0) -> np.ndarray:
    """Spoken-word type (k-means cluster) of each segment."""
    clusters = max(1, min(clusters, len(pooled)))
    # Random points as seeds: scipy's k-means++ costs clusters^2 distance passes.
    _, labels = kmeans2(pooled, clusters, iter=20, minit="points", seed=seed)
    return labels


@dataclass
class SkipgramConfig:
    dim: int = 50
    hidden: int = 256
    window: int = 3
    negatives: int = 5
    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3


def context_pairs(utterances: list[str], window: int) -> np.ndarray:
    """``(center, context)`` segment indices within ``window`` of each other in one utterance
    (``utterances`` gives each segment's utterance, segments in time order)."""
    pairs = []
    for offset in range(1, window + 1):
        same = np.array([a == b for a, b in zip(utterances[:-offset], utterances[offset:])], dtype=bool)
        first = np.flatnonzero(same)
        pairs += [np.stack([first, first + offset], 1), np.stack([first + offset, first], 1)]
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


def train_skipgram(pooled: np.ndarray, types: np.ndarray, utterances: list[str],
                   config: SkipgramConfig = SkipgramConfig(), seed: int = 0) -> np.ndarray:
    """Embedding of every segment from an encoder trained to predict its neighbours' types."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(pooled).float()
    t = torch.from_numpy(types).long()
    num_types = int(types.max()) + 1
    encoder = nn.Sequential(nn.Linear(x.shape[1], config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.dim))
    contexts = nn.Embedding(num_types, config.dim)
    nn.init.normal_(contexts.weight, std=0.01)
    # word2vec's noise distribution: unigram counts to the power 3/4.
    noise = torch.bincount(t, minlength=num_types).double() ** 0.75
    pairs = torch.from_numpy(context_pairs(utterances, config.window)).long()
    optimizer = torch.optim.Adam([*encoder.parameters(), *contexts.parameters()], lr=config.lr)
    for _ in range(config.epochs):
        for batch in torch.randperm(len(pairs), generator=generator).split(config.batch_size):
            center, context = pairs[batch, 0], pairs[batch, 1]
            z = encoder(x[center])
            positive = (z * contexts(t[context])).sum(1)
            negative_types = torch.multinomial(noise, len(batch) * config.negatives, True, generator=generator)
            negative = torch.einsum("bd,bkd->bk", z, contexts(negative_types.view(len(batch), config.negatives)))
            loss = -(nn.functional.logsigmoid(positive).mean() + nn.functional.logsigmoid(-negative).sum(1).mean())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return encoder(x).double().numpy()


def type_embeddings(segment_embeddings: np.ndarray, types: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Mean segment embedding of each type in ``keep``."""
    return np.stack([segment_embeddings[types == k].mean(axis=0) for k in keep])
