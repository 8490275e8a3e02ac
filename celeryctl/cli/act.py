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
from celeryctl.render.text import safe
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
    from celeryctl.status import UsageError

    try:
        return Ctx(ctx, fmt, action=True, broker=broker, result_backend=None,
                   rabbitmq_api=rabbitmq_api, vhost=vhost, queue=None, timeout=timeout,
                   app=app_, profile=profile, rabbitmq_api_ca=rabbitmq_api_ca)
    except UsageError as exc:  # refused before anything was read: audited all the same
        from celeryctl.actions.guard import audit

        log = ctx.params.get("audit_log")
        audit(Path(log).expanduser() if log else None, target="(none: refused)",
              command=ctx.command_path.replace("celeryctl ", "", 1) or "action",
              result=f"refused: {exc}")
        raise


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
    fmt: o.Format = "table", wide: o.Wide = False,
) -> None:
    """Delete the ready messages of queues — a dry run unless --confirm; --backup first."""
    c = action_ctx(ctx, fmt, broker, rabbitmq_api, vhost, timeout, app_, profile,
                   rabbitmq_api_ca)
    from celeryctl.actions.interrupt import Raising
    from celeryctl.status import CeleryctlError

    try:
        with Raising():
            _purge(c, queues, all_worker_queues, confirm, yes, audit_log, backup, force,
                   include_internal, sample, peek)
    except KeyboardInterrupt as exc:  # before anything was set aside: nothing changed
        _audit(c, audit_log, "purge", f"interrupted ({exc.args[0] if exc.args else 'SIGINT'})"
               ": nothing changed", list(queues or []), {})
        raise
    except CeleryctlError as exc:  # bad input: refused before anything was read
        _audit(c, audit_log, "purge", f"refused: {exc}", list(queues or []), {})
        raise


