"""Sequence-level cross-entropy training of categorical unit emissions.

The model is ``q(x) = sum_c p_LM(c) q(x | c)`` over a graph (topology o phone
LM, see :mod:`usrasr.graph.topo`) whose arcs consume one unit each; the
emission of an arc is ``q(unit | label)``, a row of a table normalised over the
units (never over the labels, see ``docs/method.md``).  The loss is
``-sum_x log q(x) / sum_x |x|``: the cross-entropy per frame between the data
and the model marginal, computed exactly with :func:`total_scores`.

The loss is non-convex (a permutation-like search), so :func:`fit_seqce` runs
several restarts and keeps the one with the lowest loss: selection needs no
transcripts.  Each restart starts from a random, frequency-matched or
moment-matched table and is refined by EM (the M-step normalises the expected
counts, which are the gradient of the total log-likelihood wrt the log table)
or by Adam, optionally with deterministic annealing (emission scores scaled by
an inverse temperature that rises to one).

All sequences of a batch run together as a ``(B, T)`` tensor, and restarts
trained together as one ``(R * B, T)`` batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from usrasr.graph.fsa import Fsa, FsaVec
from usrasr.graph.marginals import BestPath, best_path, total_scores
from usrasr.utils.console import log


INITS = ("random", "frequency", "moments")
OPTIMIZERS = ("em", "adam")

# (restart, iteration, log emission table (S, K), loss per frame of that table)
IterationCallback = Callable[[int, int, Tensor, float], None]


@dataclass
class SeqCEConfig:
    """How :func:`fit_seqce` searches.

    ``init="moments"`` and ``"frequency"`` need the prior joint of the labels
    of two consecutive frames (``label_pairs`` of :func:`fit_seqce`).
    """

    restarts: int = 5
    iterations: int = 20  # EM steps or Adam steps per restart
    optimizer: str = "em"
    learning_rate: float = 0.1  # Adam only
    init: str = "moments"
    # Moment initialisation: EM on the unit bigram counts alone (cost
    # independent of the data size), from a random start per restart.
    moment_iterations: int = 300
    moment_candidates: int = 16  # moment fits per restart; the lowest moment loss starts the restart
    # Deterministic annealing: inverse temperature rises linearly from
    # anneal_start to 1 over the first anneal_iterations iterations.
    anneal_start: float = 1.0
    anneal_iterations: int = 0
    smoothing: float = 1e-4  # pseudo-count added to every expected count in the M-step
    # Per-group tables: pseudo-counts per label row drawn from the pooled table of all
    # groups in the M-step (MAP adaptation of each group's table towards the shared one),
    # and every group starts from the same table.  0 = independent groups.  Only
    # meaningful when unit ids mean the same in every group (adapted codebooks).
    tying: float = 0.0
    tolerance: float = 1e-6  # stop a restart when the loss improves less than this per frame
    # Restarts trained together as one batch of restarts x sequences (0 = all at once).
    # Memory grows with it (batch_restarts copies of the dense scores); on a GPU the
    # batch is nearly free, on a CPU one at a time is faster (`usrasr bench restarts`).
    batch_restarts: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.restarts < 1 or self.iterations < 0 or self.batch_restarts < 0:
            raise ValueError("need restarts >= 1, iterations >= 0 and batch_restarts >= 0")
        if self.tying < 0 or (self.tying > 0 and self.optimizer != "em"):
            raise ValueError("tying is a non-negative pseudo-count of the EM M-step")
        if not 0 < self.anneal_start <= 1:
            raise ValueError("anneal_start is an inverse temperature in (0, 1]")
        if self.anneal_start < 1 and self.anneal_iterations > self.iterations:
            raise ValueError("annealing must end by the last iteration (anneal_iterations <= iterations): "
                             "the loss is only defined at inverse temperature 1")


@dataclass
class SeqCEResult:
    """The selected model and what every restart reached."""

    log_emissions: Tensor  # (S, K), or (G, S, K) per group: log q(unit | label) of the lowest-loss restart
    loss: float  # its loss per frame (nats)
    best_restart: int
    restart_losses: list[float]  # final loss per frame of every restart
    restart_emissions: list[Tensor]  # final table of every restart
    histories: list[list[float]] = field(default_factory=list)  # loss per iteration, per restart


def emission_scores(log_emissions: Tensor, unit_seqs: Tensor, groups: Tensor | None = None) -> Tensor:
    """Dense ``(B, T, S)`` scores ``log q(unit_seqs[b, t] | label)``; padding
    (negative ids) reads unit 0, which the lengths mask out.

    With per-group tables ``(G, S, K)`` (e.g. one per speaker), sequence ``b``
    reads table ``groups[b]``.
    """
    if log_emissions.dim() == 3:
        return log_emissions.transpose(1, 2)[groups[:, None], unit_seqs.clamp(min=0)]
    return log_emissions.t()[unit_seqs.clamp(min=0)]


def sequence_log_likelihood(unit_seqs: Tensor, lengths: Tensor, graph: Fsa, log_emissions: Tensor,
                            groups: Tensor | None = None) -> Tensor:
    """``log q(x)`` of every sequence, ``(B,)``."""
    return total_scores(emission_scores(log_emissions, unit_seqs, groups), lengths, graph)


def loss_per_frame(unit_seqs: Tensor, lengths: Tensor, graph: Fsa, log_emissions: Tensor,
                   groups: Tensor | None = None) -> float:
    """``-sum_x log q(x) / sum_x |x|`` in nats."""
    with torch.no_grad():
        totals = sequence_log_likelihood(unit_seqs, lengths, graph, log_emissions, groups)
    return float(-totals.sum() / lengths.sum())


def decode(unit_seqs: Tensor, lengths: Tensor, graph: Fsa, log_emissions: Tensor,
           groups: Tensor | None = None) -> BestPath:
    """Viterbi ``argmax_c p_LM(c) q(x | c)``: per-frame labels and aux labels
    (phone ids on the frames where a phone starts), ``-1`` past each length."""
    with torch.no_grad():
        return best_path(emission_scores(log_emissions, unit_seqs, groups), lengths, graph)


def unit_pair_counts(unit_seqs: Tensor, lengths: Tensor, num_units: int) -> Tensor:
    """``(K, K)`` counts of consecutive unit pairs inside each sequence."""
    frames = unit_seqs.shape[1]
    inside = torch.arange(1, frames, device=unit_seqs.device)[None, :] < lengths[:, None]
    left, right = unit_seqs[:, :-1][inside], unit_seqs[:, 1:][inside]
    counts = torch.zeros(num_units * num_units, dtype=torch.float64, device=unit_seqs.device)
    counts.index_add_(0, left * num_units + right, torch.ones_like(left, dtype=torch.float64))
    return counts.view(num_units, num_units)


def moment_fit(
    pair_counts: Tensor, label_pairs: Tensor, start: Tensor, iterations: int, smoothing: float = 1e-4
) -> tuple[Tensor, Tensor]:
    """EM on the unit bigram statistics alone, for a batch of starting tables.

    Fits ``M[u, v] ~ sum_{s,t} J[s, t] C[s, u] C[t, v]`` (``J`` = ``label_pairs``)
    by maximum likelihood.  Condition (2), a full-rank ``J``, is what makes this
    moment equation identify ``C``; its cost does not grow with the data.

    Args:
        pair_counts: ``(K, K)`` unit pair counts.
        label_pairs: ``(S, S)`` prior joint of consecutive labels.
        start: ``(R, S, K)`` starting emission probabilities.

    Returns:
        ``(R, S, K)`` fitted log emissions and ``(R,)`` loss per pair (nats).
    """
    target = (pair_counts / pair_counts.sum()).to(torch.float64)
    joint = label_pairs.to(torch.float64)
    used = joint.sum(0) + joint.sum(1) > 0  # labels the prior can emit at all
    log_table = start.to(torch.float64).clamp_min(1e-12).log()
    for _ in range(iterations + 1):
        log_table = log_table.detach().requires_grad_()
        table = log_table.exp()
        model = torch.einsum("rsu,st,rtv->ruv", table, joint, table)
        log_likelihood = (target * model.clamp_min(1e-300).log()).sum((1, 2))
        (counts,) = torch.autograd.grad(log_likelihood.sum(), log_table)
        counts = counts + smoothing / counts.shape[-1]
        counts[:, ~used] = 1.0
        log_table = (counts / counts.sum(-1, keepdim=True)).log()
    return log_table.detach(), -log_likelihood.detach()


def restart_seed(seed: int, restart: int) -> int:
    """The seed of one restart's starting table: a restart can be rerun (or resumed) on its own."""
    return seed * 1000 + restart


