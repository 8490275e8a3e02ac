"""`celeryctl doctor`, `celeryctl checks`, `celeryctl explain`."""

from __future__ import annotations

import typer

from celeryctl.cli import options as o

DOCTOR_METHODS = ("ping", "stats", "active", "reserved", "scheduled", "active_queues", "conf",
                  "registered")


def doctor(
    ctx: typer.Context,
    broker: o.Broker = None, result_backend: o.Backend = None, rabbitmq_api: o.RabbitAPI = None,
    vhost: o.Vhost = None, queue: o.Queue = None, timeout: o.Timeout = None, app_: o.App = None,
    profile: o.Profile = None,
    fmt: str = typer.Option("table", "--format", "-f", metavar="table|json|markdown"),
    select: list[str] | None = typer.Option(None, "--select", metavar="CODE|NAME|FAMILY",
                                               help="Run only these checks (repeatable)."),
    ignore: list[str] | None = typer.Option(None, "--ignore", metavar="CODE|NAME|FAMILY",
                                               help="Skip these checks (repeatable)."),
    fail_on: str = typer.Option("warning", "--fail-on", metavar="warning|critical",
                                help="Lowest severity that makes the exit status non-zero."),
    queue_warn: int = typer.Option(100, "--queue-warn", help="Backlog warning threshold."),
    queue_crit: int = typer.Option(1000, "--queue-crit", help="Backlog critical threshold."),
    stale_after: float = typer.Option(300.0, "--stale-after", metavar="SECONDS",
                                      help="Idle time after which a connection is stale."),
    consumer_timeout: float = typer.Option(
        1800.0, "--consumer-timeout", metavar="SECONDS",
        help="RabbitMQ's consumer_timeout, if not the default (not readable over HTTP)."),
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
) -> None:
    """The incident report: everything wrong, with evidence and the commands that fix it.
    Exit 0 ok, 1 warning, 2 critical, 3 nothing could be observed."""
    import sys

    from celeryctl.checks import Limits, Severity, run_checks, select_checks
    from celeryctl.cli.read import Ctx
    from celeryctl.collect import gather, to_snapshot
    from celeryctl.render.report import (
        render_report_json,
        render_report_markdown,
        render_report_table,
    )
    from celeryctl.status import ExitStatus, UsageError

    fmt = fmt.lower()
    if fmt not in ("table", "json", "markdown"):
        raise UsageError(f"--format must be table, json or markdown, got {fmt!r}")
    if fail_on.lower() not in ("warning", "critical"):
        raise UsageError(f"--fail-on must be warning or critical, got {fail_on!r}")
    try:
        checks = select_checks(select, ignore)
    except KeyError as exc:
        raise UsageError(f"no check, name or family {exc.args[0]!r} "
                         f"(celeryctl checks lists them)") from None
    c = Ctx(ctx, "table", broker=broker, result_backend=result_backend,
            rabbitmq_api=rabbitmq_api, vhost=vhost, queue=queue, timeout=timeout, app=app_,
            profile=profile)
    g = gather(c.target, workers=DOCTOR_METHODS, queues=True, connections=True, server=True,
               backend=bool(c.target.result_backend), samples=sample)
    snap = to_snapshot(g)
    _add_growth(snap, g, c.target, sample_interval)
    if peek and c.target.broker_kind == "amqp" and sample:
        _add_peek(snap, g, c.target, sample)
    limits = Limits(queue_warn=queue_warn, queue_crit=queue_crit, stale_after=stale_after,
                    connections_per_worker=connections_per_worker,
                    consumer_timeout=consumer_timeout)
    report = run_checks(snap, limits, checks)
    target = c.target.summary()
    if fmt == "json":
        render_report_json(sys.stdout, report, g.sources, target, g.elapsed_seconds, g.notes)
    elif fmt == "markdown":
        render_report_markdown(sys.stdout, report, g.sources, target)
    else:
        render_report_table(c.out, report, g.sources)
        for line in c.origin_lines():
            c.err.print(f"[dim]{line}[/dim]", markup=True)
        for note in g.notes:
            c.err.print(f"[yellow]note[/]: {note}", markup=True, highlight=False)
    nothing_observed = not any(s.ok for s in g.sources)
    if nothing_observed and not any(f.severity is Severity.CRITICAL for f in report.findings):
        raise typer.Exit(int(ExitStatus.UNKNOWN))
    worst = report.worst()
    threshold = Severity.parse(fail_on)
    if worst >= Severity.CRITICAL and threshold <= Severity.CRITICAL:
        code = ExitStatus.CRITICAL
    elif worst >= threshold and worst >= Severity.WARNING:
        code = ExitStatus.WARNING
    else:
        code = ExitStatus.OK
    raise typer.Exit(int(code))


