"""Read commands: `workers`, `workers inspect KIND`, `queues`, `connections`.

They never change broker state: no consuming, acking or requeueing, no unpickling.
"""

from __future__ import annotations

from typing import Any

import typer

from celeryctl.cli import options as o

# `report`: each worker's Celery/kombu/Python versions (reduced by the collector; measured at
# no cost: docs/performance.md). No `conf`: the pool comes from `stats` (views.pool_name).
WORKER_METHODS = ("ping", "stats", "active", "reserved", "scheduled", "active_queues",
                  "report")
INSPECT_KINDS = {
    "active": "active", "reserved": "reserved", "scheduled": "scheduled",
    "registered": "registered", "conf": "conf", "stats": "stats", "queues": "active_queues",
    "ping": "ping", "revoked": "revoked", "report": "report",
}

workers_app = typer.Typer(
    help="Workers as they answer remote control: one row per worker. Exit 0 all expected "
    "workers replied, 1 some expected worker is silent, 2 no worker replied, 3 broker "
    "unreachable.",
    invoke_without_command=True, rich_markup_mode=None, add_completion=False,
)


class Ctx:
    """What every read command sets up: target, consoles, format."""

    def __init__(self, ctx: typer.Context, fmt: str, *, action: bool = False,
                 **flags: Any) -> None:
        """`action`: a command that changes something — refused (exit 64, before any
        connection) when no broker was given, instead of acting on the default one."""
        from celeryctl.render.console import make_console
        from celeryctl.targets import refuse_default_broker, resolve

        self.fmt = o.check_format(fmt)
        # --wide (every column whatever the width): the command's own option, read by the
        # table renderers of actions (render/actions) as `c.wide`
        self.wide = bool((getattr(ctx, "params", None) or {}).get("wide"))
        self.target = resolve(o.collect_flags(ctx, **flags))
        if action:
            refuse_default_broker(self.target)
        self.out = make_console()
        self.err = make_console(stderr=True)
        from rich.text import Text

        from celeryctl.render.text import safe

        for line in self.target.tls_warnings:  # before anything else: never silent
            self.err.print(Text.assemble(("warning", "bold yellow"), safe(f": {line}")),
                           highlight=False)
        # the default broker is said at once, by every command, whatever it prints later
        # (a live screen, JSON, a report): a read of localhost must never pass for the cluster
        self.announced_default = self.target.used_default_broker
        if self.announced_default:
            from rich.text import Text

            self.err.print(Text.assemble(("note", "yellow"), safe(f": {self.default_line()}")),
                           highlight=False)

    def default_line(self) -> str:
        return (f"no broker given (--broker, CELERY_BROKER_URL, --profile or -A): using the "
                f"default {self.target.broker_redacted}")

    @property
    def has_backend(self) -> bool:
        """The result backend is reported in `sources` whenever one is configured (probed in
        parallel; it never changes a listing's exit status)."""
        return bool(self.target.result_backend)

    def origin_lines(self, *, for_json: bool = False) -> list[str]:
        lines = []
        if self.target.used_default_broker and (for_json or not self.announced_default):
            lines.append(self.default_line())
        if self.target.app and self.target.app.errors:
            lines += [f"app {self.target.app.name}: {e}" for e in self.target.app.errors]
        return lines

    def footer(self, g) -> None:
        from celeryctl.render.tables import render_sources

        render_sources(self.err, g.sources, g.notes, self.origin_lines())

    def json(self, kind: str, rows: Any, g, **extra: Any) -> None:
        import sys

        from celeryctl.render.jsonout import render_json

        render_json(sys.stdout, kind, rows, sources=g.sources, target=self.target.summary(),
                    notes=self.origin_lines(for_json=True) + g.notes, **extra)


def _workers_status(g) -> int:
    from celeryctl.status import ExitStatus

    if not g.workers.ok:
        return ExitStatus.UNKNOWN
    view = g.workers.value
    if not view.nodes:
        return ExitStatus.CRITICAL
    if view.missing:
        return ExitStatus.WARNING
    return ExitStatus.OK


