"""`celeryctl events`: the live screen, the final tables and the Prometheus/OpenMetrics text.
Receives the aggregator's summary (celeryctl/events/agg.py) and decides nothing."""

from __future__ import annotations

import math
from typing import Any

from celeryctl.render.fit import Col, build, num, print_table
from celeryctl.render.text import literal, safe


def _s(v: float | None) -> str:
    """Seconds, short: 12ms, 1.2s, 3m05s."""
    if v is None:
        return "-"
    if v < 1:
        return f"{v * 1000:.0f}ms"
    if v < 60:
        return f"{v:.1f}s"
    m, s = divmod(int(round(v)), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _n(v: Any) -> str:
    return "-" if v is None else str(v)


TASK_COLS = [Col("task", kind="name"), num("recv"), num("ok"), num("fail"), num("retry", 1),
             num("fail %"), num("p50", 1), num("p95", 2), num("p99", 3), num("max", 2),
             num("wait p95", 2), num("running", 1), num("rej", 4), num("revk", 4),
             num("started", 4)]


def task_cells(t: dict[str, Any]) -> list[Any]:
    rt, w = t.get("runtime") or {}, t.get("wait") or {}
    return [literal(t["name"]), _n(t["received"]), _n(t["succeeded"]), _n(t["failed"]),
            _n(t["retried"]), _pct(t["failure_ratio"]), _s(rt.get("p50")), _s(rt.get("p95")),
            _s(rt.get("p99")), _s(rt.get("max")), _s(w.get("p95")), _n(t["unfinished_count"]),
            _n(t["rejected"]), _n(t["revoked"]), _n(t["started"])]


WORKER_COLS = [Col("worker", kind="name"), num("tasks/s"), num("events"), num("heartbeat"),
               num("drift", 1), num("gaps", 2), num("ooo", 3), Col("events were", 1),
               Col("restored", 1)]


def worker_cells(w: dict[str, Any]) -> list[Any]:
    hb = w.get("heartbeat_age_seconds")
    hb_text = "-" if hb is None else _s(hb) + (" LATE" if w.get("heartbeat_late") else "")
    were = w.get("events_were_enabled")
    restored = w.get("restored")
    return [literal(w["name"]), _n(w.get("tasks_per_second")), _n(w.get("events")), hb_text,
            _s(abs(w["clock_drift_seconds"])) if w.get("clock_drift_seconds") is not None
            else "-", _n(w.get("clock_gaps")), _n(w.get("out_of_order")),
            "-" if were is None else ("on" if were else "off"),
            "-" if restored is None else ("yes" if restored else "NO")]


def render_screen(summary: dict[str, Any], header: dict[str, Any], height: int, width: int,
                  *, wide: bool = False):
    """The live screen: header, the task table (as many rows as fit), the worker table."""
    from rich.console import Group
    from rich.text import Text

    left = max(0.0, header["window"] - (summary.get("window_seconds") or 0))
    o = summary["overall"]
    lines = [
        Text.assemble(("celeryctl events", "bold"), safe(f"  {header['broker']}  "),
                      f"{summary['window_seconds'] or 0:.0f}/{header['window']:g} s, "
                      f"{_s(left)} left"),
        Text(f"received {o['received']}  ok {o['succeeded']}  failed {o['failed']} "
             f"({_pct(o['failure_ratio'])})  retried {o['retried']}  running "
             f"{o['unfinished_count']}  events {summary['events']['counted']}"),
    ]
    for note in header.get("notes", []):
        lines.append(Text(safe(note), style="dim"))
    tasks = sorted(summary["tasks"], key=lambda t: -(t["received"] + t["succeeded"]
                                                       + t["failed"]))
    workers = summary["workers"]
    room = max(1, height - len(lines) - len(workers) - 10)
    t1, lay1 = build(TASK_COLS, [task_cells(t) for t in tasks[:room]], width, wide=wide)
    parts: list[Any] = [*lines, t1]
    if len(tasks) > room:
        parts.append(Text(f"... {len(tasks) - room} more task names (--task PATTERN)",
                          style="dim"))
    if not tasks:
        parts.append(Text("no task events yet", style="dim"))
    t2, lay2 = build(WORKER_COLS[:7], [worker_cells(w)[:7] for w in workers], width,
                     wide=wide)
    parts.append(t2)
    note = lay1.note or lay2.note
    if note:
        parts.append(Text(note, style="dim"))
    return Group(*parts)


def render_final(out, err, summary: dict[str, Any], *, wide: bool = False) -> None:
    """The tables printed when the window ends (stdout), and its notes (stderr)."""
    from rich.text import Text

    tasks = sorted(summary["tasks"], key=lambda t: t["name"])
    print_table(out, TASK_COLS, [task_cells(t) for t in tasks], wide=wide,
                title=f"Tasks in {summary['window_seconds'] or 0:g} s")
    if not tasks:
        out.print("no task events in the window", highlight=False)
    rows = []
    for t in tasks:
        for e in t["exceptions"]:
            rows.append([literal(t["name"]), literal(e["type"]), str(e["count"]),
                         literal(e["example"])])
    if rows:
        print_table(out, [Col("task", kind="name"), Col("exception", 1), num("count"),
                          Col("example", 2, kind="wrap", max_lines=2)], rows, wide=wide,
                    title="Exceptions")
    running = [[literal(t["name"]), literal(u["id"]), literal(u["worker"] or "-"),
                _s(u["age_seconds"])] for t in tasks for u in t["unfinished"]]
    if running:
        print_table(out, [Col("task", kind="name"), Col("id", 1), Col("worker", 2),
                          num("age")], running, wide=wide,
                    title="Started in the window, not finished")
    print_table(out, WORKER_COLS, [worker_cells(w) for w in summary["workers"]], wide=wide,
                title="Workers")
    for n in summary.get("notes", []):
        err.print(Text(safe(n), style="dim"), highlight=False)


# --- Prometheus / OpenMetrics ------------------------------------------------------------

def _label(v: Any) -> str:
    from celeryctl.render.prometheus import label_value

    return label_value(v)


def _num(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v)) if abs(v) < 1e15 \
        else repr(float(v))


