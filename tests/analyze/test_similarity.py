"""CKA, SVCCA and PWCCA (usrasr.analyze.similarity) against their invariances and a direct
numpy computation on small matrices."""

import numpy as np
import pytest
import torch

from usrasr.analyze.similarity import (
    SVCCA_VARIANCE,
    MinibatchCKA,
    Similarity,
    frame_index,
    on_common_frames,
)


def _cka(x, y, kernel="linear_cka", batch=None):
    """Minibatch CKA of two (n, d) arrays, in batches of ``batch`` frames (all at once by default)."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    batch = batch or len(x)
    cka = MinibatchCKA([0], [1], kernel)
    for begin in range(0, len(x), batch):
        cka.update([x[begin: begin + batch], y[begin: begin + batch]])
    return float(cka.result()[0, 0])


def _reference_debiased_linear_cka(x, y):
    """Kornblith et al.'s debiased CKA: U-centred Gram matrices (Szekely and Rizzo), then their cosine."""
    def u_centre(gram):
        n = len(gram)
        gram = gram.copy()
        np.fill_diagonal(gram, 0)
        means = gram.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram -= means[:, None] + means[None, :]
        np.fill_diagonal(gram, 0)
        return gram

    k, l = u_centre(x @ x.T), u_centre(y @ y.T)
    return (k * l).sum() / np.sqrt((k * k).sum() * (l * l).sum())


def _reference_cca(x, y, variance):
    """Canonical correlations by QR of the centred data, after keeping ``variance`` of each side's
    variance by SVD; and Morcos et al.'s PWCCA weights of x's canonical variates."""
    def reduce(m):
        m = m - m.mean(0)
        _, s, vt = np.linalg.svd(m, full_matrices=False)
        share = np.cumsum(s ** 2) / (s ** 2).sum()
        keep = min(int(np.searchsorted(share, variance - 1e-12)) + 1, int((s > s[0] * 1e-6).sum()))
        return m @ vt[:keep].T, m

    (xr, xc), (yr, _) = reduce(x), reduce(y)
    qx, _ = np.linalg.qr(xr)
    qy, _ = np.linalg.qr(yr)
    rotation, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    variates = qx @ rotation
    weights = np.abs(variates.T @ xc).sum(1)
    return rho, weights


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_linear_cka_matches_a_direct_numpy_computation(rng):
    x = rng.normal(size=(40, 6))
    y = x[:, :3] @ rng.normal(size=(3, 5)) + rng.normal(size=(40, 5))
    assert _cka(x, y) == pytest.approx(_reference_debiased_linear_cka(x, y), abs=1e-10)


@pytest.mark.parametrize("kernel", ["linear_cka", "rbf_cka"])
def test_cka_is_one_under_orthogonal_transforms_and_isotropic_scaling(rng, kernel):
    x = rng.normal(size=(300, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert _cka(x, x, kernel) == pytest.approx(1.0, abs=1e-9)
    assert _cka(x, 3.7 * x @ q, kernel) == pytest.approx(1.0, abs=1e-9)
    assert _cka(0.01 * x, x @ q, kernel, batch=100) == pytest.approx(1.0, abs=1e-9)
    # and it sees a change that is neither: a non-isotropic scaling
    assert _cka(x, x * np.r_[10.0, np.ones(7)], kernel) < 0.9


@pytest.mark.parametrize("kernel", ["linear_cka", "rbf_cka"])
def test_cka_of_independent_features_is_near_zero_and_symmetric(rng, kernel):
    x, y = rng.normal(size=(4000, 20)), rng.normal(size=(4000, 30))
    assert abs(_cka(x, y, kernel, batch=500)) < 0.02
    z = x[:, :10] + 0.5 * rng.normal(size=(4000, 10))
    assert _cka(x, z, kernel, batch=500) == pytest.approx(_cka(z, x, kernel, batch=500), abs=1e-12)
    assert _cka(x, z, kernel, batch=500) > 0.3


def test_svcca_and_pwcca_are_one_for_linearly_related_representations(rng):
    # rank 5 in 9 dims, with a flat spectrum so that SVCCA keeps every component
    x = rng.normal(size=(500, 5)) @ np.linalg.qr(rng.normal(size=(9, 9)))[0][:5]
    y = x @ rng.normal(size=(9, 7)) + 4.0
    scores = _similarity(x, y, ("svcca", "pwcca"))
    assert scores["svcca"] == pytest.approx(1.0, abs=1e-6)
    assert scores["pwcca"] == pytest.approx(1.0, abs=1e-6)


def _similarity(x, y, measures):
    sim = Similarity([x.shape[1], y.shape[1]], [0], [1], measures)
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    for begin in range(0, len(x), 128):  # moments accumulate over minibatches
        sim.update([x[begin: begin + 128], y[begin: begin + 128]])
    return {m: float(v[0, 0]) for m, v in sim.result().items()}


def test_svcca_and_pwcca_match_a_direct_numpy_computation(rng):
    x = rng.normal(size=(400, 6)) * np.r_[5, 3, 2, 1, 0.5, 0.01]
    y = np.tanh(x[:, :4] @ rng.normal(size=(4, 5))) + 0.3 * rng.normal(size=(400, 5))
    rho, _ = _reference_cca(x, y, SVCCA_VARIANCE)
    scores = _similarity(x, y, ("svcca", "pwcca"))
    assert scores["svcca"] == pytest.approx(rho.mean(), abs=1e-8)
    rho, weights = _reference_cca(x, y, 1.0)
    assert scores["pwcca"] == pytest.approx((weights * rho).sum() / weights.sum(), abs=1e-8)
    # SVCCA is symmetric, PWCCA weights the first representation's directions
    swapped = _similarity(y, x, ("svcca", "pwcca"))
    assert swapped["svcca"] == pytest.approx(scores["svcca"], abs=1e-8)
    rho, weights = _reference_cca(y, x, 1.0)
    assert swapped["pwcca"] == pytest.approx((weights * rho).sum() / weights.sum(), abs=1e-8)


def test_a_layer_by_layer_matrix_is_symmetric_between_the_same_layers(rng):
    layers = [torch.as_tensor(rng.normal(size=(600, 4))) for _ in range(3)]
    layers[1] = layers[0] @ torch.as_tensor(rng.normal(size=(4, 4))) + 0.5 * layers[1]
    sim = Similarity([4] * 3, [0, 1, 2], [0, 1, 2])
    for begin in range(0, 600, 200):
        sim.update([f[begin: begin + 200] for f in layers])
    for name, matrix in sim.result().items():
        if name != "pwcca":
            np.testing.assert_allclose(matrix, matrix.T, atol=1e-9)
        np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-6)


def test_frames_pair_up_by_time_when_the_rates_differ():
    fbank = torch.arange(10.0)[:, None]  # 10 ms frames: frame t covers [t, t+1) * 10 ms
    encoder = torch.arange(5.0)[:, None] * 100  # 20 ms frames
    a, b = on_common_frames(fbank, 0.01, encoder, 0.02)
    assert a.squeeze(1).tolist() == [1, 3, 5, 7, 9]  # the 10 ms frame at each 20 ms frame's centre
    assert b.squeeze(1).tolist() == [0, 100, 200, 300, 400]
    b2, a2 = on_common_frames(encoder, 0.02, fbank[:7], 0.01)  # either order; a short side cuts both
    assert a2.squeeze(1).tolist() == [1, 3, 5] and len(b2) == 3
    assert frame_index(3, 0.02, 0.01, 100).tolist() == [1, 3, 5]