def _initial_tables(
    config: SeqCEConfig, unit_seqs: Tensor, lengths: Tensor, num_labels: int, num_units: int, label_pairs: Tensor | None,
    restart_ids: Sequence[int], seeds: Sequence[int],
) -> Tensor:
    """``(R, S, K)`` starting log emission tables, one per restart (``seeds[i]`` seeds restart ``restart_ids[i]``)."""
    # Flat Dirichlet rows: normalised exponentials.
    candidates = config.moment_candidates if config.init == "moments" else 1
    exponentials = torch.cat([
        -torch.rand((candidates, num_labels, num_units), generator=torch.Generator().manual_seed(seed)).clamp_min(1e-12).log()
        for seed in seeds])
    random_start = exponentials / exponentials.sum(-1, keepdim=True)
    restarts = len(seeds)
    if config.init == "random":
        return random_start.log()
    if label_pairs is None:
        raise ValueError(f"init={config.init!r} needs the prior joint of consecutive labels (label_pairs)")
    if config.init == "moments":
        pairs = unit_pair_counts(unit_seqs, lengths, num_units)
        tables, pair_losses = moment_fit(pairs, label_pairs, random_start, config.moment_iterations, config.smoothing)
        best = pair_losses.view(restarts, candidates).argmin(1) + torch.arange(restarts) * candidates
        log.debug("moment initialisation: loss per pair %s", [round(float(v), 4) for v in pair_losses[best]])
        return tables[best].float()
    # Frequency matching: the i-th most frequent unit starts as the i-th most
    # probable label's unit; restarts other than the first jitter this with random mass.
    inside = torch.arange(unit_seqs.shape[1])[None, :] < lengths[:, None]
    unit_freq = torch.bincount(unit_seqs[inside], minlength=num_units).double()
    label_prior = label_pairs.double().sum(1)
    units_by_freq = unit_freq.argsort(descending=True)
    labels_by_prior = label_prior.argsort(descending=True)[: int((label_prior > 0).sum())]
    matched = torch.full((num_labels, num_units), 0.5 / num_units)
    for rank, label in enumerate(labels_by_prior.tolist()):
        matched[label, units_by_freq[rank % num_units]] += 0.5
    jitter = torch.stack([torch.zeros(()) if r == 0 else torch.rand((), generator=torch.Generator().manual_seed(seed)) * 0.5
                          for r, seed in zip(restart_ids, seeds)]).view(-1, 1, 1)
    start = (1 - jitter) * matched + jitter * random_start
    return (start / start.sum(-1, keepdim=True)).log()


