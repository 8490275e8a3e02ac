"""Pure functions: observations -> the rows commands print (tables and JSON alike).

No I/O and no thresholds here; renderers only lay these rows out.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from celeryctl.knowledge import classify_queue, node_host
from celeryctl.snapshot import Connection, QueueDepth, WorkersView

POOL_NAMES = {
    "celery.concurrency.prefork:TaskPool": "prefork",
    "celery.concurrency.thread:TaskPool": "threads",
    "celery.concurrency.solo:TaskPool": "solo",
    "celery.concurrency.eventlet:TaskPool": "eventlet",
    "celery.concurrency.gevent:TaskPool": "gevent",
    # the aliases Celery's -P accepts (celery/concurrency/__init__.py ALIASES)
    "prefork": "prefork", "processes": "prefork", "threads": "threads", "solo": "solo",
    "eventlet": "eventlet", "gevent": "gevent",
}


def pool_name(stats: dict[str, Any]) -> tuple[str | None, str | None]:
    """(pool, how it was known) from a `stats` reply.

    Celery >= 5.3 names it: `pool.implementation` ("celery.concurrency.thread:TaskPool").
    Celery <= 5.2 does not, and `conf.worker_pool` cannot stand in: it is the *configured*
    pool, not the `-P` given on the command line (5.2's WorkersPool.convert reads it only
    when -P is left at prefork), so a `-P threads` worker says "prefork" there (seen on a real
    5.2.7 worker). Each 5.2 pool's `_get_info` leaves its own keys instead, which name it:
    prefork `writes`, threads `threads`, eventlet `free-threads`, solo `processes` equal to
    the worker's own pid; gevent adds nothing (only `max-concurrency`)."""
    pool = stats.get("pool") if isinstance(stats.get("pool"), dict) else {}
    impl = pool.get("implementation")
    if isinstance(impl, str) and impl:
        return POOL_NAMES.get(impl, impl), "stats.pool.implementation"
    if not pool:
        return None, None
    if "writes" in pool:
        name = "prefork"
    elif "threads" in pool:
        name = "threads"
    elif "free-threads" in pool:
        name = "eventlet"
    elif pool.get("processes") == [stats.get("pid")]:
        name = "solo"
    elif set(pool) == {"max-concurrency"}:
        name = "gevent"
    else:
        return None, None
    return name, "inferred from stats.pool (Celery <= 5.2)"


def _count(reply: Any) -> int | None:
    return len(reply) if isinstance(reply, list) else None


def _node_order(node) -> tuple[str, int]:
    stats = node.replies.get("stats")
    pid = stats.get("pid") if isinstance(stats, dict) else None
    return node.name, pid if isinstance(pid, int) and not isinstance(pid, bool) else -1


def worker_rows(view: WorkersView) -> list[dict[str, Any]]:
    """One row per replying worker (duplicates kept), then one per expected-but-silent one."""
    rows = []
    # by name, duplicates (the same node name twice) by pid: the same cluster reads the same
    # every run, whatever order the replies arrived in
    for node in sorted(view.nodes, key=_node_order):
        r = node.replies
        stats = r.get("stats") if isinstance(r.get("stats"), dict) else {}
        pool = stats.get("pool") or {}
        pool_kind, pool_source = pool_name(stats)
        rusage = stats.get("rusage") or {}
        total = stats.get("total")
        queues = r.get("active_queues")
        versions = r.get("report") if isinstance(r.get("report"), dict) else {}
        rows.append({
            "name": node.name,
            "ok": True,
            "celery_version": versions.get("celery"),
            "kombu_version": versions.get("kombu"),
            "python_version": versions.get("python"),
            "pool": pool_kind,
            "pool_source": pool_source,
            "concurrency": pool.get("max-concurrency"),
            "active": _count(r.get("active")),
            "reserved": _count(r.get("reserved")),
            "scheduled": _count(r.get("scheduled")),
            "prefetch_count": stats.get("prefetch_count"),
            "processed": sum(total.values()) if isinstance(total, dict) else None,
            "uptime_seconds": stats.get("uptime"),
            "max_rss_kb": rusage.get("maxrss"),
            "pid": stats.get("pid"),
            "max_tasks_per_child": pool.get("max-tasks-per-child"),
            "queues": [q.get("name") for q in queues if isinstance(q, dict)]
            if isinstance(queues, list) else None,
            "missing_replies": [m for m in view.methods if m not in r],
            "error": None,
        })
    for name in view.missing:
        rows.append({
            "name": name, "ok": False, "celery_version": None, "kombu_version": None,
            "python_version": None, "pool": None, "pool_source": None, "concurrency": None,
            "active": None,
            "reserved": None, "scheduled": None, "prefetch_count": None, "processed": None,
            "uptime_seconds": None, "max_rss_kb": None, "pid": None,
            "max_tasks_per_child": None, "queues": None, "missing_replies": list(view.methods),
            "error": f"expected ({view.expected_source}) but did not reply within "
                     f"{view.waited_seconds:.1f} s",
        })
    return rows


