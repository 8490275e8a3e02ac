"""Pure: what changed between two snapshots (`celeryctl snapshot diff A B`)."""

from __future__ import annotations

from typing import Any


def _queues(snap) -> dict[str, Any]:
    return {q.name: q for q in snap.queues if not q.internal}


def _workers(snap) -> dict[str, dict[str, Any]]:
    view = snap.workers
    return {n.name: (n.replies.get("conf") if isinstance(n.replies.get("conf"), dict) else {})
            for n in (view.nodes if view else ())}


def _settings_changes(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"setting": k, "before": a.get(k), "after": b.get(k)}
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def broker_identity(snap) -> tuple[tuple, str] | None:
    """(what identifies the broker a snapshot was taken of, how to show it), or None when the
    snapshot does not record it. Identity: broker kind, every host:port of the URL (a failover
    list), and the Redis database or the RabbitMQ vhost — not the user or the password, which
    change without the broker changing. Shown from the redacted URL the snapshot recorded,
    redacted again (no secret ever shows) and without its user."""
    from urllib.parse import urlsplit

    from celeryctl.urls import DEFAULT_PORTS, redact, split_list

    target = getattr(snap, "target", None) or {}
    url = target.get("broker")
    if not isinstance(url, str) or not url:
        return None
    kind = target.get("broker_kind") or snap.broker_kind
    hosts, shown = [], []
    for part in split_list(redact(url) or ""):
        try:
            u = urlsplit(part)
            port = u.port or DEFAULT_PORTS.get(u.scheme.lower())
            host = (u.hostname or "").lower()
        except ValueError:
            return None
        host = f"[{host}]" if ":" in host else host
        hosts.append(f"{host}:{port}")
        shown.append(f"{u.scheme}://{host}:{port}")
    if kind == "amqp":
        where = str(target.get("vhost") or "/")
        text = f"{';'.join(shown)} vhost {where}"
    else:
        where = str(target.get("redis_db") if target.get("redis_db") is not None else
                    urlsplit(split_list(url)[0]).path.lstrip("/") or "0")
        text = f"{';'.join(shown)} db {where}"
    return (kind, tuple(sorted(hosts)), where), text


def server_identity(snap) -> tuple[str, str, tuple[str, ...]] | None:
    """(basis, id, node names) of the server a snapshot was taken of, from what it read of the
    server itself, or None when it did not record one: Redis `INFO` run_id (a new one at every
    start), RabbitMQ's cluster name from the management API overview, with the node names."""
    kind = (getattr(snap, "target", None) or {}).get("broker_kind") or snap.broker_kind
    if kind == "amqp":
        rs = snap.get("rabbit_server") if snap.observed("rabbit_server") else None
        name = getattr(rs, "cluster_name", None)
        if not isinstance(name, str) or not name:
            return None
        nodes = tuple(sorted(str(n["name"]) for n in (rs.nodes or ())
                             if isinstance(n, dict) and n.get("name")))
        return "RabbitMQ cluster name", name, nodes
    rs = snap.get("redis_server") if snap.observed("redis_server") else None
    run_id = (getattr(rs, "info", None) or {}).get("run_id")
    if not isinstance(run_id, str) or not run_id:
        return None
    return "Redis run_id", run_id, ()


def _short(basis: str, ident: str) -> str:
    return ident[:12] if basis == "Redis run_id" else ident


def same_broker(a, b) -> dict[str, Any]:
    """Whether two snapshots come from the same broker: {"same": True/False/None (unknown),
    "before": shown, "after": shown, "by": what told, "why": said with a warning or a note}.

    By the server's own identity when both snapshots recorded it (`by` "Redis run_id" /
    "RabbitMQ cluster name"): one Redis reached as `localhost` and as `127.0.0.1` is one
    broker; a fresh Redis on the same port (a new run_id) is another. The Redis db or the
    RabbitMQ vhost still counts. By the URL (`by` "url") only when the identity is unknown
    (an older snapshot, INFO or the management API not read)."""
    ia, ib = broker_identity(a), broker_identity(b)
    out: dict[str, Any] = {"same": None, "before": ia[1] if ia else None,
                           "after": ib[1] if ib else None, "by": None, "why": None}
    sa, sb = server_identity(a), server_identity(b)
    if sa and sb and sa[0] == sb[0]:
        basis = sa[0]
        out["by"] = basis
        out["servers"] = [sa[1], sb[1]]
        if sa[1] != sb[1] or (sa[2] and sb[2] and not set(sa[2]) & set(sb[2])):
            out["same"] = False
            if sa[1] == sb[1]:
                out["why"] = (f"{basis} {sa[1]} on both, but no node in common: "
                              f"{', '.join(sa[2])} vs {', '.join(sb[2])}")
            else:
                out["why"] = (f"{basis} {_short(basis, sa[1])} vs {_short(basis, sb[1])}: "
                              + ("restarted (its data possibly lost) or another server"
                                 if basis == "Redis run_id" else "another cluster"))
            return out
        where_a, where_b = (ia[0][2] if ia else None), (ib[0][2] if ib else None)
        word = "vhost" if basis.startswith("RabbitMQ") else "db"
        if where_a is not None and where_b is not None and where_a != where_b:
            out["same"] = False
            out["why"] = (f"the same server, {basis} {_short(basis, sa[1])}, but "
                          f"{word} {where_a} vs {word} {where_b}")
            return out
        out["same"] = True
        if out["before"] != out["after"]:
            out["why"] = (f"one server ({basis} {_short(basis, sa[1])}) reached by different "
                          f"URLs")
        return out
    if ia is not None and ib is not None:
        out["same"], out["by"] = ia[0] == ib[0], "url"
        if not out["same"]:
            out["why"] = ("told by the URLs only: the snapshots do not both record the "
                          "server's identity, Redis run_id or RabbitMQ cluster name")
    return out