def _purge(c, queues, all_worker_queues, confirm, yes, audit_log, backup, force,
           include_internal, sample, peek) -> None:
    import dataclasses

    from celeryctl.actions.purge import plan_purge, worker_queues
    from celeryctl.collect import gather
    from celeryctl.render.actions import render_plan
    from celeryctl.status import UsageError

    if not queues and not all_worker_queues:
        raise UsageError("name the queues to purge, or pass --all-worker-queues")
    bpath = Path(backup).expanduser() if backup else None
    if bpath is not None and bpath.exists():
        raise UsageError(f"{bpath} exists: celeryctl never overwrites a backup")
    t = dataclasses.replace(c.target, queues=tuple(queues or ()))
    g = gather(t, workers=("active_queues",), queues=True, samples=sample, peek=peek)
    if not g.queues.ok:
        c.footer(g)
        _audit(c, audit_log, "purge", f"failed: {g.queues.error}", list(queues or []), {})
        raise typer.Exit(int(ExitStatus.UNKNOWN))
    names = list(queues or [])
    if all_worker_queues:
        if not g.workers.ok or not g.workers.value.nodes:
            c.err.print("--all-worker-queues: no worker replied, so their queues are unknown; "
                        "name the queues instead. Nothing changed.")
            _audit(c, audit_log, "purge --all-worker-queues", "refused: no worker replied",
                   names, {})
            raise typer.Exit(int(ExitStatus.USAGE))
        names += [q for q in worker_queues(g.workers.value) if q not in names]
    depths = g.queues.value
    if c.target.broker_kind != "redis":
        depths = _instantaneous(c, depths, names)
        if depths is None:
            _audit(c, audit_log, "purge", "failed: the broker could not be read", names, {})
            raise typer.Exit(int(ExitStatus.UNKNOWN))
    plan = plan_purge(names, depths, broker=c.target.broker_redacted,
                      broker_kind=c.target.broker_kind, vhost=c.target.effective_vhost,
                      samples=g.samples.value if g.samples.ok else None,
                      force=force,
                      include_internal=include_internal)
    render_plan(c, plan, backup=str(bpath) if bpath else None,
                sampled=g.samples.ok, sample_note=None if g.samples.ok else g.samples.error)
    from celeryctl.render.actions import render_purge_json

    command = "purge" + (f" --backup {bpath}" if bpath else "")
    if plan.refusals:
        from celeryctl.render.actions import render_refusals

        render_refusals(c, plan.refusals, nothing="nothing changed",
                        others=[i.queue for i in plan.items])
        render_purge_json(c, plan, backup=str(bpath) if bpath else None, result=None)
        _audit(c, audit_log, command, "refused", names, {}, reasons=plan.refusals)
        raise typer.Exit(int(ExitStatus.USAGE))
    try:
        go = _guard(c, plan.names, "queue", confirm, yes)
    except typer.Exit:
        _audit(c, audit_log, command, "refused: not confirmed", plan.names, {})
        raise
    if not go:
        render_purge_json(c, plan, backup=str(bpath) if bpath else None, result=None)
        raise typer.Exit(0)
    from celeryctl.actions.interrupt import Deferred

    with Deferred("; messages set aside go back") as stop:
        results, error = _execute_purge(c, plan, bpath, stop, audit_log, command)
        after = _reread(c, plan.names)
    counts = {r.queue: {"planned": next((i.ready for i in plan.items if i.queue == r.queue),
                                        None),
                        "purged": r.purged, "backed_up": r.backed_up,
                        "remaining": after.get(r.queue)}
              for r in results}
    failed = error or next((r.error for r in results if r.error), None)
    untouched = [n for n in plan.names if n not in {r.queue for r in results}]
    # a signal that came after the last queue was done stopped nothing
    cut = stop.requested and (untouched or any(r.interrupted for r in results))
    result = ("interrupted: " + stop.signal if cut and not failed else
              "failed: " + failed if failed else "ok")
    _audit(c, audit_log, command, result, plan.names, counts,
           **({"not_purged": untouched} if untouched else {}))
    from celeryctl.render.actions import render_purge_result

    try:
        render_purge_result(c, plan, results, after, backup=str(bpath) if bpath else None)
        if cut:
            c.err.print(f"{stop.signal}: stopped; "
                        + (f"not purged: {', '.join(untouched)}; " if untouched else "")
                        + "every message is in its queue or in the backup, never both.",
                        markup=False, highlight=False)
        elif stop.requested:
            c.err.print(f"{stop.signal} came after the purge had finished: nothing was "
                        f"stopped.", markup=False, highlight=False)
    except OSError:  # the terminal is gone (SIGHUP) or stdout closed: the audit line has it
        pass
    if cut and not failed:
        raise typer.Exit(int(ExitStatus.INTERRUPTED))
    raise typer.Exit(int(ExitStatus.CRITICAL if failed else ExitStatus.OK))


def _instantaneous(c, depths, names: list[str]):
    """RabbitMQ: the plan's counts from AMQP passive declares (the broker's own answer now),
    not the management API's sampled counters, which lag by its statistics interval. None
    when the broker could not be read (the reason is printed)."""
    import dataclasses

    now = _depths(c, names)
    if now is None:
        return None
    out = []
    for q in depths:
        fresh = now.get(q.name)
        if fresh is not None and q.name in names:
            q = dataclasses.replace(q, ready=fresh.ready, consumers=fresh.consumers,
                                    exists=fresh.exists, error=fresh.error or q.error)
        out.append(q)
    seen = {q.name for q in depths}
    out += [q for n, q in now.items() if n not in seen]
    return out


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


