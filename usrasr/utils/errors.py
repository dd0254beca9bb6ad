"""User-facing errors: one clear line, non-zero exit, no traceback."""

from __future__ import annotations

import click


class UsrasrError(click.ClickException):
    """An error caused by the user's input or environment, shown as one line."""

    exit_code = 2


class NothingUsableError(UsrasrError):
    """Every input item was rejected; the stage cannot produce output."""
