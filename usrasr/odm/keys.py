"""Initialisation of the ODM search: hard keys from acoustic clusters to labels whose mapped
cluster bigrams match the LM's (moment matching), found by cheap local search.

Given cluster ids per step (e.g. k-means of the segment features), a key maps
every cluster to one label; the mapped unigram and bigram distributions are
sums of the clusters' unigram and bigram statistics, so the ODM loss of a key
needs no pass over the data, and the best move of one cluster to every label is
scored at once.  Hundreds of restarts take seconds; the lowest-loss keys then
warm-start the classifiers of :func:`usrasr.odm.search.fit_odm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from usrasr.odm.ngrams import NgramTable

EPS = 1e-8


@dataclass
class ClusterStats:
    unigram: np.ndarray  # (K,) share of steps
    bigram: np.ndarray  # (K, K) share of neighbouring pairs within an utterance


def cluster_stats(clusters: list[Tensor], num_clusters: int) -> ClusterStats:
    unigram = np.zeros(num_clusters)
    bigram = np.zeros((num_clusters, num_clusters))
    for ids in clusters:
        ids = ids.numpy()
        np.add.at(unigram, ids, 1.0)
        np.add.at(bigram, (ids[:-1], ids[1:]), 1.0)
    return ClusterStats(unigram / max(unigram.sum(), 1.0), bigram / max(bigram.sum(), 1.0))


def _dense(table: NgramTable, labels: int) -> np.ndarray:
    out = np.zeros((labels,) * table.order)
    out[tuple(table.ngrams.T.numpy())] = table.probs.numpy()
    return out


def key_loss(key: np.ndarray, stats: ClusterStats, unigram: np.ndarray, bigram: np.ndarray) -> float:
    """Unigram + bigram cross-entropy of the LM (dense ``unigram``, ``bigram``) against the
    key's mapped distributions."""
    labels = len(unigram)
    onehot = np.eye(labels)[key]
    mapped1 = stats.unigram @ onehot
    mapped2 = onehot.T @ stats.bigram @ onehot
    return float(-(unigram * np.log(mapped1 + EPS)).sum() - (bigram * np.log(mapped2 + EPS)).sum())


@dataclass
class _Move:
    """Cluster ``i`` taken out of the mapped distributions, and what it brings to any label."""

    base1: np.ndarray  # (V,) mapped unigram without the cluster
    base2: np.ndarray  # (V, V) mapped bigram without the cluster
    row: np.ndarray  # (V,) its pairs (cluster, other) by the other's label
    col: np.ndarray  # (V,) its pairs (other, cluster)
    self_pair: float  # its pairs with itself
    change: np.ndarray  # (V,) loss after giving the cluster each label, minus the loss without it


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, 0.0) + EPS)


def _move(i: int, key: np.ndarray, mapped1: np.ndarray, mapped2: np.ndarray, stats: ClusterStats,
          unigram: np.ndarray, bigram: np.ndarray) -> _Move:
    labels, old = len(unigram), key[i]
    self_pair = stats.bigram[i, i]
    row = np.bincount(key, stats.bigram[i], labels)
    col = np.bincount(key, stats.bigram[:, i], labels)
    row[old] -= self_pair
    col[old] -= self_pair
    base2 = mapped2.copy()
    base2[old] -= row
    base2[:, old] -= col
    base2[old, old] -= self_pair
    base1 = mapped1.copy()
    base1[old] -= stats.unigram[i]
    log_base = _log(base2)
    # label a: row a gains `row`, column a gains `col`, and (a, a) gains both and the self pair
    change = -(bigram * (_log(base2 + row[None, :]) - log_base)).sum(1)
    change -= (bigram * (_log(base2 + col[:, None]) - log_base)).sum(0)
    diag = np.diag(base2)
    change -= np.diag(bigram) * (_log(diag + row + col + self_pair) - _log(diag + row) - _log(diag + col)
                                 + _log(diag))
    change -= unigram * (_log(base1 + stats.unigram[i]) - _log(base1))
    return _Move(base1, base2, row, col, self_pair, change)


def _climb(key: np.ndarray, stats: ClusterStats, unigram: np.ndarray, bigram: np.ndarray,
           rng: np.random.Generator, sweeps: int) -> np.ndarray:
    """Coordinate descent: each cluster in turn moves to the label that lowers the loss most."""
    key = key.copy()
    onehot = np.eye(len(unigram))[key]
    mapped1 = stats.unigram @ onehot
    mapped2 = onehot.T @ stats.bigram @ onehot
    for _ in range(sweeps):
        moved = False
        for i in rng.permutation(len(key)):
            move = _move(i, key, mapped1, mapped2, stats, unigram, bigram)
            best = int(np.argmin(move.change))
            if move.change[best] < move.change[key[i]] - 1e-12:
                key[i], moved = best, True
            mapped1, mapped2 = move.base1, move.base2
            mapped1[key[i]] += stats.unigram[i]
            mapped2[key[i]] += move.row
            mapped2[:, key[i]] += move.col
            mapped2[key[i], key[i]] += move.self_pair
        if not moved:
            break
    return key


def frequency_key(stats: ClusterStats, unigram: np.ndarray, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """Clusters from the most to the least frequent (frequencies jittered by ``jitter``, relative)
    fill the labels from the most to the least frequent, each label up to its LM share."""
    order = np.argsort(-stats.unigram * np.exp(jitter * rng.normal(size=len(stats.unigram))))
    labels = np.argsort(-unigram)
    quota = np.cumsum(unigram[labels])
    filled = np.cumsum(stats.unigram[order]) - stats.unigram[order] / 2  # each cluster's midpoint
    key = np.empty(len(order), dtype=np.int64)
    key[order] = labels[np.minimum(np.searchsorted(quota, filled), len(labels) - 1)]
    return key


def search_keys(stats: ClusterStats, tables: list[NgramTable], restarts: int, init: str = "frequency",
                jitter: float = 0.5, sweeps: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``restarts`` keys by coordinate descent from random (``init="random"``) or jittered
    frequency-matched starts; returns (keys (restarts, K), losses (restarts,)), lowest loss first."""
    labels = int(tables[0].ngrams.max()) + 1
    unigram, bigram = _dense(tables[0], labels), _dense(tables[1], labels)
    rng = np.random.default_rng(seed)
    keys, losses = [], []
    for _ in range(restarts):
        start = (frequency_key(stats, unigram, rng, jitter) if init == "frequency"
                 else rng.integers(labels, size=len(stats.unigram)))
        key = _climb(start, stats, unigram, bigram, rng, sweeps)
        keys.append(key)
        losses.append(key_loss(key, stats, unigram, bigram))
    order = np.argsort(losses)
    return np.stack(keys)[order], np.array(losses)[order]
