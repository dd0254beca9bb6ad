"""``usrasr bench restarts``: seq-CE restarts one at a time vs as one batch.

Runs on a simulated world (phone bigram, noisy emissions), so it needs no corpus.
Batching trades memory (``restarts`` copies of the dense scores) for fewer,
larger kernels: on a GPU the per-frame loop dominates and the batch is nearly
free; on a CPU the gain is smaller.
"""

from __future__ import annotations

import time
from dataclasses import replace

import click
import torch

from usrasr.simulate.world import random_world, sample
from usrasr.seqce.fit import SeqCEConfig, fit_seqce


@click.command("restarts")
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
@click.option("--restarts", default=8, show_default=True)
@click.option("--phones", default=40, show_default=True)
@click.option("--sequences", default=1500, show_default=True)
@click.option("--length", default=100, show_default=True, help="Units per sequence.")
@click.option("--iterations", default=10, show_default=True, help="EM iterations per restart.")
@click.option("--threads", default=torch.get_num_threads(), show_default=True, help="CPU threads.")
def restarts(device: str, restarts: int, phones: int, sequences: int, length: int, iterations: int,
             threads: int) -> None:
    """Seconds for R seq-CE restarts run one at a time and all together."""
    torch.set_num_threads(threads)
    world = random_world(phones, 0.2, seed=0)
    _, units = sample(world, sequences, length, seed=1)
    units, lengths = units.to(device), torch.full((sequences,), length, device=device)
    graph = world.lm_graph().to(device)
    config = SeqCEConfig(restarts=restarts, iterations=iterations, init="random", tolerance=-1.0)
    seconds, losses = {}, {}
    for name, batch in (("one at a time", 1), ("all together", 0)):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fit_seqce(units, lengths, graph, world.num_units, replace(config, batch_restarts=batch))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds[name], losses[name] = time.perf_counter() - start, result.restart_losses
    same = max(abs(a - b) for a, b in zip(*losses.values()))
    click.echo(f"{restarts} restarts x {iterations} EM iterations, {sequences} x {length} units, {phones} phones, "
               f"{device} ({threads} threads)")
    for name, value in seconds.items():
        click.echo(f"  {name:14s} {value:8.2f} s")
    click.echo(f"  speed-up       {seconds['one at a time'] / seconds['all together']:8.2f} x"
               f"   (largest loss difference {same:.1e} nats/unit)")
