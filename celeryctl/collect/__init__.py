"""Collectors: the only code that does I/O.

`gather()` runs what a command needs in parallel under one deadline (`--timeout` from the
start of collection) and returns a `Gathered` whose every part is an `Observed` — the value,
or the precise reason it could not be seen. Sources (broker, workers, management API, AMQP,
result backend) are listed with their redacted URL, whether they answered and why not.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from celeryctl.collect.bounded import spawn
from celeryctl.collect.errors import NOT_ASKED
from celeryctl.snapshot import (
    BackendStatus,
    Connection,
    Observed,
    QueueDepth,
    Snapshot,
    SourceStatus,
    WorkersView,
)
from celeryctl.targets import Target

# Time kept back from the worker broadcast for the follow-up depth round trip.
DEPTH_RESERVE = 0.2
# Hard cap past the deadline for the last quick step (depth pipeline, passive declares).
GRACE = 0.6


def _not_collected() -> Observed:
    return Observed(error="not collected", kind=NOT_ASKED)


@dataclass
class Gathered:
    target: Target
    workers: Observed = field(default_factory=_not_collected)
    queues: Observed = field(default_factory=_not_collected)
    connections: Observed = field(default_factory=_not_collected)
    redis_server: Observed = field(default_factory=_not_collected)
    redis_unacked: Observed = field(default_factory=_not_collected)
    # the `unacked` hash entry by entry (RedisInFlight): the task view's held times
    redis_inflight: Observed = field(default_factory=_not_collected)
    redis_info: Observed = field(default_factory=_not_collected)
    redis_config: Observed = field(default_factory=_not_collected)
    rabbit_server: Observed = field(default_factory=_not_collected)
    backend: Observed = field(default_factory=_not_collected)
    samples: Observed = field(default_factory=_not_collected)
    sentinel: Observed = field(default_factory=_not_collected)
    host_addresses: dict[str, list[str]] = field(default_factory=dict)
    local_pids: dict[str, int] = field(default_factory=dict)  # "ip:port" -> pid on this host
    # the transport options remote control used (with a detected global_keyprefix), so a
    # control command sent after this gather reaches the same pidbox keys
    worker_options: dict[str, Any] | None = None
    sources: list[SourceStatus] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    def source_ok(self, name: str) -> bool | None:
        for s in self.sources:
            if s.name == name:
                return s.ok
        return None


def to_snapshot(g: Gathered) -> Snapshot:
    """The doctor's view of a Gathered: plain parts keyed by name."""
    import time as _time

    t = g.target
    src = next((s for s in g.sources if s.name == "broker"), None)
    parts = {
        "broker": Observed(value=True) if src is not None and src.ok else Observed(
            error=(src.error if src else None) or "not reached",
            kind=src.state if src is not None else None),
        "workers": g.workers, "queues": g.queues, "connections": g.connections,
        "redis_server": g.redis_server, "redis_unacked": g.redis_unacked,
        "redis_info": g.redis_info, "redis_config": g.redis_config,
        "rabbit_server": g.rabbit_server, "backend": g.backend, "samples": g.samples,
        "sentinel": g.sentinel, "redis_inflight": g.redis_inflight,
        "app": Observed(value=t.app.settings) if t.app else Observed(
            error="no Celery app given (-A/--app): producer-side settings unknown",
            kind="not-configured"),
    }
    if g.connections.ok:
        from celeryctl.views import attribute_connections

        parts["connections"] = Observed(attribute_connections(
            g.connections.value, g.workers.value if g.workers.ok else None, g.host_addresses,
            g.local_pids, db=t.broker_db), source=g.connections.source)
    return Snapshot(broker_kind=t.broker_kind, target=t.summary(), parts=parts,
                    sources=list(g.sources), taken_at=_time.time(),
                    broker_hosts=tuple(e.host for e in t.broker))


def not_asked(reason: str, kind: str | None = None) -> Observed:
    return Observed(error=reason, kind=kind)