@workers_app.callback()
def workers(
    ctx: typer.Context,
    broker: o.Broker = None, result_backend: o.Backend = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None,
    vhost: o.Vhost = None, queue: o.Queue = None, timeout: o.Timeout = None, app_: o.App = None,
    profile: o.Profile = None, fmt: o.Format = "table",
    destination: list[str] = typer.Option(None, "--destination", "-d", metavar="NODE",
                                          help="Only these worker node names (repeatable)."),
    wide: o.Wide = False,
) -> None:
    """Workers as they answer remote control: one row per worker."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = dict(ctx.obj or {})
        ctx.obj["workers_flags"] = o.collect_flags(ctx, broker, result_backend, rabbitmq_api,
                                                   vhost, queue, timeout, app_, profile,
                                                   rabbitmq_api_ca)
        return
    from celeryctl.collect import gather
    from celeryctl.views import duplicate_names, worker_rows

    c = Ctx(ctx, fmt, broker=broker, result_backend=result_backend, rabbitmq_api=rabbitmq_api,
            vhost=vhost, queue=queue, timeout=timeout, app=app_, profile=profile,
            rabbitmq_api_ca=rabbitmq_api_ca)
    g = gather(c.target, workers=WORKER_METHODS, destination=list(destination or []) or None,
               backend=c.has_backend)
    rows = worker_rows(g.workers.value) if g.workers.ok else None
    dups = duplicate_names(g.workers.value) if g.workers.ok else []
    if dups:
        g.notes.append("duplicate worker node names (kept as separate rows): " + ", ".join(dups))
    if g.workers.ok and g.workers.value.foreign_replies:
        g.notes.append(f"{g.workers.value.foreign_replies} worker replies in "
                       f"{', '.join(g.workers.value.foreign_content_types)} were not decoded "
                       f"(never unpickled)")
    if c.fmt == "json":
        view = g.workers.value if g.workers.ok else None
        c.json("workers", rows, g,
               expected=list(view.expected) if view and view.expected is not None else None,
               missing=view.missing if view else None)
    else:
        from celeryctl.render.tables import render_workers

        if rows is not None:
            if rows:
                render_workers(c.out, rows, wide=wide)
            else:
                c.err.print(f"no worker replied within {g.workers.value.waited_seconds:.1f} s")
        c.footer(g)
    raise typer.Exit(int(_workers_status(g)))


@workers_app.command("inspect")
def inspect(
    ctx: typer.Context,
    kind: str = typer.Argument(..., help="active, reserved, scheduled, registered, conf, stats, "
                               "queues, ping, revoked, report (the versions it names)"),
    broker: o.Broker = None, result_backend: o.Backend = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None,
    vhost: o.Vhost = None, queue: o.Queue = None, timeout: o.Timeout = None, app_: o.App = None,
    profile: o.Profile = None, fmt: o.Format = "table",
    destination: list[str] = typer.Option(None, "--destination", "-d", metavar="NODE",
                                          help="Only these worker node names (repeatable)."),
    include_args: bool = typer.Option(False, "--include-args", help="Show task arguments "
                                      "(args, kwargs and their reprs); hidden by default."),
) -> None:
    """The raw per-worker replies to one inspect method (duplicate node names kept). Task
    arguments and passwords in URLs are redacted (arguments kept with --include-args)."""
    from celeryctl.collect import gather
    from celeryctl.status import UsageError

    method = INSPECT_KINDS.get(kind.lower())
    if method is None:
        raise UsageError(f"unknown inspect kind {kind!r}; one of: {', '.join(INSPECT_KINDS)}")
    parent = (ctx.obj or {}).get("workers_flags")
    if parent is not None:
        ctx.obj = dict(ctx.obj)
        ctx.obj["flags"] = parent
    c = Ctx(ctx, fmt, broker=broker, result_backend=result_backend, rabbitmq_api=rabbitmq_api,
            vhost=vhost, queue=queue, timeout=timeout, app=app_, profile=profile,
            rabbitmq_api_ca=rabbitmq_api_ca)
    g = gather(c.target, workers=(method,), destination=list(destination or []) or None)
    view = g.workers.value if g.workers.ok else None
    from celeryctl.snapfile import redact_document

    replies = [{"name": n.name, "reply": redact_document(
        n.replies.get(method), include_args=include_args, settings=method == "conf")}
        for n in view.nodes] if view else None
    if c.fmt == "json":
        c.json("replies", replies, g, method=method,
               expected=list(view.expected) if view and view.expected is not None else None,
               missing=view.missing if view else None)
    else:
        from celeryctl.render.tables import render_replies

        if replies is not None:
            render_replies(c.out, method, replies)
            for name in view.missing:
                from rich.text import Text

                from celeryctl.render.text import safe

                c.err.print(Text.assemble(("no reply", "red"), safe(
                    f" from {name} (expected: {view.expected_source})")), highlight=False)
            if not replies:
                c.err.print(f"no worker replied within {view.waited_seconds:.1f} s")
        c.footer(g)
    raise typer.Exit(int(_workers_status(g)))


def _group(help_text: str) -> typer.Typer:
    """A command that lists by itself and has subcommands (`queues watch`, `connections
    kill`); options given before the subcommand are passed down to it (`_pass_down`)."""
    return typer.Typer(help=help_text, invoke_without_command=True, rich_markup_mode=None,
                       add_completion=False)


def _pass_down(ctx: typer.Context, *flags) -> bool:
    """True when a subcommand runs: this group's options become its defaults."""
    if ctx.invoked_subcommand is None:
        return False
    ctx.obj = dict(ctx.obj or {})
    ctx.obj["flags"] = o.collect_flags(ctx, *flags)
    return True


