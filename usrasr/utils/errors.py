"""User-facing errors of the library: plain exceptions with an exit code.

The library raises them; :mod:`usrasr.cli` turns them into one clear line on
stderr and a non-zero exit, with no traceback.  A Python caller catches them
as ordinary exceptions.
"""

from __future__ import annotations


class UsrasrError(Exception):
    """An error caused by the user's input or environment, shown as one line."""

    exit_code = 2


class NothingUsableError(UsrasrError):
    """Every input item was rejected; the stage cannot produce output."""
