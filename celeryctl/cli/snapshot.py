"""`celeryctl snapshot -o FILE` and `celeryctl snapshot diff A B`."""

from __future__ import annotations

import typer

from celeryctl.cli import options as o

snapshot_app = typer.Typer(
    help="Capture everything doctor collects into one redacted JSON file (gzip when FILE ends "
    "in .gz), to share and diagnose offline (`doctor --from FILE`); `snapshot diff A B` shows "
    "what changed. Exit 0 written, 3 nothing could be observed, 64 bad usage.",
    invoke_without_command=True, rich_markup_mode=None, add_completion=False)


@snapshot_app.callback()
def snapshot(
    ctx: typer.Context,
    output: str | None = typer.Option(None, "--output", "-o", metavar="FILE",
                                      help="Where to write the snapshot (never overwritten)."),
    include_args: bool = typer.Option(False, "--include-args", help="Keep task arguments "
                                      "(args, kwargs and their reprs); redacted by default."),
    sample: int = typer.Option(10, "--sample", min=0, max=1000, metavar="N",
                               help="Messages read (never consumed) per queue on Redis."),
    sample_interval: float = typer.Option(0.0, "--sample-interval", min=0.0, max=300.0,
                                          metavar="SECONDS", help="A second sample this far "
                                          "apart (growth, memory growth)."),
    peek: bool = typer.Option(False, "--peek", help="RabbitMQ: sample queued messages through "
                              "the management API (marks them redelivered)."),
    broker: o.Broker = None, result_backend: o.Backend = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None,
    vhost: o.Vhost = None, queue: o.Queue = None, timeout: o.Timeout = None, app_: o.App = None,
    profile: o.Profile = None,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from celeryctl.cli.doctor import _save
    from celeryctl.cli.read import Ctx
    from celeryctl.collect.doctor import collect_doctor
    from celeryctl.status import ExitStatus, UsageError

    if not output:
        raise UsageError("say where to write it: celeryctl snapshot -o FILE")
    c = Ctx(ctx, "table", broker=broker, result_backend=result_backend,
            rabbitmq_api=rabbitmq_api, vhost=vhost, queue=queue, timeout=timeout, app=app_,
            profile=profile, rabbitmq_api_ca=rabbitmq_api_ca)
    g, snap = collect_doctor(c.target, sample=sample, sample_interval=sample_interval,
                             peek=peek)
    _save(snap, output, g.elapsed_seconds, include_args, c.err)
    c.footer(g)
    raise typer.Exit(int(ExitStatus.OK if any(s.ok for s in g.sources)
                         else ExitStatus.UNKNOWN))


@snapshot_app.command("diff")
def diff(
    before: str = typer.Argument(..., metavar="A"),
    after: str = typer.Argument(..., metavar="B"),
    fmt: o.Format = "table", wide: o.Wide = False,
) -> None:
    """What changed from snapshot A to snapshot B: queues grown or drained, workers gone or
    new, settings changed, findings new or resolved (default thresholds)."""
    import sys

    from celeryctl.checks import Limits, run_checks, select_checks
    from celeryctl.snapdiff import diff_snapshots
    from celeryctl.snapfile import open_snapshot

    fmt = o.check_format(fmt)
    snaps = [open_snapshot(path)[1] for path in (before, after)]
    checks = select_checks(None, None)
    reports = [run_checks(s, Limits(), checks) for s in snaps]
    d = diff_snapshots(snaps[0], snaps[1], reports[0], reports[1])
    if fmt == "json":
        from celeryctl.render.jsonout import dumps

        sys.stdout.write(dumps({"schema": 1, "kind": "snapshot-diff", **d}, indent=2) + "\n")
        return
    from celeryctl.render.console import make_console
    from celeryctl.render.snapdiff import render_diff

    render_diff(make_console(), d, wide=wide)


def register(app: typer.Typer) -> None:
    app.add_typer(snapshot_app, name="snapshot")
