"""`celeryctl tasks` as a table (rows from celeryctl.tasks; decides nothing)."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from celeryctl.render.fit import Col, num
from celeryctl.render.tables import _v
from celeryctl.render.text import safe
from celeryctl.views import human_seconds


def _limits(r: dict[str, Any]) -> str:
    """`soft/hard` in seconds: "-/300", "none" (known: no limit), "?" (not known)."""
    if not r["time_limits_known"] and r["time_limit"] is None and r["soft_time_limit"] is None:
        return "?"
    if r["time_limit"] is None and r["soft_time_limit"] is None:
        return "none"
    return "/".join("-" if v is None else f"{v:g}" for v in (r["soft_time_limit"],
                                                              r["time_limit"]))


def _eta_in(v: float | None, past: str = "ago") -> str:
    """Time to an ETA: "in 12m"; one already passed: "3s ago" (or "3s late")."""
    if v is None:
        return "-"
    return ("in " + human_seconds(v)) if v >= 0 else (human_seconds(-v) + " " + past)


def render_tasks(out, rows: list[dict[str, Any]], *, include_args: bool = False,
                 wide: bool = False) -> None:
    """State, id (whole, on one line: it is what `celeryctl task ID` takes), task name
    (folded when it must be), worker and `for` (running for an active task, time to its ETA
    for a scheduled one — "in 12m" —, held for a reserved one) are always shown; ETA, queue, pid, limits, acks_late,
    redelivered, and runtime and held apart, drop out as the terminal narrows (`--wide` or
    `--format json` for every field). Under the table: the counts by state and by worker, and
    the rows' notes (why a field is unknown)."""
    cols = [
        (Col("state"), "state"),
        (Col("id"), "id"),  # whole, on one line: it is what `celeryctl task ID` takes
        (Col("task", kind="name"), "name"),
        (Col("worker", kind="wrap", min_width=12), "worker"),
        (num("for"), "age"),
        (num("runtime", 8), "runtime_seconds"),
        (num("held", 8), "held_seconds"),
        (num("pid", 4), "pid"),
        (Col("queue", 3), "queue"),
        (num("eta", 2), "eta_in_seconds"),
        (Col("limits soft/hard", 5), "limits"),
        (Col("acks late", 6), "acks_late"),
        (Col("redeliv- ered", 5), "redelivered"),
    ]
    if include_args:
        cols.append((Col("args", 7, kind="wrap", min_width=16, max_lines=3), "args"))
    cells = []
    for r in rows:
        line = []
        for _col, key in cols:
            v = r.get(key)
            if key == "age":
                line.append(_for(r))
            elif key in ("runtime_seconds", "held_seconds"):
                line.append(human_seconds(v))
            elif key == "eta_in_seconds":
                line.append(_eta_in(v))
            elif key == "limits":
                line.append(_limits(r))
            elif key == "args":
                line.append(safe(f"{_short(r.get('args'))} {_short(r.get('kwargs'))}"))
            else:
                line.append(_v(v))
        cells.append(line)
    print_plain_table(out, [c for c, _ in cols], cells, wide=wide)
    out.print(Text(summary(rows)), highlight=False, soft_wrap=True)
    for line in row_notes(rows):
        out.print(Text(line, style="dim"), highlight=False, soft_wrap=True)


def _for(r: dict[str, Any]) -> str:
    """`for`: running for (active), time to its ETA (scheduled: "in 12m", "3s late"), held
    for (reserved); "?" when not known and a note (under the table) says why."""
    if r.get("state") == "scheduled" and r.get("eta_in_seconds") is not None:
        return _eta_in(r["eta_in_seconds"], past="late")
    v = r.get("runtime_seconds") if r.get("state") == "active" else r.get("held_seconds")
    if v is None and r.get("notes"):
        return "?"
    return human_seconds(v)


def summary(rows: list[dict[str, Any]]) -> str:
    """"2,513 tasks: 13 active, 2,500 reserved on w1@vm, ..." — counts by state, and by
    worker (the most first; past five, "and N more workers")."""
    from collections import Counter

    states = Counter(r.get("state") for r in rows)
    workers = Counter(r.get("worker") for r in rows)
    n = len(rows)
    text = f"{n:,} task{'' if n == 1 else 's'}: " + ", ".join(
        f"{states[s]:,} {s}" for s in ("active", "reserved", "scheduled") if states[s])
    top = workers.most_common()
    by = ", ".join(f"{c:,} on {w}" for w, c in top[:5])
    if len(top) > 5:
        by += f" and {len(top) - 5} more workers"
    return safe(text + (f" — {by}" if by else ""))