def _add_peek(snap, g, target, per_queue: int) -> None:
    """--peek on RabbitMQ: bounded management-API sampling of non-empty task queues."""
    import time

    from celeryctl.collect.bounded import spawn
    from celeryctl.collect.rabbitmq import ManagementAPI, collect_peek
    from celeryctl.snapshot import Observed

    c_err = "no management API"
    if target.rabbitmq_api is None or not g.queues.ok:
        snap.parts["samples"] = Observed(error=c_err if target.rabbitmq_api is None
                                         else "queues not observed")
        return
    api = ManagementAPI(target.rabbitmq_api, target.timeout)
    names = [q.name for q in g.queues.value if not q.internal and q.ready]
    obs = spawn("peek", lambda: collect_peek(api, target.effective_vhost, names, per_queue),
                "management API get").wait(time.monotonic() + target.timeout)
    g.notes.append(f"--peek: sampled {len(names)} RabbitMQ queues through the management API; "
                   f"those messages are now marked redelivered")
    snap.parts["samples"] = Observed(obs.value, source="management-api get (--peek)") \
        if obs.ok else Observed(error=obs.error)


def _rss_growth(g1, g2):
    """node -> (maxrss before, after, recycles processes) across the two samples."""
    from celeryctl.snapshot import Observed

    if not (g1.workers.ok and g2.workers.ok):
        return Observed(error="workers not observed in both samples")

    def rss(view):
        out = {}
        for n in view.nodes:
            st = n.replies.get("stats") or {}
            mtpc = (st.get("pool") or {}).get("max-tasks-per-child")
            maxrss = (st.get("rusage") or {}).get("maxrss")
            if isinstance(maxrss, int):
                out.setdefault(n.name, (maxrss, bool(mtpc)))
        return out

    a, b = rss(g1.workers.value), rss(g2.workers.value)
    return Observed({n: (a[n][0], b[n][0], b[n][1]) for n in a if n in b})


def _add_growth(snap, g, target, interval: float) -> None:
    """Queue growth: a second depth sample `interval` seconds later, else broker rates."""
    import time

    from celeryctl.collect import gather
    from celeryctl.snapshot import Observed, growth_from_rates, growth_from_samples

    if not g.queues.ok:
        snap.parts["growth"] = Observed(error="queues not observed")
        snap.parts["rss_growth"] = Observed(error="needs --sample-interval")
        return
    if interval > 0:
        time.sleep(interval)
        g2 = gather(target, queues=True, workers=("stats",))
        snap.parts["rss_growth"] = _rss_growth(g, g2)
        if g2.queues.ok:
            snap.parts["growth"] = Observed(growth_from_samples(g.queues.value, g2.queues.value,
                                                                interval), source="samples")
        else:
            snap.parts["growth"] = Observed(error=f"second sample failed: {g2.queues.error}")
        return
    snap.parts["rss_growth"] = Observed(error="one sample only: pass --sample-interval SECONDS "
                                               "to measure memory growth")
    rates = growth_from_rates(g.queues.value)
    if rates:
        snap.parts["growth"] = Observed(rates, source="management-api rates")
    else:
        snap.parts["growth"] = Observed(error="one sample only: pass --sample-interval SECONDS "
                                              "to measure growth")


def checks_cmd(fmt: o.Format = "table") -> None:
    """The catalogue of doctor's checks."""
    import json
    import sys

    from celeryctl.checks import FAMILIES, catalogue

    fmt = o.check_format(fmt)
    cat = catalogue()
    if fmt == "json":
        sys.stdout.write(json.dumps({"schema": 1, "checks": [
            {"code": c.code, "name": c.name, "family": c.family, "summary": c.summary}
            for c in cat]}, indent=2) + "\n")
        return
    from celeryctl.render.console import make_console
    from celeryctl.render.tables import _table

    t = _table()
    for col in ("code", "name", "family", "what it finds"):
        t.add_column(col)
    for c in cat:
        t.add_row(c.code, c.name, FAMILIES[c.family], c.summary)
    make_console().print(t)


def explain(code: str = typer.Argument(..., metavar="CODE|NAME")) -> None:
    """Print one check's documentation: what it finds, why it matters, how to fix."""
    import sys

    from celeryctl.checks import find
    from celeryctl.render.report import render_check_page
    from celeryctl.status import UsageError

    c = find(code)
    if c is None:
        raise UsageError(f"no check {code!r} (celeryctl checks lists them)")
    sys.stdout.write(render_check_page(c))


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
    app.command("checks")(checks_cmd)
    app.command("explain")(explain)