def _execute_purge(c, plan, bpath: Path | None, stop, audit_log=None, command="purge"):
    """Run the plan queue by queue, stopping at the first failure or signal (later queues
    stay untouched). The backup's end line is written when the file holds exactly what was
    deleted; only an uncertain state (lists left set aside, a commit whose outcome is not
    known) leaves it without one."""
    from celeryctl.actions.backup import BackupError, BackupWriter

    writer = None
    if bpath is not None:
        writer = BackupWriter(bpath)
        try:
            writer.open({"broker": plan.broker, "broker_kind": plan.broker_kind,
                         "vhost": plan.vhost, "queues": plan.names, "planned": plan.total})
        except BackupError as exc:
            c.err.print(f"error: {exc}. Nothing was deleted.", markup=False, highlight=False)
            _audit(c, audit_log, command, f"failed: {exc}", plan.names, {})
            raise typer.Exit(int(ExitStatus.CRITICAL)) from None
    results: list = []
    error = None
    try:
        if plan.broker_kind == "redis":
            _purge_redis(c, plan, writer, stop, results)
        else:
            _purge_rabbit(c, plan, writer, stop, results)
    except Exception as exc:  # noqa: BLE001 - a refusal or a lost broker, said as such
        error = _action_error(exc)
        c.err.print(f"error: {error}", markup=False, highlight=False)
    finally:
        if writer is not None:
            uncertain = any(r.set_aside or (r.error and "committed" in r.error)
                            for r in results)
            if uncertain or writer.fh is None:
                writer.close()  # no end line: restore's plan says the file was cut short
            else:
                done = [r.queue for r in results if not r.error and not r.interrupted]
                # RabbitMQ: a queue stopped between batches lost the committed ones
                partly = [r.queue for r in results if (r.error or r.interrupted) and r.purged]
                complete = len(done) == len(plan.names) and not error
                try:
                    writer.finish(complete=complete,
                                  stopped=None if complete else (
                                      stop.signal if stop.requested else
                                      error or next((r.error for r in results if r.error),
                                                    None)),
                                  purged=done, partly_purged=partly,
                                  not_purged=[n for n in plan.names
                                              if n not in done and n not in partly])
                except BackupError as exc:
                    writer.close()
                    error = error or str(exc)
                    c.err.print(f"error: {exc}", markup=False, highlight=False)
    return results, error


def _purge_redis(c, plan, writer, stop, results):
    from celeryctl.actions.purge import purge_redis

    client, layout = _redis_client(c)
    for item in plan.items:
        if stop.requested:
            break
        limits = ({int(k): int(v) for k, v in item.buckets.items()} if item.buckets
                  else {0: item.ready or 0})
        r = purge_redis(client, layout, item.queue, writer, limits=limits, stop=stop)
        results.append(r)
        if r.error or r.interrupted:
            break  # stop at the first failure: later queues stay untouched


def _purge_rabbit(c, plan, writer, stop, results):
    from celeryctl.actions.purge import purge_rabbit_amqp
    from celeryctl.collect.rabbitmq import amqp_connect

    conn, _ = amqp_connect(c.target.broker, c.target.timeout, c.target.effective_vhost,
                           name="celeryctl purge")
    try:
        for item in plan.items:
            if stop.requested:
                break
            r = purge_rabbit_amqp(conn.channel(), item.queue, item.ready or 0, writer,
                                  stop=stop)
            results.append(r)
            if r.error or r.interrupted:
                break
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass


def restore(
    ctx: typer.Context,
    file: str | None = typer.Argument(None, metavar="[FILE]", help="A backup written by purge "
                                      "--backup."),
    to: str | None = typer.Option(None, "--to", metavar="QUEUE", help="Restore every message "
                                  "into this queue instead of its own."),
    set_aside_: bool = typer.Option(False, "--set-aside", help="Instead of a file: put back "
                                    "what a killed purge left set aside (Redis; see "
                                    "docs/purge.md)."),
    token: list[str] = typer.Option(None, "--token", metavar="TOKEN", help="With "
                                    "--set-aside: only this purge (repeatable)."),
    after_line: int | None = typer.Option(None, "--after-line", metavar="N", min=0,
                                          help="Resume: restore only the lines after N (an "
                                          "earlier restore of FILE stopped there)."),
    again: bool = typer.Option(False, "--again", help="Restore FILE although it was "
                               "restored before (its messages would be there twice)."),
    confirm: bool = Confirm, yes: bool = Yes, audit_log: str | None = AuditLog,
    broker: o.Broker = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None, vhost: o.Vhost = None,
    timeout: o.Timeout = None, app_: o.App = None, profile: o.Profile = None,
    fmt: o.Format = "table", wide: o.Wide = False,
) -> None:
    """Republish a purge backup in its original order and priorities — a dry run unless
    --confirm.

    Damaged lines (a torn last line, lines that are not records) are listed and skipped:
    the intact messages are restored, then exit 2. Exit status: 0 every message restored
    (or a dry run), 2 some line or message could not be restored (listed), 3 the broker
    could not be reached, 64 refused (not a backup, no such RabbitMQ queue): nothing sent."""

    from celeryctl.actions.interrupt import Raising
    from celeryctl.status import CeleryctlError

    c = action_ctx(ctx, fmt, broker, rabbitmq_api, vhost, timeout, app_, profile,
                   rabbitmq_api_ca)
    command = "restore " + ("--set-aside" if set_aside_ or token else str(file))
    try:
        with Raising():
            _restore(c, file, to, set_aside_, token, after_line, again, confirm, yes,
                     audit_log)
    except KeyboardInterrupt as exc:  # before anything was sent: nothing changed
        _audit(c, audit_log, command, f"interrupted ({exc.args[0] if exc.args else 'SIGINT'})"
               ": nothing changed", [], {})
        raise
    except CeleryctlError as exc:  # bad input: refused
        _audit(c, audit_log, command, f"refused: {exc}", [], {})
        raise