def _grouped_initial_tables(
    config: SeqCEConfig, unit_seqs: Tensor, lengths: Tensor, groups: Tensor, num_labels: int, num_units: int,
    label_pairs: Tensor | None, restart_ids: Sequence[int],
) -> Tensor:
    """``(R, G, S, K)``: each group's tables start from its own sequences, over
    the units that group uses (the others keep a small uniform mass)."""
    tables = torch.full((len(restart_ids), int(groups.max()) + 1, num_labels, num_units), math.log(1e-6))
    for group in groups.unique().tolist():
        rows = groups == group
        seqs, lens = unit_seqs[rows], lengths[rows]
        used = seqs[torch.arange(seqs.shape[1])[None, :] < lens[:, None]].unique()
        compact = torch.full((num_units,), -1, dtype=torch.long)
        compact[used] = torch.arange(used.numel())
        local = torch.where(seqs >= 0, compact[seqs.clamp(min=0)], seqs)
        seeds = [restart_seed(config.seed, r) * 7919 + group for r in restart_ids]
        start = _initial_tables(config, local, lens, num_labels, used.numel(), label_pairs, restart_ids, seeds)
        tables[:, group][:, :, used] = start
    return tables.log_softmax(-1)


def _inverse_temperature(config: SeqCEConfig, iteration: int) -> float:
    if iteration >= config.anneal_iterations:
        return 1.0
    return config.anneal_start + (1 - config.anneal_start) * iteration / config.anneal_iterations


