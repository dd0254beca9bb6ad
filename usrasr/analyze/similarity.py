"""How alike two representations of the same frames are: CKA and CCA.

- **CKA** (centred kernel alignment, Kornblith et al. 2019) compares the two
  representations' frame-by-frame similarity structure: 1 when one is an
  orthogonal transform of the other up to scale, near 0 when they are
  independent. The *linear* kernel compares dot products, the *RBF* kernel
  local neighbourhoods (width: ``RBF_WIDTH`` times the median distance
  between the minibatch's frames). Both are computed as minibatch CKA
  (Nguyen et al. 2021): the debiased HSIC estimator (Song et al. 2012) of
  each minibatch, averaged over minibatches, then normalised, so any number
  of frames fits in memory and independent features score near 0 whatever
  the dimension.
- **SVCCA** (Raghu et al. 2017): each side is reduced to the principal
  components that keep ``SVCCA_VARIANCE`` of its variance, then the mean
  canonical correlation. **PWCCA** (Morcos et al. 2018): the canonical
  correlations weighted by how much of the *first* representation each
  canonical direction accounts for, so it is not symmetric. Both come from
  second moments accumulated over all the frames seen (exact, memory
  ``dim^2``).

All the scores here are symmetric in their two arguments except PWCCA.
Frames pair up by time (:func:`on_common_frames`) when the two frame rates
differ.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from usrasr.utils.errors import UsrasrError

RBF_WIDTH = 0.8  # Kornblith et al. (2019) use 0.2-0.8 times the median distance
SVCCA_VARIANCE = 0.99  # Raghu et al. (2017)
MEASURES = ("linear_cka", "rbf_cka", "svcca", "pwcca")


def on_common_frames(a: Tensor, a_shift: float, b: Tensor, b_shift: float) -> tuple[Tensor, Tensor]:
    """``a`` and ``b`` (frames first) at the coarser of their frame shifts (seconds): each
    coarse frame is paired with the fine frame at its centre; both cut to the shorter span."""
    if math.isclose(a_shift, b_shift, rel_tol=1e-3):
        n = min(len(a), len(b))
        return a[:n], b[:n]
    if a_shift < b_shift:
        fine_b, fine_a = on_common_frames(b, b_shift, a, a_shift)
        return fine_a, fine_b
    index = frame_index(len(a), a_shift, b_shift, len(b))
    return a[: len(index)], b[index]


def frame_index(num_frames: int, shift: float, fine_shift: float, num_fine: int) -> np.ndarray:
    """For each of ``num_frames`` frames of ``shift`` seconds, the frame of a ``fine_shift``
    sequence (``num_fine`` long) at its centre; frames whose centre lies past the end are dropped."""
    centres = (np.arange(num_frames) + 0.5) * shift
    index = np.floor(centres / fine_shift + 1e-9).astype(np.int64)
    return index[index < num_fine]


@dataclass
class Gram:
    """A kernel matrix prepared for the debiased HSIC: zero diagonal, row sums, total."""

    off_diagonal: Tensor
    row_sums: Tensor
    total: Tensor

    @classmethod
    def of(cls, kernel: Tensor) -> Gram:
        k = kernel.clone()
        k.fill_diagonal_(0)
        rows = k.sum(1)
        return cls(k, rows, rows.sum())


def linear_gram(x: Tensor) -> Gram:
    x = x.double()
    return Gram.of(x @ x.T)


def rbf_gram(x: Tensor, width: float = RBF_WIDTH) -> Gram:
    x = x.double()
    squared = torch.cdist(x, x).square()
    n = len(x)
    median = squared[~torch.eye(n, dtype=torch.bool)].median()
    bandwidth = width * width * median if median > 0 else torch.tensor(1.0, dtype=x.dtype)
    return Gram.of(torch.exp(-squared / (2 * bandwidth)))


def debiased_hsic(k: Gram, l: Gram) -> float:
    """Song et al. (2012)'s unbiased HSIC estimator of two kernels over the same n >= 4 frames."""
    n = len(k.off_diagonal)
    trace = (k.off_diagonal * l.off_diagonal).sum()
    value = trace + k.total * l.total / ((n - 1) * (n - 2)) - 2 * (k.row_sums @ l.row_sums) / (n - 2)
    return float(value / (n * (n - 3)))


