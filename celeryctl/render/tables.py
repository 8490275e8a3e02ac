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


def render_workers(out, rows: list[dict[str, Any]], *, wide: bool = False) -> None:
    """The worker's name and the numbers an operator reads first (ok, concurrency, active,
    reserved) are always shown whole; the rest drop out as the terminal narrows: processed,
    prefetch, scheduled first, then the Celery version, max RSS, uptime, the pool, and the
    queues last (`--wide` or `--format json` for every field)."""
    from celeryctl.render.fit import Col, num, print_table

    versions = any(r.get("celery_version") for r in rows)
    cols = [
        (Col("worker", kind="name"), "name"),
        (Col("ok"), "ok"),
        *([(Col("celery", 4), "celery_version")] if versions else []),
        (Col("pool", 2), "pool"),
        (num("conc"), "concurrency"),
        (num("active"), "active"),
        (num("reserved"), "reserved"),
        (num("sched", 5), "scheduled"),
        (num("prefetch", 5), "prefetch_count"),
        (num("processed", 5), "processed"),
        (num("uptime", 3), "uptime_seconds"),
        (num("max rss", 3), "max_rss_kb"),
        (Col("queues", 1, kind="wrap", min_width=12), "queues"),
    ]
    cells = []
    for r in rows:
        line = []
        for _col, key in cols:
            v = r.get(key)
            if key == "ok":
                line.append("yes" if v else "NO")
            elif key == "uptime_seconds":
                line.append(human_seconds(v))
            elif key == "max_rss_kb":
                line.append(human_kb(v))
            elif key == "queues":
                line.append(", ".join(safe(q) for q in v) if v is not None
                            else _v(r["error"] or None))
            else:
                line.append(_v(v))
        cells.append(line)
    print_table(out, [c for c, _ in cols], cells, wide=wide,
                row_styles=[None if r["ok"] else "red" for r in rows])


def _queue_name(r: dict[str, Any]) -> str:
    return (safe(r["name"]) + (" (internal)" if r["internal"] else "")
            + ("" if r["exists"] else " (missing)"))


def render_queues(out, rows: list[dict[str, Any]], broker: str, *, wide: bool = False) -> None:
    """Queue, ready, unacked and consumers always; the rest (priority buckets, oldest
    unacked, rates, type) as room allows."""
    from celeryctl.render.fit import Col, num, print_table

    redis = broker == "redis"
    cols = [Col("queue", kind="name"), num("ready")]
    if redis:
        cols.append(Col("by priority", 2))
    cols.append(num("unacked"))
    if redis:
        cols.append(num("oldest unacked", 1))
    cols.append(num("consumers"))
    if not redis:
        cols += [num("in/s", 1), num("out/s", 1), Col("type", 3)]
    cells = []
    for r in rows:
        line = [_queue_name(r), _v(r["ready"])]
        if redis:
            line.append(buckets(r["buckets"]))
        line.append(_v(r["unacked"]))
        if redis:
            line.append(human_seconds(r["oldest_unacked_seconds"]))
        line.append(_v(r["consumers"]))
        if not redis:
            line += [_v(r["publish_rate"]), _v(r["deliver_rate"]), _v(r["type"])]
        cells.append(line)
    print_table(out, cols, cells, wide=wide,
                row_styles=["red" if r["error"] else None for r in rows])


def render_connections(out, rows: list[dict[str, Any]], broker: str, *,
                       wide: bool = False) -> None:
    """The address (the connection), how long it idles and whose it is (the worker: folded
    when too long, never hidden) first; role, age, command/state, client name and
    db/heartbeat as room allows."""
    from celeryctl.render.fit import Col, num, print_table

    redis = broker == "redis"
    # the worker is a key column: a long worker name folds, it never hides the others
    cols = [Col("address", kind="name"), Col("name", 5, kind="wrap", min_width=12),
            Col("role", 2), num("age", 3), num("idle"), Col("cmd" if redis else "state", 4),
            num("db" if redis else "heartbeat", 5), Col("worker", kind="name")]
    cells = []
    for r in rows:
        worker = ("other db (another app)" if r.get("other_db") else
                  _v(r["worker"]) + (f" ({r['worker_match']})" if r["worker_match"] and
                                     r["worker_match"] != "exact" else ""))
        cells.append([_v(r["address"]), _v(r["name"]), _v(r["role"]),
                      human_seconds(r["age_seconds"]), human_seconds(r["idle_seconds"]),
                      _v(r["command"]), _v(r["db"] if redis else r["heartbeat_seconds"]),
                      worker])
    print_table(out, cols, cells, wide=wide,
                row_styles=["dim" if r.get("other_db") else None for r in rows])


def render_replies(out, method: str, replies: list[dict[str, Any]]) -> None:
    from rich.text import Text

    from celeryctl.render.jsonout import dumps

    for r in replies:
        out.print(Text.assemble((safe(r["name"]), "bold"), f" ({method})"), highlight=False)
        out.print(dumps(r["reply"], indent=2), markup=False, highlight=False)
