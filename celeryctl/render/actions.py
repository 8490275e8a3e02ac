"""Plans and results of the guarded commands (purge, restore), as tables or JSON.
Receives finished plans; decides nothing."""

from __future__ import annotations

import sys
from typing import Any

from rich.text import Text

from celeryctl.render.fit import Col, num, print_table
from celeryctl.render.jsonout import dumps
from celeryctl.render.tables import _v
from celeryctl.render.text import buckets, safe


def _json(doc: dict[str, Any]) -> None:
    sys.stdout.write(dumps({"schema": 1, **doc}, indent=2) + "\n")


def plan_rows(plan) -> list[dict[str, Any]]:
    return [{"queue": i.queue, "ready": i.ready, "buckets": i.buckets,
             "in_flight_not_touched": i.unacked, "consumers": i.consumers,
             "consumer_workers": list(i.consumer_workers), "internal": i.internal,
             "first": [{"task": s.task, "id": s.id, "content_type": s.content_type,
                        "priority_step": s.priority_step} for s in i.samples]}
            for i in plan.items]


def _sample(s) -> str:
    """One first message: its task name and id, shown literally on one line."""
    task = "?" if s.task is None else safe(s.task)
    return f"{task} {safe(s.id)}" if s.id else task


def purge_plan_doc(plan, backup: str | None) -> dict[str, Any]:
    return {"broker": plan.broker, "vhost": plan.vhost, "queues": plan_rows(plan),
            "total": plan.total, "backup": backup, "refusals": plan.refusals}


def render_plan(c, plan, *, backup: str | None, sampled: bool, sample_note: str | None) -> None:
    """The plan (JSON: one document, printed by render_purge_json when the run ends). A
    refused purge deletes nothing: it prints its refusals (render_refusals), not a plan."""
    if c.fmt == "json" or plan.refusals:
        return
    c.out.print(f"purge plan on {safe(plan.broker)}"
                + (f" vhost {safe(plan.vhost)}" if plan.broker_kind != "redis" else ""),
                highlight=False)
    # render/fit: queue, ready, in flight and consumers always; then the first messages, the
    # consuming workers, the priority buckets as room allows (--wide: all)
    cols = [Col("queue", kind="name"), num("ready"), Col("by priority", 3), num("in flight (kept)"),
            num("consumers"), Col("consumed by", 2, kind="wrap", min_width=12),
            Col("first messages", 1, kind="wrap", min_width=20)]
    rows = []
    for i in plan.items:
        first = "\n".join(_sample(s) for s in i.samples) or \
            ("-" if sampled else "(not sampled)")
        rows.append([safe(i.queue), _v(i.ready), buckets(i.buckets), _v(i.unacked),
                     _v(i.consumers), ", ".join(safe(w) for w in i.consumer_workers) or "-",
                     first])
    if plan.items:
        print_table(c.out, cols, rows, wide=getattr(c, "wide", False))
    c.out.print(f"{plan.total} ready messages in {len(plan.items)} queue(s) would be deleted"
                + (f"; backup to {safe(backup)} first" if backup else "; no backup (--backup FILE)"),
                highlight=False)
    if not sampled and sample_note:
        c.err.print(safe(f"note: first messages not shown: {sample_note}"), highlight=False)


def render_refusals(c, refusals: list[str], *, nothing: str, others: list[str] = ()) -> None:
    """A refused action: each refusal, then that nothing was done — naming what would have
    been fine alone, since a refusal stops the whole command, not only its own subject."""
    for r in refusals:
        c.err.print(safe(f"refused: {r}"), highlight=False)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5
                                         else "")
        c.err.print(safe(f"{nothing}, not even {shown}: a refusal stops the whole command."),
                    highlight=False)
    else:
        c.err.print(f"{nothing}.", highlight=False)


def render_purge_json(c, plan, *, backup: str | None, result: list | None) -> None:
    """JSON mode: one document per run — the plan, and what was done (null: nothing)."""
    if c.fmt == "json":
        _json({"kind": "purge", "plan": purge_plan_doc(plan, backup), "result": result})


