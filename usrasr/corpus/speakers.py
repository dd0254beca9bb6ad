"""Pseudo-speakers for audio without speaker labels: agglomerative clustering of utterances.

The per-speaker options (``cmvn=speaker``, ``codebook_per_speaker``,
``speaker_emissions``) need to know which utterances share a voice.  With
``speaker_field=cluster`` that grouping comes from the audio alone: each
utterance is summarised by the mean and standard deviation of its fbank
(the long-term spectrum and its spread, which differ far more between voices
than between the sentences of one voice), the summaries are standardised, and
Ward's agglomerative clustering groups them.  The number of clusters is given,
or chosen by the silhouette of the partition (the classic diarisation recipe,
at the utterance level).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from usrasr.utils.errors import UsrasrError

# Ward's linkage and the silhouette both need all pairwise distances: larger
# splits are clustered on a random sample and the rest join the nearest centre.
MAX_CLUSTERED_UTTERANCES = 4000
MAX_AUTO_CLUSTERS = 20


@dataclass
class SpeakerClusters:
    labels: list[int]  # cluster of every utterance, 0..num_clusters-1
    num_clusters: int
    silhouette: float  # of the clustered sample (-1..1; higher: better separated)
    chosen: bool  # True when the number was chosen by the silhouette


def utterance_embeddings(feats: Sequence[torch.Tensor]) -> np.ndarray:
    """``(N, 2D)``: per-utterance fbank mean and standard deviation, standardised over utterances."""
    rows = np.stack([torch.cat([f.mean(0), f.std(0, unbiased=False)]).double().numpy() for f in feats])
    spread = rows.std(0)
    return (rows - rows.mean(0)) / np.where(spread > 0, spread, 1.0)


def silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of a partition from its ``(N, N)`` distance matrix (0 for singletons)."""
    clusters, index = np.unique(labels, return_inverse=True)
    if len(clusters) < 2:
        return 0.0
    sizes = np.bincount(index)
    sums = np.stack([distances[:, index == c].sum(1) for c in range(len(clusters))], 1)
    rows = np.arange(len(labels))
    own = sums[rows, index] / np.maximum(sizes[index] - 1, 1)
    others = np.where(np.arange(len(clusters))[None, :] == index[:, None], np.inf, sums / sizes[None, :]).min(1)
    values = (others - own) / np.maximum(np.maximum(own, others), 1e-12)
    return float(np.where(sizes[index] > 1, values, 0.0).mean())


def cluster_speakers(feats: Sequence[torch.Tensor], num_clusters: int = 0, seed: int = 0,
                     max_clustered: int = MAX_CLUSTERED_UTTERANCES) -> SpeakerClusters:
    """Group utterances by voice; ``num_clusters`` 0 chooses 2..20 by the silhouette."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist, squareform

    if len(feats) < 2:
        raise UsrasrError(f"speaker clustering needs at least 2 utterances, got {len(feats)}")
    embeddings = utterance_embeddings(feats)
    sample = np.arange(len(feats))
    if len(sample) > max_clustered:
        sample = np.sort(np.random.default_rng(seed).choice(len(feats), max_clustered, replace=False))
    points = embeddings[sample]
    condensed = pdist(points)
    tree = linkage(condensed, "ward")
    distances = squareform(condensed)
    if num_clusters > 0:
        counts = [min(num_clusters, len(sample))]
    else:
        counts = list(range(2, min(MAX_AUTO_CLUSTERS, len(sample) - 1) + 1)) or [2]
    scored = []
    for count in counts:
        labels = fcluster(tree, count, "maxclust") - 1
        scored.append((silhouette(distances, labels), count, labels))
    score, _, labels = max(scored, key=lambda s: s[0])
    found = int(labels.max()) + 1  # ties in the tree can give fewer clusters than asked
    centres = np.stack([points[labels == c].mean(0) for c in range(found)])
    nearest = ((embeddings[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    nearest[sample] = labels
    return SpeakerClusters(nearest.tolist(), found, score, chosen=num_clusters <= 0)


def cluster_purity(clusters: Sequence[int], labels: Sequence[str]) -> float:
    """Share of utterances whose cluster's most common label is their own (1: no cluster mixes labels)."""
    members: dict[int, Counter] = {}
    for cluster, label in zip(clusters, labels):
        members.setdefault(cluster, Counter())[label] += 1
    return sum(c.most_common(1)[0][1] for c in members.values()) / max(len(clusters), 1)
