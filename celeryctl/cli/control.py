"""`celeryctl control COMMAND [ARGS]... [-d NODE]...`: Celery's remote control, guarded.

plan (ping + active_queues of every worker) -> show the plan -> the guard for disruptive
commands -> send with the destinations -> per-worker reply table -> verify (active_queues,
pool size, or ping for shutdown) -> audit line.
"""

from __future__ import annotations

from typing import Any

import typer

from celeryctl.cli import options as o
from celeryctl.cli.act import AuditLog, Confirm, Yes, _audit, _guard, action_ctx
from celeryctl.render.text import safe
from celeryctl.status import ExitStatus

HELP = """Send a remote-control command to workers, and show which answered.

Commands: pool-grow [N], pool-shrink [N], autoscale MAX MIN, rate-limit TASK RATE,
time-limit TASK SOFT [HARD], add-consumer QUEUE, cancel-consumer QUEUE,
revoke ID... [--terminate [--signal SIG]], enable-events, disable-events, shutdown.

Disruptive commands — shutdown, revoke --terminate, cancel-consumer of a worker's last queue,
and any command without --destination (it reaches every worker) — are a dry run unless
--confirm (typed on a terminal, or --yes). The others are sent at once (--dry-run to only
show the plan). Every command sent is appended to the audit log.

Exit status: 0 every targeted worker answered ok (or dry run), 2 some worker did not answer,
replied with an error or did not stop, 3 the broker could not be reached, 64 refused (an
unknown --destination, bad arguments, no confirmation) — nothing was sent.
"""


def register(app: typer.Typer) -> None:
    app.command("control", help=HELP, context_settings={"allow_interspersed_args": True})(
        control)


def control(
    ctx: typer.Context,
    command: str = typer.Argument(..., metavar="COMMAND",
                                 autocompletion=o.complete_control_command),
    words: list[str] = typer.Argument(None, metavar="[ARGS]..."),
    destination: list[str] = typer.Option(None, "--destination", "-d", metavar="NODE",
                                          help="A worker node name (repeatable). Without it "
                                          "the command reaches every worker."),
    terminate: bool = typer.Option(False, "--terminate", help="revoke: also kill the process "
                                   "running the task."),
    signal: str | None = typer.Option(None, "--signal", "-s", metavar="SIG",
                                      help="revoke --terminate: the signal [default TERM]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show the plan."),
    wait: float = typer.Option(5.0, "--wait", metavar="SECONDS", min=0, max=600,
                               help="How long to wait for the change to show (queues, pool "
                               "size; shutdown: until the worker stops answering ping)."),
    confirm: bool = Confirm, yes: bool = Yes, audit_log: str | None = AuditLog,
    broker: o.Broker = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None, vhost: o.Vhost = None,
    timeout: o.Timeout = None, app_: o.App = None, profile: o.Profile = None,
    fmt: o.Format = "table", wide: o.Wide = False,
) -> None:
    from celeryctl.actions.control import (
        VERIFY_METHOD,
        ControlArgumentError,
        parse_command,
        plan_control,
        queue_names,
    )
    from celeryctl.collect import gather
    from celeryctl.status import UsageError

    c = action_ctx(ctx, fmt, broker, rabbitmq_api, vhost, timeout, app_, profile,
                   rabbitmq_api_ca)
    try:
        cmd, arguments = parse_command(command, list(words or []), terminate=terminate,
                                       signal=signal)
    except ControlArgumentError as exc:
        raise UsageError(str(exc)) from None
    methods = ["ping", "active_queues"]
    if cmd == "revoke" and arguments.get("terminate"):
        methods.append("active")
    if VERIFY_METHOD.get(cmd) == "stats":
        methods.append("stats")
    # every worker, not only the destinations: an unknown name is refused with close matches
    g = gather(c.target, workers=tuple(methods))
    if not g.workers.ok:
        c.footer(g)
        raise typer.Exit(int(ExitStatus.UNKNOWN))
    view = g.workers.value
    live: dict[str, list[str] | None] = {}
    for n in view.nodes:
        live.setdefault(n.name, queue_names(n.replies.get("active_queues")))
    active = None
    if "active" in methods:
        active = {n.name: [t.get("id") for t in (n.replies.get("active") or [])
                           if isinstance(t, dict)] for n in view.nodes}
    plan = plan_control(cmd, arguments, list(destination or []) or None, live, active)
    before = {n.name: n.replies.get(VERIFY_METHOD.get(cmd, ""), None) for n in view.nodes}
    _render_plan(c, plan)
    subjects = plan.targets or list(plan.destination or [])
    command_line = f"control {cmd} " + " ".join(str(w) for w in (words or []))
    if plan.refusals:
        from celeryctl.render.actions import render_refusals

        render_refusals(c, plan.refusals, nothing="nothing sent")
        _render_rows(c, plan, None)
        _audit(c, audit_log, command_line.strip(), "refused", subjects, {},
               reasons=plan.refusals)
        raise typer.Exit(int(ExitStatus.USAGE))
    if plan.guarded:
        if not _guard(c, plan.targets, "worker", confirm, yes):
            _render_rows(c, plan, None)
            raise typer.Exit(0)
    elif dry_run:
        c.err.print("dry run: nothing sent.")
        _render_rows(c, plan, None)
        raise typer.Exit(0)
    status, rows = _send_and_verify(c, g, plan, before, wait)
    failed = [r["worker"] for r in rows if r["targeted"] and not r["ok"]]
    _audit(c, audit_log, command_line.strip(),
           "ok" if status == ExitStatus.OK else
           ("failed: " + ", ".join(failed) if failed else "failed"),
           subjects, {"targeted": len(plan.targets),
                      "answered": sum(1 for r in rows if r["answered"]),
                      "ok": sum(1 for r in rows if r["targeted"] and r["ok"])},
           destination=plan.destination, arguments=plan.arguments)
    raise typer.Exit(int(status))