def render_purge_result(c, plan, results, after: dict[str, int | None], *,
                        backup: str | None) -> None:
    rows = [{"queue": r.queue, "purged": r.purged, "backed_up": r.backed_up if backup else None,
             "remaining": after.get(r.queue), "error": r.error, "put_back": r.put_back,
             "set_aside": r.set_aside, "interrupted": r.interrupted}
            for r in results]
    if c.fmt == "json":
        render_purge_json(c, plan, backup=backup, result=rows)
    else:
        for r in rows:
            line = f"{safe(r['queue'])}: purged {r['purged']}, remaining {_v(r['remaining'])}"
            if backup:
                line += f", backed up {r['backed_up']}"
            c.out.print(line, highlight=False)
            if r["error"]:
                if r["set_aside"]:
                    after_error = ""  # the error says where the messages are
                elif plan.broker_kind == "redis":
                    after_error = (f" — {r['put_back']} messages put back, nothing lost"
                                   if r["put_back"] else " — nothing was set aside")
                else:
                    after_error = " — messages not committed went back to the queue"
                c.err.print(f"error on {safe(r['queue'])}: {safe(r['error'])}{after_error}",
                            highlight=False)
        if backup:
            from celeryctl.invocation import command

            c.out.print(safe(f"backup: {backup}  ({command('restore', backup)})"),
                        highlight=False)


def render_set_aside(c, rows, refusals: list[str]) -> None:
    """`restore --set-aside`: what killed purges left set aside (a table, or one JSON doc)."""
    out = []
    for r in rows:
        a = r.arguments
        age = a.get("set_aside_seconds")
        out.append({"token": a.get("token"), "queue": a.get("purge_of"), "messages": r.ready,
                    "set_aside_seconds": age, "host": a.get("host"), "pid": a.get("pid"),
                    "backup": a.get("backup")})
    if c.fmt == "json":
        _json({"kind": "restore-set-aside", "set_aside": out, "refusals": refusals})
        return
    if not out:
        return
    from celeryctl.views import human_seconds

    # one block per purge, nothing truncated: the token is what --token takes
    c.out.print(safe(f"{len(out)} purge(s) left messages set aside on "
                     f"{c.target.broker_redacted}:"), highlight=False)
    for r in out:
        age = r["set_aside_seconds"]
        c.out.print(safe(f"  {r['queue']}: {_v(r['messages'])} messages, set aside "
                         f"{human_seconds(age)} ago by pid {r['pid']} on {r['host']}"),
                    highlight=False)
        c.out.print(safe(f"    token {r['token']}; backup {r['backup'] or '(none)'}"),
                    highlight=False)


def _lines(pairs: list[tuple[int, str]]) -> list[dict[str, Any]]:
    return [{"line": n, "why": why} for n, why in pairs]


def restore_file_doc(info) -> dict[str, Any]:
    """What the backup holds: intact messages, damaged lines, control lines, the end line."""
    return {"header": info.header, "complete": info.complete, "end": info.end,
            "messages": info.count, "bad_lines": _lines(info.bad),
            "markers": [{"line": n, **m} for n, m in info.markers],
            "after_end": info.after_end, "missing": info.missing, "notes": info.notes}


def render_restore_json(c, info, rows: list[dict[str, Any]], *, path: str,
                        result: dict[str, Any] | None) -> None:
    """JSON mode: one document per run — the plan and what was restored (null: nothing)."""
    if c.fmt == "json":
        _json({"kind": "restore", "file": path, **restore_file_doc(info), "queues": rows,
               "result": result})


_SHOW_BAD = 20


