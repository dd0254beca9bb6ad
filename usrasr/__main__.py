"""``python -m usrasr``: the same CLI as the ``usrasr`` console script."""

from usrasr.cli import cli

cli(prog_name="usrasr")
