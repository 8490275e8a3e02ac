"""`celeryctl doctor`, `celeryctl checks`, `celeryctl explain`."""

from __future__ import annotations

import time

import typer

from celeryctl.cli import options as o


def doctor(
    ctx: typer.Context,
    broker: o.Broker = None, result_backend: o.Backend = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None,
    vhost: o.Vhost = None, queue: o.Queue = None, timeout: o.Timeout = None, app_: o.App = None,
    profile: o.Profile = None,
    fmt: str = typer.Option("table", "--format", "-f",
                            metavar="table|json|markdown|prometheus",
                            autocompletion=o.complete_choices("table", "json", "markdown",
                                                              "prometheus")),
    from_file: str | None = typer.Option(None, "--from", metavar="FILE", help="Diagnose a "
                                         "snapshot (celeryctl snapshot -o FILE) instead of the "
                                         "live cluster."),
    save: str | None = typer.Option(None, "--save", metavar="FILE", help="Also write this "
                                    "run's snapshot to FILE (redacted; .gz compresses)."),
    include_args: bool = typer.Option(False, "--include-args", help="With --save: keep task "
                                      "arguments in the snapshot."),
    select: list[str] | None = typer.Option(None, "--select", metavar="CODE|NAME|FAMILY",
                                               autocompletion=o.complete_check_selector,
                                               help="Run only these checks (repeatable)."),
    ignore: list[str] | None = typer.Option(None, "--ignore", metavar="CODE|NAME|FAMILY",
                                               autocompletion=o.complete_check_selector,
                                               help="Skip these checks (repeatable)."),
    fail_on: str = typer.Option("warning", "--fail-on", metavar="warning|critical",
                                autocompletion=o.complete_choices("warning", "critical"),
                                help="Lowest severity that makes the exit status non-zero."),
    queue_warn: int = typer.Option(100, "--queue-warn", help="Backlog warning threshold."),
    queue_crit: int = typer.Option(1000, "--queue-crit", help="Backlog critical threshold."),
    stale_after: float = typer.Option(300.0, "--stale-after", metavar="SECONDS",
                                      help="Idle time after which a connection is stale."),
    consumer_timeout: float = typer.Option(
        1800.0, "--consumer-timeout", metavar="SECONDS",
        help="RabbitMQ's consumer_timeout, if not the default (not readable over HTTP)."),
    long_task_after: float = typer.Option(
        1800.0, "--long-task-after", metavar="SECONDS", min=0.0,
        help="A task running longer than this is reported (TSK001)."),
    scheduled_warn: int = typer.Option(
        100, "--scheduled-warn", metavar="N", min=1,
        help="ETA/countdown tasks one worker may hold before TSK005 warns."),
    connections_per_worker: int = typer.Option(
        30, "--connections-per-worker", metavar="N",
        help="Broker connections per worker above which a leak is suspected."),
    sample_interval: float = typer.Option(0.0, "--sample-interval", min=0.0, max=300.0,
                                          metavar="SECONDS",
                                          help="Read queue depths twice, this far apart, to "
                                          "measure growth and time to drain (0: once; "
                                          "RabbitMQ rates are used when available)."),
    peek: bool = typer.Option(False, "--peek",
                              help="RabbitMQ: also sample queued messages through the "
                              "management API. This marks them redelivered (and counts a "
                              "delivery on quorum queues); off by default."),
    sample: int = typer.Option(10, "--sample", min=0, max=1000, metavar="N",
                               help="Messages read (never consumed) per queue on Redis to check "
                               "their content type; 0 disables."),
    events: float | None = typer.Option(None, "--events", metavar="SECONDS",
                                        help="Also listen to task events for SECONDS (as "
                                        "`celeryctl events --for`: enabled only where off, "
                                        "turned back off there, audited) for the EVT checks."),
    failure_ratio_warn: float = typer.Option(0.1, "--failure-ratio-warn", metavar="RATIO",
                                             help="EVT001: failed/finished runs of a task "
                                             "name above which it is reported (with --events)."),
    audit_log: str | None = typer.Option(None, "--audit-log", metavar="PATH",
                                         help="With --events: where the enable/restore "
                                         "records go [default ~/.local/state/celeryctl/"
                                         "audit.log]."),
) -> None:
    """The incident report: everything wrong, with evidence and the commands that fix it.
    Exit 0 all clear (broker, workers and queues observed), 1 warning, 2 critical (a broker
    that does not answer is critical), 3 nothing wrong found but the broker, the workers or
    the queues were not (fully) observed: permission denied, authentication failed, no worker
    replied, a queue list discovered only in part with no -Q/-A."""
    import sys

    from celeryctl.checks import Limits, Severity, run_checks, select_checks
    from celeryctl.cli.read import Ctx
    from celeryctl.collect.doctor import collect_doctor
    from celeryctl.render.report import (
        render_report_json,
        render_report_markdown,
        render_report_table,
    )
    from celeryctl.status import UsageError

    fmt = fmt.lower()
    if fmt not in ("table", "json", "markdown", "prometheus"):
        raise UsageError(f"--format must be table, json, markdown or prometheus, got {fmt!r}")
    if from_file and save:
        raise UsageError("--save writes the snapshot of a live run; --from reads one")
    if events is not None:
        from celeryctl.cli.events import MAX_WINDOW

        if from_file:
            raise UsageError("--events listens to the live cluster; --from reads a snapshot "
                             "(which holds the window of the run that saved it)")
        if not (events > 0 and events <= MAX_WINDOW):
            raise UsageError(f"--events must be more than 0 and at most {MAX_WINDOW:g} "
                             f"seconds, got {events:g}")
    if not (0.0 <= failure_ratio_warn < 1.0):
        raise UsageError(f"--failure-ratio-warn must be at least 0 and below 1, got "
                         f"{failure_ratio_warn:g}")
    if fail_on.lower() not in ("warning", "critical"):
        raise UsageError(f"--fail-on must be warning or critical, got {fail_on!r}")
    try:
        checks = select_checks(select, ignore)
    except KeyError as exc:
        raise UsageError(f"no check, name or family {exc.args[0]!r} "
                         f"(celeryctl checks lists them)") from None
    from celeryctl.render.console import make_console

    limits = Limits(queue_warn=queue_warn, queue_crit=queue_crit, stale_after=stale_after,
                    connections_per_worker=connections_per_worker,
                    consumer_timeout=consumer_timeout, long_task_after=long_task_after,
                    scheduled_warn=scheduled_warn, failure_ratio_warn=failure_ratio_warn)
    if from_file:

        from celeryctl.snapfile import open_snapshot

        doc, snap = open_snapshot(from_file)
        sources, notes, target = snap.sources, [f"from snapshot {from_file} taken "
                                                f"{doc.get('taken_at') or 'at an unknown time'}"
                                                ], snap.target
        elapsed, origin, out = float(doc.get("collection_seconds") or 0.0), [], make_console()
        err = make_console(stderr=True)
    else:
        # --events changes something (task events on where off, for the window): like every
        # action, refused without an explicit broker
        c = Ctx(ctx, "table", action=events is not None, broker=broker,
                result_backend=result_backend, rabbitmq_api=rabbitmq_api, vhost=vhost,
                queue=queue, timeout=timeout, app=app_, profile=profile,
                rabbitmq_api_ca=rabbitmq_api_ca)
        g, snap = collect_doctor(c.target, sample=sample, sample_interval=sample_interval,
                                 peek=peek, events=events is not None)
        sources, notes, target = g.sources, g.notes, c.target.summary()
        elapsed, origin, out, err = g.elapsed_seconds, c.origin_lines(), c.out, c.err
        if events is not None:
            window_status = _events_window(c, snap, events, audit_log)
            elapsed = g.elapsed_seconds
        if save:
            _save(snap, save, g.elapsed_seconds, include_args, err)
    report = run_checks(snap, limits, checks)
    if fmt == "json":
        render_report_json(sys.stdout, report, sources, target, elapsed, notes)
    elif fmt == "markdown":
        render_report_markdown(sys.stdout, report, sources, target)
    elif fmt == "prometheus":
        from celeryctl.render.prometheus import render_prometheus

        sys.stdout.write(render_prometheus(snap, report, sources, elapsed))
    else:
        render_report_table(out, report, sources)
        from rich.text import Text

        from celeryctl.render.text import literal, safe

        for line in origin:
            err.print(literal(line, style="dim"), highlight=False)
        for note in notes:  # notes name queues and workers: data, never markup
            err.print(Text.assemble(("note", "yellow"), safe(f": {note}")), highlight=False)
    status = doctor_status(report, Severity.parse(fail_on))
    if not from_file and events is not None and window_status is not None:
        from celeryctl.status import ExitStatus

        if window_status == ExitStatus.INTERRUPTED:
            status = ExitStatus.INTERRUPTED
        elif window_status == ExitStatus.CRITICAL:  # task events left on somewhere
            status = ExitStatus.CRITICAL
    raise typer.Exit(int(status))