def prometheus(summary: dict[str, Any]) -> str:
    """OpenMetrics text: counters per task and event kind, failure/retry ratios, runtime and
    wait histograms (cumulative `le` buckets; wait buckets go up to 30 minutes), per-worker
    gauges. Ends with `# EOF`. Needs `summary(histograms=True)`."""
    lines: list[str] = []

    def fam(name: str, kind: str, help_: str) -> None:
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"# HELP {name} {help_}")

    fam("celeryctl_events_window_seconds", "gauge", "Length of the observation window.")
    lines.append(f"celeryctl_events_window_seconds {summary['window_seconds'] or 0}")
    fam("celeryctl_task_events", "counter", "Task events seen in the window, by task and kind.")
    for t in summary["tasks"]:
        for k in ("received", "started", "succeeded", "failed", "retried", "rejected",
                  "revoked"):
            lines.append(f'celeryctl_task_events_total{{task="{_label(t["name"])}",'
                         f'kind="{k}"}} {t[k]}')
    def gauges(rows: list[dict[str, Any]], label: str, specs: tuple[tuple[str, str, str], ...]
               ) -> None:
        """One gauge family per (metric, key, help); a sample per row whose key is known."""
        for metric, key, help_ in specs:
            fam(metric, "gauge", help_)
            for r in rows:
                if r.get(key) is not None:
                    lines.append(f'{metric}{{{label}="{_label(r["name"])}"}} {r[key]}')

    gauges(summary["tasks"], "task", (
        ("celeryctl_task_failure_ratio", "failure_ratio",
         "failed / (succeeded + failed) in the window."),
        ("celeryctl_task_retry_ratio", "retry_ratio",
         "retried / (succeeded + failed + retried) in the window.")))
    for metric, key, help_ in (
            ("celeryctl_task_runtime_seconds", "runtime",
             "Task runtime (task-succeeded runtime)."),
            ("celeryctl_task_wait_seconds", "wait",
             "Time from task-received to task-started on the worker.")):
        fam(metric, "histogram", help_)
        for t in summary["tasks"]:
            h = (t.get("histograms") or {}).get(key)
            if h is None or not h.count:
                continue
            lab = f'task="{_label(t["name"])}"'
            for le, c in h.cumulative():
                lines.append(f'{metric}_bucket{{{lab},le="{_num(le)}"}} {c}')
            lines.append(f"{metric}_sum{{{lab}}} {round(h.sum, 6)}")
            lines.append(f"{metric}_count{{{lab}}} {h.count}")
    gauges(summary["tasks"], "task", (
        ("celeryctl_task_unfinished", "unfinished_count",
         "Tasks started in the window, not finished."),))
    gauges(summary["workers"], "worker", (
            ("celeryctl_worker_tasks_per_second", "tasks_per_second",
             "Tasks finished per second in the window."),
            ("celeryctl_worker_heartbeat_age_seconds", "heartbeat_age_seconds",
             "Seconds since the worker's last heartbeat event."),
            ("celeryctl_worker_clock_drift_seconds", "clock_drift_seconds",
             "Smallest receive time minus event timestamp (clock drift plus transit)."),
            ("celeryctl_worker_clock_gaps", "clock_gaps",
             "Gaps in the worker's logical clock (events possibly lost).")))
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