def _send_and_verify(c, g, plan, before: dict[str, Any], wait: float
                     ) -> tuple[ExitStatus, list[dict[str, Any]]]:
    import time

    from celeryctl.actions.control import VERIFY_METHOD, control_rows, verified
    from celeryctl.collect import gather, send_control

    sent = send_control(c.target, plan.method, plan.arguments, destination=plan.destination,
                        wanted=plan.targets, options=g.worker_options, reply=plan.reply)
    if not sent.ok:
        c.err.print(safe(f"error: could not send {plan.command}: {sent.error}. Nothing was sent."),
                    highlight=False)
        _render_rows(c, plan, None)
        return ExitStatus.UNKNOWN, []
    replies: dict[str, list[Any]] = {}
    for n in sent.value.nodes:
        replies.setdefault(n.name, []).append(n.replies.get(plan.method))
    method = VERIFY_METHOD.get(plan.command)
    checks: dict[str, tuple[str, bool]] = {}
    stopped: dict[str, bool] | None = None
    # only the workers that took the command are worth waiting for
    pending = [n for n in plan.targets if not plan.reply
               or any(isinstance(r, dict) and "ok" in r for r in replies.get(n, []))]
    if method and pending:
        end = time.monotonic() + wait
        while True:
            again = gather(c.target, workers=(method,), destination=pending)
            nodes = {n.name: n.replies.get(method) for n in again.workers.value.nodes} \
                if again.workers.ok else None
            if nodes is not None:
                if not plan.reply:
                    stopped = {n: n not in nodes for n in plan.targets}
                    done = all(stopped.values())
                else:
                    for n in pending:
                        if n in nodes:
                            checks[n] = verified(plan, before.get(n), nodes[n])
                    done = all(checks.get(n, ("", False))[1] for n in pending)
                if done:
                    break
            if time.monotonic() >= end:
                break
            time.sleep(0.3)
    rows = control_rows(plan, replies, stopped)
    for r in rows:
        if r["worker"] in checks:
            shown, ok = checks[r["worker"]]
            r["after"] = shown
            r["took_effect"] = ok
    _render_rows(c, plan, rows)
    bad = [r for r in rows if r["targeted"] and (not r["ok"] or r.get("took_effect") is False)]
    return (ExitStatus.CRITICAL if bad or not rows else ExitStatus.OK), rows


def _render_plan(c, plan) -> None:
    from celeryctl.render.actions import render_control_plan

    render_control_plan(c, plan)


def _render_rows(c, plan, rows) -> None:
    from celeryctl.render.actions import render_control_result

    render_control_result(c, plan, rows)
