"""Consoles for stdout (data) and stderr (progress, errors). NO_COLOR and non-TTY output are
honoured by rich itself; a non-TTY gets a wide fixed width so piped tables do not wrap."""

from __future__ import annotations

import os
import sys


def make_console(stderr: bool = False, *, file=None):
    from rich.console import Console

    stream = file or (sys.stderr if stderr else sys.stdout)
    tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(
        file=stream,
        stderr=stderr,
        no_color=bool(os.environ.get("NO_COLOR")) or None,
        width=None if tty else int(os.environ.get("COLUMNS", "200")),
        highlight=False,
        soft_wrap=not tty,
    )
