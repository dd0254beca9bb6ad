"""The ``usrasr`` command line: a thin Click layer over the stage packages.

Sub-commands are imported lazily so that ``usrasr --help`` stays fast and a
stage's heavy dependencies load only when that stage runs.
"""

from __future__ import annotations

import importlib

import click

from usrasr import __version__
from usrasr.utils.console import seed_everything, setup_logging

# name -> ("module:attribute" of a click.Command, one-line help shown by
# ``usrasr --help`` without importing the stage).
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("usrasr.data.commands:prepare", "Build corpora, lang dir, LMs and features."),
    "train": ("usrasr.train.commands:train", "Unsupervised sequence-level training and self-training."),
    "decode": ("usrasr.decode.commands:decode", "Decode audio to text with an HLG graph."),
    "evaluate": ("usrasr.evaluate.commands:evaluate", "Score hypotheses against references (WER/PER)."),
    "bench": ("usrasr.bench:bench", "Speed and memory benchmarks."),
    "simulate": ("usrasr.simulate.commands:simulate", "Synthetic worlds that test the method's conditions."),
    "check": ("usrasr.simulate.commands:check", "Check a prepared corpus against the method's conditions."),
    "pretrain": ("usrasr.pretrain.commands:pretrain", "Self-supervised encoder pretraining (BEST-RQ, BiRQ)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, help_) in sorted(COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="usrasr")
@click.option("-v", "--verbose", count=True, help="More log output (debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random generator.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, seed: int) -> None:
    """Unsupervised speech recognition from unpaired audio and text.

    Typical flow: prepare -> train -> decode -> evaluate.
    """
    setup_logging(verbose, quiet)
    seed_everything(seed)
    ctx.ensure_object(dict)
    ctx.obj.update(verbose=verbose, quiet=quiet, seed=seed)


def main() -> None:  # pragma: no cover - console entry point
    cli()