def duplicate_names(view: WorkersView) -> list[str]:
    seen: dict[str, int] = {}
    for n in view.nodes:
        seen[n.name] = seen.get(n.name, 0) + 1
    return sorted(n for n, c in seen.items() if c > 1)


def queue_row(q: QueueDepth) -> dict[str, Any]:
    return {
        "name": q.name, "broker": q.broker, "vhost": q.vhost, "kind": classify_queue(q.name),
        "internal": q.internal, "exists": q.exists, "ready": q.ready, "buckets": q.buckets,
        "unacked": q.unacked, "oldest_unacked_seconds": _round(q.oldest_unacked_seconds),
        "consumers": q.consumers, "consumers_source": q.consumers_source,
        "consumer_workers": list(q.consumer_workers), "publish_rate": q.publish_rate,
        "deliver_rate": q.deliver_rate, "ack_rate": q.ack_rate, "source": q.source,
        "discovered_by": list(q.discovered_by), "type": q.type, "state": q.state,
        "node": q.node, "members": list(q.members), "online": list(q.online),
        "arguments": q.arguments, "effective_policy": q.effective_policy,
        "messages_bytes": q.messages_bytes,
        "idle_since": q.idle_since, "ttl_seconds": q.ttl_seconds, "error": q.error,
    }


