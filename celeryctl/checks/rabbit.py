"""What a RabbitMQ snapshot could not see, and why — shared by the check families.

The management API omits what it does not serve: with statistics disabled there are no
rates, no consumer counts, no channels and no node resources; a user without the
monitoring tag gets no /api/nodes, no listeners and only its own connections
(docs/compatibility.md). The collector keeps those absences as None, or as
`overview["unread"]` for whole reads; these helpers turn them into the reason a check
gives when it skips. Registers no checks.
"""

from __future__ import annotations

from typing import Any

from celeryctl.knowledge import RABBIT_STATS_DISABLED, rabbit_version


def server(snap) -> Any:
    return snap.get("rabbit_server") if snap.broker_kind == "amqp" else None


def version(snap) -> tuple[int, int] | None:
    srv = server(snap)
    return rabbit_version(getattr(srv, "version", None))


def overview(snap) -> dict[str, Any]:
    return getattr(server(snap), "overview", None) or {}


def stats_disabled(snap) -> bool:
    return overview(snap).get("disable_stats") is True


def unread(snap, read: str) -> str | None:
    """Why a whole read (nodes, listeners, vhost_limits, user_limits) is missing, or None."""
    return (overview(snap).get("unread") or {}).get(read)


def unknown(snap, what: str) -> str:
    """"<what> unknown: <why>" for a field the management API did not report."""
    why = RABBIT_STATS_DISABLED if stats_disabled(snap) else \
        "the management API did not report it"
    return f"{what} unknown: {why}"


def nodes_or_skip(snap, what: str, key: str) -> list[dict[str, Any]]:
    """The listed nodes, or Skip when /api/nodes was not read or none of them has `key`."""
    from celeryctl.checks import Skip

    nodes = getattr(server(snap), "nodes", None) or []
    if not nodes:
        raise Skip(f"{what} unknown: {unread(snap, 'nodes') or 'no node listed'}")
    if not any(key in n for n in nodes):
        raise Skip(unknown(snap, what) + " (/api/nodes lists only name, type and running)"
                   if stats_disabled(snap) else unknown(snap, what))
    return nodes


def connections_partial(snap) -> str | None:
    """Why RabbitMQ listed only some connections (the API user's own), or None."""
    if snap.broker_kind != "amqp" or overview(snap).get("api_user_is_monitor") is not False:
        return None
    return ("the management API user lacks the monitoring tag, so RabbitMQ lists only its own "
            "connections")


def idle_unknown(snap) -> str | None:
    """Why RabbitMQ connections have no idle time (channels not listed), or None."""
    for c in snap.get("connections") or ():
        if c.broker == "rabbitmq" and (c.raw or {}).get("channels_error"):
            return f"connection idle time unknown: {c.raw['channels_error']}"
    return None


def consumer_timeouts(snap, node, limits) -> tuple[dict[str, tuple[float | None, str]],
                                                           tuple[float | None, str]]:
    """{queue: (seconds or None when disabled, source)} for one worker's queues, and the
    fallback for a task whose queue is not known: as QUE011 reads them (the broker's
    per-consumer value on 3.12+, the queue's argument or policy, else --consumer-timeout)."""
    from celeryctl.knowledge import queue_consumer_timeout_ms

    ver = version(snap)
    by_name = {q.name: q for q in snap.queues}
    reported: dict[str, Any] = {}
    for c in snap.get("connections") or ():
        if c.worker == node.name and c.worker_match == "exact" and \
                "consumer_timeouts_ms" in (c.raw or {}):
            reported.update(c.raw["consumer_timeouts_ms"])
    timeouts: dict[str, tuple[float | None, str]] = {}
    for aq in node.replies.get("active_queues") or []:
        name = aq.get("name") if isinstance(aq, dict) else None
        if not name:
            continue
        if name in reported:
            ms = reported[name]
            timeouts[name] = (ms / 1000.0 if ms is not None else None, "broker")
            continue
        q = by_name.get(name)
        ms = queue_consumer_timeout_ms(q.arguments, q.effective_policy, ver) \
            if q is not None else None
        timeouts[name] = (ms / 1000.0, "queue argument or policy") if ms is not None \
            else (limits.consumer_timeout, "assumed (--consumer-timeout)")
    known = [t for t in timeouts.values() if t[0] is not None]
    fallback = min(known) if known else (
        (None, "broker") if timeouts else (limits.consumer_timeout,
                                           "assumed (--consumer-timeout)"))
    return timeouts, fallback