def render_restore_plan(c, info, rows: list[dict[str, Any]], *, path: str,
                        skipped: int = 0) -> None:
    if c.fmt == "json":
        return
    h = info.header
    c.out.print(safe(f"restore plan: {info.count - skipped} messages from {path} (purged from "
                     f"{h.get('broker')} at {h.get('created')}) to {c.target.broker_redacted}"),
                highlight=False)
    print_table(c.out, [Col("queue", kind="name"), num("messages"), num("ready now")],
                [[_v(r["queue"]), _v(r["messages"]), _v(r["ready now"])] for r in rows],
                wide=getattr(c, "wide", False))
    if not info.complete:
        c.err.print(f"warning: {path} has no end line: the purge that wrote it was killed or "
                    f"lost its broker; what it left is checked before restoring "
                    f"(docs/purge.md)", markup=False, highlight=False)
    elif isinstance(info.end, dict) and info.end.get("complete") is False:
        done = ", ".join(safe(q) for q in info.end.get("purged") or []) or "none"
        partly = ", ".join(safe(q) for q in info.end.get("partly_purged") or [])
        left = ", ".join(safe(q) for q in info.end.get("not_purged") or []) or "none"
        c.err.print(f"note: the purge that wrote {safe(path)} was stopped "
                    f"({safe(str(info.end.get('stopped')))}): it purged {done}"
                    + (f"; in part: {partly}" if partly else "")
                    + f"; left as they were: {left}. The file holds exactly what it deleted.",
                    markup=False, highlight=False)
    if info.bad:
        c.err.print(f"warning: {len(info.bad)} damaged line(s) cannot be restored (the "
                    f"others can):", markup=False, highlight=False)
        for n, why in info.bad[:_SHOW_BAD]:
            c.err.print(f"  line {n}: {why}", markup=False, highlight=False)
        if len(info.bad) > _SHOW_BAD:
            c.err.print(f"  ... and {len(info.bad) - _SHOW_BAD} more (--format json lists "
                        f"them all)", markup=False, highlight=False)
    for note in info.notes:
        c.err.print(f"warning: {note}", markup=False, highlight=False)


def render_restore_result(c, info, rows: list[dict[str, Any]], res, before: dict[str, Any],
                          after: dict[str, Any], *, path: str, error: str | None) -> None:
    """What was restored, per queue; what could not be (lines), and why."""
    result = {"queues": {q: {"restored": res.counts.get(q, 0), "ready_before": before.get(q),
                             "ready_after": after.get(q)} for q in [r["queue"] for r in rows]},
              "failed": _lines(res.failed), "user_id_dropped": res.user_id_dropped,
              "error": error, "last_line_restored": res.last_line if error else None}
    if c.fmt == "json":
        render_restore_json(c, info, rows, path=path, result=result)
        return
    for q, r in result["queues"].items():
        c.out.print(safe(f"restored {r['restored']} messages to {q}: ready "
                         f"{_v(r['ready_before'])} -> {_v(r['ready_after'])}"), highlight=False)
    short = [q for q, r in result["queues"].items() if r["ready_before"] is not None and
             r["ready_after"] is not None and r["ready_after"] - r["ready_before"] < r["restored"]]
    if short and not error:
        c.err.print(safe("warning: fewer ready messages than restored in " + ", ".join(short)
                         + " (workers may already be consuming them)"), highlight=False)
    if res.user_id_dropped:
        c.err.print(f"note: {res.user_id_dropped} message(s) carried a user_id other than the "
                    f"connecting user, which RabbitMQ refuses: published without it",
                    markup=False, highlight=False)
    for n, why in res.failed[:_SHOW_BAD]:
        c.err.print(safe(f"error: line {n}: {why}"), highlight=False)
    if len(res.failed) > _SHOW_BAD:
        c.err.print(f"error: ... and {len(res.failed) - _SHOW_BAD} more lines not restored",
                    markup=False, highlight=False)
    if error:
        c.err.print(safe(f"error: {error}"), highlight=False)
        c.err.print(f"the restore stopped: {res.restored} messages were sent"
                    + (f", up to line {res.last_line} of {path}" if res.last_line else "")
                    + "; the rest were not", markup=False, highlight=False)
    elif info.bad:
        c.err.print(f"{len(info.bad)} damaged line(s) of {path} were not restored (listed "
                    f"above)", markup=False, highlight=False)