def queue_rows(queues: list[QueueDepth], *, include_internal: bool,
               names: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    chosen = [q for q in queues
              if (include_internal or not q.internal or q.name in names)
              and (not names or q.name in names)]
    return [queue_row(q) for q in sorted(chosen, key=lambda q: (q.internal, q.name))]


def no_internal_queues_note(rows: list[dict[str, Any]] | None, broker_kind: str, *,
                            include_internal: bool, names: tuple[str, ...] = ()) -> str | None:
    """`queues --all` that found no internal queue says so, so the flag visibly did something
    (None when it did find some, was not given, or -Q named the queues to show)."""
    if not include_internal or names or rows is None or any(r["internal"] for r in rows):
        return None
    return ("--all: no internal queues (pidbox replies, celeryev, result queues) found"
            + ("; on Redis remote control and events go over pub/sub: only remote-control "
               "reply lists can show up" if broker_kind == "redis" else ""))


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip in ("localhost",)


def _host_of(address: str) -> str:
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host.strip("[]")


def worker_pids(view: WorkersView) -> dict[int, str]:
    """pid -> node name: each worker's main pid and its pool's child processes (stats)."""
    out: dict[int, str] = {}
    for n in view.nodes:
        stats = n.replies.get("stats")
        if not isinstance(stats, dict):
            continue
        if isinstance(stats.get("pid"), int):
            out[stats["pid"]] = n.name
        for child in (stats.get("pool") or {}).get("processes") or []:
            if isinstance(child, int):
                out[child] = n.name
    return out


def attribute_connections(conns: list[Connection], view: WorkersView | None,
                          host_addresses: dict[str, list[str]],
                          local_pids: dict[str, int] | None = None,
                          db: int | None = None) -> list[Connection]:
    """Name the worker each connection belongs to. Exact matches (a worker's pidbox consumer
    on RabbitMQ, a client name containing the node name, or — for peers on this machine — the
    process owning the socket being a worker's pid or pool child) come first; otherwise the
    peer address is matched against the workers' resolved host addresses (loopback matches
    loopback). Several workers on one host make that match ambiguous: all are named.

    `db`: the broker's Redis database. On a Redis shared by several apps (one db each),
    clients of other databases belong to other apps: marked `worker_match="other-db"` and
    never attributed to this cluster's workers (nor counted by the CON checks)."""
    import dataclasses

    if db is not None:
        conns = [dataclasses.replace(c, worker=None, worker_match=OTHER_DB)
                 if c.db is not None and c.db != db and c.role != "celeryctl" else c
                 for c in conns]
    if view is None:
        return conns
    nodes = [n.name for n in view.nodes]
    pids = worker_pids(view)
    out = []
    for c in conns:
        if c.worker or c.worker_match == OTHER_DB:
            out.append(c)
            continue
        pid = (local_pids or {}).get(c.address)
        if pid is not None and pid in pids:
            out.append(dataclasses.replace(c, worker=pids[pid], worker_match="exact"))
            continue
        if pid is not None and c.role != "celeryctl":
            # the owner is known and it is not a worker: never fall back to host matching
            out.append(dataclasses.replace(c, worker=None,
                                           worker_match=f"none: local pid {pid} is not a worker"))
            continue
        if c.name:
            named = [n for n in nodes if n in c.name]
            if named:
                out.append(dataclasses.replace(c, worker=named[0], worker_match="exact"))
                continue
        ip = _host_of(c.address)
        candidates = []
        for n in dict.fromkeys(nodes):
            addrs = host_addresses.get(node_host(n), [])
            if ip in addrs or (_is_loopback(ip) and any(_is_loopback(a) for a in addrs)):
                candidates.append(n)
        if c.role == "celeryctl":
            candidates = []
        if len(candidates) == 1:
            out.append(dataclasses.replace(c, worker=candidates[0], worker_match="host"))
        elif candidates:
            out.append(dataclasses.replace(c, worker=", ".join(candidates),
                                           worker_match="host (ambiguous: same host)"))
        else:
            out.append(c)
    return out


OTHER_DB = "other-db"


def connection_row(c: Connection) -> dict[str, Any]:
    return {
        "broker": c.broker, "address": c.address, "name": c.name, "id": c.id,
        "age_seconds": _round(c.age_seconds), "idle_seconds": _round(c.idle_seconds),
        "command": c.command, "state": c.state, "flags": c.flags, "role": c.role, "db": c.db,
        "user": c.user, "vhost": c.vhost, "channels": c.channels, "consumers": c.consumers,
        "heartbeat_seconds": c.heartbeat_seconds, "worker": c.worker,
        "worker_match": c.worker_match, "other_db": c.worker_match == OTHER_DB,
    }


def _round(v: float | None) -> float | None:
    return round(v, 3) if isinstance(v, float) else v


def human_age(seconds: float | None) -> str:
    """A duration in a sentence (verdicts, findings): 5 s, 4 min, 2h13m, 3d4h. Table cells
    use the shorter `human_seconds`."""
    if seconds is None:
        return "?"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def human_seconds(v: float | None) -> str:
    if v is None:
        return "-"
    v = float(v)
    if not math.isfinite(v):  # e.g. an age computed from a Redis score of -inf
        return "?"
    if v < 60:
        return f"{v:.0f}s"
    if v < 3600:
        return f"{v / 60:.0f}m"
    if v < 86400:
        return f"{v / 3600:.1f}h"
    return f"{v / 86400:.1f}d"


def human_kb(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 1024:
        return f"{v:.0f} KiB"
    if v < 1024 * 1024:
        return f"{v / 1024:.0f} MiB"
    return f"{v / 1024 / 1024:.1f} GiB"


REDIS_INFO_KEYS = ("redis_version", "uptime_in_seconds", "connected_clients", "maxclients",
                   "blocked_clients", "rejected_connections", "used_memory", "maxmemory",
                   "maxmemory_policy", "evicted_keys", "pubsub_channels", "pubsub_patterns")


def server_summary(g) -> dict[str, Any] | None:
    """The broker server as observed: version and the few numbers an operator reads first.
    `None` when it could not be read (never an empty dict)."""
    if g.redis_server.ok and g.redis_server.value is not None:
        srv = g.redis_server.value
        return {"kind": "redis", "version": srv.version,
                "info": {k: srv.info.get(k) for k in REDIS_INFO_KEYS},
                "config": srv.config,
                "config_error": srv.config_error if srv.config is None and srv.config_error
                else (None if srv.config is not None else "not read by this command"),
                "keyprefix": srv.keyprefix, "keyprefix_source": srv.keyprefix_source,
                "other_keyprefixes": list(srv.other_keyprefixes)}
    if g.rabbit_server.ok and g.rabbit_server.value is not None:
        srv = g.rabbit_server.value
        return {"kind": "rabbitmq", "version": srv.version, "cluster_name": srv.cluster_name,
                "management_version": srv.management_version, "nodes": srv.nodes,
                "object_totals": srv.overview.get("object_totals")}
    return None