def _restore(c, file, to, set_aside_, token, after_line, again, confirm, yes,
             audit_log) -> None:
    from celeryctl.actions.backup import BackupError, inspect_backup
    from celeryctl.actions.restore import read_progress
    from celeryctl.status import UsageError

    if set_aside_ or token:
        if file or to or after_line is not None:
            raise UsageError("--set-aside puts messages back where they were: no FILE, no "
                             "--to, no --after-line")
        _restore_set_aside(c, list(token or ()), confirm, yes, audit_log)
    if not file:
        raise UsageError("name the backup FILE to restore (or pass --set-aside)")
    path = Path(file).expanduser()
    try:
        info = inspect_backup(path)
    except BackupError as exc:
        raise UsageError(str(exc)) from None
    done = read_progress(path)
    if c.target.broker_kind == "redis":
        done = _redis_restore_progress(c, path, done)
    else:
        done = _rabbit_restore_progress(c, path, done)
    if done and after_line is None and not again:
        what = ("all of it" if done.get("complete") else
                f"up to line {done['last_line']}, then stopped")
        resume = ("" if done.get("complete") else
                  f" To finish it: --after-line {done['last_line']}.")
        raise UsageError(f"{path} was restored before ({what}, {done.get('time')}, to "
                         f"{done.get('broker')}): restoring it again would run its messages "
                         f"twice.{resume} To restore it all again anyway: --again.")
    targets = {to: info.count} if to else dict(info.per_queue)
    now = _depths(c, list(targets))
    if now is None:
        _audit(c, audit_log, f"restore {path}", "failed: the broker could not be read",
               list(targets), {})
        raise typer.Exit(int(ExitStatus.UNKNOWN))
    before = _ready(now, list(targets))
    if c.target.broker_kind != "redis":
        missing = [q for q in targets if q not in now or not now[q].exists]
        if missing:
            c.err.print(f"refused: no queue {', '.join(map(safe, missing))} in vhost "
                        f"{c.target.effective_vhost}: RabbitMQ would drop messages published "
                        f"to it. Declare it first (start a worker consuming it). "
                        f"Nothing changed.", markup=False, highlight=False)
            _audit(c, audit_log, f"restore {path}", "refused: no such queue", missing, {})
            raise typer.Exit(int(ExitStatus.USAGE))
    skip, sec, skipped = _restore_skips(c, path, info, audit_log, list(targets))
    left = {to: info.count - sum(skipped.values())} if to else {
        q: n - skipped.get(q, 0) for q, n in targets.items()}
    rows = [{"queue": q, "messages": n, "ready now": before.get(q)} for q, n in left.items()]
    from celeryctl.render.actions import (
        render_restore_json,
        render_restore_plan,
        render_restore_result,
    )

    render_restore_plan(c, info, rows, path=str(path), skipped=sum(skipped.values()))
    damaged = int(ExitStatus.CRITICAL if info.damaged else ExitStatus.OK)
    if info.count == 0:
        c.err.print("nothing to restore.")
        render_restore_json(c, info, rows, path=str(path), result=None)
        raise typer.Exit(damaged)
    try:
        go = _guard(c, list(targets), "queue", confirm, yes)
    except typer.Exit:
        _audit(c, audit_log, f"restore {path}", "refused: not confirmed", list(targets), {})
        raise
    if not go:
        render_restore_json(c, info, rows, path=str(path), result=None)
        raise typer.Exit(0)
    from celeryctl.actions.interrupt import Deferred
    from celeryctl.actions.restore import RestoreResult, write_progress

    res = RestoreResult()
    error = None
    notes: list[str] = []

    def progress(r) -> None:
        if r.last_line is not None:
            why = write_progress(path, last_line=r.last_line, complete=False,
                                 broker=c.target.broker_redacted)
            if why and why not in notes:
                notes.append(why)

    if after_line:
        skip.ranges.append((1, after_line))
    with Deferred("; the chunk in hand is finished first") as stop:
        try:
            if sec.unconfirmed and c.target.broker_kind != "redis":
                skip.lines |= _already_queued(c, path, sec, to)
            _execute_restore(c, path, to, res, skip, stop, progress)
        except Exception as exc:  # noqa: BLE001 - a refusal or a lost broker, said as such
            try:
                error = str(exc) if isinstance(exc, BackupError) else _action_error(exc)
            except Exception:  # noqa: BLE001 - unclassified: still one line, and what was done
                error = f"{type(exc).__name__}: {exc}"
        if res.last_line is not None or not (error or res.stopped):
            write_progress(path, last_line=res.last_line or after_line or 0,
                           complete=not (error or res.stopped), broker=c.target.broker_redacted)
        after = _reread(c, list(targets))
    failed = error or (f"{len(res.failed)} message(s) not restorable" if res.failed else None)
    damage = f"{len(info.bad)} damaged line(s) skipped" if info.bad else None
    resume = (f"; to finish: celeryctl restore {path} --after-line {res.last_line or 0}"
              if error or res.stopped else "")
    _audit(c, audit_log, f"restore {path}" + (f" --to {to}" if to else ""),
           ("interrupted: " + res.stopped if res.stopped and not failed else
            "failed: " + failed if failed else ("partial: " + damage if damage else "ok"))
           + resume,
           list(targets), {q: {"restored": res.counts.get(q, 0), "ready_after": after.get(q)}
                           for q in targets})
    try:
        render_restore_result(c, info, rows, res, before, after, path=str(path), error=error)
        for n in notes:
            c.err.print(f"warning: {n}", markup=False, highlight=False)
        if res.stopped or error:
            from celeryctl.invocation import command

            again = command("restore", str(path), "--after-line", str(res.last_line or 0))
            c.err.print(safe(f"{res.stopped or 'stopped'} after line {res.last_line or 0}: to "
                             f"finish (with the same broker options): {again}"),
                        highlight=False)
    except OSError:  # the terminal is gone: the audit line has it
        pass
    if res.stopped and not failed:
        raise typer.Exit(int(ExitStatus.INTERRUPTED))
    raise typer.Exit(int(ExitStatus.CRITICAL) if failed or info.damaged else 0)


