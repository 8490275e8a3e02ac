"""POOL: capacity — client slots, file descriptors, pool sizes."""

from __future__ import annotations

from collections.abc import Iterator

from celeryctl.checks import Finding, Limits, Severity, Skip, check, count, rabbit
from celeryctl.invocation import quote


@check("POOL001", "redis-maxclients-headroom", needs=("redis_info",), broker="redis")
def redis_maxclients_headroom(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    `connected_clients` at 80% (warning) or 95% (critical) of `maxclients`, and any
    `rejected_connections`.

    ## Why it matters
    Past maxclients Redis answers new connections with "max number of clients reached":
    workers fail to reconnect and producers fail to publish.

    ## How to fix
    Find who holds the connections (`celeryctl connections`): leaks, too many processes,
    large `max_connections`; raise `maxclients` if the load is real.
    """
    info = snap.get("redis_info")
    cfg = snap.get("redis_config") or {}
    used = info.get("connected_clients")
    cap = info.get("maxclients") or (int(cfg["maxclients"]) if cfg.get("maxclients") else None)
    if not cap:
        raise Skip("maxclients unknown: not in INFO clients (Redis < 7) and CONFIG GET "
                   f"maxclients not read ({snap.why_not('redis_config')})")
    if isinstance(used, int) and cap:
        ratio = used / int(cap)
        if ratio >= limits.clients_warn_ratio:
            sev = Severity.CRITICAL if ratio >= limits.clients_crit_ratio else Severity.WARNING
            yield Finding(sev, "redis clients", f"{used} of {cap} client slots used ({ratio:.0%})",
                          evidence={"connected_clients": used, "maxclients": cap},
                          hint="Find the connection holders; raise maxclients if needed.",
                          commands=["celeryctl connections"])
    rejected = info.get("rejected_connections")
    if isinstance(rejected, int) and rejected > 0:
        yield Finding(Severity.WARNING, "redis clients",
                      f"{count(rejected, 'connection')} rejected since Redis started: maxclients was "
                      "reached",
                      evidence={"rejected_connections": rejected},
                      hint="Find the connection holders; raise maxclients if needed.",
                      commands=["celeryctl connections"])


@check("POOL002", "broker-pool-limit-below-concurrency", needs=("workers",))
def broker_pool_limit_below_concurrency(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers whose `broker_pool_limit` is smaller than their concurrency.

    ## Why it matters
    Tasks that publish (chains, `apply_async` inside tasks, rpc results) wait for a free
    connection from the pool; without `broker_pool_acquire_timeout` they wait forever.

    ## How to fix
    Set `broker_pool_limit` to at least the concurrency (plus a little), and
    `broker_pool_acquire_timeout` so exhaustion fails instead of hanging.
    """
    for n in snap.workers.nodes:
        conf = n.replies.get("conf") or {}
        stats = n.replies.get("stats") or {}
        limit = conf.get("broker_pool_limit")
        conc = (stats.get("pool") or {}).get("max-concurrency")
        if isinstance(limit, int) and isinstance(conc, int) and 0 < limit < conc:
            yield Finding(Severity.WARNING, f"worker {n.name}",
                          f"broker_pool_limit {limit} is below its concurrency {conc}: tasks "
                          "that publish wait for a free connection",
                          evidence={"broker_pool_limit": limit, "concurrency": conc},
                          hint="Raise broker_pool_limit to at least the concurrency.")


@check("POOL003", "rabbitmq-resource-headroom", needs=("rabbit_server",),
       broker="amqp")
def rabbitmq_resource_headroom(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    RabbitMQ nodes using 80% or more of their file descriptors, sockets or Erlang processes.

    ## Why it matters
    Past the limit the node refuses new connections: workers cannot reconnect after a blip,
    publishers fail.

    ## How to fix
    Find connection leaks (`celeryctl connections`), raise the OS limit (`ulimit -n`,
    systemd `LimitNOFILE`), or spread clients over more nodes.
    """
    # sockets_* are gone from 4.0 (reported as 0, dropped by the collector)
    for n in rabbit.nodes_or_skip(snap, "node resource use", "fd_total"):
        for used, total, what in (("fd_used", "fd_total", "file descriptors"),
                                  ("sockets_used", "sockets_total", "sockets"),
                                  ("proc_used", "proc_total", "Erlang processes")):
            u, t = n.get(used), n.get(total)
            if isinstance(u, int) and isinstance(t, int) and t > 0 and \
                    u / t >= limits.clients_warn_ratio:
                yield Finding(Severity.CRITICAL if u / t >= limits.clients_crit_ratio
                              else Severity.WARNING, f"node {n.get('name')}",
                              f"{u} of {t} {what} used ({u / t:.0%})",
                              evidence={used: u, total: t},
                              hint="Find leaks; raise the node's limits.",
                              commands=["celeryctl connections"])


@check("POOL004", "no-pool-acquire-timeout", needs=("workers",))
def no_pool_acquire_timeout(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers on Celery >= 5.7 whose `broker_pool_acquire_timeout` is unset (None).

    ## Why it matters
    When every pooled broker connection is checked out, publishing blocks forever instead of
    failing: tasks that publish hang silently (celery/celery#9929).

    ## How to fix
    Set `broker_pool_acquire_timeout` (seconds) so exhaustion raises an error you can see.
    """
    for name, c in snap.worker_confs().items():
        if "broker_pool_acquire_timeout" in c and c["broker_pool_acquire_timeout"] is None:
            yield Finding(Severity.INFO, f"worker {name}",
                          "broker_pool_acquire_timeout unset: pool exhaustion hangs",
                          hint="Set broker_pool_acquire_timeout, e.g. 10.")


_NOUN = {"max-connections": "connections", "max-queues": "queues",
         "max-channels": "channels"}


@check("POOL005", "rabbitmq-vhost-limits", needs=("rabbit_server", "connections", "queues"),
       broker="amqp")
def rabbitmq_vhost_limits(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A RabbitMQ virtual host whose `max-connections` or `max-queues` limit
    (`rabbitmqctl set_vhost_limits`) is 80% used or more.

    ## Why it matters
    At the limit new connections are refused (workers cannot reconnect, producers cannot
    publish) or queue declarations fail — including rpc reply queues and pidbox queues, which
    breaks results and remote control.

    ## How to fix
    Find what holds the connections or queues (`celeryctl connections`, `celeryctl queues
    --all`), clean up leaks and orphaned queues, or raise the limit.
    """
    vhost = snap.target.get("vhost") or "/"
    why = rabbit.unread(snap, "vhost_limits")
    if why:
        raise Skip(f"virtual host limits unknown: {why}")
    lim = snap.get("rabbit_server").vhost_limits.get(vhost) or {}
    partial = rabbit.connections_partial(snap)
    found, unknown = [], []
    for key, used in (("max-connections", len(snap.get("connections"))),
                      ("max-queues", len(snap.queues))):
        cap = lim.get(key)
        if not (isinstance(cap, int) and cap > 0):
            continue
        if used / cap >= limits.clients_warn_ratio:
            found.append(Finding(Severity.CRITICAL if used / cap >= limits.clients_crit_ratio
                                 else Severity.WARNING, f"vhost {vhost}",
                                 f"{used} of {cap} {_NOUN[key]} allowed in use ({key}, "
                                 f"{used / cap:.0%})" + (
                                     " (at least: only the API user's own connections are "
                                     "listed)" if key == "max-connections" and partial else ""),
                                 evidence={key: cap, "used": used},
                                 hint="Clean up leaks or raise the vhost limit.",
                                 commands=[f"rabbitmqctl list_vhost_limits -p {quote(vhost)}"]))
        elif key == "max-connections" and partial:
            unknown.append(key)  # a lower bound below the threshold says nothing
    if unknown and not found:
        raise Skip(f"max-connections use unknown: {partial}")
    yield from found


@check("POOL006", "rabbitmq-user-limits", needs=("rabbit_server", "connections"),
       broker="amqp")
def rabbitmq_user_limits(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A RabbitMQ user whose `max-connections` or `max-channels` limit (`rabbitmqctl
    set_user_limits`) is 80% used or more, counting the connections (and their channels)
    of that user in this virtual host — a lower bound when the user also connects to others.

    ## Why it matters
    At the limit the broker refuses the user's next connection or channel: every worker and
    producer sharing that user fails together, typically at a reconnect after a blip.

    ## How to fix
    Find what holds the connections (`celeryctl connections`: leaks, too many processes per
    host), give separate services separate users, or raise the limit.
    """
    why = rabbit.unread(snap, "user_limits")
    if why:
        raise Skip(f"user limits unknown: {why}")
    partial = rabbit.connections_partial(snap)
    if partial and snap.get("rabbit_server").user_limits:
        raise Skip(f"connections per user unknown: {partial}")
    per_user: dict[str, list] = {}
    for c in snap.get("connections"):
        if c.user:
            per_user.setdefault(c.user, []).append(c)
    for user, lim in sorted(snap.get("rabbit_server").user_limits.items()):
        conns = per_user.get(user, [])
        channels = sum(c.channels or 0 for c in conns)
        for key, used in (("max-connections", len(conns)), ("max-channels", channels)):
            cap = lim.get(key)
            if isinstance(cap, int) and cap > 0 and used / cap >= limits.clients_warn_ratio:
                yield Finding(Severity.CRITICAL if used / cap >= limits.clients_crit_ratio
                              else Severity.WARNING, f"user {user}",
                              f"{used} of {cap} {_NOUN[key]} allowed in use ({key}, "
                              f"{used / cap:.0%}; counted in this vhost)",
                              evidence={key: cap, "used": used},
                              hint="Clean up leaks, split services across users, or raise the "
                                   "user limit.",
                              commands=["rabbitmqctl list_user_limits",
                                        "celeryctl connections"])