def gather(target: Target, *, workers: tuple[str, ...] = (), queues: bool = False,
           connections: bool = False, server: bool = False, backend: bool = False,
           destination: list[str] | None = None, samples: int = 0,
           peek: bool = False, inflight: bool = False) -> Gathered:
    """Collect the requested parts. `workers` lists inspect methods (empty: none asked).
    `samples`: queued messages to read per queue (Redis LRANGE; on RabbitMQ only with `peek`,
    because the management API's get marks them redelivered). `inflight`: Redis only, the
    `unacked` hash entry by entry (`redis_inflight`, for the task view)."""
    started = time.monotonic()
    g = Gathered(target=target)
    deadline = started + target.timeout
    backend_task = None
    if backend:
        backend_task = _spawn_backend(target, deadline)
    sentinel_task = None
    if server and target.broker[0].scheme == "sentinel":
        from celeryctl.collect.redis import collect_sentinel

        sentinel_task = spawn("sentinel", lambda: collect_sentinel(
            target.broker, target.timeout, target.transport_options),
            f"redis sentinels {_addr(target)}")
    if target.broker_kind == "redis":
        opened: list = []  # every redis-py client this gather made
        try:
            _gather_redis(g, target, workers, queues, connections, server, destination,
                          deadline, samples, opened, inflight)
        finally:
            _shut(opened)
    else:
        _gather_rabbit(g, target, workers, queues, connections, server, destination, deadline)
        if samples:
            g.samples = _peek_rabbit(g, target, samples) if peek else Observed(
                error="on RabbitMQ reading queued messages (the management API's get) marks "
                      "them redelivered: sampled only with --peek", kind=NOT_ASKED)
    if backend_task is not None:
        _finish_backend(g, target, backend_task, deadline)
    if sentinel_task is not None:
        g.sentinel = sentinel_task.wait(deadline + GRACE)
        views = (g.sentinel.value or {}).get("sentinels", []) if g.sentinel.ok else []
        answered = [v for v in views if v.get("ok")]
        detail = None
        if answered:
            m = answered[0].get("master") or {}
            detail = (f"master {g.sentinel.value.get('master_name')} at {m.get('ip')}:"
                      f"{m.get('port')} ({m.get('flags')}), {m.get('num-slaves')} replica(s), "
                      f"quorum {m.get('quorum')}, {len(answered)} of {len(views)} sentinels "
                      f"answered")
        g.sources.append(SourceStatus(
            "sentinel", target.broker_redacted, g.sentinel.ok and bool(answered),
            g.sentinel.error or (None if answered else "no sentinel answered"),
            g.sentinel.elapsed_seconds, detail=detail))
    g.elapsed_seconds = time.monotonic() - started
    return g


# --- Redis -------------------------------------------------------------------------------

def _shut(clients: list) -> None:
    """Shut down the redis clients of a gather that is over: a read still running past its
    deadline (a trickling server) fails now instead of holding a thread and a socket —
    `queues watch` gathers again and again."""
    from celeryctl.collect.bounded import shutdown_redis

    for c in clients:
        try:
            shutdown_redis(c)
        except Exception:  # noqa: BLE001, S110 - best effort
            pass