def _train_restarts(
    restart_ids: Sequence[int],
    log_tables: Tensor,
    unit_seqs: Tensor,
    lengths: Tensor,
    graph: Fsa | FsaVec,
    config: SeqCEConfig,
    callback: IterationCallback | None,
    groups: Tensor | None = None,
) -> tuple[list[Tensor], list[float], list[list[float]]]:
    """Refine ``R`` tables ``(R, S, K)`` or ``(R, G, S, K)`` together, as one batch of ``R x B`` sequences.

    Each restart only reads its own copy of the data, so its trajectory is the
    one it would have alone; a restart that has converged keeps the table it
    had then.  Returns the tables, their losses per frame and loss histories.
    """
    restarts, frames = len(restart_ids), float(lengths.sum())
    batch = unit_seqs.shape[0]
    per_group = log_tables.dim() == 4
    num_groups = log_tables.shape[1] if per_group else 1
    # Restart r's copy of sequence b reads table r * G + group(b) of the flattened (R * G, S, K) tables.
    local_groups = groups if per_group else torch.zeros(batch, dtype=torch.long)
    flat_groups = (torch.arange(restarts, device=unit_seqs.device)[:, None] * num_groups
                   + local_groups.to(unit_seqs.device)[None, :]).reshape(-1)
    all_seqs, all_lengths = unit_seqs.repeat(restarts, 1), lengths.repeat(restarts)
    if isinstance(graph, FsaVec) and restarts > 1:  # one graph per sequence: one per copy too
        graph = FsaVec([graph[i] for i in range(len(graph))] * restarts)
    shape = log_tables.shape
    logits = log_tables.reshape(-1, *shape[-2:]).clone().requires_grad_()
    adam = torch.optim.Adam([logits], lr=config.learning_rate) if config.optimizer == "adam" else None
    histories: list[list[float]] = [[] for _ in range(restarts)]
    results: list[tuple[Tensor, float] | None] = [None] * restarts
    for iteration in range(config.iterations + 1):
        beta = _inverse_temperature(config, iteration)
        table = logits.log_softmax(-1) if adam is not None else logits
        dense = emission_scores(table, all_seqs, flat_groups)
        totals = total_scores(dense * beta if beta != 1 else dense, all_lengths, graph)
        if beta == 1:
            losses = (-totals.detach().view(restarts, batch).sum(1) / frames).tolist()
            tables = table.detach().view(shape)
            for i, loss in enumerate(losses):
                if results[i] is not None:
                    continue
                histories[i].append(loss)
                if callback is not None:
                    callback(restart_ids[i], iteration, tables[i], loss)
                converged = len(histories[i]) > 1 and histories[i][-2] - loss < config.tolerance
                if iteration == config.iterations or converged:
                    results[i] = (tables[i].clone(), loss)
            if all(r is not None for r in results):
                return [r[0] for r in results], [r[1] for r in results], histories
        if adam is not None:
            adam.zero_grad()
            (-totals.sum() / frames).backward()
            adam.step()
        else:
            (counts,) = torch.autograd.grad(totals.sum(), logits)
            # d/d(log table) of the annealed total is beta * expected counts.
            counts = counts / beta + config.smoothing
            if per_group and config.tying > 0:
                grouped = counts.view(restarts, num_groups, *shape[-2:])
                pooled = grouped.sum(1, keepdim=True)
                counts = (grouped + config.tying * pooled / pooled.sum(-1, keepdim=True)).view_as(counts)
            logits = (counts / counts.sum(-1, keepdim=True)).log().requires_grad_()
    raise AssertionError("unreachable: the last iteration always returns")


