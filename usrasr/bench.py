"""``usrasr bench``: speed and memory benchmarks that print ratios side by side.

Each stage keeps its benchmark next to its code; this group only collects them.
"""

from __future__ import annotations

import importlib

import click

BENCHMARKS: dict[str, tuple[str, str]] = {
    "marginals": ("usrasr.graph.bench:marginals", "FSA marginals: throughput and memory vs a naive reference."),
    "decode": ("usrasr.decode.bench:decode", "Decoding real-time factor: search vs network."),
    "restarts": ("usrasr.train.bench:restarts", "Seq-CE restarts one at a time vs as one batch."),
    "units": ("usrasr.pretrain.bench:units", "Unit sources side by side: fbank, BEST-RQ, BiRQ (PER, PNMI)."),
}


class _BenchGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(BENCHMARKS)

    def format_commands(self, ctx, formatter):
        with formatter.section("Benchmarks"):
            formatter.write_dl([(n, h) for n, (_, h) in sorted(BENCHMARKS.items())])

    def get_command(self, ctx, name):
        if name not in BENCHMARKS:
            return None
        module, attr = BENCHMARKS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_BenchGroup)
def bench() -> None:
    """Speed and memory benchmarks (numbers go to stdout)."""
