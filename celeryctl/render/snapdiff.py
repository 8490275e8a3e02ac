"""`snapshot diff` as tables. Receives the finished diff; decides nothing."""

from __future__ import annotations

from typing import Any

from celeryctl.render.fit import Col, num, print_table
from celeryctl.render.tables import _v
from celeryctl.render.text import safe


def render_diff(out, d: dict[str, Any], *, wide: bool = False) -> None:
    b = d.get("brokers") or {}
    if b.get("same") is False:
        why = f" ({b['why']})" if b.get("why") else ""
        out.print(safe(f"warning: the snapshots come from different brokers: A {b['before']}, "
                       f"B {b['after']}{why}; the diff below compares two deployments, not "
                       f"one over time"), highlight=False)
    elif b.get("same") and b.get("why"):  # one server under two URLs: said, not warned
        out.print(safe(f"note: A {b['before']} and B {b['after']}: {b['why']}"),
                  highlight=False)
    out.print(f"{d['seconds_between']} s between the snapshots", highlight=False)
    if d["queues"]:
        cols = [Col("queue", kind="name"), Col("change", 2), num("ready before"),
                num("ready after"), num("delta"), Col("consumers", 1)]
        print_table(out, cols, [
            [safe(q["queue"]), q["change"], _v(q["ready_before"]), _v(q["ready_after"]),
             "-" if q["delta"] is None else f"{q['delta']:+d}",
             f"{_v(q['consumers_before'])} -> {_v(q['consumers_after'])}"]
            for q in d["queues"]], wide=wide, title="queues")
    for label, key in (("workers gone", "workers_gone"), ("workers new", "workers_new")):
        if d[key]:
            out.print(f"{label}: {', '.join(map(safe, d[key]))}", highlight=False)
    if d["settings_changed"]:
        cols = [Col("where", kind="name"), Col("setting", kind="wrap", min_width=16),
                Col("before", kind="wrap", min_width=12), Col("after", kind="wrap", min_width=12)]
        print_table(out, cols, [
            [safe(s["where"]), safe(s["setting"]), safe(repr(s["before"])),
             safe(repr(s["after"]))] for s in d["settings_changed"]],
            wide=wide, title="settings changed")
    _render_tasks(out, d.get("tasks") or {}, wide)
    for label, key in (("new findings", "findings_new"), ("resolved", "findings_resolved")):
        for f in d[key]:
            out.print(safe(f"{label}: {f['code']} {f['severity']} {f['subject']}: "
                           f"{f['message']}"), highlight=False, markup=False)
    for f in d["findings_changed"]:
        out.print(safe(f"severity changed: {f['code']} {f['subject']}: {f['before']} -> "
                       f"{f['after']}"), highlight=False, markup=False)
    t = d.get("tasks") or {}
    if not any(d[k] for k in ("queues", "workers_gone", "workers_new", "settings_changed",
                              "findings_new", "findings_resolved", "findings_changed")) \
            and not any(t.get(k) for k in ("started", "finished", "long_running_new")):
        out.print("no change", highlight=False)


def _render_tasks(out, t: dict[str, Any], wide: bool) -> None:
    from celeryctl.views import human_seconds

    if not t:
        return
    if not t.get("observed"):
        out.print(safe(f"tasks: not compared — {t.get('error')}"), highlight=False,
                  markup=False)
        return
    rows = [(label, r) for label, key in (("started", "started"), ("finished", "finished"),
                                          ("long-running", "long_running_new"))
            for r in t.get(key) or []]
    if rows:
        cols = [Col("change"), Col("id", kind="name"), Col("task", kind="wrap", min_width=12),
                Col("worker", 1, kind="wrap", min_width=12), num("runtime")]
        print_table(out, cols, [
            [label, safe(r["id"]), _v(r["name"]), _v(r["worker"]),
             human_seconds(r["runtime_seconds"])] for label, r in rows],
            wide=wide, title=f"tasks ({t['count_before']} held in A, {t['count_after']} in B)")
