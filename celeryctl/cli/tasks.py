"""`celeryctl tasks`: every task the workers hold, one row each (celeryctl.tasks)."""

from __future__ import annotations

import typer

from celeryctl.cli import options as o


def tasks(
    ctx: typer.Context,
    broker: o.Broker = None, result_backend: o.Backend = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None,
    vhost: o.Vhost = None, queue: o.Queue = None, timeout: o.Timeout = None, app_: o.App = None,
    profile: o.Profile = None, fmt: o.Format = "table",
    state: list[str] | None = typer.Option(None, "--state", "-s",
                                           metavar="active|reserved|scheduled",
                                           help="Only tasks in this state (repeatable)."),
    name: str | None = typer.Option(None, "--name", "-n", metavar="PATTERN",
                                    help="Only tasks whose name matches (fnmatch: "
                                    "'proj.billing.*')."),
    worker: list[str] | None = typer.Option(None, "--worker", "-w", metavar="NODE",
                                            help="Only this worker (node name; repeatable); "
                                            "only it is asked."),
    older_than: float | None = typer.Option(None, "--older-than", metavar="SECONDS",
                                            help="Only tasks running (active) or held "
                                            "(reserved, scheduled) longer than this."),
    include_args: bool = typer.Option(False, "--include-args", help="Show task arguments "
                                      "(args, kwargs); hidden by default."),
    from_file: str | None = typer.Option(None, "--from", metavar="FILE",
                                         help="The task view of a snapshot (celeryctl "
                                         "snapshot -o FILE), as it was when taken."),
    wide: o.Wide = False,
) -> None:
    """Every task the workers hold — active, reserved (prefetched), scheduled (ETA/countdown) —
    one row each, oldest first: runtime, how long held, time limits, acks_late, redelivered.
    Exit 0 every worker answered, 3 the workers (or some of them) could not be observed,
    64 bad usage."""
    import math
    import time

    from celeryctl.status import ExitStatus, UsageError
    from celeryctl.tasks import STATES, filter_rows, snapshot_task_view, task_view

    states = [s.lower() for s in state or []]
    bad = [s for s in states if s not in STATES]
    if bad:
        raise UsageError(f"--state must be one of {', '.join(STATES)}, got {bad[0]!r}")
    if name is not None and not name.strip():
        raise UsageError("--name must be a task name or an fnmatch pattern "
                         "('proj.billing.*'), got an empty one")
    if older_than is not None and not (math.isfinite(older_than) and older_than >= 0):
        raise UsageError(f"--older-than must be a finite number of seconds >= 0, "
                         f"got {older_than!r}")
    nodes = list(worker or []) or None
    fmt = o.check_format(fmt)
    if from_file:

        from celeryctl.render.console import make_console
        from celeryctl.snapfile import open_snapshot

        doc, snap = open_snapshot(from_file)
        view = snapshot_task_view(snap)
        sources, notes = snap.sources, [f"from snapshot {from_file} taken "
                                        f"{doc.get('taken_at') or 'at an unknown time'}"]
        target, out, err, origin = snap.target, make_console(), make_console(stderr=True), []
        if doc.get("redaction", {}).get("args") != "included" and include_args:
            notes.append("--include-args: this snapshot was written without task arguments")
    else:
        from celeryctl.cli.read import Ctx
        from celeryctl.collect import gather, to_snapshot
        from celeryctl.tasks import TASK_METHODS

        c = Ctx(ctx, fmt, broker=broker, result_backend=result_backend,
                rabbitmq_api=rabbitmq_api, vhost=vhost, queue=queue, timeout=timeout,
                app=app_, profile=profile, rabbitmq_api_ca=rabbitmq_api_ca)
        g = gather(c.target, workers=TASK_METHODS, destination=nodes,
                   inflight=c.target.broker_kind == "redis")
        view = task_view(to_snapshot(g), time.time())
        sources, notes, target = g.sources, g.notes, c.target.summary()
        out, err, origin = c.out, c.err, c.origin_lines(for_json=fmt == "json")
    rows = filter_rows(view.rows, states=states, name=name, worker=nodes,
                       older_than=older_than)
    # what was not seen, for the workers asked about
    unseen = [u for u in view.unseen if not nodes or u.split(": ", 1)[0] in nodes]
    if view.observed and not view.workers and not unseen:
        unseen = ["no worker replied" + (f" ({', '.join(nodes)})" if nodes else "")]
    status = ExitStatus.OK if view.observed and not unseen else ExitStatus.UNKNOWN
    if fmt == "json":
        import sys

        from celeryctl.render.jsonout import render_json

        render_json(sys.stdout, "tasks",
                    [r.to_dict(include_args=include_args) for r in rows]
                    if view.observed else None,
                    sources=sources, target=target, notes=origin + notes + list(view.notes),
                    complete=view.observed and not unseen, not_seen=unseen,
                    error=None if view.observed else view.error,
                    workers=list(view.workers))
        raise typer.Exit(int(status))
    from rich.text import Text

    from celeryctl.render.tables import render_sources, render_unobserved
    from celeryctl.render.text import safe

    if not view.observed:
        from celeryctl.snapshot import Observed

        render_unobserved(err, "tasks", Observed(error=view.error, kind=view.kind))
    elif rows:
        from celeryctl.render.tasks import render_tasks

        render_tasks(out, [r.to_dict(include_args=include_args) for r in rows],
                     include_args=include_args, wide=wide)
    elif unseen:
        err.print(Text.assemble(("no task seen", "yellow"), safe(
            " — but not every worker answered (below): tasks may be held there")),
            highlight=False)
    else:
        what = "no task held by " + (f"{', '.join(nodes)}" if nodes else
                                     f"the {len(view.workers)} worker(s) that answered")
        err.print(safe(what + (" matching the filters" if len(rows) < len(view.rows) or
                               states or name or older_than is not None else "")),
                  markup=False, highlight=False)
    for u in unseen:
        err.print(Text.assemble(("not seen", "bold red"), safe(f": {u}")), highlight=False)
    render_sources(err, sources, notes + list(view.notes), origin)
    raise typer.Exit(int(status))


def register(app: typer.Typer) -> None:
    app.command("tasks", help=tasks.__doc__)(tasks)