GRAMS = {"linear_cka": linear_gram, "rbf_cka": rbf_gram}


class MinibatchCKA:
    """CKA of every pair (layer ``rows[i]``, layer ``cols[j]``) of a list of layers, accumulated
    over minibatches of frames."""

    def __init__(self, rows: list[int], cols: list[int], kernel: str = "linear_cka"):
        self.rows, self.cols, self.gram = rows, cols, GRAMS[kernel]
        self.used = sorted(set(rows) | set(cols))
        self.cross = np.zeros((len(rows), len(cols)))
        self.self_hsic = np.zeros(max(self.used) + 1)
        self.batches = 0

    def update(self, feats: list[Tensor]) -> None:
        """One minibatch: ``feats[layer]`` are (n, dim) features of the same n >= 4 frames."""
        grams = {layer: self.gram(feats[layer]) for layer in self.used}
        for layer, k in grams.items():
            self.self_hsic[layer] += debiased_hsic(k, k)
        for i, a in enumerate(self.rows):
            for j, b in enumerate(self.cols):
                self.cross[i, j] += debiased_hsic(grams[a], grams[b])
        self.batches += 1

    def result(self) -> np.ndarray:
        norm = np.sqrt(np.clip(np.outer(self.self_hsic[self.rows], self.self_hsic[self.cols]), 1e-300, None))
        return self.cross / norm


class Moments:
    """Running sums of ``x`` and ``x x^T`` over frames of concatenated features (float64)."""

    def __init__(self, dim: int):
        self.count = 0
        self.sum = np.zeros(dim)
        self.outer = np.zeros((dim, dim))

    def update(self, x: Tensor) -> None:
        x = x.double().numpy()
        self.count += len(x)
        self.sum += x.sum(0)
        self.outer += x.T @ x

    def covariance(self) -> np.ndarray:
        mean = self.sum / self.count
        return self.outer / self.count - np.outer(mean, mean)


def _principal(cov: np.ndarray, variance: float) -> np.ndarray:
    """Columns: the principal directions that keep ``variance`` of the total (1.0: every
    direction that is not numerically zero)."""
    values, vectors = np.linalg.eigh(cov)
    values, vectors = values[::-1].clip(min=0), vectors[:, ::-1]
    if values[0] <= 0:
        return vectors[:, :0]
    nonzero = int((values > values[0] * 1e-10).sum())
    share = np.cumsum(values) / values.sum()
    keep = min(nonzero, int(np.searchsorted(share, variance - 1e-12)) + 1)
    return vectors[:, :keep]


def _inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(cov)
    return vectors @ np.diag(1 / np.sqrt(np.maximum(values, values.max() * 1e-12))) @ vectors.T


