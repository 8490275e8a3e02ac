"""BRK: the broker server itself."""

from __future__ import annotations

from collections.abc import Iterator

from celeryctl.checks import Finding, Limits, Severity, Skip, check, count, rabbit
from celeryctl.invocation import quote


@check("BRK001", "redis-eviction-policy", broker="redis")
def redis_eviction_policy(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A Redis broker whose `maxmemory-policy` is not `noeviction`.

    ## Why it matters
    At maxmemory, `allkeys-*` policies evict queue lists, the `unacked` hash or
    `_kombu.binding.*` tables: tasks vanish and routing breaks ("InconsistencyError: Probably
    the key ('_kombu.binding.celery') has been removed"). `volatile-*` policies can evict
    queues that have a TTL.

    ## How to fix
    `CONFIG SET maxmemory-policy noeviction` (and in redis.conf); size maxmemory for the
    backlog you must survive.

    Read from `CONFIG GET maxmemory-policy`, or from `INFO memory` where CONFIG is renamed or
    refused (managed Redis); skipped when neither is readable.
    """
    policy = (snap.get("redis_config") or {}).get("maxmemory-policy") or \
        (snap.get("redis_info") or {}).get("maxmemory_policy")
    if not policy:
        raise Skip("maxmemory-policy unknown: neither CONFIG GET nor INFO memory was read "
                   f"(CONFIG: {snap.why_not('redis_config')}; INFO: "
                   f"{snap.why_not('redis_info')})")
    if policy and policy != "noeviction":
        yield Finding(Severity.CRITICAL if policy.startswith("allkeys") else Severity.WARNING,
                      "redis maxmemory-policy", f"maxmemory-policy is {policy}: queued tasks can "
                      f"be evicted", evidence={"maxmemory-policy": policy},
                      hint="Use noeviction on a broker.",
                      commands=["redis-cli CONFIG SET maxmemory-policy noeviction"])


@check("BRK002", "redis-memory-near-limit", needs=("redis_info",), broker="redis")
def redis_memory_near_limit(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    `used_memory` at or above 80% of `maxmemory` (when a limit is set).

    ## Why it matters
    Under `noeviction`, writes start failing with "OOM command not allowed": publishes fail
    and workers cannot ack. Under an eviction policy, data starts disappearing.

    ## How to fix
    Drain or purge the backlog, move results elsewhere, or raise maxmemory.
    """
    info = snap.get("redis_info")
    used, cap = info.get("used_memory"), info.get("maxmemory")
    if isinstance(used, int) and isinstance(cap, int) and cap > 0:
        ratio = used / cap
        if ratio >= limits.memory_warn_ratio:
            yield Finding(Severity.CRITICAL if ratio >= 0.95 else Severity.WARNING,
                          "redis memory", f"{ratio:.0%} of maxmemory used: at 100% writes "
                          "fail (noeviction) or keys are evicted",
                          evidence={"used_memory": used, "maxmemory": cap},
                          hint="Drain the backlog or raise maxmemory.")


_ALARM = {"mem_alarm": "memory", "disk_free_alarm": "disk"}


@check("BRK003", "rabbitmq-alarms", needs=("rabbit_server",), broker="amqp")
def rabbitmq_alarms(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    RabbitMQ nodes with a memory or disk alarm, or not running.

    ## Why it matters
    During an alarm RabbitMQ blocks every publishing connection: producers hang in
    `apply_async`, and workers cannot publish results over rpc://. A node down loses its
    classic queues until it returns.

    ## How to fix
    Free memory or disk (drain queues, lower `vm_memory_high_watermark` use), bring the node
    back (`rabbitmq-diagnostics status`).
    """
    # With statistics disabled /api/nodes lists only name, type and running: alarms unknown.
    nodes = rabbit.nodes_or_skip(snap, "node state", "running")
    alarms_known = any("mem_alarm" in n or "disk_free_alarm" in n for n in nodes)
    found = []
    for n in nodes:
        name = n.get("name")
        if n.get("running") is False:
            found.append(Finding(
                Severity.CRITICAL, f"node {name}",
                "node is not running (as seen by the node that answered)",
                evidence={"running": False, "type": n.get("type")},
                hint="Start the node (or `rabbitmqctl forget_cluster_node` it if it "
                     "is gone for good); its classic queues are unavailable meanwhile.",
                commands=["rabbitmq-diagnostics -q cluster_status",
                          f"rabbitmqctl -n {quote(name)} start_app"]))
        for key in ("mem_alarm", "disk_free_alarm"):
            if n.get(key):
                found.append(Finding(Severity.CRITICAL, f"node {name}",
                                     f"{_ALARM[key]} alarm is set: publishers are blocked",
                                     hint="Free memory or disk on the node; publishing "
                                          "resumes when the alarm clears.",
                                     evidence={k: n.get(k) for k in ("mem_used", "mem_limit",
                                                                     "disk_free",
                                                                     "disk_free_limit")},
                                     commands=["rabbitmq-diagnostics -q alarms"]))
    if not alarms_known and not found:
        raise Skip(rabbit.unknown(snap, "memory and disk alarms")
                   + "; `rabbitmq-diagnostics -q alarms` shows them")
    yield from found


# Without CONFIG, RDB is judged by its record in INFO persistence: no snapshot for this long
# while writes accumulate means no working schedule.
RDB_STALE_SECONDS = 3600


@check("BRK004", "redis-persistence-off", broker="redis")
def redis_persistence_off(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A Redis broker with neither RDB snapshots (`save ""`) nor the append-only file.

    Where `CONFIG` is renamed or refused (managed Redis), it reads `INFO persistence`
    instead: `aof_enabled:1` is persistence on; with AOF off, an RDB snapshot older than an
    hour (`rdb_last_save_time`) while changes accumulate (`rdb_changes_since_last_save`), or
    none at all since start-up, is reported, saying it was derived from INFO. When neither
    CONFIG nor INFO is readable the check is skipped — never a silent pass.

    ## Why it matters
    A Redis restart loses every queued and in-flight task, and the binding tables (workers
    must redeclare their queues).

    ## How to fix
    Enable `appendonly yes` (or RDB snapshots) if queued tasks must survive a restart.
    """
    cfg = snap.get("redis_config")
    if cfg is not None and "save" in cfg and "appendonly" in cfg:
        if cfg.get("save") == "" and cfg.get("appendonly") == "no":
            yield Finding(Severity.INFO, "redis persistence",
                          "no RDB snapshots and no AOF: a restart loses every queued task",
                          evidence={"save": "", "appendonly": "no"},
                          hint="Enable appendonly if tasks must survive restarts.",
                          commands=["redis-cli CONFIG SET appendonly yes"])
        return
    info = snap.get("redis_info")
    if not info or "aof_enabled" not in info:
        raise Skip("persistence unknown: CONFIG GET not read "
                   f"({snap.why_not('redis_config')}) and INFO persistence not read "
                   f"({snap.why_not('redis_info')})")
    if info.get("aof_enabled") in (1, "1"):
        return
    changes = info.get("rdb_changes_since_last_save")
    last = info.get("rdb_last_save_time")
    now = snap.taken_at or 0
    age = now - last if isinstance(last, (int, float)) and now else None
    uptime = info.get("uptime_in_seconds")
    saves = info.get("rdb_saves")
    if not isinstance(saves, int) and age is not None and isinstance(uptime, int):
        saves = 1 if uptime - age > 5 else 0  # Redis < 7: a save since start-up moved it
    if not isinstance(changes, int) or changes == 0:
        return  # nothing unsaved: a restart now loses nothing
    if age is not None and age < RDB_STALE_SECONDS and saves:
        return  # RDB snapshots are being taken
    if age is None or age < RDB_STALE_SECONDS:
        raise Skip(f"AOF is off and CONFIG GET save is not readable "
                   f"({snap.why_not('redis_config')}): whether RDB snapshots are scheduled "
                   f"cannot be told yet — no snapshot in the {age or 0:.0f} s since the last "
                   f"one, {count(changes, 'change')} unsaved")
    yield Finding(Severity.INFO, "redis persistence",
                  f"AOF is off and no RDB snapshot in {age / 3600:.1f} h with {changes} "
                  "changes unsaved (from INFO persistence; CONFIG not readable): a restart "
                  "loses the queued tasks",
                  evidence={"aof_enabled": info.get("aof_enabled"),
                            "rdb_last_save_time": last, "rdb_changes_since_last_save": changes,
                            "rdb_saves": info.get("rdb_saves"), "source": "INFO persistence"},
                  hint="Enable appendonly (or an RDB save schedule) if tasks must survive "
                       "restarts.",
                  commands=["redis-cli CONFIG SET appendonly yes"])


@check("BRK005", "redis-evicted-keys", needs=("redis_info",), broker="redis")
def redis_evicted_keys(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    `evicted_keys > 0` in `INFO stats` on the broker.

    ## Why it matters
    Redis has already thrown keys away under memory pressure: on a broker those can be queues,
    the `unacked` hash or binding tables — tasks lost without a trace.

    ## How to fix
    Switch to `maxmemory-policy noeviction`, give Redis more memory, drain the backlog.
    """
    n = snap.get("redis_info").get("evicted_keys")
    if isinstance(n, int) and n > 0:
        yield Finding(Severity.WARNING, "redis evictions",
                      f"{count(n, 'key')} evicted since Redis started: queued tasks may have been lost",
                      evidence={"evicted_keys": n}, hint="Use noeviction on a broker.")


@check("BRK006", "redis-client-timeout", needs=("redis_config",), broker="redis")
def redis_client_timeout(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A non-zero Redis `timeout` (idle clients are closed after that many seconds).

    ## Why it matters
    kombu keeps pool connections idle between publishes and acks: Redis closes them, and
    workers log "Connection to broker lost" and reconnect in a churn (celery/celery#3932).

    ## How to fix
    `CONFIG SET timeout 0` and rely on `tcp-keepalive` to reap dead peers.
    """
    cfg = snap.get("redis_config")
    if "timeout" not in cfg:
        raise Skip("CONFIG GET timeout was not answered")
    t = cfg.get("timeout")
    if t not in (None, "", "0"):
        yield Finding(Severity.WARNING, "redis timeout",
                      f"Redis closes clients idle for {t} s (timeout): workers' idle pool "
                      "connections drop and reconnect",
                      evidence={"timeout": t}, hint="Set timeout 0; keep tcp-keepalive.",
                      commands=["redis-cli CONFIG SET timeout 0"])


@check("BRK007", "rabbitmq-partitioned", needs=("rabbit_server",), broker="amqp")
def rabbitmq_partitioned(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    RabbitMQ nodes reporting network partitions.

    ## Why it matters
    In a partitioned cluster each side serves its own view: messages published on one side
    are invisible on the other, and classic mirrored queues can diverge and lose messages on
    recovery.

    ## How to fix
    Follow RabbitMQ's partition recovery (`rabbitmq-diagnostics cluster_status`), set
    `cluster_partition_handling = pause_minority`, prefer quorum queues.
    """
    for n in rabbit.nodes_or_skip(snap, "network partitions", "partitions"):
        if n.get("partitions"):
            others = ", ".join(map(str, n["partitions"]))
            yield Finding(Severity.CRITICAL, f"node {n.get('name')}",
                          f"network partition: partitioned from {others}",
                          evidence={"partitions": n.get("partitions")},
                          hint="Pick the side to keep, restart the nodes of the other side "
                               "(their messages published during the split are lost); then set "
                               "cluster_partition_handling = pause_minority.",
                          commands=["rabbitmq-diagnostics -q cluster_status",
                                    "rabbitmqctl -n NODE_OF_THE_LOSING_SIDE stop_app && "
                                    "rabbitmqctl -n NODE_OF_THE_LOSING_SIDE start_app"])


def _sentinel(snap):
    return None if str(snap.target.get("broker") or "").startswith("sentinel://") \
        else "the broker is not reached through Redis Sentinel"


@check("BRK008", "sentinel-master-down", needs=("sentinel",), applies=_sentinel,
       broker="redis")
def sentinel_master_down(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Redis Sentinel reporting the Celery broker's master as down (`s_down`: this sentinel
    cannot reach it; `o_down`: a quorum agrees), a failover in progress, or sentinels that
    disagree on which server is the master.

    ## Why it matters
    While the master is down every publish and every worker's BRPOP fails; during a failover
    workers reconnect to the new master (only if they use `sentinel://` URLs), and messages
    written to the old master after the last replication are lost. Sentinels that disagree mean
    a split: producers and workers may be talking to two different masters.

    ## How to fix
    Look at the master (`redis-cli -p PORT ping`, its log); if a failover is running, wait for
    it (`SENTINEL MASTER name` shows the new address) and check the workers reconnected
    (`celeryctl workers`). For disagreeing sentinels, check the network between them and
    `SENTINEL RESET name` on the odd one out.
    """
    view = snap.get("sentinel") or {}
    name = view.get("master_name")
    answered = [v for v in view.get("sentinels", []) if v.get("ok")]
    flags: set[str] = set()
    addresses = {}
    for v in answered:
        m = v.get("master") or {}
        flags |= set(str(m.get("flags", "")).split(","))
        addresses[v["address"]] = f"{m.get('ip')}:{m.get('port')}"
    evidence = {"master_name": name, "flags": sorted(f for f in flags if f),
                "master_by_sentinel": addresses}
    cmd = [f"redis-cli -p {answered[0]['address'].rsplit(':', 1)[1]} SENTINEL MASTER {name}"] \
        if answered else []
    if "o_down" in flags or "failover_in_progress" in flags or any(
            f.startswith("failover_state") for f in flags):
        what = "a failover is in progress" if "failover_in_progress" in flags else \
            "a quorum of sentinels sees the master down (o_down)"
        yield Finding(Severity.CRITICAL, f"sentinel master {name}", what, evidence=evidence,
                      hint="Every publish and consume fails until a replica is promoted.",
                      commands=cmd)
    elif "s_down" in flags:
        yield Finding(Severity.WARNING, f"sentinel master {name}",
                      "a sentinel cannot reach the master (s_down); no quorum agrees yet",
                      evidence=evidence, hint="Check the master and the network to it.",
                      commands=cmd)
    if len(set(addresses.values())) > 1:
        yield Finding(Severity.CRITICAL, f"sentinel master {name}",
                      f"sentinels disagree on the master: {', '.join(sorted(set(addresses.values())))}",
                      evidence=evidence, hint="A split: clients may write to two masters.",
                      commands=cmd)


@check("BRK009", "sentinel-quorum-at-risk", needs=("sentinel",), applies=_sentinel,
       broker="redis")
def sentinel_quorum_at_risk(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A Sentinel deployment that could not fail over: fewer sentinels answering than the
    quorum, or no replica with a healthy link to the master.

    ## Why it matters
    Sentinel exists to promote a replica when the master dies. Without a quorum of sentinels,
    or without a replica in sync, the next master failure is an outage of the broker — every
    queued message is out of reach until someone restarts Redis by hand.

    ## How to fix
    Run at least three sentinels on separate hosts (quorum 2), and at least one replica
    (`replicaof`) whose `master-link-status` is ok; check with `SENTINEL CKQUORUM name`.
    """
    view = snap.get("sentinel") or {}
    name = view.get("master_name")
    sentinels = view.get("sentinels", [])
    answered = [v for v in sentinels if v.get("ok")]
    if not answered:
        yield Finding(Severity.CRITICAL, f"sentinel master {name}",
                      "the only sentinel did not answer" if len(sentinels) == 1 else
                      f"none of the {len(sentinels)} sentinels answered",
                      evidence={"errors": {v["address"]: v.get("error") for v in sentinels}},
                      hint="Without a sentinel, the master cannot be found or replaced.")
        return
    m = answered[0].get("master") or {}
    quorum = int(m.get("quorum") or 0)
    known = int(m.get("num-other-sentinels") or 0) + 1
    port = answered[0]["address"].rsplit(":", 1)[1]
    cmd = [f"redis-cli -p {port} SENTINEL CKQUORUM {name}"]
    if len(answered) < quorum or known < quorum:
        yield Finding(Severity.CRITICAL, f"sentinel master {name}",
                      f"{count(len(answered), 'sentinel')} answered, {known} known to each "
                      f"other, quorum {quorum}: no failover is possible",
                      evidence={"quorum": quorum, "answered": len(answered), "known": known},
                      hint="Bring sentinels back (or lower the quorum) before the master "
                           "fails.", commands=cmd)
    replicas = answered[0].get("replicas") or []
    healthy = [r for r in replicas if r.get("master-link-status") == "ok"
               and "s_down" not in str(r.get("flags", ""))]
    if not healthy:
        yield Finding(Severity.WARNING, f"sentinel master {name}",
                      f"no replica in sync with the master ({len(replicas)} known)",
                      evidence={"replicas": [{k: r.get(k) for k in ("ip", "port", "flags",
                                                                     "master-link-status")}
                                             for r in replicas]},
                      hint="A failover needs a replica to promote.", commands=cmd)


@check("BRK010", "redis-bookkeeping-garbage", broker="redis")
def redis_bookkeeping_garbage(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    kombu's bookkeeping on Redis holding what kombu never writes: an `unacked` key that is
    not a hash, an `unacked_index` that is not a sorted set, `unacked` entries that are not
    JSON `[message, exchange, routing_key]`, `unacked_index` scores that are no receive time
    (-inf, +inf, negative), `_kombu.binding.*` keys that are not sets, and binding members
    that do not split in three or are not UTF-8. Each names the numbers it makes unknown;
    everything else is still read and checked.

    ## Why it matters
    Every worker acks with `HDEL unacked` + `ZREM unacked_index` and delivers with `HSET` +
    `ZADD`: against keys of the wrong type these fail with `WRONGTYPE`. kombu's visibility
    sweep restores only entries scored between 0 and now - visibility_timeout, so an entry
    with a -inf, +inf or negative score is never redelivered, and one that is not JSON fails
    when restored. A binding table that is not a set, or a member that does not split in
    three, breaks routing for its exchange (kombu's lookup reads every member of the table).

    ## How to fix
    Find what wrote the keys (another application or script on the same db, a manual
    `redis-cli` session); give each application its own db or `global_keyprefix`. Back up
    and remove the bad entries (`HDEL unacked TAG`, `ZREM unacked_index TAG`), or the bad key
    once no worker is running against it; kombu recreates its keys as it works.
    """

    un = snap.get("redis_unacked") if snap.observed("redis_unacked") else None
    srv = snap.get("redis_server") if snap.observed("redis_server") else None
    if un is None and srv is None:
        raise Skip("neither the unacked bookkeeping nor the server (binding tables) was "
                   f"observed: {snap.why_not('redis_unacked')}")
    prefix = srv.keyprefix if srv is not None else ""
    problems = list(getattr(un, "problems", ()) or ()) if un is not None else []
    if problems:
        yield Finding(Severity.WARNING, "unacked (Redis in-flight bookkeeping)",
                      "; ".join(problems),
                      evidence={"problems": problems, "in_flight": un.total,
                                "malformed": getattr(un, "malformed", 0)},
                      hint="Find what wrote these keys; remove the bad entries.",
                      commands=[f"redis-cli TYPE {quote(prefix + 'unacked')}",
                                f"redis-cli TYPE {quote(prefix + 'unacked_index')}",
                                f"redis-cli ZRANGE {quote(prefix + 'unacked_index')} 0 9 "
                                "WITHSCORES"])
    garbage = list(getattr(srv, "binding_garbage", ()) or ()) if srv is not None else []
    if garbage:
        yield Finding(Severity.WARNING, "kombu binding tables",
                      "; ".join(garbage[:5]) + (f"; and {len(garbage) - 5} more"
                                                if len(garbage) > 5 else ""),
                      evidence={"problems": garbage[:20]},
                      hint="Routing through these exchanges fails: fix or remove the keys.",
                      commands=["redis-cli --scan --pattern "
                                + quote(prefix + "_kombu.binding.*")])
