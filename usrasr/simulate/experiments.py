"""The simulation runs behind ``usrasr simulate``: one world, and the four
experiments that show when sequence-level training recovers the phones.

Every experiment writes ``<name>.csv`` and ``<name>.png`` atomically to its
output folder and returns its rows.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from usrasr.simulate.world import (
    World,
    context_dependent_world,
    log_likelihood_per_frame,
    make_world,
    marginal_tv,
    phone_error,
    random_world,
    sample,
    tokens_to_sequences,
)
from usrasr.seqce.fit import SeqCEConfig, fit_seqce
from usrasr.utils.io import atomic_open, atomic_path
from usrasr.utils.console import log


# Reaching the oracle means being within this much of its error (2 points).
ORACLE_MARGIN = 0.02


@dataclass
class WorldRun:
    """What training in one world reached, against the truth."""

    loss: float  # model's -log q(x) per frame (nats), the selection criterion
    oracle_loss: float  # the true model's, on the same data
    error: float  # per-position phone error of Viterbi decoding with the model
    oracle_error: float  # the same with the true model (Bayes/oracle)
    mismatch: float  # error - oracle_error
    tv: float  # total variation between the true and model marginals
    tv_method: str
    restart_losses: list[float]
    restart_errors: list[float]


def run_world(
    world: World,
    tokens: int,
    length: int,
    config: SeqCEConfig,
    seed: int = 0,
    tv_length: int = 3,
    trace: list[dict] | None = None,
) -> WorldRun:
    """Sample unpaired units from ``world``, train with restarts, and measure.

    With ``trace``, every evaluated iteration of every restart appends a row
    (restart, iteration, loss, tv, error, mismatch): the course of training.
    """
    phones, units = sample(world, tokens_to_sequences(tokens, length), length, seed)
    lengths = torch.full((units.shape[0],), length)
    graph = world.lm_graph()
    oracle_graph, oracle_table = world.oracle()
    oracle_error = phone_error(units, phones, oracle_graph, oracle_table)
    oracle_loss = -log_likelihood_per_frame(units, oracle_graph, oracle_table)

    def record(restart: int, iteration: int, table: torch.Tensor, loss: float) -> None:
        error = phone_error(units, phones, graph, table)
        tv, _ = marginal_tv(world, graph, table, tv_length, seed=seed)
        trace.append(dict(restart=restart, iteration=iteration, loss=loss, tv=tv, error=error,
                          oracle_error=oracle_error, mismatch=error - oracle_error))

    result = fit_seqce(units, lengths, graph, world.num_units, config,
                       label_pairs=world.label_pairs(length), callback=record if trace is not None else None)
    errors = [phone_error(units, phones, graph, table) for table in result.restart_emissions]
    tv, method = marginal_tv(world, graph, result.log_emissions, tv_length, seed=seed)
    error = errors[result.best_restart]
    return WorldRun(result.loss, oracle_loss, error, oracle_error, error - oracle_error, tv, method,
                    result.restart_losses, errors)


def write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_open(path) as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _save_figure(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def experiment_bound(out: Path, num_phones: int = 10, tokens: int = 20_000, length: int = 20,
                     noises: tuple[float, ...] = (0.1, 0.2, 0.3), seeds: tuple[int, ...] = (0, 1)) -> list[dict]:
    """(a) Mismatch against marginal distance, across training and worlds.

    Random starts and plain EM, so that training passes through a range of
    distances; ``constant`` is the smallest ``c`` with ``mismatch <= c * TV``
    on every point, ``slope`` the least-squares fit through the origin.
    """
    rows: list[dict] = []
    config = SeqCEConfig(restarts=2, iterations=15, init="random", tolerance=0.0)
    for noise in noises:
        for seed in seeds:
            trace: list[dict] = []
            run_world(random_world(num_phones, noise, seed=seed), tokens, length, replace(config, seed=seed),
                      seed=seed, trace=trace)
            rows += [dict(noise=noise, world_seed=seed, **row) for row in trace]
    tv = np.array([r["tv"] for r in rows])
    mismatch = np.array([r["mismatch"] for r in rows])
    positive = tv > 1e-9
    constant = float((mismatch[positive] / tv[positive]).max())
    slope = float((tv @ mismatch) / (tv @ tv))
    for row in rows:
        row.update(constant=constant, slope=slope)
    write_csv(out / "bound.csv", rows)
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 3.6))
    for noise in noises:
        mine = [r for r in rows if r["noise"] == noise]
        axes.scatter([r["tv"] for r in mine], [r["mismatch"] for r in mine], s=10, label=f"noise {noise}")
    line = np.linspace(0, tv.max(), 20)
    axes.plot(line, slope * line, "k--", label=f"fit: mismatch = {slope:.2f} TV")
    axes.set_xlabel("TV(true marginal, model marginal), 3-unit sequences")
    axes.set_ylabel("error mismatch (model - oracle)")
    axes.set_title("(a) the mismatch shrinks with the marginal distance")
    axes.legend(fontsize=7)
    _save_figure(figure, out / "bound.png")
    log.info("(a) mismatch ~ %.3f x TV (least squares), <= %.3f x TV on every point", slope, constant)
    return rows


def exchangeable_pair(transition: np.ndarray, first: int = 0, second: int = 1) -> np.ndarray:
    """A transition matrix where phones ``first`` and ``second`` are
    interchangeable: equal rows and equal columns, so the LM is unchanged by
    swapping them and its bigram joint loses a rank."""
    result = transition.copy()
    result[second] = result[first]
    mean = (result[:, first] + result[:, second]) / 2
    result[:, first] = result[:, second] = mean
    return result


def _joint_rank(world: World) -> tuple[int, float]:
    joint = world.initial[:, None] * world.transition
    singular = np.linalg.svd(joint, compute_uv=False)
    return int(np.linalg.matrix_rank(joint, tol=1e-10)), float(singular[0] / max(singular[-1], 1e-300))


def experiment_rank(out: Path, num_phones: int = 10, noise: float = 0.2, tokens: int = 20_000, length: int = 20,
                    seed: int = 0) -> list[dict]:
    """(b) Rank-deficient LMs: the marginals match, the mismatch stays.

    * ``full``: a Dirichlet bigram (the control).
    * ``unigram``: every row equal (rank 1); only the mixture of the emission
      rows is identified, so training matches the marginal with wrong phones.
    * ``swapped pair``: two interchangeable phones; the true model with their
      emission rows swapped has exactly the true marginal (TV 0) and a
      higher error; training cannot tell the two apart.
    """
    base = random_world(num_phones, noise, seed=seed)
    stationary = base.initial
    worlds = {
        "full": base,
        "unigram": make_world(np.tile(stationary, (num_phones, 1)), noise, initial=stationary),
        "swapped pair": make_world(exchangeable_pair(base.transition), noise),
    }
    config = SeqCEConfig(restarts=3, iterations=20, seed=seed)
    rows = []
    for name, world in worlds.items():
        rank, condition = _joint_rank(world)
        run = run_world(world, tokens, length, config, seed=seed)
        rows.append(dict(lm=name, model="trained", rank=rank, condition=condition, tv=run.tv, error=run.error,
                         oracle_error=run.oracle_error, mismatch=run.mismatch, loss=run.loss,
                         oracle_loss=run.oracle_loss))
        if name == "swapped pair":
            rows.append(_swapped_truth_row(world, tokens, length, seed, rank, condition))
    write_csv(out / "rank.csv", rows)
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 3.4))
    labels = [f"{r['lm']}\n({r['model']})" for r in rows]
    positions = np.arange(len(rows))
    axes.bar(positions - 0.2, [r["tv"] for r in rows], 0.4, label="TV of marginals")
    axes.bar(positions + 0.2, [r["mismatch"] for r in rows], 0.4, label="error mismatch")
    axes.set_xticks(positions, labels, fontsize=7)
    axes.set_title("(b) rank-deficient LM: marginals match, errors do not")
    axes.legend(fontsize=7)
    _save_figure(figure, out / "rank.png")
    return rows


def _swapped_truth_row(world: World, tokens: int, length: int, seed: int, rank: int, condition: float) -> dict:
    """The true model with phones 1 and 2's emission rows exchanged."""
    phones, units = sample(world, tokens_to_sequences(tokens, length), length, seed)
    graph, table = world.oracle()
    swapped = table.clone()
    swapped[[1, 2]] = table[[2, 1]]
    error = phone_error(units, phones, graph, swapped)
    oracle_error = phone_error(units, phones, graph, table)
    return dict(lm="swapped pair", model="truth, rows swapped", rank=rank, condition=condition,
                tv=marginal_tv(world, graph, swapped, 3)[0], error=error, oracle_error=oracle_error,
                mismatch=error - oracle_error, loss=-log_likelihood_per_frame(units, graph, swapped),
                oracle_loss=-log_likelihood_per_frame(units, graph, table))


