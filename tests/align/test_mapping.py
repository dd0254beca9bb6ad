"""Procrustes, CSLS and the adversarial map on synthetic embeddings with a known answer."""

import numpy as np
from scipy.linalg import expm, orthogonal_procrustes

from usrasr.align import mapping


def test_procrustes_recovers_a_known_rotation_exactly():
    rng = np.random.default_rng(0)
    source = rng.standard_normal((200, 12))
    rotation = mapping.random_rotation(12, rng)
    w = mapping.procrustes(source, source @ rotation.T)
    np.testing.assert_allclose(w, rotation, atol=1e-10)
    # Against scipy's independent solution of the same problem (it returns the transpose).
    noisy = source @ rotation.T + 0.1 * rng.standard_normal(source.shape)
    np.testing.assert_allclose(mapping.procrustes(source, noisy), orthogonal_procrustes(source, noisy)[0].T, atol=1e-10)


def _hub_example(n=40, dim=20, noise=1.2, seed=0):
    """Sources and their noisy translations sharing a common direction, plus that direction
    itself as an extra target: a hub close to every source."""
    rng = np.random.default_rng(seed)
    common = np.zeros(dim)
    common[0] = 1
    own = rng.standard_normal((n, dim))
    own[:, 0] = 0
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    sources = 0.8 * common + 0.6 * own
    translations = 0.8 * common + 0.6 * (own + noise * rng.standard_normal((n, dim)) / np.sqrt(dim))
    return sources, np.vstack([translations, common])


def test_csls_beats_nearest_neighbour_on_a_hub():
    sources, targets = _hub_example()
    hub, truth = len(targets) - 1, np.arange(len(sources))
    nearest = mapping.cosine(sources, targets).argmax(axis=1)
    scaled = mapping.csls(sources, targets, k=5).argmax(axis=1)
    assert (nearest == hub).sum() >= 10, "the example must have a hub"
    assert (scaled == hub).sum() < (nearest == hub).sum() / 3
    assert (scaled == truth).mean() >= (nearest == truth).mean() + 0.15


def test_csls_matches_its_definition():
    rng = np.random.default_rng(1)
    a, b, k = rng.standard_normal((7, 4)), rng.standard_normal((9, 4)), 3
    cos = np.array([[x @ y / np.linalg.norm(x) / np.linalg.norm(y) for y in b] for x in a])
    r_a = [np.mean(sorted(row)[-k:]) for row in cos]
    r_b = [np.mean(sorted(col)[-k:]) for col in cos.T]
    expected = [[2 * cos[i, j] - r_a[i] - r_b[j] for j in range(9)] for i in range(7)]
    np.testing.assert_allclose(mapping.csls(a, b, k), expected, atol=1e-12)


def test_dictionary_pairs_are_mutual_best_matches_and_precision_counts_ranks():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((30, 5)), rng.standard_normal((25, 5))
    scores = mapping.csls(a, b)
    pairs = {tuple(p) for p in mapping.induce_dictionary(a, b).tolist()}
    brute = {(i, j) for i in range(30) for j in range(25)
             if scores[i].argmax() == j and scores[:, j].argmax() == i}
    assert pairs == brute and pairs
    gold = rng.integers(0, 25, 30)
    rank = [(scores[i] > scores[i, gold[i]]).sum() for i in range(30)]
    assert mapping.precision_at(a, b, gold, (1, 5)) == {1: np.mean(np.array(rank) < 1), 5: np.mean(np.array(rank) < 5)}


def _rotated_clusters(seed=0, n=300, dim=4):
    """An anisotropic mixture and a copy turned by a rotation of moderate angle."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((5, dim)) * np.array([3, 2, 1, 0.5])
    source = centres[rng.integers(0, 5, n)] + 0.2 * rng.standard_normal((n, dim))
    generator = rng.standard_normal((dim, dim))
    generator = generator - generator.T
    rotation = expm(0.8 * generator / np.linalg.norm(generator, 2))
    return source, source @ rotation.T, rotation


def test_adversarial_map_recovers_a_rotation_on_an_easy_case():
    source, target, rotation = _rotated_clusters()
    truth = np.arange(len(source))
    assert (mapping.cosine(source, target).argmax(axis=1) == truth).mean() < 0.1
    config = mapping.AdversarialConfig(epochs=2, steps_per_epoch=200, hidden=64)
    w = mapping.adversarial_map(source, target, config, seed=0)
    assert np.abs(w - rotation).max() < np.abs(np.eye(4) - rotation).max() / 1.5
    assert (mapping.cosine(source @ w.T, target).argmax(axis=1) == truth).mean() > 0.5
    # Refinement from the adversarial map is exact; from the identity it is not.
    np.testing.assert_allclose(mapping.refine(source, target, w), rotation, atol=1e-8)
    assert np.abs(mapping.refine(source, target, np.eye(4)) - rotation).max() > 0.1


def test_criterion_prefers_the_true_map():
    source, target, rotation = _rotated_clusters(seed=3)
    wrong = mapping.random_rotation(4, np.random.default_rng(5))
    assert mapping.criterion(source @ rotation.T, target) > mapping.criterion(source @ wrong.T, target) + 0.05


def test_restarts_keep_the_highest_criterion():
    restarts = 2
    source, target, _ = _rotated_clusters(seed=4)
    config = mapping.AdversarialConfig(epochs=1, steps_per_epoch=20, hidden=16)
    found = mapping.unsupervised_map(source, target, restarts=restarts, config=config)
    assert len(found.criteria) == restarts and found.criterion == max(found.criteria)
    assert found.criteria[found.restart] == found.criterion
    np.testing.assert_allclose(found.w @ found.w.T, np.eye(4), atol=1e-8)
