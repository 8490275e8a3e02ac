"""CON: broker connections — stale clients, leaks."""

from __future__ import annotations

from collections.abc import Iterator

from celeryctl.checks import Finding, Limits, Severity, check


@check("CON001", "stale-connections", needs=("connections",))
def stale_connections(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Redis clients idle longer than `--stale-after` seconds (default 300) that are not
    consumers blocked in BRPOP or pub/sub subscribers, and RabbitMQ connections idle that long
    or with heartbeats disabled (`timeout` 0) — excluding this command's own connection.

    ## Why it matters
    Idle pool connections are normal in small numbers; many of them are leaked connections
    that count against `maxclients` / file descriptors, and half-open ones (peer gone) are
    never reaped without keepalive or heartbeats.

    ## How to fix
    `celeryctl connections` shows who holds them. Set Redis `tcp-keepalive`, AMQP heartbeats,
    and fix the leaking client; kill confirmed stale ones
    (`redis-cli CLIENT KILL ID N`, `rabbitmqctl close_connection`).
    """
    stale = []
    for c in snap.get("connections"):
        if c.role in ("celeryctl", "consumer", "pubsub", "replication"):
            continue
        if c.idle_seconds is not None and c.idle_seconds >= limits.stale_after or c.broker == "rabbitmq" and c.heartbeat_seconds == 0 and c.role == "worker":
            stale.append(c)
    if stale:
        sev = Severity.WARNING if len(stale) >= 5 else Severity.INFO
        yield Finding(sev, "connections",
                      f"{len(stale)} connections idle >= {limits.stale_after:.0f} s",
                      evidence={"connections": [
                          {"address": c.address, "idle_seconds": c.idle_seconds,
                           "command": c.command, "worker": c.worker} for c in stale[:20]],
                          "stale_after": limits.stale_after},
                      hint="See who holds them; fix the leak or enable keepalives.",
                      commands=["celeryctl connections"])
