"""`celeryctl tasks` as a table (rows from celeryctl.tasks; decides nothing)."""

from __future__ import annotations

from typing import Any

from celeryctl.render.fit import Col, num, print_table
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


def _eta_in(v: float | None) -> str:
    if v is None:
        return "-"
    return ("in " + human_seconds(v)) if v >= 0 else (human_seconds(-v) + " ago")


def render_tasks(out, rows: list[dict[str, Any]], *, include_args: bool = False,
                 wide: bool = False) -> None:
    """State, id, task name, worker and the ages (runtime, held) are always shown whole;
    pid, queue, ETA, limits, acks_late and redelivered drop out as the terminal narrows
    (`--wide` or `--format json` for every field)."""
    cols = [
        (Col("state"), "state"),
        (Col("id", kind="name"), "id"),
        (Col("task", kind="wrap", min_width=12), "name"),
        (Col("worker", kind="wrap", min_width=12), "worker"),
        (num("runtime"), "runtime_seconds"),
        (num("held"), "held_seconds"),
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
            if key in ("runtime_seconds", "held_seconds"):
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
    print_table(out, [c for c, _ in cols], cells, wide=wide)


def _short(v: Any) -> str:
    text = v if isinstance(v, str) else repr(v)
    return text if len(text) <= 200 else text[:199] + "…"
