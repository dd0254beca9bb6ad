"""Mapping one embedding space onto another without parallel data, as MUSE does.

Rows are embeddings.  A map is an orthogonal ``W`` applied as ``X @ W.T``, so
that ``X @ W.T`` lies near ``Y`` for the rows that are translations.

* :func:`procrustes`: the orthogonal ``W`` that best maps given pairs (SVD).
* :func:`csls`: cross-domain similarity local scaling, which penalises "hubs"
  (targets that are the nearest neighbour of many sources).
* :func:`induce_dictionary`: mutual nearest neighbours under CSLS.
* :func:`adversarial_map`: ``W`` trained to fool a discriminator that tells
  mapped sources from targets, kept orthogonal by MUSE's update.
* :func:`refine`: iterated Procrustes on the induced dictionary.
* :func:`unsupervised_map`: restarts of adversarial + refinement; the one with
  the highest :func:`criterion` (mean cosine of the induced dictionary) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


def normalize(x: np.ndarray) -> np.ndarray:
    """Unit length, centred, unit length again (MUSE's ``renorm,center,renorm``)."""
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    x = x - x.mean(axis=0, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def procrustes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The orthogonal ``W`` minimising ``||source @ W.T - target||`` over paired rows."""
    u, _, vt = np.linalg.svd(target.T @ source)
    return u @ vt


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All cosines between the rows of ``a`` and of ``b``."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def csls(mapped: np.ndarray, target: np.ndarray, k: int = 10) -> np.ndarray:
    """CSLS scores ``2 cos(x, y) - r_T(x) - r_S(y)``, with ``r`` the mean cosine of the
    ``k`` nearest neighbours in the other space (Conneau et al., 2018)."""
    cos = cosine(mapped, target)
    k_source = min(k, cos.shape[1])
    k_target = min(k, cos.shape[0])
    r_source = np.sort(cos, axis=1)[:, -k_source:].mean(axis=1)
    r_target = np.sort(cos, axis=0)[-k_target:, :].mean(axis=0)
    return 2 * cos - r_source[:, None] - r_target[None, :]


def induce_dictionary(mapped: np.ndarray, target: np.ndarray, k: int = 10) -> np.ndarray:
    """Pairs ``(i, j)`` that are each other's best CSLS match, as an ``(n, 2)`` array."""
    scores = csls(mapped, target, k)
    forward = scores.argmax(axis=1)
    backward = scores.argmax(axis=0)
    sources = np.flatnonzero(backward[forward] == np.arange(len(mapped)))
    return np.stack([sources, forward[sources]], axis=1)


def criterion(mapped: np.ndarray, target: np.ndarray, k: int = 10) -> float:
    """MUSE's unsupervised model-selection criterion: the mean cosine of the induced dictionary."""
    pairs = induce_dictionary(mapped, target, k)
    if len(pairs) == 0:
        return -1.0
    return float(cosine(mapped[pairs[:, 0]], target[pairs[:, 1]]).diagonal().mean())


def refine(source: np.ndarray, target: np.ndarray, w: np.ndarray, iterations: int = 5, k: int = 10) -> np.ndarray:
    """Iterated Procrustes on the mutual-CSLS dictionary that the current map induces."""
    for _ in range(iterations):
        pairs = induce_dictionary(source @ w.T, target, k)
        if len(pairs) < 2:
            break
        w = procrustes(source[pairs[:, 0]], target[pairs[:, 1]])
    return w


@dataclass
class AdversarialConfig:
    """MUSE's adversarial stage, scaled to small vocabularies."""

    epochs: int = 10
    steps_per_epoch: int = 2000
    batch_size: int = 32
    discriminator_steps: int = 5
    hidden: int = 256
    dropout_input: float = 0.1
    smoothing: float = 0.1
    lr: float = 0.1
    lr_decay: float = 0.98
    beta: float = 0.001  # orthogonalisation step: W <- (1 + beta) W - beta W W^T W


def random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random orthogonal matrix (QR of a Gaussian, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def adversarial_map(source: np.ndarray, target: np.ndarray, config: AdversarialConfig = AdversarialConfig(),
                    init: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Train ``W`` so that a discriminator cannot tell ``source @ W.T`` from ``target``."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dim = source.shape[1]
    src = torch.from_numpy(source).float()
    tgt = torch.from_numpy(target).float()
    mapping = nn.Linear(dim, dim, bias=False)
    with torch.no_grad():
        mapping.weight.copy_(torch.eye(dim) if init is None else torch.from_numpy(init).float())
    discriminator = nn.Sequential(
        nn.Dropout(config.dropout_input), nn.Linear(dim, config.hidden), nn.LeakyReLU(0.2),
        nn.Linear(config.hidden, config.hidden), nn.LeakyReLU(0.2), nn.Linear(config.hidden, 1))
    map_opt = torch.optim.SGD(mapping.parameters(), lr=config.lr)
    dis_opt = torch.optim.SGD(discriminator.parameters(), lr=config.lr)
    bce = nn.BCEWithLogitsLoss()
    # Label 1 = "mapped source", smoothed so the discriminator never becomes certain.
    labels = torch.cat([torch.full((config.batch_size,), 1 - config.smoothing),
                        torch.full((config.batch_size,), config.smoothing)])

    def batch() -> torch.Tensor:
        i = torch.randint(len(src), (config.batch_size,), generator=generator)
        j = torch.randint(len(tgt), (config.batch_size,), generator=generator)
        return torch.cat([mapping(src[i]), tgt[j]])

    for _ in range(config.epochs):
        for _ in range(config.steps_per_epoch):
            discriminator.train()
            for _ in range(config.discriminator_steps):
                loss = bce(discriminator(batch().detach()).squeeze(1), labels)
                dis_opt.zero_grad()
                loss.backward()
                dis_opt.step()
            discriminator.eval()
            loss = bce(discriminator(batch()).squeeze(1), 1 - labels)  # the map wants the opposite labels
            map_opt.zero_grad()
            loss.backward()
            map_opt.step()
            with torch.no_grad():
                w = mapping.weight
                w.copy_((1 + config.beta) * w - config.beta * w @ w.T @ w)
        for opt in (map_opt, dis_opt):
            for group in opt.param_groups:
                group["lr"] *= config.lr_decay
    return mapping.weight.detach().double().numpy()


@dataclass
class MapResult:
    w: np.ndarray
    criterion: float
    restart: int
    criteria: list[float] = field(default_factory=list)  # of every restart


def unsupervised_map(source: np.ndarray, target: np.ndarray, restarts: int = 3, refinements: int = 5,
                     config: AdversarialConfig = AdversarialConfig(), seed: int = 0, k: int = 10) -> MapResult:
    """Adversarial map from a random rotation, then refinement, ``restarts`` times; the
    map with the highest mean dictionary cosine wins."""
    best: MapResult | None = None
    criteria = []
    for restart in range(restarts):
        rng = np.random.default_rng(seed + restart)
        w = adversarial_map(source, target, config, init=random_rotation(source.shape[1], rng), seed=seed + restart)
        w = refine(source, target, w, refinements, k)
        criteria.append(criterion(source @ w.T, target, k))
        if best is None or criteria[-1] > best.criterion:
            best = MapResult(w, criteria[-1], restart)
    assert best is not None, "restarts must be at least 1"
    best.criteria = criteria
    return best


def precision_at(mapped: np.ndarray, target: np.ndarray, gold: np.ndarray, ranks=(1, 5),
                 k: int = 10) -> dict[int, float]:
    """Share of rows whose gold target is among their ``n`` best CSLS matches, for each ``n``."""
    scores = csls(mapped, target, k)
    gold_score = scores[np.arange(len(gold)), gold]
    rank = (scores > gold_score[:, None]).sum(axis=1)
    return {n: float((rank < n).mean()) for n in ranks}