LONG_TASK_AFTER = 1800.0  # seconds of runtime from which a task is "long-running"


def diff_tasks(a, b, long_after: float = LONG_TASK_AFTER) -> dict[str, Any]:
    """Tasks between two snapshots (their task views, celeryctl.tasks): `started` (active in
    B, not active in A), `finished` (held in A, held by no worker in B: done, failed,
    revoked or lost — a snapshot cannot tell which), `long_running_new` (active in B for
    at least `long_after` s and not yet so in A). Tasks are matched by id."""
    from celeryctl.tasks import snapshot_task_view

    va, vb = snapshot_task_view(a), snapshot_task_view(b)
    if not va.observed or not vb.observed:
        return {"observed": False, "error": "; ".join(
            f"{w}: tasks not observed ({v.error})" for w, v in (("A", va), ("B", vb))
            if not v.observed), "started": [], "finished": [], "long_running_new": [],
            "count_before": None, "count_after": None}

    def by_id(view) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for r in view.rows:
            if r.id and (r.id not in out or r.state == "active"):
                out[r.id] = r
        return out

    ra, rb = by_id(va), by_id(vb)

    def brief(r) -> dict[str, Any]:
        return {"id": r.id, "name": r.name, "state": r.state, "worker": r.worker,
                "runtime_seconds": r.runtime_seconds, "held_seconds": r.held_seconds}

    def long(r) -> bool:
        return (r is not None and r.state == "active" and r.runtime_seconds is not None
                and r.runtime_seconds >= long_after)

    started = [brief(r) for i, r in rb.items() if r.state == "active"
               and (i not in ra or ra[i].state != "active")]
    finished = [brief(r) for i, r in ra.items() if i not in rb]
    long_new = [brief(r) for i, r in rb.items() if long(r) and not long(ra.get(i))]
    return {"observed": True, "error": None, "complete": va.complete and vb.complete,
            "count_before": len(va.rows), "count_after": len(vb.rows),
            "started": started, "finished": finished, "long_running_new": long_new,
            "long_after_seconds": long_after}


def diff_snapshots(a, b, report_a, report_b) -> dict[str, Any]:
    qa, qb = _queues(a), _queues(b)
    queues = []
    for name in sorted(set(qa) | set(qb)):
        ra = qa[name].ready if name in qa else None
        rb = qb[name].ready if name in qb else None
        if name not in qa:
            change = "new"
        elif name not in qb:
            change = "gone"
        elif ra is not None and rb is not None and rb != ra:
            change = "grown" if rb > ra else "drained"
        else:
            continue
        queues.append({"queue": name, "change": change, "ready_before": ra, "ready_after": rb,
                       "delta": (rb - ra) if ra is not None and rb is not None else None,
                       "consumers_before": qa[name].consumers if name in qa else None,
                       "consumers_after": qb[name].consumers if name in qb else None})
    wa, wb = _workers(a), _workers(b)
    settings = []
    for name in sorted(set(wa) & set(wb)):
        for ch in _settings_changes(wa[name], wb[name]):
            settings.append({"where": f"worker {name}", **ch})
    for ch in _settings_changes(a.app_settings or {}, b.app_settings or {}):
        settings.append({"where": "app", **ch})

    def keyed(report) -> dict[tuple[str, str], Any]:
        return {(f.code, f.subject): f for f in report.findings}

    fa, fb = keyed(report_a), keyed(report_b)
    return {
        "before": a.taken_at, "after": b.taken_at,
        "seconds_between": round(b.taken_at - a.taken_at, 1),
        "brokers": same_broker(a, b),
        "queues": queues,
        "workers_gone": sorted(set(wa) - set(wb)), "workers_new": sorted(set(wb) - set(wa)),
        "settings_changed": settings,
        "tasks": diff_tasks(a, b),
        "findings_new": [fb[k].to_dict() for k in sorted(set(fb) - set(fa))],
        "findings_resolved": [fa[k].to_dict() for k in sorted(set(fa) - set(fb))],
        "findings_changed": [{"code": k[0], "subject": k[1], "before": fa[k].severity.label,
                              "after": fb[k].severity.label}
                             for k in sorted(set(fa) & set(fb))
                             if fa[k].severity != fb[k].severity],
    }
