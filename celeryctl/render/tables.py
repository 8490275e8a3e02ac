"""Tables for humans (rich)."""

from __future__ import annotations

from typing import Any

from celeryctl.render.text import buckets, literal, safe
from celeryctl.views import human_kb, human_seconds


def _v(x: Any) -> str:
    """A cell: "-" for unknown; strings (names, states from the broker) through `safe`."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.1f}"
    return safe(x) if isinstance(x, str) else str(x)


def _table(title: str | None = None):
    from rich import box
    from rich.table import Table

    return Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)


def render_sources(err, sources, notes: list[str], origin_lines: list[str]) -> None:
    """On stderr: where celeryctl looked and what did not answer."""
    from rich.text import Text

    from celeryctl.render.report import STATE_LABELS

    for line in origin_lines:
        err.print(literal(line, style="dim"), highlight=False)
    for s in sources:
        if s.ok is False:
            err.print(Text.assemble((STATE_LABELS.get(s.state, s.state), "bold red"),
                                    safe(f": {s.name} {s.url or ''}: {s.error}")),
                      highlight=False)
        for p in s.partial:
            err.print(Text.assemble(("not read", "yellow"), safe(f": {s.name}: {p}")),
                      highlight=False)
    for n in notes:
        err.print(Text.assemble(("note", "yellow"), safe(f": {n}")), highlight=False)


def render_unobserved(err, what: str, obs) -> None:
    """A listing whose main source was not observed says why — never nothing."""
    from rich.text import Text

    from celeryctl.render.report import STATE_LABELS

    err.print(Text.assemble((f"{what} not observed", "bold red"),
                            safe(f" — {STATE_LABELS.get(obs.state, obs.state)}: {obs.error}")),
              highlight=False)


def render_workers(out, rows: list[dict[str, Any]]) -> None:
    """Below 120 columns the counters an operator reads second (reserved, scheduled,
    prefetch, processed) are left out, so an 80-column terminal keeps whole names, the
    Celery version and the pool (`--format json` has every field)."""
    wide = (out.width or 200) >= 120
    versions = any(r.get("celery_version") for r in rows)
    longest = max((len(r["name"]) for r in rows), default=6)
    cols: list[tuple[str, str, dict]] = [
        ("worker", "name", {"overflow": "fold", "min_width": min(longest, 12)}),
        ("ok", "ok", {}),
        *([("celery", "celery_version", {})] if versions else []),
        ("pool", "pool", {}),
        ("conc", "concurrency", {"justify": "right"}),
        ("active", "active", {"justify": "right"}),
    ]
    if wide:
        cols += [("reserved", "reserved", {"justify": "right"}),
                 ("sched", "scheduled", {"justify": "right"}),
                 ("prefetch", "prefetch_count", {"justify": "right"}),
                 ("processed", "processed", {"justify": "right"})]
    cols += [("uptime", "uptime_seconds", {"justify": "right"}),
             ("max rss", "max_rss_kb", {"justify": "right"}),
             ("queues", "queues", {"overflow": "fold", "ratio": 1, "min_width": 10})]
    t = _table()
    t.collapse_padding = not wide  # two spaces between columns, not three
    for title, _key, kw in cols:
        t.add_column(title, no_wrap=kw.get("overflow") is None, **kw)
    for r in rows:
        cells = []
        for _title, key, _kw in cols:
            v = r.get(key)
            if key == "ok":
                cells.append("yes" if v else "NO")
            elif key == "uptime_seconds":
                cells.append(human_seconds(v))
            elif key == "max_rss_kb":
                cells.append(human_kb(v))
            elif key == "queues":
                cells.append(", ".join(safe(q) for q in v) if v is not None
                             else _v(r["error"] or None))
            else:
                cells.append(_v(v))
        t.add_row(*cells, style=None if r["ok"] else "red")
    out.print(t)


def render_queues(out, rows: list[dict[str, Any]], broker: str) -> None:
    t = _table()
    t.add_column("queue")
    t.add_column("ready", justify="right")
    if broker == "redis":
        t.add_column("by priority")
    t.add_column("unacked", justify="right")
    if broker == "redis":
        t.add_column("oldest unacked", justify="right")
    t.add_column("consumers", justify="right")
    if broker == "rabbitmq":
        t.add_column("in/s", justify="right")
        t.add_column("out/s", justify="right")
        t.add_column("type")
    for r in rows:
        cells = [safe(r["name"]) + (" (internal)" if r["internal"] else "")
                 + ("" if r["exists"] else " (missing)"), _v(r["ready"])]
        if broker == "redis":
            cells.append(buckets(r["buckets"]))
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
        t.add_row(_v(r["address"]), _v(r["name"]), _v(r["role"]), human_seconds(r["age_seconds"]),
                  human_seconds(r["idle_seconds"]), _v(r["command"]),
                  _v(r["db"] if broker == "redis" else r["heartbeat_seconds"]),
                  "other db (another app)" if r.get("other_db") else
                  _v(r["worker"]) + (f" ({r['worker_match']})" if r["worker_match"] and
                                     r["worker_match"] != "exact" else ""),
                  style="dim" if r.get("other_db") else None)
    out.print(t)


def render_replies(out, method: str, replies: list[dict[str, Any]]) -> None:
    from rich.text import Text

    from celeryctl.render.jsonout import dumps

    for r in replies:
        out.print(Text.assemble((safe(r["name"]), "bold"), f" ({method})"), highlight=False)
        out.print(dumps(r["reply"], indent=2), markup=False, highlight=False)
