"""``usrasr train``: a thin Click layer over :func:`usrasr.train.pipeline.train`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from usrasr.utils.console import stderr


@click.command()
@click.option("--corpus", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="A corpus made by `usrasr prepare`.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Experiment directory (checkpoints, metrics, model).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="YAML config; see `usrasr.train.config.TrainConfig`.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key.")
@click.option("--units", type=click.Choice(["fbank", "diagnostic"]), default=None,
              help="Unit source. 'diagnostic' = phone ids from the scoring alignments (diagnosis only).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its checkpoints.")
@click.option("--no-score", is_flag=True, help="Skip oracles and PER (reads no transcripts at all).")
@click.pass_context
def train(ctx, corpus, out_dir, config_path, overrides, units, resume, no_score) -> None:
    """Unsupervised sequence-level training on a prepared corpus."""
    from usrasr.train.config import TrainConfig, parse_overrides
    from usrasr.train.pipeline import train as run

    values = parse_overrides(overrides)
    if units:
        values["units"] = units
    values.setdefault("seed", str((ctx.obj or {}).get("seed", 0)))
    config = TrainConfig.load(config_path, values)
    summary = run(corpus, out_dir, config, resume=resume, score=not no_score)
    table = Table(title=f"train {out_dir}")
    for column in ("model", "loss", "PER train", "PER test"):
        table.add_column(column)
    for name, key in (("seq-CE (lowest loss)", "seqce"), ("oracle HMM", "oracle_hmm")):
        row = summary.get(key)
        if row:
            table.add_row(name, f"{row['loss']:.4f}", *(f"{row[k]:.1f}" if k in row else "-"
                                                        for k in ("per_train", "per_test")))
    stderr.print(table)
    if "diagnosis" in summary:
        stderr.print(f"diagnosis: {summary['diagnosis']}")
