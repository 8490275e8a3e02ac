"""`queues watch`: the live screen (rich) and the JSON line per refresh. Receives finished
rows and header facts; decides nothing."""

from __future__ import annotations

import time
from typing import Any

from celeryctl.render.fit import Col, build, num
from celeryctl.render.tables import _v
from celeryctl.render.text import literal, safe
from celeryctl.views import human_seconds

LEVEL_STYLE = {"critical": "red", "warning": "yellow", "ok": "", "unknown": "dim"}


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}/s"


def _drain(r: dict[str, Any]) -> str:
    if r["drain_seconds"] is None:
        return "-" if r["ready"] is None else "never"
    return human_seconds(r["drain_seconds"]) if r["drain_seconds"] else "empty"


def _stalled(r: dict[str, Any]) -> str:
    """"no", the stall's length once marked, "-" when it cannot be told."""
    if r.get("stalled") is None:
        return "-"
    return human_seconds(r["stalled_seconds"]) if r["stalled"] else "no"


def render_screen(rows: list[dict[str, Any]], header: dict[str, Any], height: int,
                  width: int = 200, *, wide: bool = False):
    """A rich renderable of at most `height` lines of `width`: header lines, then as many rows
    as the screen shows, the columns that fit (render/fit: queue, the counts, the rates and
    the drain time always; a long queue name folds). `wide`: the trend too, never wider than
    `width` (a live screen cannot scroll sideways)."""
    from rich.console import Group
    from rich.markup import escape as _escape
    from rich.text import Text

    def escape(s) -> str:  # data in celeryctl's own markup: literal, control chars visible
        return _escape(safe(s))

    lines = [Text.from_markup(
        "[bold]celeryctl queues watch[/]  "
        + (f"cluster {escape(header['cluster'])}  " if header.get("cluster") else "")
        + f"broker {escape(header['broker'])}  every {header['interval']:g} s")]
    w = header.get("workers")
    lines.append(Text.from_markup(
        f"workers online: {w if w is not None else '?'}"
        + (f" [dim]({escape(header['workers_note'])})[/]" if header.get("workers_note") else "")
        + f"   last good sample: {header['last_good'] or 'never'}"
        + (f" ({header['age']} ago)" if header.get("age") else "")))
    if header.get("stale"):
        lines.append(Text.from_markup(
            f"[bold red]STALE[/] [red]values are {header.get('age') or '?'} old: "
            f"{escape(header['stale'])} — retrying every {header['interval']:g} s[/]"))
    for note in header.get("notes", []):
        lines.append(Text.from_markup(f"[dim]{escape(note)}[/]"))
    # the stall, the net rate and the drain time are key: a long queue name folds, it does not
    # hide them (in and out drop out before them, as for a short name at 80 columns). --wide
    # keeps every column while the names can fold to a quarter of the width: the screen
    # cannot be wider than the terminal, so nothing is ever cut at its edge
    cols = [Col("queue", kind="name"), num("ready"), num("unacked"), num("consumers"),
            num("stalled"), num("in", 2), num("out", 2), num("net"), Col("trend", 3),
            num("drain")]
    stale = bool(header.get("stale"))
    cells = [[literal(r["name"]), _v(r["ready"]), _v(r["unacked"]), _v(r["consumers"]),
              _stalled(r), _rate(r["rate_in"]), _rate(r["rate_out"]),
              "-" if r["net_rate"] is None else f"{r['net_rate']:+.1f}/s", r["trend"], _drain(r)]
             for r in rows]
    styles = ["dim" if stale else LEVEL_STYLE.get(r["level"], "") for r in rows]

    def screen(n: int):
        t, lay = build(cols, cells[:n], width, fold_first=wide, row_styles=styles[:n])
        parts = [*lines, t]
        if lay.note:  # with --wide: the terminal is too narrow even for folded names
            parts.append(Text(lay.note if not wide else
                              lay.note.split(" — ")[0] + " — widen the terminal (the live "
                              "screen is never wider than it)", style="dim"))
        if len(rows) > n:
            parts.append(Text(f"... {len(rows) - n} more queues (--queue PATTERN, --sort)",
                              style="dim"))
        return parts

    # as many rows as the screen shows, counted as displayed (wrapped header lines, folded
    # names, the notes under the table)
    lo, hi = 1, min(len(rows), max(1, height))  # lo rows are shown whatever the height
    while lo < hi:  # the most rows that fit (binary search: each try is one rendering)
        mid = (lo + hi + 1) // 2
        if _height(screen(mid), width) <= height:
            lo = mid
        else:
            hi = mid - 1
    parts = screen(lo)
    if not rows:
        parts.append(Text("no queues" + (" seen yet" if header.get("stale") else ""),
                          style="dim"))
    return Group(*parts)


def _height(parts: list[Any], width: int) -> int:
    """Lines the renderables take at `width`, as the terminal shows them."""
    from rich.console import Console, Group

    con = Console(width=width, file=_Null(), force_terminal=False, color_system=None,
                  legacy_windows=False)
    return len(con.render_lines(Group(*parts), con.options.update(width=width), pad=False,
                                new_lines=False))


class _Null:
    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


JSON_KEYS = ("name", "ready", "unacked", "consumers", "rate_in", "rate_out", "net_rate",
             "drain_seconds", "stalled_seconds", "stalled")


def json_line(rows: list[dict[str, Any]] | None, sources: list[dict[str, Any]], *,
              stale: bool, workers: int | None, now: float | None = None) -> str:
    from celeryctl.render.jsonout import dumps

    return dumps({
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now or time.time())),
        "stale": stale, "workers": workers,
        "queues": None if rows is None else [{k: r.get(k) for k in JSON_KEYS} for r in rows],
        "sources": sources})
