"""``usrasr pretrain``: a thin Click layer over :func:`usrasr.pretrain.trainer.pretrain`."""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.command()
@click.option("--corpus", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="A corpus made by `usrasr prepare` (its train-audio is used, never its text).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Experiment directory (checkpoints, metrics, encoder.pt).")
@click.option("--method", type=click.Choice(["bestrq", "birq", "just"]), default=None,
              help="BEST-RQ (input-level labels), BiRQ (plus enhanced labels from a layer), or JUST (phone CTC on "
                   "a multilingual corpus given by --set multilingual=DIR, plus BEST-RQ). Default: bestrq.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="YAML config; see `usrasr.pretrain.config.PretrainConfig`.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch CPU threads (default: one, unless OMP_NUM_THREADS says otherwise; a CPU time "
                   "budget counts every thread).")
@click.pass_context
def pretrain(ctx, corpus, out_dir, method, config_path, overrides, resume, threads) -> None:
    """Self-supervised encoder pretraining; its layers give acoustic units for `usrasr train`.

    Under `torchrun --nproc_per_node N -m usrasr pretrain ...`, N processes train the encoder
    together (DDP; gloo on CPU, NCCL with one GPU each); rank 0 writes every file.
    """
    from usrasr.pretrain.config import PretrainConfig
    from usrasr.pretrain.trainer import pretrain as run
    from usrasr.utils.config import parse_overrides
    from usrasr.utils.console import setup_logging
    from usrasr.utils.device import resolve_device, torch_threads
    from usrasr.utils.distributed import is_main_process, process_group

    values = parse_overrides(overrides)
    if method:
        values["method"] = method
    values.setdefault("seed", str((ctx.obj or {}).get("seed", 0)))
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    # One thread by default: the small encoders gain little from a second one, and a CPU time budget
    # spent on two threads buys fewer steps (docs/results/2026-12-07-crosslingual-start.md).
    config = PretrainConfig.load(config_path, values)
    with torch_threads(1), process_group(resolve_device(config.device)):
        if not is_main_process():
            setup_logging(quiet=True)  # one progress display and log: rank 0's
        summary = run(corpus, out_dir, config, resume=resume)
        if not is_main_process():
            return
    final, evaluation = summary["final"], summary.get("evaluation")
    if evaluation:  # just: measured after training rather than the last step's values
        heldout = evaluation.get("heldout")
        scores = (f"masked accuracy on the train-audio {evaluation['target_train_audio']['masked_accuracy']:.3f}"
                  + (f"; held-out voices: masked accuracy {heldout['masked_accuracy']:.3f}, phone CTC loss "
                     f"{heldout['ctc_loss_per_phone']:.3f} nats per phone, PER {heldout['per']:.1f}%" if heldout else ""))
    else:
        scores = (f"masked accuracy (anchor) {final.get('anchor_accuracy', float('nan')):.3f}"
                  + (f", enhanced {final['enhanced_accuracy']:.3f}" if "enhanced_accuracy" in final else ""))
    processes = f" x {summary['processes']} processes" if summary["processes"] > 1 else ""
    click.echo(f"{summary['method']}: {summary['steps']} steps, {summary['compute_seconds']:.0f} s of compute on "
               f"{summary['device']}{processes} ({summary['precision']}); {scores}; encoder: {out_dir / 'encoder.pt'}")