def render_control_plan(c, plan) -> None:
    """The plan, before anything is sent (tables only: JSON prints one document at the end).
    A refused command sends nothing: its refusals are the output, not a plan."""
    if c.fmt == "json" or plan.refusals:
        return
    where = (", ".join(safe(d) for d in plan.destination) if plan.destination
             else f"every worker ({len(plan.targets)} answering)")
    args = " ".join(f"{safe(k)}={safe(v)}" for k, v in plan.arguments.items())
    c.out.print(f"control {safe(plan.command)}{' ' + args if args else ''} -> {where}",
                highlight=False)
    for d in plan.disruptive:
        c.out.print(safe(f"  disruptive: {d}"), highlight=False)
    for n in plan.notes:
        c.out.print(safe(f"  note: {n}"), highlight=False)


def render_control_result(c, plan, rows: list[dict[str, Any]] | None) -> None:
    """One row per worker: answered or not, its reply, and what it reports afterwards.
    `rows` None: nothing was sent (dry run, refusal)."""
    if c.fmt == "json":
        _json({"kind": "control", "command": plan.command, "method": plan.method,
               "arguments": plan.arguments, "destination": plan.destination,
               "targets": plan.targets, "disruptive": plan.disruptive, "notes": plan.notes,
               "refusals": plan.refusals, "sent": rows is not None, "workers": rows})
        return
    if rows is None:
        return
    verify = any("after" in r for r in rows)
    # the result (the error, when there is one) is never hidden: a long worker name folds
    cols = [Col("worker", kind="name"), Col("answered"),
            Col("result", kind="wrap", min_width=32)]
    if verify:
        cols.append(Col("after", 2, kind="wrap", min_width=16))
    cells_rows = []
    for r in rows:  # names and replies are data: Text, never markup
        answered = {True: Text("yes"), False: Text("no", style="red"),
                    None: Text("-")}[r["answered"]]
        result = Text(safe(r["result"]), style="" if r["ok"] else "red")
        if not r["targeted"]:
            result.append(" (not targeted)")
        cells = [Text(safe(r["worker"])), answered, result]
        if verify:
            cells.append(Text(safe(r.get("after", "-")),
                              style="" if r.get("took_effect", True) else "yellow"))
        cells_rows.append(cells)
    print_table(c.out, cols, cells_rows, wide=getattr(c, "wide", False))


def render_kill_json(c, plan, rows: list[dict[str, Any]] | None) -> None:
    """JSON mode: one document per run — the plan and what was done (null: nothing)."""
    from celeryctl.views import connection_row

    if c.fmt == "json":
        _json({"kind": "connections-kill", "close": [connection_row(x) for x in plan.selected],
               "protected": [{**connection_row(x), "reason": why} for x, why in plan.protected],
               "refusals": plan.refusals, "connections": rows})


def render_kill_plan(c, plan) -> None:
    if c.fmt == "json" or plan.refusals:  # refused: the refusals are the output
        return

    from celeryctl.render.tables import human_seconds

    cols = [Col("address", kind="name"), Col("name", 4, kind="wrap", min_width=12),
            Col("role", 2), num("idle"), num("age", 3), Col("worker", kind="name"),
            Col("action", kind="wrap", min_width=12)]
    rows = [[_v(x.address), _v(x.name), _v(x.role), human_seconds(x.idle_seconds),
             human_seconds(x.age_seconds), _v(x.worker), Text("close", style="red")]
            for x in plan.selected]
    rows += [[_v(x.address), _v(x.name), _v(x.role), human_seconds(x.idle_seconds),
              human_seconds(x.age_seconds), _v(x.worker), safe(f"keep: {why}")]
             for x, why in plan.protected]
    if rows:
        print_table(c.out, cols, rows, wide=getattr(c, "wide", False))
    c.out.print(f"{len(plan.selected)} connection(s) would be closed, "
                f"{len(plan.protected)} kept", highlight=False)


def render_kill_result(c, plan, rows: list[dict[str, Any]]) -> None:
    if c.fmt == "json":
        render_kill_json(c, plan, rows)
        return
    for r in rows:
        c.out.print(safe(f"{r['address']}: {r['result']}"), highlight=False)
