"""CON: broker connections — stale clients, leaks."""

from __future__ import annotations

from collections.abc import Iterator

from celeryctl.checks import Finding, Limits, Severity, Skip, check, count, rabbit, verb


def _other_db(c) -> bool:
    """A client of another database of a shared Redis: another app's, not this cluster's."""
    return c.worker_match == "other-db"


@check("CON001", "stale-connections", needs=("connections",))
def stale_connections(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Redis clients idle longer than `--stale-after` seconds (default 300) that are not
    consumers blocked in BRPOP or pub/sub subscribers, and RabbitMQ connections idle that long
    or with heartbeats disabled (`timeout` 0) — excluding this command's own connection, and
    on a Redis shared by several apps the clients of other databases.

    ## Why it matters
    Idle pool connections are normal in small numbers; many of them are leaked connections
    that count against `maxclients` / file descriptors, and half-open ones (peer gone) are
    never reaped without keepalive or heartbeats.

    ## How to fix
    `celeryctl connections` shows who holds them. Set Redis `tcp-keepalive`, AMQP heartbeats,
    and fix the leaking client; kill confirmed stale ones
    (`redis-cli CLIENT KILL ID N`, `rabbitmqctl close_connection`).
    """
    why = rabbit.connections_partial(snap) or rabbit.idle_unknown(snap)
    if why:
        raise Skip(why)
    stale = []
    for c in snap.get("connections"):
        if c.role in ("celeryctl", "consumer", "pubsub", "replication") or _other_db(c):
            continue
        if c.idle_seconds is not None and c.idle_seconds >= limits.stale_after or c.broker == "rabbitmq" and c.heartbeat_seconds == 0 and c.role == "worker":
            stale.append(c)
    if stale:
        sev = Severity.WARNING if len(stale) >= 5 else Severity.INFO
        idle = sum(1 for c in stale if c.idle_seconds is not None
                   and c.idle_seconds >= limits.stale_after)
        parts = ([f"{idle} idle for {limits.stale_after:.0f} s or more"] if idle else []) + (
            [f"{len(stale) - idle} without heartbeats"] if len(stale) > idle else [])
        yield Finding(sev, "connections",
                      f"{count(len(stale), 'client connection')} "
                      f"{verb(len(stale), 'looks', 'look')} stale ({', '.join(parts)}; "
                      "consumers and subscribers not counted)",
                      evidence={"connections": [
                          {"address": c.address, "idle_seconds": c.idle_seconds,
                           "command": c.command, "worker": c.worker} for c in stale[:20]],
                          "stale_after": limits.stale_after},
                      hint="See who holds them; fix the leak or enable keepalives.",
                      commands=["celeryctl connections"])


@check("CON002", "connections-per-worker", needs=("connections", "workers"))
def connections_per_worker(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers holding more broker connections than expected (`--connections-per-worker`,
    default 30), counted from the connections attributed to them.

    ## Why it matters
    A Celery worker needs a handful of connections (consumer, pub/sub for control and events,
    a small publishing pool per process). Dozens mean a leak — usually task code creating
    clients or apps per call — and end with maxclients or file-descriptor exhaustion.

    ## How to fix
    Reuse one app/connection pool in task code (`app.pool`, `producer_or_acquire`), cap
    `broker_pool_limit`/`max_connections`, and restart the leaking worker.
    """
    why = rabbit.connections_partial(snap)
    if why:
        raise Skip(why)
    rabbit_conns = [c for c in snap.get("connections") if c.broker == "rabbitmq"]
    if rabbit_conns and all(c.consumers is None for c in rabbit_conns):
        # RabbitMQ connections are attributed to workers by their pidbox consumer
        raise Skip(rabbit.unknown(snap, "which connection belongs to which worker")
                   + " (/api/consumers not readable)")
    counts: dict[str, int] = {}
    for c in snap.get("connections"):
        if c.worker and c.worker_match == "exact":
            counts[c.worker] = counts.get(c.worker, 0) + 1
    for worker, n in sorted(counts.items()):
        if n > limits.connections_per_worker:
            yield Finding(Severity.WARNING, f"worker {worker}",
                          f"holds {n} broker connections, more than "
                          f"{limits.connections_per_worker} (--connections-per-worker): "
                          "probably a leak",
                          evidence={"connections": n}, hint="Look for a connection leak.",
                          commands=["celeryctl connections --format json"])


@check("CON003", "pubsub-without-worker", needs=("connections", "workers"),
       broker="redis")
def pubsub_without_worker(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Redis pub/sub clients (pidbox, events, gossip subscriptions) that belong to no live
    worker this command saw. On a Redis shared by several apps (one database each), clients
    of the other databases (`db=` in CLIENT LIST) are other apps' and never counted.

    ## Why it matters
    They are left by dead workers whose TCP connection was never closed (half-open), or by
    monitors (Flower, `celery events`). Dead ones still receive every broadcast and count
    against `maxclients`; Redis buffers output for them until `client-output-buffer-limit`.

    ## How to fix
    Identify them (`celeryctl connections`); enable `tcp-keepalive`; kill confirmed dead ones
    (`redis-cli CLIENT KILL ID N`).
    """
    orphans = [c for c in snap.get("connections")
               if c.role == "pubsub" and not c.worker and not _other_db(c)]
    if orphans:
        yield Finding(Severity.INFO, "pub/sub clients",
                      f"{count(len(orphans), 'pub/sub client')} "
                      f"{verb(len(orphans), 'belongs', 'belong')} to no live worker",
                      evidence={"clients": [{"address": c.address, "id": c.id,
                                             "age_seconds": c.age_seconds} for c in orphans[:20]]},
                      hint="Check for dead workers or monitors; kill confirmed dead clients.",
                      commands=["celeryctl connections"])