def fit_seqce(
    unit_seqs: Tensor,
    lengths: Tensor,
    graph: Fsa | FsaVec,
    num_units: int,
    config: SeqCEConfig | None = None,
    label_pairs: Tensor | None = None,
    callback: IterationCallback | None = None,
    groups: Tensor | None = None,
    restart_ids: Sequence[int] | None = None,
) -> SeqCEResult:
    """Train categorical emissions by the sequence-level cross-entropy.

    Args:
        unit_seqs: ``(B, T)`` unit ids (padding past ``lengths`` is ignored).
        lengths: ``(B,)`` number of units of each sequence.
        graph: topology o LM; arc labels are the rows of the emission table.
        num_units: ``K``, the number of unit ids.
        config: search settings (:class:`SeqCEConfig` defaults when None).
        label_pairs: ``(S, S)`` prior joint probability of the labels of two
            consecutive frames; needed by the moment and frequency inits.
        callback: called after every evaluated iteration at temperature one.
        groups: ``(B,)`` group id of every sequence (e.g. its speaker) for one
            emission table per group, ``(G, S, K)``; needs speaker labels.
        restart_ids: which restarts to run (``range(config.restarts)`` by
            default); restart ``r`` starts from seed ``restart_seed(config.seed, r)``
            whatever else runs, so a subset reproduces those restarts of a full run.

    Restarts train ``config.batch_restarts`` at a time as one batch, on the
    device of ``unit_seqs`` (``graph`` must be there too); tables come back on the CPU.

    Returns:
        :class:`SeqCEResult`; ``log_emissions`` is the lowest-loss restart's and
        ``best_restart`` its position in ``restart_ids``.
    """
    config = config or SeqCEConfig()
    unit_seqs = unit_seqs.long()
    lengths = torch.as_tensor(lengths, device=unit_seqs.device).long()
    num_labels = int(graph.label.max()) + 1
    if label_pairs is not None and label_pairs.shape != (num_labels, num_labels):
        raise ValueError(f"label_pairs must be ({num_labels}, {num_labels}), got {tuple(label_pairs.shape)}")
    restart_ids = list(range(config.restarts) if restart_ids is None else restart_ids)
    # Starting tables come from CPU generators (the same on every device); training runs where the data is.
    cpu_seqs, cpu_lengths = unit_seqs.cpu(), lengths.cpu()
    cpu_pairs = None if label_pairs is None else label_pairs.cpu()
    if groups is None:
        seeds = [restart_seed(config.seed, r) for r in restart_ids]
        starts = _initial_tables(config, cpu_seqs, cpu_lengths, num_labels, num_units, cpu_pairs, restart_ids, seeds)
    elif config.tying > 0:  # tied groups start from one table fitted to all sequences
        groups = torch.as_tensor(groups).long().to(unit_seqs.device)
        seeds = [restart_seed(config.seed, r) for r in restart_ids]
        shared = _initial_tables(config, cpu_seqs, cpu_lengths, num_labels, num_units, cpu_pairs, restart_ids, seeds)
        starts = shared[:, None].expand(-1, int(groups.max()) + 1, -1, -1).contiguous()
    else:
        groups = torch.as_tensor(groups).long().cpu()
        starts = _grouped_initial_tables(config, cpu_seqs, cpu_lengths, groups, num_labels, num_units, cpu_pairs,
                                         restart_ids)
        groups = groups.to(unit_seqs.device)
    starts = starts.to(unit_seqs.device)
    tables, losses, histories = [], [], []
    step = config.batch_restarts or len(restart_ids)
    for begin in range(0, len(restart_ids), step):
        chunk = restart_ids[begin:begin + step]
        results = _train_restarts(chunk, starts[begin:begin + step], unit_seqs, lengths, graph, config, callback, groups)
        for r, loss, history in zip(chunk, *results[1:]):
            log.info("restart %d: loss %.4f nats/frame after %d iterations", r + 1, loss, len(history) - 1)
        tables += [table.cpu() for table in results[0]]
        losses += results[1]
        histories += results[2]
    best = min(range(len(restart_ids)), key=lambda i: (losses[i] if math.isfinite(losses[i]) else math.inf))
    return SeqCEResult(tables[best], losses[best], best, losses, tables, histories)
