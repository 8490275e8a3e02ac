"""Guarded commands that change the cluster: `purge`, `restore` (and `control`,
`connections kill`). Each: plan -> show -> confirm (`--confirm`, typed, or `--yes`) -> act ->
re-read -> audit. Without `--confirm` they are dry runs and change nothing.

Exit status: 0 done (or dry run), 2 the action failed part-way (what was and was not done is
printed; nothing is lost), 3 the broker could not be reached, 64 refused (unknown or unsafe
target, no confirmation) — nothing was changed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from celeryctl.cli import options as o
from celeryctl.status import ExitStatus

Confirm = typer.Option(False, "--confirm", help="Act (without it: a dry run that changes "
                       "nothing). On a terminal, asks you to type the name or count.",
                       rich_help_panel="Guard")
Yes = typer.Option(False, "--yes", "-y", help="With --confirm: skip the typed prompt "
                   "(runbooks, scripts).", rich_help_panel="Guard")
AuditLog = typer.Option(None, "--audit-log", metavar="PATH", help="Audit log [default "
                        "~/.local/state/celeryctl/audit.log].", rich_help_panel="Guard")


def action_ctx(ctx, fmt, broker, rabbitmq_api, vhost, timeout, app_, profile,
               rabbitmq_api_ca=None):
    """The Ctx of a guarded command: broker-side only (no result backend, no --queue).
    Every action (purge, restore, control, connections kill) starts here, so here is where
    one without an explicit broker is refused, before anything is contacted."""
    from celeryctl.cli.read import Ctx

    return Ctx(ctx, fmt, action=True, broker=broker, result_backend=None,
               rabbitmq_api=rabbitmq_api, vhost=vhost, queue=None, timeout=timeout, app=app_,
               profile=profile, rabbitmq_api_ca=rabbitmq_api_ca)


def _guard(c, names: list[str], noun: str, confirm: bool, yes: bool) -> bool:
    """True to act; False for a dry run. Raises typer.Exit(64) when refused."""
    from celeryctl.actions.guard import Decision, confirmation_token, decide

    d = decide(confirm=confirm, yes=yes, interactive=sys.stdin.isatty())
    if d is Decision.DRY_RUN:
        c.err.print(f"dry run: nothing changed. Add --confirm to go ahead"
                    f"{' (and --yes in scripts)' if not sys.stdin.isatty() else ''}.")
        return False
    if d is Decision.REFUSE:
        c.err.print("refused: --confirm needs a terminal to type the confirmation, or --yes "
                    "for scripts. Nothing changed.")
        raise typer.Exit(int(ExitStatus.USAGE))
    if d is Decision.PROMPT:
        token, question = confirmation_token(names, noun)
        sys.stderr.write(question)
        sys.stderr.flush()
        answer = sys.stdin.readline().strip()
        if answer != token:
            c.err.print(f"not confirmed (expected {token!r}): nothing changed.")
            raise typer.Exit(int(ExitStatus.USAGE))
    return True


def _audit(c, audit_log: str | None, command: str, result: str, subjects: list[str],
           counts: dict[str, Any], **extra: Any) -> None:
    from celeryctl.actions.guard import audit

    err = audit(Path(audit_log) if audit_log else None, target=c.target.broker_url,
                command=command, result=result, subjects=subjects, counts=counts, extra=extra)
    if err:
        c.err.print(f"warning: could not append to the {err}")


def _depths(c, names: list[str]) -> dict[str, Any] | None:
    """The named queues as they are now: name -> QueueDepth; None when the broker could not
    be reached (the reason is printed). On RabbitMQ
    from AMQP passive declares: the management API's counts lag by its statistics interval
    (5 s by default) and would show the old depth."""
    import dataclasses

    from celeryctl.collect import gather

    if c.target.broker_kind != "redis":
        from celeryctl.collect.rabbitmq import collect_amqp_queues

        try:
            qs = collect_amqp_queues(c.target.broker, c.target.timeout,
                                     c.target.effective_vhost, names)
        except (ConnectionError, OSError) as exc:
            c.err.print(f"unreachable: broker {c.target.broker_redacted}: {exc}",
                        highlight=False)
            return None
    else:
        g = gather(dataclasses.replace(c.target, queues=tuple(names)), queues=True)
        if not g.queues.ok:
            c.footer(g)
            return None
        qs = g.queues.value
    return {q.name: q for q in qs if q.name in names}


def _ready(depths: dict[str, Any] | None, names: list[str]) -> dict[str, int | None]:
    return {n: depths[n].ready if depths and n in depths else None for n in names}


def _reread(c, names: list[str]) -> dict[str, int | None]:
    return _ready(_depths(c, names), names)


def register(app: typer.Typer) -> None:
    from celeryctl.cli.read import connections_app

    app.command("purge")(purge)
    app.command("restore")(restore)
    connections_app.command("kill")(kill)


def purge(
    ctx: typer.Context,
    queues: list[str] = typer.Argument(None, metavar="[QUEUE]...", help="Queues to purge."),
    all_worker_queues: bool = typer.Option(False, "--all-worker-queues", help="Every queue "
                                           "the live workers consume (from active_queues)."),
    confirm: bool = Confirm, yes: bool = Yes, audit_log: str | None = AuditLog,
    backup: str | None = typer.Option(None, "--backup", metavar="FILE", help="Write every "
                                      "purged message to FILE (JSON Lines) before deleting."),
    force: bool = typer.Option(False, "--force", help="Purge even with consumers attached."),
    include_internal: bool = typer.Option(False, "--include-internal", help="Allow Celery's "
                                          "internal queues (pidbox, celeryev, results)."),
    sample: int = typer.Option(3, "--sample", min=0, max=100, help="First messages to show "
                               "per queue (task and id from headers)."),
    peek: bool = typer.Option(False, "--peek", help="RabbitMQ: show the first messages too "
                              "(the management API marks them redelivered)."),
    broker: o.Broker = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None, vhost: o.Vhost = None,
    timeout: o.Timeout = None, app_: o.App = None, profile: o.Profile = None,
    fmt: o.Format = "table",
) -> None:
    """Delete the ready messages of queues — a dry run unless --confirm; --backup first."""
    import dataclasses

    from celeryctl.actions.purge import plan_purge, worker_queues
    from celeryctl.collect import gather
    from celeryctl.render.actions import render_plan
    from celeryctl.status import UsageError

    c = action_ctx(ctx, fmt, broker, rabbitmq_api, vhost, timeout, app_, profile,
                   rabbitmq_api_ca)
    if not queues and not all_worker_queues:
        raise UsageError("name the queues to purge, or pass --all-worker-queues")
    bpath = Path(backup).expanduser() if backup else None
    if bpath is not None and bpath.exists():
        raise UsageError(f"{bpath} exists: celeryctl never overwrites a backup")
    t = dataclasses.replace(c.target, queues=tuple(queues or ()))
    g = gather(t, workers=("active_queues",), queues=True, samples=sample, peek=peek)
    if not g.queues.ok:
        c.footer(g)
        raise typer.Exit(int(ExitStatus.UNKNOWN))
    names = list(queues or [])
    if all_worker_queues:
        if not g.workers.ok or not g.workers.value.nodes:
            c.err.print("--all-worker-queues: no worker replied, so their queues are unknown; "
                        "name the queues instead. Nothing changed.")
            raise typer.Exit(int(ExitStatus.USAGE))
        names += [q for q in worker_queues(g.workers.value) if q not in names]
    plan = plan_purge(names, g.queues.value, broker=c.target.broker_redacted,
                      broker_kind=c.target.broker_kind, vhost=c.target.effective_vhost,
                      samples=g.samples.value if g.samples.ok else None,
                      force=force,
                      include_internal=include_internal)
    render_plan(c, plan, backup=str(bpath) if bpath else None,
                sampled=g.samples.ok, sample_note=None if g.samples.ok else g.samples.error)
    from celeryctl.render.actions import render_purge_json

    if plan.refusals:
        for r in plan.refusals:
            c.err.print(f"refused: {r}")
        c.err.print("nothing changed.")
        render_purge_json(c, plan, backup=str(bpath) if bpath else None, result=None)
        _audit(c, audit_log, "purge", "refused", names, {}, reasons=plan.refusals)
        raise typer.Exit(int(ExitStatus.USAGE))
    if not _guard(c, plan.names, "queue", confirm, yes):
        render_purge_json(c, plan, backup=str(bpath) if bpath else None, result=None)
        raise typer.Exit(0)
    results, error = _execute_purge(c, plan, bpath)
    after = _reread(c, plan.names)
    from celeryctl.render.actions import render_purge_result

    render_purge_result(c, plan, results, after, backup=str(bpath) if bpath else None)
    counts = {r.queue: {"purged": r.purged, "backed_up": r.backed_up, "remaining":
                        after.get(r.queue)} for r in results}
    failed = error or next((r.error for r in results if r.error), None)
    _audit(c, audit_log, "purge" + (f" --backup {bpath}" if bpath else ""),
           "failed: " + failed if failed else "ok", plan.names, counts)
    raise typer.Exit(int(ExitStatus.CRITICAL if failed else ExitStatus.OK))


def _action_error(exc: BaseException) -> str:
    """One line for an action that failed: what kind of failure (permission denied names the
    account that may do it), never a traceback. An unexpected error is re-raised."""
    from celeryctl.collect.errors import DENIED, FAILED, classify

    kind, text = classify(exc)
    if kind == FAILED:
        raise exc
    if kind == DENIED:
        text += " (the operator account of docs/permissions.md may do this)"
    return text


def _execute_purge(c, plan, bpath: Path | None):
    from celeryctl.actions.backup import BackupError, BackupWriter

    writer = None
    if bpath is not None:
        writer = BackupWriter(bpath)
        try:
            writer.open({"broker": plan.broker, "broker_kind": plan.broker_kind,
                         "vhost": plan.vhost, "queues": plan.names, "planned": plan.total})
        except BackupError as exc:
            c.err.print(f"error: {exc}. Nothing was deleted.")
            raise typer.Exit(int(ExitStatus.CRITICAL)) from None
    results: list = []
    error = None
    try:
        if plan.broker_kind == "redis":
            results = _purge_redis(c, plan, writer)
        else:
            results = _purge_rabbit(c, plan, writer)
    except Exception as exc:  # noqa: BLE001 - a refusal or a lost broker, said as such
        error = _action_error(exc)
        c.err.print(f"error: {error}", markup=False, highlight=False)
    finally:
        if writer is not None:
            if error or any(r.error for r in results):
                writer.close()  # no end line: the file shows it was cut short
            else:
                writer.finish()
    return results, error


def _purge_redis(c, plan, writer):
    from celeryctl.actions.purge import purge_redis
    from celeryctl.collect.redis import connect_first, detect_layout

    client, _ = connect_first(c.target.broker, c.target.timeout, c.target.transport_options)
    layout, _ = detect_layout(client, c.target.transport_options)
    results = []
    for item in plan.items:
        r = purge_redis(client, layout, item.queue, writer)
        results.append(r)
        if r.error:
            break  # stop at the first failure: later queues stay untouched
    return results


def _purge_rabbit(c, plan, writer):
    from celeryctl.actions.purge import PurgeResult, purge_rabbit_amqp, purge_rabbit_api
    from celeryctl.collect.rabbitmq import ManagementAPI, ManagementError, amqp_connect

    results = []
    if writer is None and c.target.rabbitmq_api is not None:
        api = ManagementAPI(c.target.rabbitmq_api, c.target.timeout)
        try:
            for item in plan.items:
                try:
                    purge_rabbit_api(api, c.target.effective_vhost, item.queue)
                    results.append(PurgeResult(item.queue, purged=item.ready or 0))
                except ManagementError as exc:
                    results.append(PurgeResult(item.queue, error=str(exc)))
                    break
        finally:
            api.close()
        return results
    conn, _ = amqp_connect(c.target.broker, c.target.timeout, c.target.effective_vhost,
                           name="celeryctl purge")
    try:
        for item in plan.items:
            ch = conn.channel()
            r = purge_rabbit_amqp(ch, item.queue, item.ready or 0, writer)
            results.append(r)
            if r.error:
                break
            if ch.is_open:
                ch.close()
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
    return results


def restore(
    ctx: typer.Context,
    file: str = typer.Argument(..., metavar="FILE", help="A backup written by purge --backup."),
    to: str | None = typer.Option(None, "--to", metavar="QUEUE", help="Restore every message "
                                  "into this queue instead of its own."),
    confirm: bool = Confirm, yes: bool = Yes, audit_log: str | None = AuditLog,
    broker: o.Broker = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None, vhost: o.Vhost = None,
    timeout: o.Timeout = None, app_: o.App = None, profile: o.Profile = None,
    fmt: o.Format = "table",
) -> None:
    """Republish a purge backup in its original order and priorities — a dry run unless
    --confirm."""
    from celeryctl.actions.backup import BackupError, inspect_backup
    from celeryctl.status import UsageError

    c = action_ctx(ctx, fmt, broker, rabbitmq_api, vhost, timeout, app_, profile,
                   rabbitmq_api_ca)
    path = Path(file).expanduser()
    try:
        info = inspect_backup(path)
    except BackupError as exc:
        raise UsageError(str(exc)) from None
    targets = {to: info.count} if to else dict(info.per_queue)
    now = _depths(c, list(targets))
    if now is None:
        raise typer.Exit(int(ExitStatus.UNKNOWN))
    before = _ready(now, list(targets))
    if c.target.broker_kind != "redis":
        missing = [q for q in targets if q not in now or not now[q].exists]
        if missing:
            c.err.print(f"refused: no queue {', '.join(missing)} in vhost "
                        f"{c.target.effective_vhost}: RabbitMQ would drop messages published "
                        f"to it. Declare it first (start a worker consuming it). "
                        f"Nothing changed.")
            raise typer.Exit(int(ExitStatus.USAGE))
    rows = [{"queue": q, "messages": n, "ready now": before.get(q)} for q, n in targets.items()]
    from celeryctl.render.actions import render_restore_json, render_restore_plan

    render_restore_plan(c, info, rows, path=str(path))
    if not info.complete:
        c.err.print(f"warning: {path} has no end line: the purge that wrote it stopped early; "
                    f"its {info.count} messages are all it deleted")
    if info.count == 0:
        c.err.print("nothing to restore.")
        render_restore_json(c, info, rows, path=str(path), result=None)
        raise typer.Exit(0)
    if not _guard(c, list(targets), "queue", confirm, yes):
        render_restore_json(c, info, rows, path=str(path), result=None)
        raise typer.Exit(0)
    try:
        counts = _execute_restore(c, path, to)
    except Exception as exc:  # noqa: BLE001 - a refusal or a lost broker, said as such
        why = str(exc) if isinstance(exc, BackupError) else _action_error(exc)
        c.err.print(f"error: {why}", markup=False, highlight=False)
        _audit(c, audit_log, f"restore {path}", f"failed: {why}", list(targets), {})
        raise typer.Exit(int(ExitStatus.CRITICAL)) from None
    after = _reread(c, list(targets))
    short = {q: n for q, n in counts.items() if before.get(q) is not None and after.get(q)
             is not None and after[q] - before[q] < n}
    if c.fmt == "json":
        render_restore_json(c, info, rows, path=str(path), result={
            q: {"restored": n, "ready_before": before.get(q), "ready_after": after.get(q)}
            for q, n in counts.items()})
    for q, n in counts.items():
        if c.fmt != "json":
            c.out.print(f"restored {n} messages to {q}: ready {before.get(q)} -> "
                        f"{after.get(q)}")
    if short:
        c.err.print("warning: fewer ready messages than restored in "
                    + ", ".join(short) + " (workers may already be consuming them)")
    _audit(c, audit_log, f"restore {path}" + (f" --to {to}" if to else ""), "ok",
           list(counts), {q: {"restored": n, "ready_after": after.get(q)}
                          for q, n in counts.items()})
    raise typer.Exit(0)


def _execute_restore(c, path: Path, to: str | None) -> dict[str, int]:
    from celeryctl.actions.restore import restore_rabbit, restore_redis

    if c.target.broker_kind == "redis":
        from celeryctl.collect.redis import connect_first, detect_layout

        client, _ = connect_first(c.target.broker, c.target.timeout, c.target.transport_options)
        layout, _ = detect_layout(client, c.target.transport_options)
        return restore_redis(client, layout, path, to)
    from celeryctl.collect.rabbitmq import amqp_connect

    conn, _ = amqp_connect(c.target.broker, c.target.timeout, c.target.effective_vhost,
                           name="celeryctl restore")
    try:
        ch = conn.channel()
        counts = restore_rabbit(ch, path, to)
        ch.close()  # a synchronous round trip: every publish before it reached the broker
    finally:
        conn.close()
    return counts


def kill(
    ctx: typer.Context,
    idle_over: float | None = typer.Option(None, "--idle-over", metavar="SECONDS", min=0,
                                           help="Connections idle at least this long."),
    address: list[str] = typer.Option(None, "--address", metavar="HOST[:PORT]",
                                      help="Only this peer (repeatable). The exact HOST:PORT "
                                      "of a consumer closes it even so."),
    name: list[str] = typer.Option(None, "--name", metavar="NAME", help="Only clients with "
                                   "this name (glob; repeatable). An exact name of a consumer "
                                   "closes it even so."),
    confirm: bool = Confirm, yes: bool = Yes, audit_log: str | None = AuditLog,
    broker: o.Broker = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None, vhost: o.Vhost = None,
    timeout: o.Timeout = None, app_: o.App = None, profile: o.Profile = None,
    fmt: o.Format = "table",
) -> None:
    """Close stale broker connections (Redis CLIENT KILL ID, RabbitMQ management API) — never
    a live consumer unless named by its exact address — a dry run unless --confirm.

    Exit status: 0 closed (or dry run, or nothing matched), 2 some could not be closed, 3 the
    broker (or management API) could not be read, 64 refused."""
    from celeryctl.actions.kill import KillFilters, plan_kill
    from celeryctl.collect import gather
    from celeryctl.render.actions import render_kill_json, render_kill_plan
    from celeryctl.views import attribute_connections

    c = action_ctx(ctx, fmt, broker, rabbitmq_api, vhost, timeout, app_, profile,
                   rabbitmq_api_ca)
    f = KillFilters(idle_over, tuple(address or ()), tuple(name or ()))
    if f.empty:  # refused before anything is read
        from celeryctl.status import UsageError

        raise UsageError(plan_kill([], f).refusals[0])
    g = gather(c.target, connections=True, workers=("stats",))
    if not g.connections.ok:
        c.footer(g)
        raise typer.Exit(int(ExitStatus.UNKNOWN))
    conns = attribute_connections(g.connections.value, g.workers.value if g.workers.ok
                                  else None, g.host_addresses, g.local_pids)
    plan = plan_kill(conns, f)
    render_kill_plan(c, plan)
    if plan.refusals:
        for r in plan.refusals:
            c.err.print(f"refused: {r}", highlight=False)
        render_kill_json(c, plan, None)
        raise typer.Exit(int(ExitStatus.USAGE))
    if not plan.selected:
        c.err.print("no connection to close.")
        render_kill_json(c, plan, None)
        raise typer.Exit(0)
    if not _guard(c, plan.labels, "connection", confirm, yes):
        render_kill_json(c, plan, None)
        raise typer.Exit(0)
    outcome = _execute_kill(c, plan, f)
    if outcome is None:
        render_kill_json(c, plan, None)
        _audit(c, audit_log, "connections kill", "failed: broker unreachable", plan.labels, {})
        raise typer.Exit(int(ExitStatus.UNKNOWN))
    from celeryctl.render.actions import render_kill_result

    render_kill_result(c, plan, outcome)
    failed = [r for r in outcome if r["result"].startswith("error")]
    _audit(c, audit_log, "connections kill" + (f" --idle-over {idle_over:g}"
                                               if idle_over is not None else ""),
           "ok" if not failed else f"failed: {len(failed)} not closed",
           [r["address"] for r in outcome],
           {"planned": len(plan.selected),
            "closed": sum(1 for r in outcome if r["result"].startswith("closed")),
            "left": sum(1 for r in outcome if r["result"].startswith("left"))})
    raise typer.Exit(int(ExitStatus.CRITICAL if failed else ExitStatus.OK))


def _execute_kill(c, plan, f) -> list[dict[str, Any]] | None:
    """Check the plan against a fresh listing, close what it still selects, and verify with
    more listings. None when the broker could not be read."""
    import time

    from celeryctl.actions.kill import (
        close_rabbit,
        close_redis,
        kill_rows,
        still_open,
        still_selected,
    )

    def listing():
        from celeryctl.collect import gather

        g = gather(c.target, connections=True)
        if not g.connections.ok:
            c.footer(g)
            return None
        return g.connections.value

    now = listing()
    if now is None:
        return None
    go, left = still_selected(plan, now, f)
    if c.target.broker_kind == "redis":
        from celeryctl.collect.redis import connect_first

        client, _ = connect_first(c.target.broker, c.target.timeout, c.target.transport_options)
        try:
            errors = close_redis(client, go)
        finally:
            client.close()
    else:
        from celeryctl.collect.rabbitmq import ManagementAPI

        api = ManagementAPI(c.target.rabbitmq_api, c.target.timeout)
        try:
            errors = close_rabbit(api, go)
        finally:
            api.close()
    # the management API lists a closed connection until its next statistics event: poll
    end = time.monotonic() + max(5.0, c.target.timeout)
    while True:
        after = listing() or []
        if not still_open(go, after) or time.monotonic() >= end:
            break
        time.sleep(0.5)
    return kill_rows(go, left, errors, after)
