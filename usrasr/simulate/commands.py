"""Click command ``usrasr simulate``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click



@click.command()
@click.option("--phones", "num_phones", type=int, default=20, show_default=True, help="Number of phones P.")
@click.option("--noise", type=float, default=0.2, show_default=True,
              help="Emission noise: unit = phone with probability 1 - noise, else uniform.")
@click.option("--tokens", type=int, default=100_000, show_default=True, help="Unit tokens in the data.")
@click.option("--length", type=int, default=20, show_default=True, help="Sequence length N.")
@click.option("--lm", "lm_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="Take the phone bigram from this ARPA file (a prepared corpus's lm/phone_2gram.arpa).")
@click.option("--restarts", type=int, default=5, show_default=True)
@click.option("--iterations", type=int, default=20, show_default=True)
@click.option("--init", type=click.Choice(["moments", "frequency", "random"]), default="moments", show_default=True)
@click.option("--experiment", type=click.Choice(["bound", "rank", "structure", "restarts", "all"]), default=None,
              help="Run an experiment (CSV + PNG to --out) instead of one world.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("simulate"), show_default=True)
@click.pass_context
def simulate(ctx, num_phones, noise, tokens, length, lm_path, restarts, iterations, init, experiment, out) -> None:
    """Synthetic worlds: one unit per phone, a bigram LM, noisy emissions.

    Trains by the sequence-level cross-entropy with restarts and reports the
    model's error, the oracle's, their difference and the marginal distance.
    """
    from usrasr.simulate import experiments
    from usrasr.simulate.world import arpa_transition, make_world, random_world
    from usrasr.seqce.fit import SeqCEConfig

    seed = ctx.obj.get("seed", 0) if ctx.obj else 0
    if experiment:
        names = list(experiments.EXPERIMENTS) if experiment == "all" else [experiment]
        for name in names:
            experiments.EXPERIMENTS[name](out)
            click.echo(f"{name}: {out / (name + '.csv')} {out / (name + '.png')}")
        return
    if lm_path is not None:
        _, transition, initial = arpa_transition(lm_path)
        world = make_world(transition, noise, initial=initial)
    else:
        world = random_world(num_phones, noise, seed=seed)
    config = SeqCEConfig(restarts=restarts, iterations=iterations, init=init, seed=seed)
    run = experiments.run_world(world, tokens, length, config, seed=seed)
    click.echo(json.dumps(asdict(run), indent=2))
