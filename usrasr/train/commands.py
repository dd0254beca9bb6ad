"""``usrasr train``: a thin Click layer over :func:`usrasr.train.pipeline.train`."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from usrasr.train.config import EXPERIMENTAL_KEYS, OBJECTIVES, UNIT_SOURCES
from usrasr.utils.shipped import SHIPPED_DATA


def _show_config(ctx, param, value) -> None:
    if value:
        from usrasr.train.config import TrainConfig

        click.echo(TrainConfig.show(), nl=False)
        ctx.exit()


@click.command()
@click.option("--show-config", is_flag=True, is_eager=True, expose_value=False, callback=_show_config,
              help="Print every config key with its default and meaning (YAML), and exit.")
@click.option("--corpus", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="A corpus made by `usrasr prepare`.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Experiment directory (checkpoints, metrics, model).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="YAML config of the keys to change (--show-config lists them all).")
@click.option("--preset", type=click.Choice(["tiny"]), default=None,
              help="A shipped config instead of --config: tiny = a first run on a small corpus in minutes "
                   "(data/conf/train-tiny.yaml).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key.  Experimental (tested, not favoured by any measurement): "
                   + ", ".join(EXPERIMENTAL_KEYS) + ".")
@click.option("--units", type=click.Choice(list(UNIT_SOURCES)), default=None,
              help="Unit source: fbank k-means; segments (experimental: k-means of phone-like fbank segments); "
                   "encoder (set encoder=PATH: a `usrasr pretrain` output, a transformers model dir or stored features, docs/encoders.md); "
                   "diagnostic = phone ids from the scoring alignments (diagnosis only).")
@click.option("--objective", type=click.Choice(list(OBJECTIVES)), default=None,
              help="What makes the first labels: seqce (generative, over units; the default), odm "
                   "(a segment classifier matched to the phone LM's n-grams) or crosslingual (set encoder=PATH: "
                   "a `usrasr pretrain --method just` encoder's universal phones, read as the corpus's phones by IPA); "
                   "oracle trains only the supervised oracle (reads the transcripts: a scoring reference that can "
                   "run beside pretraining).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its checkpoints.")
@click.option("--no-score", is_flag=True, help="Skip oracles and PER (reads no transcripts at all).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch CPU threads of the seq-CE and CTC stages (default: one each; sets OMP_NUM_THREADS).")
@click.pass_context
def train(ctx, corpus, out_dir, config_path, preset, overrides, units, objective, resume, no_score, threads) -> None:
    """Unsupervised sequence-level training on a prepared corpus.

    Under `torchrun --nproc_per_node N -m usrasr train ...`, N processes train
    the CTC models together (gloo on CPU, NCCL on GPU); rank 0 does the rest.
    """
    from usrasr.utils.device import resolve_device
    from usrasr.train.config import TrainConfig
    from usrasr.utils.config import parse_overrides
    from usrasr.train.pipeline import train as run
    from usrasr.utils.console import setup_logging
    from usrasr.utils.distributed import is_main_process, process_group

    if preset:
        if config_path:
            raise click.UsageError("give --config or --preset, not both")
        config_path = SHIPPED_DATA / "conf" / f"train-{preset}.yaml"
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read by each stage's torch_threads, and by child processes
    values = parse_overrides(overrides)
    if units:
        values["units"] = units
    if objective:
        values["objective"] = objective
    values.setdefault("seed", str((ctx.obj or {}).get("seed", 0)))
    config = TrainConfig.load(config_path, values)
    with process_group(resolve_device(config.device)):
        if not is_main_process():
            setup_logging(quiet=True)  # one progress display and log: rank 0's
        summary = run(corpus, out_dir, config, resume=resume, score=not no_score)
    if summary is not None:
        print_summary(summary, title=f"train {out_dir}")


def print_summary(summary: dict, title: str) -> None:
    """The results table on stdout: one row per model, PER/WER on the unseen-voice test split."""
    table = Table(title=title)
    for column in ("model", "loss", "PER train", "PER test", "WER test"):
        table.add_column(column, justify="left" if column == "model" else "right")
    rows = [("cross-lingual start (IPA)", summary.get("crosslingual")),
            ("ODM (lowest loss)", summary.get("odm")), ("ODM: true segment labels", summary.get("odm", {}).get("true_labels")),
            ("seq-CE (lowest loss)", summary.get("seqce")), ("oracle HMM (same units)", summary.get("oracle_hmm"))]
    if "word_em" in summary:
        rows += [("word-level EM (HLG)", summary["word_em"]),
                 ("oracle HMM table through HLG", summary["word_em"].get("oracle"))]
    rows += [(f"self-training round {r['round']}", r) for r in summary.get("self_training", [])]
    rows.append(("supervised oracle (CTC)", summary.get("supervised")))
    for name, row in rows:
        if row:
            table.add_row(name, f"{row['loss']:.4f}" if "loss" in row else "-",
                          *(f"{row[k]:.1f}" if k in row else "-" for k in ("per_train", "per_test", "wer_test")))
    console = Console()
    console.print(table)
    if "unit_quality" in summary:
        for split, q in summary["unit_quality"].items():
            console.print(f"units on {split}: purity {q['purity']:.3f}, PNMI {q['pnmi']:.3f}")
    if "labels" in summary:
        console.print("train-audio labels, PER: " + ", ".join(f"{name} {row['labels_per_train']:.1f}"
                                                            for name, row in summary["labels"].items()))
    if "self_loop_prob" in summary:
        console.print(f"HMM self-loop probability: {summary['self_loop_prob']:.3f}")
    if "oracle" in summary.get("word_em", {}):
        console.print(f"word-level cost per step: found {summary['word_em']['cost_history'][-1]:.4f}, "
                      f"oracle HMM table {summary['word_em']['oracle']['cost_per_step']:.4f}")
    if "diagnosis" in summary:
        console.print(f"diagnosis: {summary['diagnosis']}")
    console.print(f"seconds per stage: {summary.get('seconds', {})}")
    if summary["world_size"] > 1:
        console.print(f"processes: {summary['world_size']}")