def experiment_structure(out: Path, num_phones: int = 10, noise: float = 0.1, tokens: int = 20_000,
                         length: int = 20, seed: int = 0) -> list[dict]:
    """(c) Broken factorisation: the data's unit depends on the previous phone,
    the model's does not.  The oracle (the true context-dependent model)
    stays good; the learned context-free model degrades."""
    base = random_world(num_phones, noise, seed=seed)
    worlds = {"factorises": base, "context-dependent data": context_dependent_world(base, seed=seed)}
    config = SeqCEConfig(restarts=3, iterations=10, seed=seed)
    rows = []
    for name, world in worlds.items():
        run = run_world(world, tokens, length, config, seed=seed)
        rows.append(dict(world=name, tv=run.tv, error=run.error, oracle_error=run.oracle_error,
                         mismatch=run.mismatch, loss=run.loss, oracle_loss=run.oracle_loss))
    write_csv(out / "structure.csv", rows)
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 3.4))
    positions = np.arange(len(rows))
    axes.bar(positions - 0.2, [r["oracle_error"] for r in rows], 0.4, label="oracle error")
    axes.bar(positions + 0.2, [r["error"] for r in rows], 0.4, label="learned model error")
    axes.set_xticks(positions, [r["world"] for r in rows])
    axes.set_title("(c) broken factorisation degrades learning")
    axes.legend(fontsize=7)
    _save_figure(figure, out / "structure.png")
    return rows


