"""The ``usrasr`` command line: a thin Click layer over the stage packages.

Sub-commands are imported lazily so that ``usrasr --help`` stays fast and a
stage's heavy dependencies load only when that stage runs.  The library raises
plain :class:`~usrasr.utils.errors.UsrasrError`; here it becomes one line on
stderr and its exit code.
"""

from __future__ import annotations

import importlib

import click

from usrasr import __version__
from usrasr.bench import BENCHMARKS
from usrasr.utils.console import seed_everything, setup_logging
from usrasr.utils.errors import UsrasrError

# name -> ("module:attribute" of a click.Command, one-line help shown by
# ``usrasr --help`` without importing the stage).
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("usrasr.prepare.commands:prepare", "Build corpora, lang dir, LMs and features."),
    "train": ("usrasr.train.commands:train", "Unsupervised sequence-level training and self-training."),
    "decode": ("usrasr.decode.commands:decode", "Decode audio to text with an HLG graph."),
    "evaluate": ("usrasr.evaluate.commands:evaluate", "Score hypotheses against references (WER/PER)."),
    "bench": ("usrasr.cli:bench", "Speed and memory benchmarks."),
    "simulate": ("usrasr.simulate.commands:simulate", "Synthetic worlds that test the method's conditions."),
    "check": ("usrasr.prepare.commands:check", "Check a prepared corpus against the method's conditions."),
    "pretrain": ("usrasr.pretrain.commands:pretrain", "Self-supervised encoder pretraining (BEST-RQ, BiRQ)."),
    "features": ("usrasr.extract.commands:features", "One layer of a pretrained speech model, stored as features."),
    "align": ("usrasr.align.commands:align", "Unsupervised alignment of spoken-word and text-word embeddings."),
    "analyze": ("usrasr.analyze.commands:analyze", "Representation similarity (CKA, CCA), probes, correlations."),
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported only when one is run (``registry``: see COMMANDS)."""

    def __init__(self, *args, registry: dict[str, tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.registry = registry

    def list_commands(self, ctx):
        return sorted(self.registry)

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, help_) in sorted(self.registry.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx, name):
        if name not in self.registry:
            return None
        module, attr = self.registry[name][0].split(":")
        return _with_logging_options(getattr(importlib.import_module(module), attr))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UsrasrError as e:
            error = click.ClickException(str(e))
            error.exit_code = e.exit_code
            raise error from None
        except OSError as e:
            if e.filename is None:  # not about a file: a defect, with its traceback
                raise
            error = click.ClickException(f"{e.filename}: {e.strerror or e}")
            error.exit_code = UsrasrError.exit_code
            raise error from None
        except KeyboardInterrupt:
            click.echo("usrasr: interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


# Exit codes (docs/quickstart.md): 1 a condition `usrasr check` found, 2 bad input, 130 interrupted.
EXIT_INTERRUPTED = 130


def _late_logging(ctx: click.Context, param: click.Parameter, value) -> None:
    """-v/-q given after the sub-command: the same as before it."""
    if not value:
        return
    settings = ctx.find_root().obj
    settings[param.name] = settings.get(param.name, 0) + value if param.name == "verbose" else True
    setup_logging(settings.get("verbose", 0), settings.get("quiet", False))


def _with_logging_options(command: click.Command) -> click.Command:
    """Accept -v/-q after ``command`` (and its sub-commands) too: ``usrasr train ... -q``."""
    if getattr(command, "_late_logging", False):
        return command
    command._late_logging = True
    taken = {opt for param in command.params for opt in getattr(param, "opts", [])}
    if not taken & {"-v", "--verbose", "-q", "--quiet"}:
        command.params += [
            click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_late_logging,
                         help="More log output (as `usrasr -v`)."),
            click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_late_logging,
                         help="Only warnings and errors, no progress bars (as `usrasr -q`)."),
        ]
    for sub in getattr(command, "commands", {}).values():
        _with_logging_options(sub)
    return command


@click.group(cls=LazyGroup, registry=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
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


@click.group(cls=LazyGroup, registry=BENCHMARKS)
def bench() -> None:
    """Speed and memory benchmarks (numbers go to stdout)."""


def main() -> None:  # pragma: no cover - console entry point
    cli()
