"""Consoles for stdout (data) and stderr (progress, errors). NO_COLOR and non-TTY output are
honoured by rich itself; a non-TTY gets a wide fixed width so piped tables do not wrap.

Markup is off by default: a string printed (or put in a table cell) is shown as written, so
a queue called `q[/]x` is never read as a rich tag. celeryctl's own styling says
`markup=True` (with `rich.markup.escape` around any data in it) or builds `rich.text.Text`.
Every string rendered also has its control characters escaped (render/text.safe_lines): an
ESC from a broker never reaches the terminal raw."""

from __future__ import annotations

import os
import sys


def make_console(stderr: bool = False, *, file=None):
    from rich.console import Console

    from celeryctl.render.text import keep_nbsp_whole, safe_lines

    keep_nbsp_whole()  # "300\u00a0s" (render/text.bind_units) never split across lines

    class SafeConsole(Console):
        def render_str(self, text, **kw):  # every str printed or in a table cell
            return super().render_str(safe_lines(text), **kw)

    stream = file or (sys.stderr if stderr else sys.stdout)
    tty = hasattr(stream, "isatty") and stream.isatty()
    return SafeConsole(
        file=stream,
        stderr=stderr,
        no_color=bool(os.environ.get("NO_COLOR")) or None,
        width=None if tty else int(os.environ.get("COLUMNS", "200")),
        highlight=False,
        markup=False,
        soft_wrap=not tty,
    )