def cca(cov_xx: np.ndarray, cov_yy: np.ndarray, cov_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations (descending) and the x-side canonical directions (columns)."""
    whiten_x, whiten_y = _inverse_sqrt(cov_xx), _inverse_sqrt(cov_yy)
    u, rho, _ = np.linalg.svd(whiten_x @ cov_xy @ whiten_y, full_matrices=False)
    return np.clip(rho, 0.0, 1.0), whiten_x @ u


def cca_scores(cov: np.ndarray, x: slice, y: slice) -> dict[str, float]:
    """SVCCA and PWCCA of the blocks ``x`` and ``y`` of one joint covariance matrix."""
    cov_xx, cov_yy, cov_xy = cov[x, x], cov[y, y], cov[x, y]
    px, py = _principal(cov_xx, SVCCA_VARIANCE), _principal(cov_yy, SVCCA_VARIANCE)
    if px.shape[1] == 0 or py.shape[1] == 0:
        return {"svcca": math.nan, "pwcca": math.nan}
    rho, _ = cca(px.T @ cov_xx @ px, py.T @ cov_yy @ py, px.T @ cov_xy @ py)
    svcca = float(rho.mean())
    # PWCCA: CCA of everything that is not numerically zero, weighted by sum_j |cov(h_i, x_j)|
    px, py = _principal(cov_xx, 1.0), _principal(cov_yy, 1.0)
    rho, directions = cca(px.T @ cov_xx @ px, py.T @ cov_yy @ py, px.T @ cov_xy @ py)
    weights = np.abs(cov_xx @ px @ directions[:, : len(rho)]).sum(0)
    pwcca = float((weights * rho).sum() / weights.sum()) if weights.sum() > 0 else math.nan
    return {"svcca": svcca, "pwcca": pwcca}


class Similarity:
    """Every measure between layers ``rows[i]`` and ``cols[j]`` of a list of layers (of one or two
    sources; a layer on both sides is one entry, so it is compared with itself exactly): feed
    minibatches of paired frames to :meth:`update`, read :meth:`result`."""

    def __init__(self, dims: list[int], rows: list[int], cols: list[int], measures: tuple[str, ...] = MEASURES):
        self.measures, self.dims, self.rows, self.cols = measures, dims, rows, cols
        self.kernels = {m: MinibatchCKA(rows, cols, m) for m in measures if m in GRAMS}
        self.moments = Moments(sum(dims)) if {"svcca", "pwcca"} & set(measures) else None

    def update(self, feats: list[Tensor]) -> None:
        """``feats[layer]``: (n, dim) features of the same n frames."""
        for kernel in self.kernels.values():
            kernel.update(feats)
        if self.moments is not None:
            self.moments.update(torch.cat(feats, dim=1))

    def result(self) -> dict[str, np.ndarray]:
        out = {m: k.result() for m, k in self.kernels.items()}
        if self.moments is not None:
            cov = self.moments.covariance()
            starts = np.cumsum([0, *self.dims])
            blocks = [slice(int(s), int(e)) for s, e in itertools.pairwise(starts)]
            scores = [[cca_scores(cov, blocks[a], blocks[b]) for b in self.cols] for a in self.rows]
            for m in ("svcca", "pwcca"):
                if m in self.measures:
                    out[m] = np.array([[s[m] for s in row] for row in scores])
        return {m: out[m] for m in self.measures}


def paired_frames(a: list[list[Tensor]], a_shift: float, b: list[list[Tensor]], b_shift: float,
                  per_utterance: int, rng: np.random.Generator) -> tuple[list[Tensor], list[Tensor]]:
    """Frames of every layer of ``a`` and ``b`` (``x[layer][utterance]``), paired by time, up to
    ``per_utterance`` random frames of each utterance (0: all): ``(a rows per layer, b rows per layer)``."""
    picks_a: list[list[Tensor]] = [[] for _ in a]
    picks_b: list[list[Tensor]] = [[] for _ in b]
    for utt in range(len(a[0])):
        ia, ib = on_common_frames(torch.arange(len(a[0][utt])), a_shift, torch.arange(len(b[0][utt])), b_shift)
        if 0 < per_utterance < len(ia):
            keep = torch.from_numpy(np.sort(rng.choice(len(ia), per_utterance, replace=False)))
            ia, ib = ia[keep], ib[keep]
        for slot, layer in enumerate(a):
            picks_a[slot].append(layer[utt][ia])
        for slot, layer in enumerate(b):
            picks_b[slot].append(layer[utt][ib])
    return [torch.cat(p) for p in picks_a], [torch.cat(p) for p in picks_b]


def compare_sources(corpus, a_spec: str, b_spec: str | None, a_layers: str, b_layers: str, split: str,
                    utterances: int, frames_per_utterance: int, batch_frames: int, measures: tuple[str, ...],
                    cmvn: bool, seed: int) -> dict:
    """Every measure between the layers of ``a_spec`` and those of ``b_spec`` (``a_spec`` itself
    when None) over ``split``'s utterances; the record :func:`plot_heatmaps` draws."""
    from usrasr.analyze.representations import (
        layer_chunks,
        layer_name,
        open_representation,
        parse_layers,
        pick_cuts,
    )
    from usrasr.utils.console import log

    cuts = pick_cuts(corpus, split, utterances, seed)
    source_a = open_representation(a_spec, corpus, split, cuts)
    same = b_spec is None or b_spec == a_spec
    b_spec = a_spec if b_spec is None else b_spec
    source_b = source_a if same else open_representation(b_spec, corpus, split, cuts)
    layers_a = parse_layers(a_layers, source_a, "--a-layers")
    layers_b = parse_layers(b_layers, source_b, "--b-layers")
    log.info("similarity of %s and %s over %d utterances of %s", source_a.description,
             "itself" if same else source_b.description, len(cuts), split)
    rng = np.random.default_rng(seed)
    if same:  # one encoder pass; a layer on both sides is one entry
        read_a, read_b = sorted(set(layers_a) | set(layers_b)), []
        rows, cols = [read_a.index(x) for x in layers_a], [read_a.index(x) for x in layers_b]
    else:
        read_a, read_b = layers_a, layers_b
        rows, cols = list(range(len(layers_a))), list(range(len(layers_a), len(layers_a) + len(layers_b)))
    similarity: Similarity | None = None
    pending: list[Tensor] | None = None
    frames = 0
    chunks_b = None if same else layer_chunks(source_b, cuts, read_b, cmvn)
    for _, feats_a in layer_chunks(source_a, cuts, read_a, cmvn):
        feats_b = feats_a[:1] if same else next(chunks_b)[1]
        rows_a, rows_b = paired_frames(feats_a, source_a.frame_shift, feats_b, source_b.frame_shift,
                                       frames_per_utterance, rng)
        feats = rows_a if same else rows_a + rows_b
        if similarity is None:
            similarity = Similarity([f.shape[1] for f in feats], rows, cols, measures)
        if pending is not None:  # the last chunk's remainder joins this one's frames
            feats = [torch.cat(p) for p in zip(pending, feats)]
        order = torch.from_numpy(rng.permutation(len(feats[0])))  # a minibatch mixes the chunk's utterances
        full = len(order) // batch_frames * batch_frames
        for begin in range(0, full, batch_frames):
            similarity.update([f[order[begin: begin + batch_frames]] for f in feats])
            frames += batch_frames
        pending = [f[order[full:]] for f in feats]
    if pending is not None and len(pending[0]) >= max(4, batch_frames // 4):
        similarity.update(pending)
        frames += len(pending[0])
    if similarity is None or frames == 0:
        raise UsrasrError(f"too few frames for a minibatch of {batch_frames}: lower --batch-frames or raise "
                          f"--utterances / --frames-per-utterance")
    return {
        "a": a_spec, "b": b_spec, "a_description": source_a.description, "b_description": source_b.description,
        "a_layers": [layer_name(a_spec, layer, source_a) for layer in layers_a],
        "b_layers": [layer_name(b_spec, layer, source_b) for layer in layers_b],
        "frame_shifts": [source_a.frame_shift, source_b.frame_shift],
        "split": split, "utterances": len(cuts), "frames": frames, "batch_frames": batch_frames,
        "minibatches": next(iter(similarity.kernels.values())).batches if similarity.kernels else None,
        "cmvn": cmvn, "seed": seed,
        "measures": {m: np.round(v, 6).tolist() for m, v in similarity.result().items()},
    }


def plot_heatmaps(record: dict, path) -> None:
    """One layer x layer panel per measure (rows: ``a``'s layers, columns: ``b``'s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from usrasr.utils.io import atomic_path

    measures = record["measures"]
    rows, cols = len(record["a_layers"]), len(record["b_layers"])
    fig, axes = plt.subplots(1, len(measures), squeeze=False,
                             figsize=(len(measures) * (1.6 + 0.55 * cols), 1.4 + 0.5 * rows))
    for ax, (name, matrix) in zip(axes[0], measures.items()):
        matrix = np.array(matrix, dtype=float)
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value < 0.6 else "black")
        ax.set_xticks(range(cols), record["b_layers"], fontsize=7)
        ax.set_yticks(range(rows), record["a_layers"], fontsize=7)
        ax.set_title(name.replace("_", " "), fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"{Path(record['a']).name} (rows) vs {Path(record['b']).name} (columns)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
