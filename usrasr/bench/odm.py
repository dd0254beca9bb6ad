"""``usrasr bench odm``: ODM training time per restart, and for the whole batched search
against the same restarts trained one at a time.

The data are synthetic and sized like the default corpus's segments (a minibatch
of utterances of about 30 steps, 40-dimensional features, 39 labels, the top
trigrams); the times do not depend on what the features say, only on their shape.
"""

from __future__ import annotations

import time

import click
import torch

from usrasr.odm.ngrams import NgramTable
from usrasr.odm.search import SearchConfig, fit_odm


def synthetic_problem(utterances: int, length: int, dim: int, labels: int, top: int,
                      seed: int = 0) -> tuple[list[torch.Tensor], list[NgramTable]]:
    """Random features and random n-gram tables of orders 1-3 (every uni- and bigram, the
    ``top`` trigrams) of the given shapes."""
    gen = torch.Generator().manual_seed(seed)
    feats = [torch.randn(length, dim, generator=gen) for _ in range(utterances)]
    tables = []
    for order, size in ((1, labels), (2, labels * labels), (3, top)):
        codes = torch.randperm(labels ** order, generator=gen)[:size]
        digits = torch.stack([codes // labels ** (order - 1 - j) % labels for j in range(order)], 1)
        probs = torch.rand(size, generator=gen, dtype=torch.float64)
        tables.append(NgramTable(order, digits, probs / probs.sum() * (1.0 if order < 3 else 0.5)))
    return feats, tables


def _time(feats, tables, config: SearchConfig) -> float:
    start = time.perf_counter()
    fit_odm(feats, tables, config)
    return time.perf_counter() - start


@click.command("odm")
@click.option("--restarts", default=8, show_default=True, help="Restarts of the search.")
@click.option("--steps", default=10, show_default=True, help="Training steps of each restart.")
@click.option("--utterances", default=300, show_default=True, help="Utterances per step (one minibatch).")
@click.option("--length", default=30, show_default=True, help="Steps (segments) per utterance.")
@click.option("--dim", default=40, show_default=True, help="Feature dimension.")
@click.option("--labels", default=39, show_default=True, help="Output labels (phones).")
@click.option("--top", default=1000, show_default=True, help="Trigrams matched.")
@click.option("--hidden", default=0, show_default=True, help="Hidden units of the classifier (0: linear).")
@click.option("--threads", default=2, show_default=True, help="Torch threads.")
def odm(restarts, steps, utterances, length, dim, labels, top, hidden, threads) -> None:
    """Time the ODM search: all restarts as one batched model against one at a time."""
    torch.set_num_threads(threads)
    feats, tables = synthetic_problem(utterances, length, dim, labels, top)
    config = SearchConfig(restarts=restarts, steps=steps, hidden=hidden)
    _time(feats[:2], tables, SearchConfig(restarts=1, steps=1))  # first-use costs (imports) out of the timings
    batched = _time(feats, tables, config)
    alone = _time(feats, tables, SearchConfig(restarts=restarts, steps=steps, hidden=hidden, restart_batch=1))
    click.echo(f"ODM search, {restarts} restarts x {steps} steps, {utterances} x {length} steps of {dim} dims, "
               f"{labels} labels, {top} trigrams, {threads} threads")
    click.echo(f"  batched: {batched:.2f} s ({batched / restarts:.3f} s per restart, "
               f"{batched / (restarts * steps) * 1000:.1f} ms per restart-step)")
    click.echo(f"  one at a time: {alone:.2f} s ({alone / restarts:.3f} s per restart)")
    click.echo(f"  speed-up of batching: {alone / batched:.2f}x")