queues_app = _group(
    "True queue depth: ready (with Redis priority sub-lists), in-flight/unacked, "
    "consumers, rates. Exit 0 every queue read, 3 the broker (or a listed queue) could not "
    "be read, or the queue list is partial and no -Q/-A named the queues. `queues watch` "
    "is the live view.")


@queues_app.callback()
def queues(
    ctx: typer.Context,
    broker: o.Broker = None, result_backend: o.Backend = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None,
    vhost: o.Vhost = None, queue: o.Queue = None, timeout: o.Timeout = None, app_: o.App = None,
    profile: o.Profile = None, fmt: o.Format = "table",
    all_: bool = typer.Option(False, "--all", "-a",
                              help="Include Celery's internal queues (pidbox replies, celeryev, "
                              "result queues)."),
    wide: o.Wide = False,
) -> None:
    """True queue depth: ready (with Redis priority sub-lists), in-flight/unacked, consumers,
    rates. Exit 0 every queue read, 3 the broker (or a listed queue) could not be read, or
    the queue list is partial and no -Q/-A named the queues."""
    if _pass_down(ctx, broker, result_backend, rabbitmq_api, vhost, queue, timeout, app_,
                  profile, rabbitmq_api_ca):
        return
    from celeryctl.collect import gather
    from celeryctl.views import no_internal_queues_note, queue_rows

    c = Ctx(ctx, fmt, broker=broker, result_backend=result_backend, rabbitmq_api=rabbitmq_api,
            vhost=vhost, queue=queue, timeout=timeout, app=app_, profile=profile,
            rabbitmq_api_ca=rabbitmq_api_ca)
    g = gather(c.target, queues=True, backend=c.has_backend)
    rows = queue_rows(g.queues.value, include_internal=all_, names=c.target.queues) \
        if g.queues.ok else None
    unacked = g.redis_unacked.value if g.redis_unacked.ok else None
    extra: dict[str, Any] = {}
    if unacked is not None:
        extra["redis_unacked"] = {"total": unacked.total,
                                  "oldest_seconds": unacked.oldest_seconds,
                                  "unattributed": unacked.unattributed,
                                  "per_queue_known": unacked.per_queue is not None,
                                  "malformed": unacked.malformed,
                                  "problems": list(unacked.problems)}
        if unacked.per_queue is None and unacked.total:  # (None: not a hash, in the notes)
            g.notes.append(f"{unacked.total} in-flight messages: too many to attribute per queue "
                           f"cheaply; per-queue unacked shown as unknown")
    if g.queues.ok:
        g.notes.extend(n for n in g.queues.notes if n not in g.notes)
        g.notes.extend(_set_aside_notes(g.queues.value))
        g.notes.extend(n for n in [no_internal_queues_note(
            rows, c.target.broker_kind, include_internal=all_, names=c.target.queues)] if n)
    if c.fmt == "json":
        from celeryctl.views import server_summary

        c.json("queues", rows, g, server=server_summary(g), **extra)
    else:
        from celeryctl.render.tables import render_queues

        if rows is not None:
            if rows:
                render_queues(c.out, rows, "redis" if c.target.broker_kind == "redis"
                              else "rabbitmq", wide=wide)
            else:
                c.err.print("no queues found" + (" (partial discovery: see the note)"
                                                 if g.queues.partial else ""))
        else:
            from celeryctl.render.tables import render_unobserved

            render_unobserved(c.err, "queues", g.queues)
            if unacked is not None and unacked.total:
                c.err.print(f"in flight (unacked): {unacked.total}, oldest "
                            f"{unacked.oldest_seconds or 0:.0f} s")
        c.footer(g)
    if g.queues.ok and c.fmt != "json":
        from celeryctl.render.text import safe
        from celeryctl.snapshot import unread_task_queues

        for q in unread_task_queues(g.queues.value)[:10]:
            c.err.print(f"not read: queue {safe(q.name)}: {safe(q.error)}", markup=False,
                        highlight=False)
    raise typer.Exit(int(queues_status(c.target, g.queues)))