def _gather_redis(g: Gathered, target: Target, methods: tuple[str, ...], queues: bool,
                  connections: bool, server: bool, destination, deadline: float,
                  samples: int = 0, opened: list | None = None,
                  inflight: bool = False) -> None:
    """Connect (PING), then every read stands alone: SCAN discovery, INFO, CONFIG GET,
    CLIENT LIST, the `unacked` bookkeeping, LLEN depths and remote control each end in their
    own Observed, so one refused or renamed command costs only what it feeds."""
    from celeryctl.collect import redis as r
    from celeryctl.collect.errors import DENIED

    t = target.timeout
    broker_url = target.broker_redacted

    def connect():
        return r.connect_first(target.broker, t, target.transport_options, opened=opened)

    first = spawn("broker", connect, f"redis broker {_addr(target)}")
    obs = first.wait(deadline)
    detail = "redis"
    if obs.ok and target.broker[0].scheme == "sentinel":
        detail = f"redis master {obs.value[1].address} (resolved through Sentinel)"
    broker_source = SourceStatus("broker", broker_url, obs.ok, obs.error, obs.elapsed_seconds,
                                 detail=detail, kind=obs.kind)
    g.sources.append(broker_source)
    if not obs.ok:
        why = f"the broker was not observed ({obs.state}: see the broker source)"
        for part in ("workers", "queues", "connections", "redis_server", "redis_unacked",
                     "redis_info", "redis_config") + (("redis_inflight",) if inflight else ()):
            setattr(g, part, not_asked(why, obs.kind))
        if methods:
            g.sources.append(SourceStatus("workers", broker_url, False, why, kind=obs.kind))
        return
    client, ep = obs.value
    partial: list[str] = []

    def discover():
        return r.discovery_or_known(client, target.transport_options)

    dobs = spawn("discovery", discover, f"redis broker {ep.address}").wait(deadline)
    if not dobs.ok:
        discovery = r.RedisDiscovery(layout=r.RedisLayout.from_options(target.transport_options),
                                     error=dobs.error)
    else:
        discovery = dobs.value
    if discovery.error:
        partial.append(f"queue discovery: {discovery.error}")
    if discovery.unreadable:
        partial.append("binding tables not readable: " + "; ".join(discovery.unreadable[:5]))
    # garbage in the binding tables: read, named, and no part of discovery is missing for it
    g.notes.extend(f"not a kombu binding: {x}" for x in discovery.garbage[:5])
    if len(discovery.garbage) > 5:
        g.notes.append(f"... and {len(discovery.garbage) - 5} more binding table problem(s)")
    layout = discovery.layout
    if layout.prefix_source.startswith("detected"):
        g.notes.append(f"global_keyprefix {layout.prefix!r} detected from _kombu.binding keys")
    if layout.other_prefixes:
        g.notes.append("other kombu key prefixes on this db: "
                       + ", ".join(repr(p) for p in layout.other_prefixes))
    options = dict(target.transport_options)
    if layout.prefix:
        options["global_keyprefix"] = layout.prefix
    g.worker_options = options

    want_workers = bool(methods) or queues or connections
    worker_methods = tuple(methods) or (("active_queues",) if queues else ("ping",))
    if queues and "active_queues" not in worker_methods:
        worker_methods = (*worker_methods, "active_queues")
    wtask = None
    if want_workers:
        if discovery.error:
            expected_obs = Observed(error=f"pidbox bindings not read ({discovery.error})",
                                    kind=DENIED)
        else:
            expected_obs = Observed(value=discovery.pidbox_nodes,
                                    source="redis binding _kombu.binding.celery.pidbox")
        wdeadline = deadline - (DEPTH_RESERVE if queues else 0.0)
        wtask = spawn("workers", lambda: _collect_workers(target, options, worker_methods, t,
                                                          wdeadline, lambda: expected_obs,
                                                          destination),
                      f"workers via redis {ep.address}")

    def server_side() -> dict[str, Observed]:
        out: dict[str, Observed] = {}
        if server or queues or connections:
            out["info"] = _read(r.collect_info, client)
            out["config"] = _read(r.collect_config, client)
        if queues or server:
            out["unacked"] = _read(r.collect_unacked, client, layout, discovery)
        if queues:
            out["set_aside"] = _read(r.collect_set_aside, client, layout)
        if connections:
            out["clients"] = _read(r.collect_clients, client)
        if inflight:
            out["inflight"] = _read(r.collect_inflight, client, layout)
        return out

    stask = spawn("redis-server", server_side, f"redis broker {ep.address}")
    sobs = stask.wait(deadline)
    reads = sobs.value if sobs.ok else {}
    for key, label in (("info", "INFO"), ("config", "CONFIG GET"),
                       ("unacked", "the unacked bookkeeping"), ("clients", "CLIENT LIST"),
                       ("inflight", "the unacked entries")):
        if key in reads and not reads[key].ok:
            partial.append(f"{label}: {reads[key].error}")

    def part(key: str, asked: bool) -> Observed:
        if not asked:
            return not_asked("not asked", NOT_ASKED)
        if not sobs.ok:
            return Observed(error=sobs.error, kind=sobs.kind)
        o = reads[key]
        return o if not o.ok else dataclasses.replace(o, source="redis")

    g.redis_info = part("info", server or queues or connections)
    g.redis_config = part("config", server or queues or connections)
    g.redis_unacked = part("unacked", queues or server)
    if inflight:
        g.redis_inflight = part("inflight", True)
    if g.redis_unacked.ok:  # garbage in the bookkeeping: the numbers it feeds are unknown
        g.notes.extend(f"garbage in kombu's {p}" for p in g.redis_unacked.value.problems)
    if connections:
        g.connections = part("clients", True)
    if g.redis_info.ok or g.redis_config.ok:
        cfg_error = None if g.redis_config.ok else g.redis_config.error
        g.redis_server = Observed(r.server_record(g.redis_info.value, g.redis_config.value,
                                                  cfg_error, layout, discovery.garbage),
                                  source="redis")
    elif server:
        g.redis_server = Observed(error=g.redis_info.error, kind=g.redis_info.kind)

    if wtask is not None:
        wobs = wtask.wait(deadline + (GRACE if not queues else 0.0))
        g.workers = wobs
        g.sources.append(_workers_source(wobs, broker_url))
        if connections and g.connections.ok:
            _find_owners(g, deadline + GRACE)

    if queues:
        names = _queue_names_redis(discovery, target, g.workers)
        depth_deadline = max(deadline, time.monotonic()) + GRACE
    if queues and not names and discovery.error:
        # nothing named the queues and the broker may not be listed: never "no queues"
        g.queues = Observed(error=_redis_discovery_gap(discovery, g.workers, target) or
                            discovery.error, kind=dobs.kind or DENIED)
    elif queues:

        def depths_ttls_samples():
            depths, errors, wrong_types = r.collect_depths(client, layout, sorted(names))
            replies = [q for q, b in depths.items()
                       if q.endswith(".reply.celery.pidbox") and sum(b.values())]
            ttls = _read(r.collect_reply_ttls, client, layout, replies)
            sampled = None
            if samples:
                task_depths = {q: b for q, b in depths.items()
                               if not names[q][0] and sum(b.values())}
                sampled = _read(r.collect_samples, client, layout, task_depths, samples)
            return depths, errors, wrong_types, ttls, sampled

        dobs2 = spawn("depths", depths_ttls_samples,
                      f"redis broker {ep.address}").wait(depth_deadline)
        if not dobs2.ok:
            g.queues = dobs2
            partial.append(f"queue depths: {dobs2.error}")
        else:
            depths, errors, wrong_types, ttls, sampled = dobs2.value
            if samples:
                g.samples = (dataclasses.replace(sampled, source="redis LRANGE")
                             if sampled.ok else sampled)
            consumers = _consumers_from_workers(g.workers)
            unacked = g.redis_unacked.value if g.redis_unacked.ok else None
            rows = r.build_queue_depths(names, depths, unacked, consumers,
                                        ttls.value if ttls.ok else None, errors,
                                        bindings_known=not discovery.error,
                                        wrong_types=wrong_types)
            aside = reads.get("set_aside")
            if aside is not None and aside.ok:
                rows += aside.value
            elif aside is not None:
                partial.append(f"lists set aside by interrupted purges: {aside.error}")
            if errors:
                partial.append(f"LLEN of {len(errors)} queue(s): "
                               + "; ".join(f"{r.literal_text(q)}: {e}"
                                           for q, e in list(errors.items())[:3]))
            if samples and not sampled.ok:
                partial.append(f"LRANGE (sampling queued messages): {sampled.error}")
            why_partial = _redis_discovery_gap(discovery, g.workers, target)
            notes = (why_partial,) if why_partial else ()
            g.queues = Observed(rows, source="redis", partial=why_partial, notes=notes)
    if partial:
        g.sources[g.sources.index(broker_source)] = dataclasses.replace(
            broker_source, partial=tuple(partial))
    try:
        client.close()
    except Exception:  # noqa: BLE001
        pass


