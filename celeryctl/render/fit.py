"""Tables that fit the terminal, 80 columns first. Every table celeryctl prints is laid out here.

A table is a list of `Col` (title, priority, how its cells may break) and rows of cells
(str, already through render/text.safe, or rich Text). `fit` decides, for a width:

- which columns are shown: priority 0 columns always; the others drop out highest number
  first (ties: the rightmost first) until the rest fits. `wide` keeps every column whatever
  the width (the table is then as wide as it needs: the terminal wraps it, `less -S` does not);
- each column's width, set exactly, so rich never shrinks a column itself (rich's last resort
  is to truncate every column with `…`, which is what cut `worker` to `work…`):
  - `whole` columns (numbers, units, states, short words): as wide as their longest cell,
    never wrapped or truncated (`52 MiB` stays on one line); their header may wrap at its
    spaces (`oldest unacked` over two lines) so a long header does not widen a narrow number;
  - the `name` column (queue, worker, check code, connection): whole, on one line, unless the
    longest name is wider than what the screen leaves it — only then it folds (broken at the
    column's edge, continued on the next line, never cut with `…`);
  - `wrap` columns (lists, descriptions): at least `min_width` and their longest word (a
    queue name in a list is not broken unless it is longer than WORD_MAX); they share what
    is left and wrap at spaces inside their own column; `max_lines` shortens a cell to that many lines,
    ending in `…` (not with --wide: then every word is shown).

Separators: two spaces between columns, one space at each edge (box.SIMPLE_HEAD with
collapsed padding): a table of n columns is sum(widths) + 2n characters wide.

`print_table` prints the table and, when columns were hidden, one note under it:
"3 columns hidden — widen the terminal or use --wide".
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len

NOTE = "{n} column{s} hidden — widen the terminal or use --wide"


@dataclass(frozen=True)
class Col:
    title: str
    priority: int = 0          # 0: always shown; higher numbers drop out first
    justify: str = "left"
    kind: str = "whole"        # "name" | "whole" | "wrap"
    min_width: int = 10        # wrap columns: the narrowest they get
    max_lines: int | None = None  # wrap columns: cells shortened to this many lines (with …)


def num(title: str, priority: int = 0) -> Col:
    """A right-aligned number (or number with its unit): never split."""
    return Col(title, priority, justify="right")


@dataclass
class Layout:
    shown: list[int]           # indices of the columns shown, in order
    widths: list[int]          # their widths
    folded: bool               # the name column had to fold (names wider than the screen)
    hidden: int                # how many columns were left out

    @property
    def note(self) -> str | None:
        if not self.hidden:
            return None
        return NOTE.format(n=self.hidden, s="" if self.hidden == 1 else "s")


def _lines(cell: Any) -> list[str]:
    if cell is None:
        return [""]
    text = cell.plain if hasattr(cell, "plain") else str(cell)
    return text.split("\n")


def cell_width(cell: Any) -> int:
    return max(cell_len(line) for line in _lines(cell))


WIDE_MAX = 200  # --wide: wrap columns get room up to this table width (or the terminal's)
WORD_MAX = 30  # a word in a wrap column longer than this may be broken (folded)


def _longest_word(cell: Any) -> int:
    return max((cell_len(w) for line in _lines(cell) for w in line.split()), default=0)


def _header_need(title: str) -> int:
    """A header wraps at its spaces: its longest word is what it needs."""
    return max((cell_len(w) for w in title.split()), default=0)


def table_width(widths: list[int]) -> int:
    return sum(widths) + 2 * len(widths)


def fit(cols: list[Col], rows: list[list[Any]], width: int, *, wide: bool = False) -> Layout:
    natural, need = [], []
    for i, c in enumerate(cols):
        cells = max((cell_width(r[i]) for r in rows), default=0)
        # a header a little wider than its cells stays on one line; a long one wraps
        head = cell_len(c.title) if cell_len(c.title) <= cells + 2 else _header_need(c.title)
        natural.append(max(cells, head, 1))
        if c.kind == "wrap":  # words (queue names in a list) kept whole up to WORD_MAX
            word = 0 if c.max_lines else max((_longest_word(r[i]) for r in rows), default=0)
            need.append(min(natural[-1], max(c.min_width, min(word, WORD_MAX), head)))
        else:
            need.append(natural[-1])
    shown = list(range(len(cols)))
    hidden = 0
    if not wide:
        while table_width([need[i] for i in shown]) > width:
            droppable = [i for i in shown if cols[i].priority > 0]
            if not droppable:
                break
            drop = max(droppable, key=lambda i: (cols[i].priority, i))
            shown.remove(drop)
            hidden += 1
    room = width if not wide else max(width, table_width([need[i] for i in shown]),
                                      min(table_width(natural), max(width, WIDE_MAX)))
    widths = {i: need[i] for i in shown}
    folded = False
    over = table_width(list(widths.values())) - room
    if over > 0:  # only the always-shown columns are left: the names fold, nothing is cut
        for i in shown:
            if cols[i].kind == "name" and over > 0:
                give = min(over, widths[i] - min(natural[i], 12))
                if give > 0:
                    widths[i] -= give
                    over -= give
                    folded = True
    # what is left goes to the wrap columns, up to their natural width, in proportion
    spare = room - table_width(list(widths.values()))
    wraps = [i for i in shown if cols[i].kind == "wrap" and natural[i] > widths[i]]
    while spare > 0 and wraps:
        want = sum(natural[i] - widths[i] for i in wraps)
        given = 0
        for i in wraps:
            share = max(1, (natural[i] - widths[i]) * spare // want)
            share = min(share, natural[i] - widths[i], spare - given)
            widths[i] += share
            given += share
        spare -= given
        wraps = [i for i in wraps if natural[i] > widths[i]]
        if given == 0:
            break
    return Layout(shown, [widths[i] for i in shown], folded, hidden)


def _shorten(cell: Any, width: int, max_lines: int) -> Any:
    """A str cell cut to `max_lines` lines of `width` (word boundaries), ending in `…`."""
    if not isinstance(cell, str):
        return cell
    lines = textwrap.wrap(cell, width, break_long_words=True, break_on_hyphens=False)
    if len(lines) <= max_lines:
        return "\n".join(lines)
    kept = lines[:max_lines]
    last = kept[-1]
    kept[-1] = (last if cell_len(last) < width else last[:width - 1].rstrip()) + "…"
    return "\n".join(kept)


def build(cols: list[Col], rows: list[list[Any]], width: int, *, wide: bool = False,
          title: str | None = None, row_styles: list[str | None] | None = None):
    """(rich Table, Layout) for `rows` at `width`."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    lay = fit(cols, rows, width, wide=wide)
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False,
              collapse_padding=True)
    for i, w in zip(lay.shown, lay.widths, strict=True):
        c = cols[i]
        fold = c.kind == "name" and lay.folded
        t.add_column(Text(c.title, no_wrap=False),  # the header may wrap at its spaces
                     justify=c.justify, width=w, min_width=w, max_width=w,
                     no_wrap=c.kind != "wrap" and not fold,
                     overflow="fold")
    for n, r in enumerate(rows):
        cells = []
        for i, w in zip(lay.shown, lay.widths, strict=True):
            cell = r[i]
            if cols[i].max_lines and not wide:
                cell = _shorten(cell, w, cols[i].max_lines)
            cells.append("-" if cell is None else cell)
        t.add_row(*cells, style=(row_styles[n] if row_styles else None))
    return t, lay


def print_table(out, cols: list[Col], rows: list[list[Any]], *, wide: bool = False,
                title: str | None = None, row_styles: list[str | None] | None = None) -> Layout:
    """Print the table at the console's width, and the hidden-columns note under it."""
    t, lay = build(cols, rows, out.width or 200, wide=wide, title=title,
                   row_styles=row_styles)
    if wide and table_width(lay.widths) > (out.width or 200):
        _print_wider(out, t, table_width(lay.widths))
    else:
        out.print(t)
    if lay.note:
        from rich.text import Text

        out.print(Text(lay.note, style="dim"), highlight=False)
    return lay


def _print_wider(out, renderable, width: int) -> None:
    """--wide: lines as long as the table needs (the terminal wraps them; a pipe keeps them)."""
    old = out.width
    try:
        out.width = width
        out.print(renderable, crop=False)
    finally:
        out.width = old
