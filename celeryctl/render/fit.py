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
  - `name` columns (queue, worker, check code, connection): whole, on one line, unless the
    longest name is wider than what the screen leaves once every droppable column is gone —
    only then they fold (the widest first, broken at the column's edge, continued on the next
    line, never cut with `…`, down to NAME_MIN). So one long name folds rather than hiding a
    key column: a table marks its key columns (a command's result, the worker owning a
    connection, the live screen's rates) priority 0, and those are never dropped;
  - `wrap` columns (lists, descriptions): at least `min_width` and their longest word (a
    queue name in a list is not broken unless it is longer than WORD_MAX); they share what
    is left and wrap at spaces inside their own column; `max_lines` shortens a cell to that many lines,
    ending in `…` (not with --wide: then every word is shown). Columns marked
    `drop_before_cut` (a family that repeats the code's prefix) drop out before such a cell
    is cut.

`fit(..., fold_first=True)` is --wide for a screen that cannot be wider than the terminal
(the live screen): every column stays while folding the names (to a quarter of the width
at the least) makes room.

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
    drop_before_cut: bool = False  # dropped before a max_lines column's cells are cut


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
NAME_MIN = 12  # a folding name column keeps at least this width (or its header's longest word)
WORD_MAX = 30  # a word in a wrap column longer than this may be broken (folded)


def _longest_word(cell: Any) -> int:
    return max((cell_len(w) for line in _lines(cell) for w in line.split()), default=0)


def _header_need(title: str) -> int:
    """A header wraps at its spaces: its longest word is what it needs."""
    return max((cell_len(w) for w in title.split()), default=0)


def table_width(widths: list[int]) -> int:
    return sum(widths) + 2 * len(widths)


def _cut(cell: Any, width: int, max_lines: int) -> bool:
    """Would `_shorten` cut this cell (more than `max_lines` lines at `width`)?"""
    if not isinstance(cell, str) or width < 1:
        return False
    return len(textwrap.wrap(cell, width, break_long_words=True,
                             break_on_hyphens=False)) > max_lines


def fit(cols: list[Col], rows: list[list[Any]], width: int, *, wide: bool = False,
        fold_first: bool = False) -> Layout:
    """The layout of `rows` at `width` (see the module docstring). `fold_first` (the live
    screen's --wide, which cannot be wider than the terminal): every column is kept as long
    as folding the name columns (to no less than a quarter of `width`) makes room; only then
    do columns drop out."""
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
    # the narrowest a name column gets when it folds (fold_first: a quarter of the screen,
    # so that the extra columns never cost names their line)
    least_name = max(NAME_MIN, width // 4 if fold_first else 0)
    floor = [min(natural[i], max(least_name, _header_need(c.title))) if c.kind == "name"
             else need[i] for i, c in enumerate(cols)]
    shown = list(range(len(cols)))
    hidden = 0

    def drop(candidates: list[int]) -> None:
        nonlocal hidden
        shown.remove(max(candidates, key=lambda i: (cols[i].priority, i)))
        hidden += 1

    if not wide:
        least = floor if fold_first else need
        while table_width([least[i] for i in shown]) > width:
            droppable = [i for i in shown if cols[i].priority > 0]
            if not droppable:
                break
            drop(droppable)
    while True:
        widths, folded = _widths(cols, shown, natural, need, floor, width, wide)
        if wide:
            break
        # a column marked drop_before_cut leaves before a max_lines column's cells are cut
        cut = any(cols[i].max_lines and any(_cut(r[i], w, cols[i].max_lines) for r in rows)
                  for i, w in widths.items())
        yielding = [i for i in shown if cols[i].drop_before_cut and cols[i].priority > 0]
        if not (cut and yielding):
            break
        drop(yielding)
    return Layout(shown, [widths[i] for i in shown], folded, hidden)


def _widths(cols: list[Col], shown: list[int], natural: list[int], need: list[int],
            floor: list[int], width: int, wide: bool) -> tuple[dict[int, int], bool]:
    room = width if not wide else max(width, table_width([need[i] for i in shown]),
                                      min(table_width(natural), max(width, WIDE_MAX)))
    widths = {i: need[i] for i in shown}
    folded = False
    over = table_width(list(widths.values())) - room
    # only the always-shown columns are left: the names fold (the widest first), nothing is
    # cut
    while over > 0:
        names = [i for i in shown if cols[i].kind == "name" and widths[i] > floor[i]]
        if not names:
            break
        i = max(names, key=lambda i: (widths[i], -i))
        others = [widths[j] for j in names if j != i]
        # down to the next widest name (so two long names share the fold), or its floor
        give = min(over, widths[i] - max([floor[i], *others]) or 1, widths[i] - floor[i])
        widths[i] -= give
        over -= give
        folded = True
    if folded:  # the folded names give up to half of what they keep above their floor, so
        # that a result or a list is not squeezed into its minimum ("2.0" / "s")
        want = sum(natural[i] - widths[i] for i in shown if cols[i].kind == "wrap")
        for i in sorted((i for i in shown if cols[i].kind == "name" and widths[i] < natural[i]),
                        key=lambda i: -widths[i]):
            give = min(want, (widths[i] - floor[i]) // 2)
            widths[i] -= give
            want -= give
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
    return widths, folded


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
          title: str | None = None, row_styles: list[str | None] | None = None,
          fold_first: bool = False):
    """(rich Table, Layout) for `rows` at `width` (`fold_first`: see `fit`)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    lay = fit(cols, rows, width, wide=wide, fold_first=fold_first)
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