def experiment_restarts(out: Path, num_phones: int = 10, noise: float = 0.2, tokens: int = 20_000, length: int = 20,
                        restarts: int = 8, seeds: tuple[int, ...] = (0, 1, 2), init: str = "random") -> list[dict]:
    """(d) Restarts against the chance of reaching the oracle.

    For each world, ``restarts`` independent runs; the chance that the
    lowest-loss of ``r`` of them is within 2 points of the oracle is counted
    over every r-subset drawn at random (500 draws), next to the chance for
    one run.  Rows also give each restart's loss and error: loss-based
    selection against the truth.
    """
    rng = np.random.default_rng(0)
    rows, per_world = [], []
    for seed in seeds:
        world = random_world(num_phones, noise, seed=seed)
        config = SeqCEConfig(restarts=restarts, iterations=20, init=init, seed=seed)
        run = run_world(world, tokens, length, config, seed=seed)
        losses, errors = np.array(run.restart_losses), np.array(run.restart_errors)
        reached = errors <= run.oracle_error + ORACLE_MARGIN
        per_world.append((losses, reached))
        for restart in range(restarts):
            rows.append(dict(kind="restart", world_seed=seed, restarts=1, restart=restart, loss=losses[restart],
                             oracle_loss=run.oracle_loss, error=errors[restart], oracle_error=run.oracle_error,
                             reached_oracle=bool(reached[restart]), chance=float("nan")))
    for r in range(1, restarts + 1):
        hits = []
        for losses, reached in per_world:
            for _ in range(500):
                subset = rng.choice(len(losses), size=r, replace=False)
                hits.append(reached[subset[np.argmin(losses[subset])]])
        rows.append(dict(kind="selection", world_seed=-1, restarts=r, restart=-1, loss=float("nan"),
                         oracle_loss=float("nan"), error=float("nan"), oracle_error=float("nan"),
                         reached_oracle=False, chance=float(np.mean(hits))))
    write_csv(out / "restarts.csv", rows)
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    selection = [r for r in rows if r["kind"] == "selection"]
    left.plot([r["restarts"] for r in selection], [r["chance"] for r in selection], "o-")
    left.set_xlabel("restarts (keep lowest loss)")
    left.set_ylabel("P(within 2 points of oracle)")
    left.set_ylim(0, 1.05)
    for seed in seeds:
        mine = [r for r in rows if r["kind"] == "restart" and r["world_seed"] == seed]
        right.scatter([r["loss"] - r["oracle_loss"] for r in mine], [r["error"] - r["oracle_error"] for r in mine],
                      s=12, label=f"world {seed}")
    right.set_xlabel("loss - oracle loss (nats/frame)")
    right.set_ylabel("error - oracle error")
    right.legend(fontsize=7)
    figure.suptitle("(d) restarts and loss-based selection")
    _save_figure(figure, out / "restarts.png")
    return rows


EXPERIMENTS = {
    "bound": experiment_bound,
    "rank": experiment_rank,
    "structure": experiment_structure,
    "restarts": experiment_restarts,
}


def world_run_dict(run: WorldRun) -> dict:
    return asdict(run)