def _events_window(c, snap, seconds: float, audit_log: str | None):
    """Run the same bounded window as `celeryctl events --for SECONDS` (cli/events.py:
    enable only where off, restore exactly there, state file, signals, audit) and put its
    summary into the snapshot as the `events` part. The exit status of that window when it
    matters to doctor (CRITICAL: events could not be turned back off; INTERRUPTED), else
    None."""
    from celeryctl.cli.events import _Run
    from celeryctl.collect.errors import FAILED
    from celeryctl.snapshot import Observed
    from celeryctl.status import ExitStatus

    run = _Run(c, seconds, (), (), "json", False, audit_log, False)
    t0 = time.monotonic()
    summary, status = run.collect()
    took = time.monotonic() - t0
    if summary is None:
        snap.parts["events"] = Observed(error=run.failure or "the events window did not run",
                                        kind=FAILED, elapsed_seconds=took)
    else:
        for k in ("target", "sources"):  # the report has its own
            summary.pop(k, None)
        snap.parts["events"] = Observed(summary, source="events", elapsed_seconds=took,
                                        notes=tuple(summary.get("notes") or ()))
    return status if status in (ExitStatus.CRITICAL, ExitStatus.INTERRUPTED) else None


def doctor_status(report, threshold) -> int:
    """Critical findings -> 2; warnings (at or above --fail-on) -> 1; otherwise, when the
    broker or the workers were not observed -> 3 (nothing found, but not everything was
    seen); else 0. A broker that does not answer is itself critical (SRC001 -> 2); one that
    refuses this account (auth failed, permission denied) is UNKNOWN (3): it says nothing
    about the cluster."""
    from celeryctl.checks import Severity
    from celeryctl.status import ExitStatus

    worst = report.worst()
    if worst >= Severity.CRITICAL and threshold <= Severity.CRITICAL:
        return ExitStatus.CRITICAL
    if worst >= threshold and worst >= Severity.WARNING:
        return ExitStatus.WARNING
    if report.incomplete:
        return ExitStatus.UNKNOWN
    return ExitStatus.OK


