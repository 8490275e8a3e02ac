"""QUE: queues — backlog, queues nobody consumes, in-flight messages past their timeout."""

from __future__ import annotations

from collections.abc import Iterator

from celeryctl.checks import Finding, Limits, Severity, Skip, check, count, rabbit, verb
from celeryctl.invocation import quote


def _task_queues(snap):
    return [q for q in snap.queues if not q.internal and q.exists]


@check("QUE001", "queue-backlog", needs=("queues",))
def queue_backlog(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Queues holding at least `--queue-warn` ready messages (warning; default 100) or
    `--queue-crit` (critical; default 1000). On Redis the count includes every priority
    sub-list.

    ## Why it matters
    A backlog means consumers are missing or too slow: ETAs slip, results arrive late and
    memory grows on the broker.

    ## How to fix
    Add workers for the queue or raise their concurrency (`celery control pool_grow`);
    find why tasks got slower. Purge only after reading samples of what is queued.
    """
    queues = _task_queues(snap)
    if queues and all(q.ready is None for q in queues):
        errors = [q.error for q in queues if q.error]
        raise Skip(f"message counts unknown: {errors[0]}" if errors and
                   snap.broker_kind == "redis" else rabbit.unknown(snap, "message counts"))
    for q in queues:
        if q.ready is None or q.ready < limits.queue_warn:
            continue
        sev = Severity.CRITICAL if q.ready >= limits.queue_crit else Severity.WARNING
        consumers = "consumers unknown" if q.consumers is None else count(q.consumers, 'consumer')
        yield Finding(sev, f"queue {q.name}", f"{count(q.ready, 'message')} ready, {consumers}",
                      evidence={"ready": q.ready, "consumers": q.consumers,
                                "buckets": q.buckets, "unacked": q.unacked,
                                "queue_warn": limits.queue_warn, "queue_crit": limits.queue_crit},
                      hint=f"Add consumers for {q.name!r} or raise their concurrency.",
                      commands=[f"celery -A proj worker -Q {quote(q.name)}",
                                "celery -A proj control pool_grow 2"])


@check("QUE002", "queue-without-consumers", needs=("queues",))
def queue_without_consumers(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A queue with ready messages and no consumer: on RabbitMQ `consumers == 0`; on Redis no
    live worker lists it in `active_queues`.

    ## Why it matters
    Those messages will never run: a worker was started without `-Q` for it, a route sends
    tasks to a misspelled queue, or its workers are all down.

    ## How to fix
    Start a worker consuming it, or add it to a running worker without restart
    (`celeryctl control add-consumer QUEUE -d WORKER`, or Celery's `control add_consumer`);
    fix `task_routes` if the name is wrong.

    Consumer counts come from the broker on RabbitMQ (management API or passive declare), so
    this check runs even when remote control is refused to celeryctl's account; on Redis
    only the workers' `active_queues` say who consumes what: without them it is skipped.
    """
    waiting = [q for q in _task_queues(snap) if q.ready]
    unknown = [q.name for q in waiting if q.consumers is None]
    if unknown and len(unknown) == len(waiting):
        if snap.broker_kind == "amqp":
            # statistics disabled: queue totals carry message counts but no consumer count
            raise Skip(rabbit.unknown(snap, "consumer counts"))
        part = snap.part("workers")
        state = getattr(part, "state", None) or "not collected"
        raise Skip(f"consumers of {', '.join(unknown[:5])} unknown: on Redis only the "
                   f"workers' active_queues say who consumes a queue, and the workers were "
                   f"not observed ({state}; see SOURCES)")
    live = _consuming_workers(snap)
    for q in waiting:
        if q.consumers == 0:
            hint = f"Start a worker with -Q {q.name} or add a consumer"
            if len(live) > 1:
                shown = ", ".join(live[:5]) + (f" and {len(live) - 5} more" if len(live) > 5
                                              else "")
                hint += f" to one or more live workers (one -d each): {shown}"
            yield Finding(Severity.CRITICAL, f"queue {q.name}",
                          f"{count(q.ready, 'message')} waiting and no worker consumes {q.name!r}",
                          evidence={"ready": q.ready, "consumers": 0,
                                    "consumers_source": q.consumers_source},
                          hint=hint + ".",
                          commands=[f"celeryctl control add-consumer {quote(q.name)} -d "
                                    + (quote(live[0]) if live else "WORKER"),
                                    f"celery -A proj worker -Q {quote(q.name)}"])


def _consuming_workers(snap) -> list[str]:
    """The live workers a queue could be added to: those consuming some other queue, else
    every worker that replied (sorted names; empty when the workers were not observed)."""
    view = snap.workers
    nodes = view.nodes if view else ()
    consuming = {n.name for n in nodes if n.replies.get("active_queues")}
    return sorted(consuming or {n.name for n in nodes})


@check("QUE003", "unacked-past-visibility-timeout", needs=("redis_unacked",), broker="redis")
def unacked_past_visibility_timeout(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    On Redis, in-flight messages (kombu's `unacked` hash) received longer ago than
    `visibility_timeout` (the app's transport options, else what the workers report in
    `stats`, else kombu's 3600 s).

    ## Why it matters
    kombu's next sweep (about every 100 s, by any consumer) puts them back in their queue:
    if the worker that holds them is still running them — long tasks under `acks_late`, or
    ETA/countdown tasks — they execute twice (celery/kombu#337, celery/celery#2599).

    ## How to fix
    Raise `broker_transport_options = {"visibility_timeout": ...}` above your longest task
    time and longest ETA/countdown, on every app sharing the broker (the shortest wins).
    """
    un = snap.get("redis_unacked")
    problems = getattr(un, "problems", ())
    if un.oldest_seconds is None and problems and un.total != 0:
        # garbage in the bookkeeping: the ages are unknown, which is not "none is overdue"
        raise Skip("ages of in-flight messages unknown: " + "; ".join(problems))
    vt, _source = visibility_timeout(snap)
    if un.oldest_seconds is not None and un.oldest_seconds > vt:
        yield Finding(Severity.WARNING, "unacked (Redis in-flight)",
                      f"oldest in-flight message received {un.oldest_seconds:.0f} s ago, "
                      f"past visibility_timeout {vt:.0f} s: it will be delivered again",
                      evidence={"oldest_seconds": round(un.oldest_seconds, 1),
                                "visibility_timeout": vt, "in_flight": un.total},
                      hint="Raise visibility_timeout above the longest task and ETA.",
                      commands=["redis-cli ZRANGE unacked_index 0 9 WITHSCORES"])


def scheduled_beyond(snap, node, seconds: float) -> list[dict]:
    """The tasks a worker holds (`inspect scheduled`) whose ETA is more than `seconds` away."""
    import datetime

    now = snap.taken_at or datetime.datetime.now(datetime.timezone.utc).timestamp()
    far = []
    for item in node.replies.get("scheduled") or []:
        eta = item.get("eta") if isinstance(item, dict) else None
        try:
            ts = datetime.datetime.fromisoformat(str(eta)).timestamp()
        except (TypeError, ValueError):
            continue
        if ts - now > seconds:
            req = item.get("request") or {}
            far.append({"id": req.get("id"), "task": req.get("name"), "eta": eta})
    return far


def visibility_timeout(snap) -> tuple[float, str]:
    """The effective visibility_timeout: the app's transport options, else what workers
    report in `stats().broker.transport_options` (uncensored there), else kombu's 3600 s."""
    opts = (snap.app_settings or {}).get("broker_transport_options") or {}
    if opts.get("visibility_timeout"):
        return float(opts["visibility_timeout"]), "app"
    view = snap.workers
    values = []
    for n in view.nodes if view else ():
        stats = n.replies.get("stats") or {}
        t = ((stats.get("broker") or {}).get("transport_options") or {}).get("visibility_timeout")
        if t:
            values.append(float(t))
    if values:
        return min(values), "workers"  # the shortest wins (Celery docs)
    return 3600.0, "kombu default"


@check("QUE004", "pidbox-reply-bloat", needs=("queues",))
def pidbox_reply_bloat(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Remote-control reply queues (`<oid>.reply.celery.pidbox`) that hold messages: on Redis
    lists that nobody will read, on RabbitMQ queues without a consumer.

    ## Why it matters
    Replies that arrive after the inspecting client stopped listening (short timeouts, many
    workers, large `revoked` sets in mingle replies) pile up; on Redis they may never expire
    (celery/celery#6089) and can reach megabytes each.

    ## How to fix
    Delete the stale reply lists/queues; give inspect clients longer timeouts; on Redis use
    kombu >= 5.5 with `control_queue_expires` set.
    """
    # a RabbitMQ consumer count of None is unknown (statistics disabled), not "no consumer"
    replies = [q for q in snap.queues if q.internal and q.ready and
               q.name.endswith(".reply.celery.pidbox")]
    bloated = [q for q in replies
               if q.consumers == 0 or q.consumers is None and q.broker != "rabbitmq"]
    if not bloated and any(q.consumers is None and q.broker == "rabbitmq" for q in replies):
        raise Skip(rabbit.unknown(snap, "consumer counts"))
    if bloated:
        total = sum(q.ready or 0 for q in bloated)
        forever = [q.name for q in bloated if q.ttl_seconds == -1]
        yield Finding(Severity.WARNING if total >= 100 or forever else Severity.INFO,
                      "pidbox reply queues",
                      f"{count(len(bloated), 'reply queue')} "
                      f"{verb(len(bloated), 'holds', 'hold')} {count(total, 'unread reply', 'unread replies')}"
                      + (f"; {len(forever)} never expire" if forever else ""),
                      evidence={"queues": {q.name: q.ready for q in bloated[:20]},
                                "never_expire": forever[:20]},
                      hint="Delete the stale reply queues; lengthen inspect timeouts.",
                      commands=(["redis-cli --scan --pattern '*.reply.celery.pidbox'"]
                                if snap.broker_kind == "redis" else
                                ["rabbitmqctl list_queues name messages consumers | "
                                 "grep reply.celery.pidbox"]))


@check("QUE005", "result-queues-piling-up", needs=("queues",),
       broker="amqp")
def result_queues_piling_up(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    On RabbitMQ, rpc:// reply queues (one per client, named by a dashed uuid) without a
    consumer but with messages, and legacy amqp:// per-task result queues (32 hex digits).

    ## Why it matters
    Results nobody reads stay until the queue expires (`result_expires`, 1 day by default):
    every web process or thread that ever sent a task leaves one. Legacy amqp:// results
    create a queue per task and can exhaust the broker.

    ## How to fix
    Read results you ask for, or set `ignore_result=True` on fire-and-forget tasks; lower
    `result_expires`; move off the amqp:// backend.
    """
    waiting = [q for q in snap.queues if q.type != "stream" and _kind(q.name) == "result-rpc"
               and q.ready]
    rpc = [q for q in waiting if q.consumers == 0]
    legacy = [q for q in snap.queues if _kind(q.name) == "result-amqp"]
    if not rpc and not legacy and any(q.consumers is None for q in waiting):
        raise Skip(rabbit.unknown(snap, "consumer counts"))
    if rpc:
        yield Finding(Severity.WARNING, "rpc result queues",
                      f"{count(len(rpc), 'rpc reply queue')} with no consumer "
                      f"{verb(len(rpc), 'holds', 'hold')} "
                      f"{count(sum(q.ready or 0 for q in rpc), 'unread result')}",
                      evidence={"queues": {q.name: q.ready for q in rpc[:20]}},
                      hint="Read or ignore results; lower result_expires.")
    if legacy:
        yield Finding(Severity.WARNING, "amqp result queues",
                      f"{len(legacy)} per-task result queues of the legacy amqp:// backend "
                      "(one queue per task)",
                      evidence={"count": len(legacy)}, hint="Move to rpc:// or redis://.")


def _kind(name: str) -> str:
    from celeryctl.knowledge import classify_queue

    return classify_queue(name)


@check("QUE006", "queue-without-dead-letter-exchange", needs=("queues",),
       broker="amqp")
def queue_without_dead_letter_exchange(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    RabbitMQ task queues declared without `x-dead-letter-exchange` (argument or policy).
    Quorum queues with a delivery limit are a warning: since RabbitMQ 4.0 every quorum queue
    has one (20 unless an `x-delivery-limit` argument or a `delivery-limit` policy says
    otherwise).

    ## Why it matters
    Messages a worker rejects — content it refuses, `Reject(requeue=False)` — are dropped
    instead of kept for inspection. On a quorum queue with a delivery limit, a message
    delivered that many times is dropped too: a task that keeps killing its worker under
    `acks_late`, or a message requeued again and again (each `doctor --peek` requeues on
    4.0-4.2), disappears without a trace.

    ## How to fix
    Add a dead-letter exchange by policy (`rabbitmqctl set_policy DLX "^celery$"
    '{"dead-letter-exchange":"dlx"}' --apply-to queues`) or by queue arguments. For quorum
    queues keep the delivery limit (RabbitMQ recommends it), and give them a dead-letter
    exchange; a `delivery-limit` policy key changes the limit (`-1` disables it).
    """
    from celeryctl.knowledge import quorum_delivery_limit

    version = rabbit.version(snap)
    missing, unknown, limited = [], [], {}
    for q in snap.queues:
        if q.internal or not q.exists or "x-dead-letter-exchange" in (q.arguments or {}):
            continue
        if q.effective_policy is None:  # statistics disabled: the applied policy is unknown
            unknown.append(q.name)
            continue
        if "dead-letter-exchange" in q.effective_policy:
            continue
        limit = quorum_delivery_limit(q.arguments, q.effective_policy, version) \
            if q.type == "quorum" else None
        if limit is not None:
            limited[q.name] = limit
        else:
            missing.append(q.name)
    if unknown and not missing and not limited:
        raise Skip(rabbit.unknown(snap, f"the policies of {len(unknown)} task queues"))
    if limited:
        yield Finding(Severity.WARNING, "dead-lettering (quorum queues)",
                      f"{count(len(limited), 'quorum task queue')} "
                      f"{verb(len(limited), 'drops', 'drop')} a message after its delivery "
                      f"limit and {verb(len(limited), 'has', 'have')} no dead-letter exchange",
                      evidence={"delivery_limit": dict(list(limited.items())[:20]),
                                "rabbitmq_version": getattr(rabbit.server(snap), "version",
                                                            None)},
                      hint="Give quorum queues a dead-letter exchange by policy.",
                      commands=["rabbitmqctl set_policy DLX '.*' "
                                "'{\"dead-letter-exchange\":\"dlx\"}' --apply-to queues"])
    if missing:
        yield Finding(Severity.INFO, "dead-lettering",
                      f"{count(len(missing), 'task queue')} "
                      f"{verb(len(missing), 'has', 'have')} no dead-letter exchange (argument "
                      "or policy): messages rejected there are dropped",
                      evidence={"queues": missing[:20]} | (
                          {"policy_unknown": unknown[:20]} if unknown else {}),
                      hint="Add a DLX by policy so rejected messages are kept.",
                      commands=["rabbitmqctl set_policy DLX '.*' "
                                "'{\"dead-letter-exchange\":\"dlx\"}' --apply-to queues"])


@check("QUE007", "eta-beyond-visibility-timeout", needs=("workers",),
       broker="redis")
def eta_beyond_visibility_timeout(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    On Redis, tasks the workers hold for a later ETA/countdown (`inspect scheduled`) whose ETA
    is further away than `visibility_timeout`.

    ## Why it matters
    The worker keeps such a message unacknowledged until its ETA; once it is older than
    visibility_timeout, kombu restores it to the queue and another worker receives it too:
    the task runs twice or more (celery/kombu#337).

    ## How to fix
    Raise `visibility_timeout` above the longest ETA/countdown you use, or schedule far-future
    work with a scheduler (celery beat, a database) instead of ETAs.
    """
    vt, source = visibility_timeout(snap)
    for n in snap.workers.nodes:
        far = scheduled_beyond(snap, n, vt)
        if far:
            yield Finding(Severity.WARNING, f"worker {n.name}",
                          f"{count(len(far), 'scheduled task')} "
                          f"{verb(len(far), 'has', 'have')} an ETA beyond visibility_timeout "
                          f"{vt:.0f} s ({source}): {verb(len(far), 'it', 'they')} will be "
                          "delivered again",
                          evidence={"tasks": far[:10], "visibility_timeout": vt},
                          hint="Raise visibility_timeout above the longest ETA.")


@check("QUE008", "queue-growing", needs=("growth",))
def queue_growing(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Queues whose ready count grows: from two samples `--sample-interval` seconds apart, or on
    RabbitMQ from the management API's publish and ack rates. Reports the net rate and the
    time to drain at that rate ("never" while growing).

    ## Why it matters
    A growing queue is an incident in progress even while it is still small: consumers are
    slower than producers, and every minute adds latency to every task behind it.

    ## How to fix
    Add consumers or capacity for the queue, or slow the producer; check why tasks got slower
    (downstream latency, a stuck dependency).
    """
    for name, g in sorted((snap.get("growth") or {}).items()):
        if g.rate_per_second > 0 and g.ready >= max(1, limits.queue_warn // 10):
            yield Finding(Severity.WARNING, f"queue {name}",
                          f"growing by {g.rate_per_second:.1f} messages/s ({g.ready} ready); "
                          f"time to drain: never at this rate",
                          evidence={"ready": g.ready, "rate_per_second":
                                    round(g.rate_per_second, 3), "source": g.source,
                                    "interval_seconds": g.interval_seconds},
                          hint=f"Add consumers for {name!r}.",
                          commands=[f"celeryctl queues watch -Q {quote(name)}"])


@check("QUE009", "priority-declarations-inconsistent", needs=("queues", "app"),
       broker="amqp")
def priority_declarations_inconsistent(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    RabbitMQ task queues whose `x-max-priority` differs from the app's
    `task_queue_max_priority` (or that have none while it is set).

    ## Why it matters
    A queue's arguments are fixed at declaration: a queue created before priorities were
    configured ignores message priority entirely, and a worker declaring it with other
    arguments fails with PRECONDITION_FAILED (inequivalent arg 'x-max-priority').

    ## How to fix
    Recreate the queue with the intended `x-max-priority` (drain it first), or align
    `task_queue_max_priority` with what the broker has.
    """
    want = (snap.app_settings or {}).get("task_queue_max_priority")
    if not want:
        return
    for q in snap.queues:
        if q.internal or not q.exists:
            continue
        have = (q.arguments or {}).get("x-max-priority")
        if have != want:
            yield Finding(Severity.WARNING, f"queue {q.name}",
                          (f"declared with x-max-priority {have}" if have is not None else
                           "declared without x-max-priority")
                          + f", but the app sets task_queue_max_priority {want}"
                          + (": message priorities are ignored" if have is None else ""),
                          evidence={"x-max-priority": have, "task_queue_max_priority": want},
                          hint="Recreate the queue with the intended x-max-priority.")


@check("QUE010", "control-queues-never-expire", needs=("queues",),
       broker="amqp")
def control_queues_never_expire(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    RabbitMQ `celeryev.*` and `*.pidbox` queues without `x-expires`, or with messages and no
    consumer.

    ## Why it matters
    Celery declares them with `x-expires` and `x-message-ttl` so they vanish with their
    owner; without them (old Celery/kombu, or queues declared by hand) every event or control
    message piles up in queues nobody reads, one per dead monitor or client.

    ## How to fix
    Delete the orphaned queues; upgrade the clients that declare them without expiry.
    """
    bad, unknown = [], 0
    for q in snap.queues:
        if not q.internal or not (q.name.startswith("celeryev.") or q.name.endswith(".pidbox")):
            continue
        has_arg = "x-expires" in (q.arguments or {})
        # effective_policy None / consumers None: unknown (statistics disabled)
        no_expiry = not has_arg and q.effective_policy is not None and \
            "expires" not in q.effective_policy
        if no_expiry or (q.ready and q.consumers == 0):
            bad.append({"queue": q.name, "ready": q.ready, "consumers": q.consumers,
                        "x-expires": (q.arguments or {}).get("x-expires"),
                        "never_expires": no_expiry})
        elif not has_arg and q.effective_policy is None or q.ready and q.consumers is None:
            unknown += 1
    if unknown and not bad:
        raise Skip(rabbit.unknown(snap, f"expiry or consumers of {unknown} control queues"))
    if bad:
        forever = sum(1 for b in bad if b.pop("never_expires"))
        piling = sum(1 for b in bad if b["ready"] and b["consumers"] == 0)
        what = ([f"{forever} never {verb(forever, 'expires', 'expire')}"] if forever else []) + (
            [f"{piling} {verb(piling, 'holds', 'hold')} messages nobody consumes"]
            if piling else [])
        yield Finding(Severity.WARNING, "control and event queues",
                      f"{count(len(bad), 'celeryev/pidbox queue')} "
                      f"{verb(len(bad), 'needs', 'need')} cleaning up: "
                      + ", ".join(what),
                      evidence={"queues": bad[:20]}, hint="Delete orphaned queues.")


@check("QUE011", "eta-beyond-consumer-timeout", needs=("workers",),
       broker="amqp")
def eta_beyond_consumer_timeout(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    On RabbitMQ, tasks held by workers for an ETA/countdown further away than the delivery
    acknowledgement timeout of their queue. The timeout comes from, best first: the value
    RabbitMQ 3.12+ reports for the worker's own consumer of that queue (`consumer_timeout`
    in /api/consumers: the queue's setting, else the node's `consumer_timeout`); the queue's
    `x-consumer-timeout` argument or `consumer-timeout` policy key (3.12+, the smaller of the
    two); else `--consumer-timeout` (default RabbitMQ's 1800 s, assumed: older servers do not
    expose the node's setting over HTTP). A task's queue is the one its routing key names,
    else the worker's queue with the shortest timeout.

    ## Why it matters
    The worker keeps such a message unacknowledged until its ETA. When it has been
    unacknowledged longer than consumer_timeout, RabbitMQ closes the channel
    ("PRECONDITION_FAILED - delivery acknowledgement ... timed out") and the worker crashes
    with an unrecoverable error, redelivering everything it held (celery/celery#6760).

    ## How to fix
    Raise `consumer_timeout` in rabbitmq.conf, or per queue on 3.12+ with the
    `consumer-timeout` policy key or the `x-consumer-timeout` argument, above the longest
    ETA; or schedule far-future work elsewhere (celery beat, a database).
    """
    import datetime


    now = snap.taken_at or datetime.datetime.now(datetime.timezone.utc).timestamp()
    for n in snap.workers.nodes:
        # queue -> (seconds or None: disabled, source), and the fallback (rabbit.py)
        timeouts, fallback = rabbit.consumer_timeouts(snap, n, limits)
        far = []
        for item in n.replies.get("scheduled") or []:
            if not isinstance(item, dict):
                continue
            try:
                eta = datetime.datetime.fromisoformat(str(item.get("eta"))).timestamp()
            except (TypeError, ValueError):
                continue
            req = item.get("request") if isinstance(item.get("request"), dict) else {}
            info = req.get("delivery_info") if isinstance(req.get("delivery_info"), dict) else {}
            queue = info.get("routing_key") if info.get("routing_key") in timeouts else None
            limit, source = timeouts[queue] if queue else fallback
            if limit is not None and eta - now > limit:
                far.append({"id": req.get("id"), "task": req.get("name"),
                            "eta": item.get("eta"), "queue": queue,
                            "consumer_timeout": limit, "source": source})
        if far:
            shortest = min(far, key=lambda f: f["consumer_timeout"])
            assumed = " (assumed)" if shortest["source"].startswith("assumed") else ""
            yield Finding(Severity.WARNING, f"worker {n.name}",
                          f"{count(len(far), 'scheduled task')} "
                          f"{verb(len(far), 'waits', 'wait')} longer than consumer_timeout "
                          f"{shortest['consumer_timeout']:.0f} s{assumed}: the broker will "
                          f"close the worker's channel",
                          evidence={"tasks": far[:10], "consumer_timeout_assumed":
                                    limits.consumer_timeout},
                          hint="Raise consumer_timeout above the longest ETA.")


@check("QUE012", "quorum-queue-members-offline", needs=("queues",), broker="amqp")
def quorum_queue_members_offline(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    RabbitMQ quorum queues with members offline (`online` shorter than `members` in the
    management API), and those that lost their majority.

    ## Why it matters
    A quorum queue keeps working while a majority of its members is online; each lost member
    eats into the failures it can survive. Without a majority it accepts nothing and delivers
    nothing: Celery's publishes to it fail and its workers idle.

    ## How to fix
    Bring the nodes back (`rabbitmqctl cluster_status`); when a node is gone for good, replace
    the member (`rabbitmq-queues delete_member` / `add_member`, or `grow`).
    """
    for q in snap.queues:
        if q.type != "quorum" or not q.members:
            continue
        offline = sorted(set(q.members) - set(q.online))
        if not offline:
            continue
        majority = len(q.online) > len(q.members) // 2
        yield Finding(
            Severity.WARNING if majority else Severity.CRITICAL, f"queue {q.name}",
            f"{len(offline)} of {len(q.members)} quorum members offline"
            + ("" if majority else ": no majority, the queue is unavailable"),
            evidence={"members": list(q.members), "online": list(q.online),
                      "offline": offline, "leader": q.node},
            hint="Restart the offline nodes, or replace their members.",
            commands=["rabbitmqctl cluster_status",
                      f"rabbitmq-queues quorum_status {quote(q.name)}"])


@check("QUE013", "queue-key-wrong-type", needs=("queues",), broker="redis")
def queue_key_wrong_type(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    On Redis, a queue whose key is not a list: the bare key, or one of its priority
    sub-lists (`name` + kombu's separator + `3`, `6`, `9`), holds a hash, a string, a set...
    (its Redis `TYPE` is named). Every other queue is still read and reported.

    ## Why it matters
    kombu publishes with `LPUSH` and consumes with `BRPOP` over all of a worker's queues at
    once: against a key of the wrong type Redis answers `WRONGTYPE`, so publishing to that
    queue fails, and a worker consuming it gets an error instead of a message whenever its
    `BRPOP` reaches that key. Its depth cannot be read either: a backlog there is invisible,
    and `celeryctl purge` refuses the queue.

    ## How to fix
    Find what wrote that key: another application on the same Redis db (give each its own db,
    or a `global_keyprefix`), or a name collision between a queue and some other key. Read it
    (`redis-cli TYPE`, `HGETALL`/`GET`), then rename it out of the way (`RENAME`) or delete it
    once its content is known not to matter; kombu recreates the list on the next publish.
    """

    prefix = (snap.get("redis_server").keyprefix if snap.observed("redis_server") else "") or ""
    for q in snap.queues:
        if not q.type or not q.error or q.broker != "redis":
            continue
        yield Finding(
            Severity.WARNING if q.internal else Severity.CRITICAL, f"queue {q.name}",
            f"{q.error}: publishing to or consuming from it fails with WRONGTYPE, and its "
            f"depth is unknown",
            evidence={"type": q.type, "error": q.error, "internal": q.internal},
            hint="Read the key, then rename or delete it: kombu recreates the list.",
            commands=[f"redis-cli --scan --pattern {quote(prefix + q.name + '*')}",
                      f"redis-cli TYPE {quote(prefix + q.name)}"])


@check("QUE014", "purge-left-messages-set-aside", needs=("queues",), broker="redis")
def purge_left_messages_set_aside(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Messages a `celeryctl purge` set aside and never finished with: the purge was killed
    (`kill -9`, a crash, a host that went down) between setting a queue's messages aside
    and deleting them. They sit in `_celeryctl.purge.<token>.<step>` lists, recorded in
    `_celeryctl.purge.pending`.

    ## Why it matters
    No worker consumes them and they are not deleted: the queue looks purged, the backup
    may be cut short, and the messages are invisible to every other tool.

    ## How to fix
    Put them back where they came from (at the consuming end, order kept):
    `celeryctl restore --set-aside --confirm` (a dry run without `--confirm`). Then purge
    again if that was the intent. A restore of the killed purge's backup skips the lines of
    what was put back, so nothing runs twice. docs/purge.md explains.
    """
    from celeryctl.collect.redis import SET_ASIDE_ORIGIN
    from celeryctl.views import human_seconds

    for q in snap.queues:
        if SET_ASIDE_ORIGIN not in (q.discovered_by or ()):
            continue
        a = q.arguments or {}
        age = a.get("set_aside_seconds")
        when = (f"{human_seconds(age)} ago" if isinstance(age, (int, float))
                else "at an unknown time")
        who = f"pid {a.get('pid')} on {a.get('host')}" if a.get("pid") else "an unknown process"
        yield Finding(Severity.WARNING, f"queue {a.get('purge_of') or '?'}",
                      f"{count(q.ready, 'message') if q.ready is not None else 'unknown messages'} set aside "
                      f"by a purge that never finished ({who}, {when})",
                      evidence={"token": a.get("token"), "queue": a.get("purge_of"),
                                "messages": q.ready, "set_aside_seconds": age,
                                "host": a.get("host"), "pid": a.get("pid"),
                                "backup": a.get("backup"), "error": q.error},
                      hint="Put them back: celeryctl restore --set-aside --confirm.",
                      commands=["celeryctl restore --set-aside",
                                "celeryctl restore --set-aside --confirm"])