def _restore_set_aside(c, tokens: list[str], confirm: bool, yes: bool, audit_log) -> None:
    """`restore --set-aside`: put back the lists a killed purge left set aside (exits)."""
    import socket

    from celeryctl.actions.purge import put_back
    from celeryctl.collect.redis import collect_set_aside
    from celeryctl.render.actions import render_set_aside

    if c.target.broker_kind != "redis":
        c.err.print("nothing to do: a RabbitMQ purge sets nothing aside (unacked messages "
                    "go back to their queue by themselves).")
        raise typer.Exit(0)
    try:
        rows = _redis_read(c, "set-aside lists", collect_set_aside)
    except Exception as exc:  # noqa: BLE001
        c.err.print(f"error: {_action_error(exc)}", markup=False, highlight=False)
        raise typer.Exit(int(ExitStatus.UNKNOWN)) from None
    if tokens:
        unknown = [t for t in tokens if t not in {r.arguments["token"] for r in rows}]
        if unknown:
            c.err.print(f"refused: nothing set aside under {', '.join(unknown)}. Nothing "
                        f"changed.", markup=False, highlight=False)
            raise typer.Exit(int(ExitStatus.USAGE))
        rows = [r for r in rows if r.arguments["token"] in tokens]
    refusals = []
    for r in rows:
        a = r.arguments
        if a.get("host") == socket.gethostname() and isinstance(a.get("pid"), int) and \
                _celeryctl_running(a["pid"]):
            refusals.append(f"the purge of {a.get('purge_of')!r} ({a['token']}) is still "
                            f"running as pid {a['pid']}: it puts its messages back itself "
                            f"if stopped (Ctrl-C, kill); after a kill -9, run this again")
    render_set_aside(c, rows, refusals)
    if not rows:
        c.err.print("nothing is set aside: no purge was left unfinished.")
        raise typer.Exit(0)
    names = [r.arguments["token"] for r in rows]
    if refusals:
        for r in refusals:
            c.err.print(f"refused: {r}", markup=False, highlight=False)
        _audit(c, audit_log, "restore --set-aside", "refused", names, {}, reasons=refusals)
        raise typer.Exit(int(ExitStatus.USAGE))
    try:
        go = _guard(c, names, "token", confirm, yes)
    except typer.Exit:
        _audit(c, audit_log, "restore --set-aside", "refused: not confirmed", names, {})
        raise
    if not go:
        raise typer.Exit(0)
    counts, failed = {}, None
    client, layout = _redis_client(c)
    for r in rows:
        a = r.arguments
        lists = {k.encode("utf-8", "surrogateescape"): v.encode("utf-8", "surrogateescape")
                 for k, v in (a.get("lists") or {}).items()}
        try:
            n = put_back(client, layout.prefix, a["token"], lists)
        except Exception as exc:  # noqa: BLE001
            failed = _action_error(exc)
            c.err.print(f"error: {failed}", markup=False, highlight=False)
            break
        counts[a["token"]] = {"queue": a.get("purge_of"), "put_back": n}
        _mark_backup_void(a)
        c.out.print(f"put back {n} messages into {a.get('purge_of')} ({a['token']})",
                    markup=False, highlight=False)
    _audit(c, audit_log, "restore --set-aside", "failed: " + failed if failed else "ok",
           names, counts)
    raise typer.Exit(int(ExitStatus.CRITICAL if failed else ExitStatus.OK))


def _celeryctl_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"celeryctl" in fh.read()
    except OSError:
        return False


def _mark_backup_void(a: dict[str, Any]) -> None:
    """Tell the killed purge's backup (when it is on this host) that the lines of this token
    are void: their messages are back in the queue. Restore also asks the broker."""
    import json
    import socket

    path = a.get("backup")
    if not path or a.get("host") != socket.gethostname():
        return
    try:
        with open(path, "ab") as fh:
            fh.write((json.dumps({"celeryctl_marker": "put_back", "token": a["token"],
                                  "queue": a.get("purge_of")}) + "\n").encode())
    except OSError:
        pass