def _save(snap, path: str, elapsed: float, include_args: bool, err) -> None:
    from pathlib import Path

    from celeryctl import __version__
    from celeryctl.snapfile import snapshot_document, write_snapshot
    from celeryctl.status import UsageError

    doc = snapshot_document(snap, tool_version=__version__, collection_seconds=elapsed,
                            include_args=include_args)
    try:
        size = write_snapshot(doc, Path(path).expanduser())
    except FileExistsError:
        raise UsageError(f"{path} exists: celeryctl never overwrites a snapshot") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    err.print(f"snapshot written: {path} ({size / 1024:.1f} KiB"
              f"{', task arguments included' if include_args else ', redacted'})",
              highlight=False)


def checks_cmd(fmt: o.Format = "table", wide: o.Wide = False) -> None:
    """The catalogue of doctor's checks, by code (`celeryctl explain CODE` for one whole)."""
    import json
    import sys

    from celeryctl.checks import FAMILIES, catalogue

    fmt = o.check_format(fmt)
    cat = sorted(catalogue(), key=lambda c: c.code)
    if fmt == "json":
        sys.stdout.write(json.dumps({"schema": 1, "checks": [
            {"code": c.code, "name": c.name, "family": c.family, "summary": c.summary}
            for c in cat]}, indent=2) + "\n")
        return
    from celeryctl.render.console import make_console
    from celeryctl.render.fit import Col, print_table

    # a row is one or two lines: the summary is shortened (…) unless --wide
    cols = [Col("code", kind="name"), Col("name", 2),
            Col("family", 3, kind="wrap", min_width=15, drop_before_cut=True),
            Col("what it finds", 1, kind="wrap", min_width=24, max_lines=2)]
    out = make_console()
    from celeryctl.render.text import bind_units  # "80 %" never split (JSON keeps spaces)

    print_table(out, cols, [[c.code, c.name, FAMILIES[c.family], bind_units(c.summary)]
                            for c in cat],
                wide=wide)
    if not wide:
        out.print("celeryctl explain CODE: one check whole", style="dim", highlight=False)


def explain(code: str = typer.Argument(..., metavar="CODE|NAME",
                                      autocompletion=o.complete_check)) -> None:
    """Print one check's documentation: what it finds, why it matters, how to fix (its
    docs/checks page, rewrapped to the terminal's width)."""
    import shutil
    import sys

    from celeryctl.checks import find
    from celeryctl.render.report import render_check_page, rewrap_markdown
    from celeryctl.status import UsageError

    c = find(code)
    if c is None:
        raise UsageError(f"no check {code!r} (celeryctl checks lists them)")
    width = shutil.get_terminal_size((80, 24)).columns
    sys.stdout.write(rewrap_markdown(render_check_page(c), width))


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
    app.command("checks")(checks_cmd)
    app.command("explain")(explain)