def row_notes(rows: list[dict[str, Any]], limit: int = 5) -> list[str]:
    """The rows' notes (why a field is unknown), each once with how many rows have it and
    an example task id: the table has no room for them (`--format json` has them per row)."""
    seen: dict[str, list[str]] = {}
    for r in rows:
        for n in r.get("notes") or ():
            seen.setdefault(n, []).append(r.get("id") or "?")
    out = []
    for note, ids in list(seen.items())[:limit]:
        who = ids[0] if len(ids) == 1 else f"{len(ids):,} tasks, e.g. {ids[0]}"
        out.append(safe(f"note ({who}): {note}"))
    if len(seen) > limit:
        out.append(f"and {len(seen) - limit} more notes (--format json has every row's)")
    return out


def print_plain_table(out, cols: list[Col], rows: list[list[str]], *, wide: bool = False
                      ) -> None:
    """The table `render.fit.print_table` prints (same layout from `fit`: columns kept,
    widths, names folded, wrap columns wrapped at spaces; two spaces between columns, one at
    each edge, header over a rule), laid out here as plain lines: rich's Table takes about
    0.7 s for 1,600 rows, this a few ms — `tasks` on a busy cluster lists thousands. Cells
    are plain text already made safe (render/text.safe); nothing is styled."""
    import textwrap

    from rich.cells import cell_len, set_cell_size
    from rich.text import Text

    from celeryctl.render.fit import NOTE, fit, table_width

    width = out.width or 200
    lay = fit(cols, rows, width, wide=wide)

    def split(text: str, w: int, kind: str) -> list[str]:
        out_lines: list[str] = []
        for line in (text or "").split("\n"):
            if cell_len(line) <= w:
                out_lines.append(line)
            elif kind == "wrap" or kind == "header":
                out_lines.extend(textwrap.wrap(line, w, break_long_words=True,
                                               break_on_hyphens=False) or [""])
            else:  # a name (or a whole cell wider than its column): folded, never cut —
                while line:  # after a dot, dash or underscore when one is near the end
                    part = line[:w]
                    while cell_len(part) > w:
                        part = part[:-1]
                    cut = max(part.rfind(c) for c in "._-:@/") + 1
                    if len(part) < len(line) and cut > len(part) // 2:
                        part = part[:cut]
                    out_lines.append(part)
                    line = line[len(part):]
        return out_lines or [""]

    def block(cells: list[list[str]]) -> list[str]:
        height = max(len(c) for c in cells)
        lines = []
        for k in range(height):
            parts = []
            for j, i in enumerate(lay.shown):
                text = cells[j][k] if k < len(cells[j]) else ""
                pad = lay.widths[j] - cell_len(text)
                if pad < 0:
                    text, pad = set_cell_size(text, lay.widths[j]), 0
                parts.append(" " * pad + text if cols[i].justify == "right" else text + " " * pad)
            lines.append(" " + "  ".join(parts) + " ")
        return lines

    lines = [""]
    heads = [split(cols[i].title, w, "header") for i, w in zip(lay.shown, lay.widths,
                                                                 strict=True)]
    tall = max(len(h) for h in heads)
    lines += block([[""] * (tall - len(h)) + h for h in heads])  # bottom-aligned, as rich
    lines.append(" " + "─" * (table_width(lay.widths) - 2) + " ")
    for r in rows:
        lines += block([split(r[i] if r[i] is not None else "-", w, cols[i].kind)
                        for i, w in zip(lay.shown, lay.widths, strict=True)])
    lines.append("")
    out.print(Text("\n".join(lines)), soft_wrap=True, highlight=False)
    if lay.note:
        out.print(Text(NOTE.format(n=lay.hidden, s="" if lay.hidden == 1 else "s"),
                       style="dim"), highlight=False)


def _short(v: Any) -> str:
    text = v if isinstance(v, str) else repr(v)
    return text if len(text) <= 200 else text[:199] + "…"