def _restore_skips(c, path: Path, info, audit_log, queues: list[str]):
    """The lines of a killed or stopped purge that must not be restored (their messages are
    back in the queue), from its control lines and, on Redis, the broker's record of each
    purge. Refuses (exits 64) while messages are still set aside."""
    from celeryctl.actions.backup import Skip
    from celeryctl.actions.restore import message_lines, read_sections, redis_void_tokens

    sec = read_sections(info)
    skip = Skip()
    skipped: dict[str, int] = {}  # queue -> message lines skipped
    if c.target.broker_kind == "redis" and sec.queue_of:

        try:
            void, refusals, notes = _redis_read(
                c, "purge records", lambda client, layout: redis_void_tokens(
                    client, layout.prefix, sec))
        except Exception as exc:  # noqa: BLE001
            c.err.print(f"error: {_action_error(exc)}", markup=False, highlight=False)
            raise typer.Exit(int(ExitStatus.UNKNOWN)) from None
        for n in notes:
            c.err.print(f"note: {n}", markup=False, highlight=False)
        if refusals:
            for r in refusals:
                c.err.print(f"refused: {r}. Nothing changed.", markup=False, highlight=False)
            _audit(c, audit_log, f"restore {path}", "refused", queues, {}, reasons=refusals)
            raise typer.Exit(int(ExitStatus.USAGE))
        skip = Skip(ranges=[r for t, r in sec.lines_of.items() if t in void])
        for t, (a, b) in sec.lines_of.items():
            if t in void:
                q = sec.queue_of.get(t, "?")
                skipped[q] = skipped.get(q, 0) + message_lines(info, a, b)
        if skipped:
            c.err.print(f"{sum(skipped.values())} messages of this file are not restored: they "
                        f"are back in their queue.", markup=False, highlight=False)
    if sec.unconfirmed and c.target.broker_kind != "redis":
        c.err.print(f"note: {sum(message_lines(info, a, b) for a, b in sec.unconfirmed)} "
                    f"messages of this file (lines "
                    + ", ".join(f"{a}-{b}" for a, b in sec.unconfirmed)
                    + ") were written by a purge killed before it recorded their deletion; "
                    "those still in the queue are skipped (checked by message id when "
                    "restoring)", markup=False, highlight=False)
    return skip, sec, skipped


def _already_queued(c, path: Path, sec, to: str | None) -> set[int]:
    """RabbitMQ: the unconfirmed lines whose message is (still, again) in its queue."""
    from celeryctl.actions.backup import read_messages
    from celeryctl.actions.restore import rabbit_already_queued, record_identity
    from celeryctl.collect.rabbitmq import amqp_connect

    recs: dict[int, dict] = {n: r for n, r in read_messages(path)
                             if any(a <= n <= b for a, b in sec.unconfirmed)}
    by_queue: dict[str, list[int]] = {}
    for n, rec in recs.items():
        by_queue.setdefault(to or str(rec.get("queue")), []).append(n)
    skip: set[int] = set()
    conn, _ = amqp_connect(c.target.broker, c.target.timeout, c.target.effective_vhost,
                           name="celeryctl restore (checking)")
    try:
        for queue, lines in by_queue.items():
            found = rabbit_already_queued(conn.channel(), queue, [recs[n] for n in lines])
            skip |= {n for n in lines if record_identity(recs[n]) in found}
    finally:
        conn.close()
    if skip:
        c.err.print(f"{len(skip)} of them are in the queue already: skipped, not duplicated.",
                    markup=False, highlight=False)
    return skip


def _redis_client(c):
    """The client an action writes with: every command bounded by --timeout as a whole
    (collect/redis.py BoundedClient), and kombu's key layout."""
    from celeryctl.collect.redis import bounded_client, detect_layout

    client = bounded_client(c.target.broker, c.target.timeout, c.target.transport_options)
    layout = client.run("key layout", lambda cl: detect_layout(
        cl, c.target.transport_options)[0])
    return client, layout


def _redis_read(c, what: str, fn):
    """A read before acting, bounded as a whole (--timeout, not per recv: a trickling
    server must not hold the plan): `fn(client, layout)` on a fresh connection."""
    from celeryctl.collect.bounded import call, shutdown_redis

    opened: list = []

    def go():
        from celeryctl.collect.redis import connect_first, detect_layout

        client, _ = connect_first(c.target.broker, c.target.timeout,
                                  c.target.transport_options, opened=opened)
        layout, _ = detect_layout(client, c.target.transport_options)
        return fn(client, layout)

    return call(what, go, f"redis broker {c.target.broker_redacted}", c.target.timeout,
                cancel=lambda: [shutdown_redis(x) for x in opened])