def _set_aside_notes(depths) -> list[str]:
    """Messages a killed purge left set aside: said even without --all (they are out of their
    queue and no worker will ever see them)."""
    from celeryctl.collect.redis import SET_ASIDE_ORIGIN

    out = []
    for q in depths:
        if SET_ASIDE_ORIGIN in (q.discovered_by or ()):
            a = q.arguments or {}
            out.append(f"{q.ready} messages of queue {a.get('purge_of')!r} are set aside by a "
                       f"purge that never finished ({q.name}): `celeryctl restore --set-aside` "
                       f"puts them back (docs/purge.md)")
    return out


def queues_status(target, queues) -> int:
    """0 every queue listed was read; 3 the queues could not be read, some listed queue could
    not be, or the list itself is partial (no SCAN / no management API) and no -Q or -A named
    the queues: a queue nobody consumes may be missing."""
    from celeryctl.snapshot import unread_task_queues
    from celeryctl.status import ExitStatus

    if not queues.ok or unread_task_queues(queues.value):
        return ExitStatus.UNKNOWN
    if queues.partial and not (target.queues or target.app):
        return ExitStatus.UNKNOWN
    return ExitStatus.OK


connections_app = _group(
    "Redis clients (CLIENT LIST) or RabbitMQ connections, with the worker each belongs "
    "to. Exit 0 observed, 3 the broker (or management API) could not be read. "
    "`connections kill` closes stale ones.")


@connections_app.callback()
def connections(
    ctx: typer.Context,
    broker: o.Broker = None, result_backend: o.Backend = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None,
    vhost: o.Vhost = None, queue: o.Queue = None, timeout: o.Timeout = None, app_: o.App = None,
    profile: o.Profile = None, fmt: o.Format = "table", wide: o.Wide = False,
) -> None:
    """Redis clients (CLIENT LIST) or RabbitMQ connections, with the worker each belongs to.
    Exit 0 observed, 3 the broker (or management API) could not be read."""
    if _pass_down(ctx, broker, result_backend, rabbitmq_api, vhost, queue, timeout, app_,
                  profile, rabbitmq_api_ca):
        return
    from celeryctl.collect import gather
    from celeryctl.status import ExitStatus
    from celeryctl.views import attribute_connections, connection_row

    c = Ctx(ctx, fmt, broker=broker, result_backend=result_backend, rabbitmq_api=rabbitmq_api,
            vhost=vhost, queue=queue, timeout=timeout, app=app_, profile=profile,
            rabbitmq_api_ca=rabbitmq_api_ca)
    g = gather(c.target, connections=True, workers=("stats",), backend=c.has_backend)
    rows = None
    if g.connections.ok:
        view = g.workers.value if g.workers.ok else None
        conns = attribute_connections(g.connections.value, view, g.host_addresses,
                                      g.local_pids, db=c.target.broker_db)
        rows = [connection_row(x) for x in sorted(conns, key=lambda x: (x.worker or "~",
                                                                        x.address))]
    if c.fmt == "json":
        from celeryctl.views import server_summary

        c.json("connections", rows, g, server=server_summary(g))
    else:
        from celeryctl.render.tables import render_connections

        if rows is not None:
            render_connections(c.out, rows, "redis" if c.target.broker_kind == "redis"
                               else "rabbitmq", wide=wide)
        else:
            from celeryctl.render.tables import render_unobserved

            render_unobserved(c.err, "connections", g.connections)
        c.footer(g)
    raise typer.Exit(int(ExitStatus.OK if g.connections.ok else ExitStatus.UNKNOWN))


def register(app: typer.Typer) -> None:
    app.add_typer(workers_app, name="workers")
    app.add_typer(queues_app, name="queues")
    app.add_typer(connections_app, name="connections")
