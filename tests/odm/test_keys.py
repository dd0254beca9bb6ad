"""The cluster-to-label key search of the ODM initialisation."""

import numpy as np
import pytest
import torch

from usrasr.odm.keys import _move, cluster_stats, key_loss


def test_key_move_changes_equal_recomputed_losses():
    """The loss change of moving one cluster to each label, scored at once, against the key's
    loss recomputed from scratch."""
    rng = np.random.default_rng(1)
    clusters = [torch.from_numpy(rng.integers(6, size=rng.integers(2, 12))) for _ in range(30)]
    stats = cluster_stats(clusters, 6)
    unigram = rng.dirichlet(np.ones(4))
    bigram = rng.dirichlet(np.ones(16)).reshape(4, 4)
    key = rng.integers(4, size=6)
    onehot = np.eye(4)[key]
    move = _move(2, key, stats.unigram @ onehot, onehot.T @ stats.bigram @ onehot, stats, unigram, bigram)
    for label in range(4):
        moved = key.copy()
        moved[2] = label
        want = key_loss(moved, stats, unigram, bigram) - key_loss(key, stats, unigram, bigram)
        assert move.change[label] - move.change[key[2]] == pytest.approx(want, abs=1e-9)