def _rabbit_restore_progress(c, path: Path, local: dict | None) -> dict | None:
    """As _redis_restore_progress, from the progress queue (bounded as a whole)."""
    from celeryctl.actions.restore import rabbit_progress, rabbit_progress_queue
    from celeryctl.collect.bounded import call
    from celeryctl.collect.rabbitmq import amqp_connect

    def go():
        conn, _ = amqp_connect(c.target.broker, c.target.timeout, c.target.effective_vhost,
                               name="celeryctl restore (progress)")
        try:
            return rabbit_progress(conn, rabbit_progress_queue(path))
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    try:
        remote = call("restore progress", go, f"amqp broker {c.target.broker_redacted}",
                      c.target.timeout)
    except Exception as exc:  # noqa: BLE001
        c.err.print(f"error: {_action_error(exc)}", markup=False, highlight=False)
        raise typer.Exit(int(ExitStatus.UNKNOWN)) from None
    return _merge_progress(c, local, remote)


def _merge_progress(c, local: dict | None, remote: dict | None) -> dict | None:
    if remote is None:
        return local
    complete = bool(local and local.get("complete") and
                    local.get("last_line") == remote["last_line"])
    return {**remote, "complete": complete, "broker": c.target.broker_redacted}


def _redis_restore_progress(c, path: Path, local: dict | None) -> dict | None:
    """What the broker recorded of an earlier restore of this file (exact, even after a
    kill -9), merged with the local record (which alone knows it completed)."""
    from celeryctl.actions.restore import broker_progress, redis_progress_key

    try:
        remote = _redis_read(c, "restore progress", lambda client, layout: broker_progress(
            client, redis_progress_key(layout.prefix, path)))
    except Exception as exc:  # noqa: BLE001
        c.err.print(f"error: {_action_error(exc)}", markup=False, highlight=False)
        raise typer.Exit(int(ExitStatus.UNKNOWN)) from None
    return _merge_progress(c, local, remote)


def _unskipped(records, skip):
    return records if not skip else ((n, r) for n, r in records if n not in skip)


def _execute_restore(c, path: Path, to: str | None, res, skip=None, stop=None,
                     progress=None) -> None:
    """Restore every message of the file but the `skip` lines; `res` says what was done,
    even if this raises."""
    from celeryctl.actions.backup import read_messages
    from celeryctl.actions.restore import redis_progress_key, restore_rabbit, restore_redis

    if c.target.broker_kind == "redis":
        client, layout = _redis_client(c)
        restore_redis(client, layout, _unskipped(read_messages(path), skip), to, res,
                      stop=stop, progress=progress,
                      progress_key=redis_progress_key(layout.prefix, path))
        return
    from celeryctl.actions.restore import open_rabbit_progress, rabbit_progress_queue
    from celeryctl.collect.rabbitmq import amqp_connect

    conn, ep = amqp_connect(c.target.broker, c.target.timeout, c.target.effective_vhost,
                            name="celeryctl restore")
    try:
        ch, pq = open_rabbit_progress(conn, rabbit_progress_queue(path))
        if pq is None:
            c.err.print("note: this account may not declare the progress queue "
                        f"{rabbit_progress_queue(path)} (docs/permissions.md): progress is "
                        f"recorded only in {path}.restored", markup=False, highlight=False)
        restore_rabbit(ch, _unskipped(read_messages(path), skip), to, ep.username or "guest",
                       res, stop=stop, progress=progress, progress_queue=pq)
        ch.close()
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - already closed by the failure being reported
            pass


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
    fmt: o.Format = "table", wide: o.Wide = False,
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
        from celeryctl.render.actions import render_refusals

        render_refusals(c, plan.refusals, nothing="nothing closed")
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
