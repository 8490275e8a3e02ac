"""`celeryctl queues watch`: the live view of queues during an incident.

collect/watch.Watcher (slow discovery in the background, one cheap sample per refresh) ->
trend.WatchState (pure: rates, sparkline, drain time, staleness) -> render/live (screen or a
JSON line per refresh). The loop never raises on a broker error: the last values stay on
screen, marked stale with their age and the reason, and the next refresh tries again.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import typer

from celeryctl.cli import options as o
from celeryctl.status import ExitStatus


def register(queues_app: typer.Typer) -> None:
    queues_app.command("watch")(watch)


def watch(
    ctx: typer.Context,
    interval: float = typer.Option(2.0, "--interval", "-n", metavar="SECONDS", min=0.1,
                                   max=3600, help="Seconds between refreshes."),
    count: int | None = typer.Option(None, "--count", "-c", metavar="N", min=1,
                                     help="Stop after N refreshes."),
    sort: str = typer.Option("depth", "--sort", metavar="depth|rate|name",
                             help="Order rows by ready count, growth rate or name."),
    patterns: list[str] = typer.Option(None, "--queue", "-Q", metavar="PATTERN",
                                       help="Only queues matching this glob (repeatable)."),
    all_: bool = typer.Option(False, "--all", "-a", help="Include Celery's internal queues "
                              "(pidbox replies, celeryev, result queues)."),
    queue_warn: int = typer.Option(100, "--queue-warn", metavar="N", min=1,
                                   help="Rows turn yellow at this many ready messages."),
    queue_crit: int = typer.Option(1000, "--queue-crit", metavar="N", min=1,
                                   help="Rows turn red at this many (or with no consumer)."),
    stalled_after: float = typer.Option(
        60.0, "--stalled-after", metavar="SECONDS", min=0, max=86400,
        help="Mark a queue stalled once it has had messages and consumers but delivered "
        "nothing for this long (Redis: its head message unchanged; RabbitMQ: no consumer "
        "capacity)."),
    rediscover: float = typer.Option(30.0, "--rediscover", metavar="SECONDS", min=1,
                                     help="How often to look for new queues, consumers and "
                                     "workers (in the background)."),
    broker: o.Broker = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None, vhost: o.Vhost = None,
    timeout: o.Timeout = None, app_: o.App = None, profile: o.Profile = None,
    fmt: o.Format = "table", wide: o.Wide = False,
) -> None:
    """Live queue depth, rates and time to drain; survives the broker going away.

    Refreshes every --interval: per queue ready, unacked, consumers, whether it is stalled
    (messages and consumers, yet nothing delivered for --stalled-after seconds), rate in and
    out, net rate, a trend sparkline and the time to drain at the current net rate ("never"
    while growing).
    With --format json, or when stdout is not a terminal, prints one JSON line per refresh.
    Exit 0 after --count refreshes (3 if the last one could not read the broker), 130 on
    Ctrl-C."""
    from celeryctl.cli.read import Ctx
    from celeryctl.collect.watch import Watcher
    from celeryctl.status import UsageError
    from celeryctl.trend import WatchState

    if sort not in ("depth", "rate", "name"):
        raise UsageError(f"--sort must be depth, rate or name, got {sort!r}")
    c = Ctx(ctx, fmt, broker=broker, result_backend=None, rabbitmq_api=rabbitmq_api,
            vhost=vhost, queue=None, timeout=timeout, app=app_, profile=profile,
            rabbitmq_api_ca=rabbitmq_api_ca)
    pats = tuple(patterns or ()) + tuple(c.target.queues)
    watcher = Watcher(c.target, rediscover_seconds=rediscover)
    state = WatchState(queue_warn=queue_warn, queue_crit=queue_crit,
                       stalled_after=stalled_after)
    as_json = c.fmt == "json" or not sys.stdout.isatty()
    loop = _Loop(c, watcher, state, interval=interval, count=count, sort=sort, patterns=pats,
                 include_internal=all_)
    try:
        if as_json:
            loop.run(lambda rows, header, sources: sys.stdout.write(
                _json(rows, state, watcher, sources) + "\n") or sys.stdout.flush())
        else:
            from rich.live import Live

            with Live(console=c.out, screen=True, auto_refresh=False,
                      redirect_stderr=False) as live:
                loop.run(lambda rows, header, sources: live.update(
                    _screen(rows, header, c.out.size, wide), refresh=True))
    except KeyboardInterrupt:
        raise typer.Exit(int(ExitStatus.INTERRUPTED)) from None
    finally:
        watcher.close()
    raise typer.Exit(int(ExitStatus.UNKNOWN if state.stale else ExitStatus.OK))


class _Loop:
    def __init__(self, c, watcher, state, *, interval: float, count: int | None, sort: str,
                 patterns: tuple[str, ...], include_internal: bool) -> None:
        self.c, self.watcher, self.state = c, watcher, state
        self.interval, self.count, self.sort = interval, count, sort
        self.patterns, self.include_internal = patterns, include_internal

    def run(self, show) -> None:
        from celeryctl.snapshot import Observed

        first = self.watcher.discover()  # names first (bounded by the timeout; may fail)
        n = 0
        while True:
            tick = time.monotonic()
            if n == 0 and first.error is not None and not first.queues:
                # the broker just failed to answer within the budget: this refresh reports
                # that at once instead of spending a second timeout on the same broker
                obs = Observed(error=first.error, kind=first.state)
            else:
                self.watcher.maybe_rediscover()
                obs = self.watcher.sample()
            self.state.update(obs.value if obs.ok else None, obs.error)
            rows = self.state.rows(sort=self.sort, patterns=self.patterns,
                                   include_internal=self.include_internal)
            show(rows, self.header(), self.sources(obs))
            n += 1
            if self.count is not None and n >= self.count:
                return
            time.sleep(max(0.0, self.interval - (time.monotonic() - tick)))

    def header(self) -> dict[str, Any]:
        t = self.c.target
        d = self.watcher.discovery
        age = self.state.age_seconds()
        from celeryctl.views import human_seconds

        notes = []
        if t.used_default_broker:  # on the live screen too, not only before it
            notes.append(self.c.default_line())
        if d.error and d.queues:
            notes.append(f"rediscovery failed, showing the queues known "
                         f"{human_seconds(time.time() - d.time)} ago: {d.error}")
        if d.partial:
            notes.append(d.partial)
        if t.broker_kind == "redis":
            notes.append("Redis keeps no per-queue counters: in/out shown only for queues no "
                         "worker consumes; net rate and drain time from successive samples")
        if d.workers is not None:
            workers_note = f"as of {human_seconds(time.time() - d.time)} ago"
        else:
            workers_note = d.worker_error
        return {
            "cluster": t.profile, "broker": t.broker_redacted,
            "interval": self.interval, "workers": d.workers, "workers_note": workers_note,
            "last_good": time.strftime("%H:%M:%S", time.localtime(self.state.last_good))
            if self.state.last_good else None,
            "age": human_seconds(age) if age is not None and age >= 1 else None,
            "stale": self.state.error, "notes": notes,
        }

    def sources(self, obs) -> list[dict[str, Any]]:
        d = self.watcher.discovery
        age = self.state.age_seconds()
        return [
            {"name": "broker", "url": self.c.target.broker_redacted, "ok": obs.ok,
             "state": obs.state, "error": obs.error,
             "elapsed_seconds": round(obs.elapsed_seconds or 0.0, 4),
             "stale_seconds": round(age, 1) if obs.error and age is not None else None},
            {"name": "discovery", "ok": d.error is None,
             "state": "observed" if d.error is None else (d.state or "failed"),
             "error": d.error, "partial": d.partial,
             "age_seconds": round(time.time() - d.time, 1) if d.time else None,
             "workers_state": "observed" if d.workers is not None else d.worker_state,
             "workers_error": d.worker_error},
        ]


def _screen(rows, header, size, wide: bool):
    from celeryctl.render.live import render_screen

    return render_screen(rows, header, size.height, size.width, wide=wide)


def _json(rows, state, watcher, sources) -> str:
    from celeryctl.render.live import json_line

    # nothing read yet (the broker never answered): unknown, not an empty list of queues
    return json_line(rows if state.last_good else None, sources, stale=state.stale,
                     workers=watcher.discovery.workers)