def _read(fn, *args) -> Observed:
    """One read of a source, on its own: its value, or why it was not observed (the kind of
    failure kept), never an exception that would take the other reads with it."""
    from celeryctl.collect.errors import classify

    started = time.monotonic()
    try:
        return Observed(fn(*args), elapsed_seconds=time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 - classified, reported
        kind, text = classify(exc)
        return Observed(error=text, kind=kind, elapsed_seconds=time.monotonic() - started)


def _redis_discovery_gap(discovery, workers: Observed, target: Target) -> str | None:
    """Why the queue list may miss queues: SCAN refused (only queues named by workers, -A and
    -Q are known — a queue no worker consumes is invisible), or binding tables unreadable."""
    if discovery.error:
        known = []
        if workers.ok:
            known.append("the workers' active_queues")
        if target.app:
            known.append("the app (-A)")
        if target.queues:
            known.append("-Q")
        # refused by the server, or no answer in time (a slow or sick broker): say which
        how = ("was refused" if discovery.error.lower().startswith("permission denied")
               else f"failed ({discovery.error})")
        return (f"queue discovery was partial: SCAN of the _kombu.binding.* tables {how}, "
                "so only queues named by " + (", ".join(known) or "nothing") + " were read; a "
                "queue no worker consumes is not seen unless you pass -Q NAME or -A APP")
    if discovery.unreadable:
        return (f"queue discovery was partial: {len(discovery.unreadable)} binding table(s) "
                f"could not be read")
    return None


def _queue_names_redis(discovery, target: Target, workers: Observed
                       ) -> dict[str, tuple[bool, tuple[str, ...]]]:
    """Every queue celeryctl knows of, with where it learned of it."""
    from celeryctl.knowledge import classify_queue

    found: dict[str, tuple[bool, list[str]]] = {}

    def add(name: str, how: str, internal: bool | None = None) -> None:
        if not isinstance(name, str):  # "" is a name (a list key may be empty)
            return
        internal = classify_queue(name) != "task" if internal is None else internal
        cur = found.setdefault(name, (internal, []))
        if how not in cur[1]:
            cur[1].append(how)

    for name, internal in discovery.queue_names().items():
        add(name, "binding", internal)
    if workers.ok and workers.value:
        for node in workers.value.nodes:
            for q in node.replies.get("active_queues") or []:
                if isinstance(q, dict) and q.get("name"):
                    add(q["name"], "worker")
    if target.app:
        for name in target.app.queue_names:
            add(name, "app")
    for name in target.queues:
        add(name, "flag")
    # Fanout "queues" (worker pidbox, event receivers) are PUB/SUB on Redis: never lists.
    return {n: (i, tuple(h)) for n, (i, h) in found.items()
            if classify_queue(n) not in ("pidbox", "events")}


def _consumers_from_workers(workers: Observed) -> dict[str, list[str]] | None:
    if not workers.ok or workers.value is None:
        return None
    out: dict[str, list[str]] = {}
    for node in workers.value.nodes:
        for q in node.replies.get("active_queues") or []:
            if isinstance(q, dict) and q.get("name"):
                out.setdefault(q["name"], []).append(node.name)
    return out


# --- RabbitMQ ----------------------------------------------------------------------------

def _gather_rabbit(g: Gathered, target: Target, methods: tuple[str, ...], queues: bool,
                   connections: bool, server: bool, destination, deadline: float) -> None:
    from celeryctl.collect import rabbitmq as rq

    t = target.timeout
    vhost = target.effective_vhost
    api = rq.ManagementAPI(target.rabbitmq_api, t) if target.rabbitmq_api else None
    api_url = target.rabbitmq_api.redacted if target.rabbitmq_api else None
    broker_url = target.broker_redacted

    ptask = None
    if api is not None and (methods or queues):
        ptask = spawn("pidbox", lambda: Observed(rq.collect_pidbox_nodes(api, vhost),
                                                 source="management-api binding celery.pidbox"),
                      "management API")

    expected = expected_from(ptask, deadline)
    want_workers = bool(methods) or queues
    worker_methods = tuple(methods) or ("active_queues",)
    wtask = None
    if want_workers:
        wtask = spawn("workers", lambda: _collect_workers(
            target, target.transport_options, worker_methods, t, deadline - DEPTH_RESERVE,
            expected, destination), f"workers via amqp {_addr(target)}")

    mtask = None
    if api is not None and (queues or connections or server):
        def mgmt() -> dict[str, Observed]:
            from celeryctl.collect.errors import AUTH_FAILED, UNREACHABLE

            out: dict[str, Observed] = {"server": _read(rq.collect_rabbit_server, api)}
            gone = out["server"].kind in (UNREACHABLE, AUTH_FAILED)
            for key, want, fn in (("queues", queues, rq.collect_rabbit_queues),
                                  ("connections", connections, rq.collect_rabbit_connections)):
                if want:
                    # an API that did not answer (or refused the login) is not asked again
                    out[key] = (Observed(error=out["server"].error, kind=out["server"].kind)
                                if gone else _read(fn, api, vhost))
            return out
        mtask = spawn("management-api", mgmt, f"management API {target.rabbitmq_api.address}")

    mobs = mtask.wait(deadline) if mtask else None
    if mobs is not None:
        reads = mobs.value if mobs.ok else {}
        srv = reads.get("server") or Observed(error=mobs.error, kind=mobs.kind)
        g.rabbit_server = dataclasses.replace(srv, source="management-api") if srv.ok else srv
        partial = []
        if srv.ok:
            partial += [f"{read}: {why}" for read, why in srv.value.unread.items()]
        if queues:
            qo = reads.get("queues") or Observed(error=srv.error, kind=srv.kind)
            if qo.ok:
                qs, notes = qo.value
                g.queues = Observed(qs, source="management-api", notes=tuple(notes))
            else:
                g.queues = qo
                if srv.ok:
                    partial.append(f"queues: {qo.error}")
        if connections:
            co = reads.get("connections") or Observed(error=srv.error, kind=srv.kind)
            if co.ok and srv.ok and srv.value.sees_all_connections is False:
                from celeryctl.collect.errors import DENIED

                user = (srv.value.user or {}).get("name")
                co = Observed(error=f"permission denied: the management API lists only the "
                                    f"user's own connections to {user!r} (tags: "
                                    f"{', '.join(srv.value.user.get('tags') or []) or 'none'});"
                                    f" needs the monitoring tag (rabbitmqctl set_user_tags "
                                    f"{user} monitoring)", kind=DENIED)
            g.connections = dataclasses.replace(co, source="management-api") if co.ok else co
            if not co.ok and srv.ok:
                partial.append(f"connections: {co.error}")
        g.sources.append(SourceStatus(
            "management-api", api_url, srv.ok, srv.error, mobs.elapsed_seconds,
            detail=f"RabbitMQ {srv.value.version}" + (
                f", as {srv.value.user.get('name')} "
                f"[{', '.join(srv.value.user.get('tags') or []) or 'no tags'}]"
                if srv.value.user else "") if srv.ok else None,
            kind=srv.kind, partial=tuple(partial)))
    elif (queues or connections or server):
        from celeryctl.collect.errors import NOT_CONFIGURED

        why = "no management API URL (give --rabbitmq-api)"
        g.rabbit_server = Observed(error=why, kind=NOT_CONFIGURED)
        if queues:
            g.queues = Observed(error=why, kind=NOT_CONFIGURED)
        if connections:
            g.connections = Observed(error=why, kind=NOT_CONFIGURED)

    need_fallback = queues and not g.queues.ok
    early = None
    base_names: set[str] = set()
    if need_fallback:
        # start the passive declares of the queues already known now, beside the workers'
        # broadcast, so the whole command stays within the budget (the workers' queues are
        # declared after, with what time is left)
        base_names = set(target.queues) | set(target.app.queue_names if target.app else ())
        base_names = base_names or {"celery"}
        early = spawn("amqp", lambda: rq.collect_amqp_queues(target.broker, t, vhost,
                                                             sorted(base_names)),
                      f"AMQP {_addr(target)}")
    if wtask is not None and (methods or need_fallback):
        wobs = wtask.wait(deadline + (GRACE if methods else 0.0))
        g.workers = wobs
        g.sources.append(_workers_source(wobs, broker_url))
    elif wtask is not None:
        g.workers = not_asked("not needed: the management API listed the queues", NOT_ASKED)

    if need_fallback:
        end = deadline + GRACE
        aobs = early.wait(end)
        extra = sorted(set(_consumers_from_workers(g.workers) or {}) - base_names)
        if aobs.ok and extra and time.monotonic() < end:
            more = spawn("amqp-more", lambda: rq.collect_amqp_queues(target.broker, t, vhost,
                                                                     extra),
                         f"AMQP {_addr(target)}").wait(end)
            if more.ok:
                aobs = dataclasses.replace(aobs, value=aobs.value + more.value)
        g.sources.append(SourceStatus("amqp", broker_url, aobs.ok, aobs.error,
                                      aobs.elapsed_seconds,
                                      detail="queue depth by passive declare (fallback)",
                                      kind=aobs.kind))
        if aobs.ok:
            known = ", ".join(w for w, ok in (("-Q", target.queues), ("the app (-A)", target.app),
                                              ("the workers' active_queues", g.workers.ok))
                              if ok) or "nothing but the default 'celery'"
            gap = ("without the management API queues cannot be discovered: only those named "
                   f"by {known} were read; a queue no worker consumes is not seen — pass -Q "
                   "NAME or -A APP")
            api_src = next((s for s in g.sources if s.name == "management-api"), None)
            why = "not configured" if api_src is None else {
                "permission-denied": "refused this account", "auth-failed":
                "rejected the credentials"}.get(api_src.state, "unavailable")
            note = (f"management API {why}: depth and consumers from AMQP passive declare; "
                    "unacked and rates unknown; " + gap)
            g.queues = Observed(aobs.value, source="amqp", notes=(note,), partial=gap)
            g.notes.append(note)
        else:
            g.queues = Observed(error=f"{g.queues.error or 'management API unavailable'}; "
                                      f"AMQP fallback: {aobs.error}", kind=aobs.kind)
    if connections and g.connections.ok:
        _find_owners(g, deadline + GRACE)
    if not any(s.name == "broker" for s in g.sources):
        g.sources.insert(0, _rabbit_broker_source(g, wtask, broker_url))
    if api is not None:
        if all(tk is None or tk.done() for tk in (mtask, ptask)):
            api.close()
        else:  # a read past its deadline (a trickling API): its socket is shut down now
            api.abort()


def _rabbit_broker_source(g: Gathered, wtask, broker_url: str) -> SourceStatus:
    """The AMQP broker as the connections over it found it: observed when remote control or
    the AMQP fallback connected — also when remote control was then refused (a user without
    permissions on the pidbox exchanges was let in: the broker answered)."""
    from celeryctl.collect.workers import RemoteControlDenied

    reached = [s for s in g.sources if s.name in ("workers", "amqp")]
    if wtask is not None and isinstance(wtask.exception, RemoteControlDenied):
        return SourceStatus("broker", broker_url, True, detail="AMQP connection accepted; "
                            "remote control refused (see the workers source)")
    if any(s.ok for s in reached):
        return SourceStatus("broker", broker_url, True)
    if reached:
        first = reached[0]
        return SourceStatus("broker", broker_url, False, first.error, kind=first.kind)
    return SourceStatus("broker", broker_url, None, "not probed: nothing was read over AMQP",
                        kind="not-checked")


# --- shared ------------------------------------------------------------------------------

def send_control(target: Target, method: str, arguments: dict[str, Any], *,
                 destination: list[str] | None, wanted: list[str],
                 options: dict[str, Any] | None = None, reply: bool = True) -> Observed:
    """One remote-control command (`celeryctl control`): published to the pidbox fanout with
    `destination` (None: every worker), replies collected until every `wanted` node answered or
    the timeout passed. `reply=False` (shutdown) only publishes. Errors -> Observed(error)."""
    from celeryctl.collect.bounded import describe_error
    from celeryctl.collect.workers import collect_workers

    control = "celery"
    if target.app and target.app.settings.get("control_exchange"):
        control = str(target.app.settings["control_exchange"])
    started = time.monotonic()
    expected = Observed(value=list(wanted), source="the workers that answered the plan's ping")
    try:
        return collect_workers(target.broker,
                               target.transport_options if options is None else options,
                               (method,), target.timeout, started + target.timeout,
                               lambda: expected, destination, control,
                               arguments={method: arguments}, reply=reply)
    except Exception as exc:  # noqa: BLE001 - any transport failure is "could not send"
        return Observed(error=describe_error(exc), elapsed_seconds=time.monotonic() - started)


def _collect_workers(target: Target, options: dict[str, Any], methods: tuple[str, ...],
                     timeout: float, deadline: float, expected, destination) -> Observed:
    from celeryctl.collect.workers import collect_workers

    control = "celery"
    if target.app and target.app.settings.get("control_exchange"):
        control = str(target.app.settings["control_exchange"])
    return collect_workers(target.broker, options, methods, timeout, deadline, expected,
                           destination, control)


def _workers_source(wobs: Observed, url: str) -> SourceStatus:
    detail = None
    if wobs.ok:
        view: WorkersView = wobs.value
        detail = f"{len(view.nodes)} replied"
        if view.expected is not None:
            detail += f" of {len(view.expected)} expected ({view.expected_source})"
        detail += f" in {view.waited_seconds:.2f} s"
        if view.returned_early:
            detail += " (returned early)"
    return SourceStatus("workers", url, wobs.ok, wobs.error, wobs.elapsed_seconds, detail,
                        kind=wobs.kind)


def _spawn_backend(target: Target, deadline: float):
    from celeryctl.collect.backend import collect_backend

    return spawn("backend", lambda: collect_backend(target.result_backend, target.broker,
                                                    target.timeout, target.result_backend_tls),
                 "result backend")


def _finish_backend(g: Gathered, target: Target, task, deadline: float) -> None:
    from celeryctl.collect.backend import backend_kind
    from celeryctl.urls import redact

    obs = task.wait(deadline + GRACE)
    url = redact(target.result_backend)
    if obs.ok:
        g.backend = obs
        status: BackendStatus = obs.value
        ok = status.reachable
        detail = status.kind
        if status.same_db_as_broker:
            detail += ", same Redis instance and db as the broker"
        elif status.same_instance_as_broker and status.kind == "redis":
            detail += ", same Redis instance as the broker (other db)"
        if status.reachable is None:
            detail += ", not checked"
        if status.detail:
            detail += f": {status.detail}"
        g.sources.append(SourceStatus("result-backend", url, ok, status.error,
                                      obs.elapsed_seconds, detail=detail,
                                      kind=None if ok is not None else "not-checked"))
    else:
        g.backend = Observed(BackendStatus(url=url, kind=backend_kind(target.result_backend),
                                           reachable=False, error=obs.error), error=obs.error,
                             kind=obs.kind)
        g.sources.append(SourceStatus("result-backend", url, False, obs.error,
                                      obs.elapsed_seconds, kind=obs.kind))


def _find_owners(g: Gathered, deadline: float) -> None:
    """What attributing connections to workers needs: the workers' host addresses, and the
    local process owning each socket whose peer is this machine. A socket of this very
    process is celeryctl's own (Redis: when CLIENT ID was refused, the only way to tell)."""
    import os

    g.host_addresses = _resolve_hosts(g.workers.value if g.workers.ok else None, deadline)
    g.local_pids = _local_pids(g.connections.value, deadline)
    me = os.getpid()
    g.connections = dataclasses.replace(g.connections, value=[
        dataclasses.replace(c, role="celeryctl") if g.local_pids.get(c.address) == me
        and c.role != "celeryctl" else c for c in g.connections.value])


def _resolve_hosts(view: WorkersView | None, deadline: float) -> dict[str, list[str]]:
    """Worker host names (after the @) -> IP addresses, bounded (DNS can hang)."""
    import socket

    from celeryctl.knowledge import node_host

    if view is None:
        return {}
    hosts = sorted({node_host(n.name) for n in view.nodes})

    def resolve():
        out = {}
        for h in hosts:
            try:
                out[h] = sorted({ai[4][0] for ai in socket.getaddrinfo(h, None)})
            except OSError:
                out[h] = []
        return out

    obs = spawn("dns", resolve, "host name lookup").wait(deadline)
    return obs.value if obs.ok else {}


def _peek_rabbit(g: Gathered, target: Target, per_queue: int) -> Observed:
    """`--peek`: bounded management-API sampling of the non-empty task queues. It adds up to
    one more `--timeout` to the run, and says that the messages are now flagged redelivered."""
    from celeryctl.collect.rabbitmq import ManagementAPI, collect_peek

    if target.rabbitmq_api is None:
        return Observed(error="no management API to peek through")
    if not g.queues.ok:
        return Observed(error="queues not observed")
    api = ManagementAPI(target.rabbitmq_api, target.timeout)
    names = [q.name for q in g.queues.value if not q.internal and q.ready]
    obs = spawn("peek", lambda: collect_peek(api, target.effective_vhost, names, per_queue),
                "management API get").wait(time.monotonic() + target.timeout)
    g.notes.append(f"--peek: sampled {len(names)} RabbitMQ queues through the management API; "
                   f"those messages are now marked redelivered")
    return Observed(obs.value, source="management-api get (--peek)") if obs.ok else obs


def _local_pids(conns: list[Connection], deadline: float) -> dict[str, int]:
    """Peer "ip:port" -> pid, for connections whose peer is this machine (bounded)."""
    from celeryctl.collect.local import local_addresses, local_socket_pids

    def find():
        mine = local_addresses()
        ports = {}
        for c in conns:
            host, _, port = c.address.rpartition(":")
            if host.strip("[]") in mine and port.isdigit():
                ports[int(port)] = c.address
        owners = local_socket_pids(set(ports))
        return {ports[p]: pid for p, pid in owners.items()}

    obs = spawn("local-sockets", find, "local socket owners").wait(deadline)
    return obs.value if obs.ok else {}


def _addr(target: Target) -> str:
    return target.broker[0].address


__all__ = ["Gathered", "gather", "Connection", "QueueDepth"]


def expected_from(ptask, deadline: float):
    """The `expected` callable the workers collector polls: the pidbox bindings read by
    `ptask` (the management API) once they are in, None while they are not, and why not when
    there is no management API to read them from."""
    def expected():
        if ptask is None:
            return Observed(error="no management API to read pidbox bindings from")
        if not ptask.done():
            return None
        return ptask.wait(deadline)
    return expected
