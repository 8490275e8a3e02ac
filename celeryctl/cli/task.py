"""`celeryctl task ID [ID...]`: where each task is now (collect/taskfind.py, taskfind.py)."""

from __future__ import annotations

import typer

from celeryctl.cli import options as o


def register(app: typer.Typer) -> None:
    app.command("task")(task)


def task(
    ctx: typer.Context,
    ids: list[str] = typer.Argument(..., metavar="ID...", help="Task ids (one or more).",
                                    show_default=False),
    broker: o.Broker = None, result_backend: o.Backend = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None,
    vhost: o.Vhost = None, queue: o.Queue = None, timeout: o.Timeout = None, app_: o.App = None,
    profile: o.Profile = None, fmt: o.Format = "table",
    peek: bool = typer.Option(False, "--peek", help="RabbitMQ: read queued messages through "
                              "the management API's get (they are requeued, marked "
                              "redelivered), at most --peek-count per queue."),
    peek_count: int = typer.Option(100, "--peek-count", metavar="N", min=1, max=10000,
                                   help="Messages --peek reads per queue."),
) -> int:
    """Where each task is now: waiting in a queue (and its position), in flight, on which
    worker, revoked, or its result. Exit 0 every task located, 1 some task not found
    anywhere, 3 some task not located and a place could not be read, 64 bad id."""
    import time

    from celeryctl.cli.read import Ctx
    from celeryctl.collect.taskfind import lookup
    from celeryctl.status import UsageError
    from celeryctl.taskfind import check_ids, exit_code, findings

    try:
        wanted = check_ids(list(ids or []))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    c = Ctx(ctx, fmt, broker=broker, result_backend=result_backend, rabbitmq_api=rabbitmq_api,
            vhost=vhost, queue=queue, timeout=timeout, app=app_, profile=profile,
            rabbitmq_api_ca=rabbitmq_api_ca)
    lk = lookup(c.target, wanted, peek=peek, peek_count=peek_count)
    found, cov = findings(lk, time.time())
    code = exit_code(found, cov)
    if c.fmt == "json":
        c.json("tasks", [f.to_dict() for f in found], lk, searched=lk.queue_summary)
        return code
    from celeryctl.render.taskfind import render_findings

    render_findings(c.out, found, lk.queue_summary)
    c.footer(lk)
    return code
