"""Tables for humans (rich)."""

from __future__ import annotations

import json
from typing import Any

from celeryctl.views import human_kb, human_seconds


def _v(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.1f}"
    return str(x)


def _table(title: str | None = None):
    from rich import box
    from rich.table import Table

    return Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)


def render_sources(err, sources, notes: list[str], origin_lines: list[str]) -> None:
    """On stderr: where celeryctl looked and what did not answer."""
    from rich.text import Text

    from celeryctl.render.report import STATE_LABELS

    for line in origin_lines:
        err.print(Text(line, style="dim"), highlight=False)
    for s in sources:
        if s.ok is False:
            err.print(Text.assemble((STATE_LABELS.get(s.state, s.state), "bold red"),
                                    f": {s.name} {s.url or ''}: {s.error}"), highlight=False)
        for p in s.partial:
            err.print(Text.assemble(("not read", "yellow"), f": {s.name}: {p}"),
                      highlight=False)
    for n in notes:
        err.print(Text.assemble(("note", "yellow"), f": {n}"), highlight=False)


def render_unobserved(err, what: str, obs) -> None:
    """A listing whose main source was not observed says why — never nothing."""
    from rich.text import Text

    from celeryctl.render.report import STATE_LABELS

    err.print(Text.assemble((f"{what} not observed", "bold red"),
                            f" — {STATE_LABELS.get(obs.state, obs.state)}: {obs.error}"),
              highlight=False)


def render_workers(out, rows: list[dict[str, Any]]) -> None:
    t = _table()
    for col, kw in (("worker", {}), ("ok", {}), ("pool", {}), ("conc", {"justify": "right"}),
                    ("active", {"justify": "right"}), ("reserved", {"justify": "right"}),
                    ("sched", {"justify": "right"}), ("prefetch", {"justify": "right"}),
                    ("processed", {"justify": "right"}), ("uptime", {"justify": "right"}),
                    ("max rss", {"justify": "right"}), ("queues", {})):
        t.add_column(col, **kw)
    for r in rows:
        style = None if r["ok"] else "red"
        t.add_row(r["name"], "yes" if r["ok"] else "NO", _v(r["pool"]), _v(r["concurrency"]),
                  _v(r["active"]), _v(r["reserved"]), _v(r["scheduled"]),
                  _v(r["prefetch_count"]), _v(r["processed"]), human_seconds(r["uptime_seconds"]),
                  human_kb(r["max_rss_kb"]),
                  ", ".join(r["queues"]) if r["queues"] is not None else
                  (r["error"] or "-"), style=style)
    out.print(t)


def render_queues(out, rows: list[dict[str, Any]], broker: str) -> None:
    t = _table()
    t.add_column("queue")
    t.add_column("ready", justify="right")
    if broker == "redis":
        t.add_column("by priority (0/3/6/9)")
    t.add_column("unacked", justify="right")
    if broker == "redis":
        t.add_column("oldest unacked", justify="right")
    t.add_column("consumers", justify="right")
    if broker == "rabbitmq":
        t.add_column("in/s", justify="right")
        t.add_column("out/s", justify="right")
        t.add_column("type")
    for r in rows:
        cells = [r["name"] + (" (internal)" if r["internal"] else "")
                 + ("" if r["exists"] else " (missing)"), _v(r["ready"])]
        if broker == "redis":
            b = r["buckets"] or {}
            cells.append("/".join(str(b[k]) for k in sorted(b, key=int)) if b else "-")
        cells.append(_v(r["unacked"]))
        if broker == "redis":
            cells.append(human_seconds(r["oldest_unacked_seconds"]))
        cells.append(_v(r["consumers"]))
        if broker == "rabbitmq":
            cells += [_v(r["publish_rate"]), _v(r["deliver_rate"]), _v(r["type"])]
        t.add_row(*cells, style="red" if r["error"] else None)
    out.print(t)


def render_connections(out, rows: list[dict[str, Any]], broker: str) -> None:
    t = _table()
    cols = ["address", "name", "role", "age", "idle",
            "cmd" if broker == "redis" else "state",
            "db" if broker == "redis" else "heartbeat", "worker"]
    for c in cols:
        t.add_column(c, justify="right" if c in ("age", "idle") else "left")
    for r in rows:
        t.add_row(r["address"], _v(r["name"]), _v(r["role"]), human_seconds(r["age_seconds"]),
                  human_seconds(r["idle_seconds"]), _v(r["command"]),
                  _v(r["db"] if broker == "redis" else r["heartbeat_seconds"]),
                  "other db (another app)" if r.get("other_db") else
                  _v(r["worker"]) + (f" ({r['worker_match']})" if r["worker_match"] and
                                     r["worker_match"] != "exact" else ""),
                  style="dim" if r.get("other_db") else None)
    out.print(t)


def render_replies(out, method: str, replies: list[dict[str, Any]]) -> None:
    for r in replies:
        out.print(f"[bold]{r['name']}[/] ({method})", markup=True, highlight=False)
        out.print(json.dumps(r["reply"], indent=2, default=str), markup=False, highlight=False)
