"""QUE: queues — backlog, queues nobody consumes, in-flight messages past their timeout."""

from __future__ import annotations

from collections.abc import Iterator

from celeryctl.checks import Finding, Limits, Severity, check


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
    for q in _task_queues(snap):
        if q.ready is None or q.ready < limits.queue_warn:
            continue
        sev = Severity.CRITICAL if q.ready >= limits.queue_crit else Severity.WARNING
        yield Finding(sev, f"queue {q.name}", f"{q.ready} messages ready, {q.consumers} consumers",
                      evidence={"ready": q.ready, "consumers": q.consumers,
                                "buckets": q.buckets, "unacked": q.unacked,
                                "queue_warn": limits.queue_warn, "queue_crit": limits.queue_crit},
                      hint=f"Add consumers for {q.name!r} or raise their concurrency.",
                      commands=[f"celery -A proj worker -Q {q.name}",
                                "celery -A proj control pool_grow 2"])


@check("QUE002", "queue-without-consumers", needs=("queues", "workers"))
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
    (`celery control add_consumer QUEUE`); fix `task_routes` if the name is wrong.
    """
    for q in _task_queues(snap):
        if q.ready and q.consumers == 0:
            yield Finding(Severity.CRITICAL, f"queue {q.name}",
                          f"{q.ready} messages waiting and no worker consumes {q.name!r}",
                          evidence={"ready": q.ready, "consumers": 0,
                                    "consumers_source": q.consumers_source},
                          hint=f"Start a worker with -Q {q.name} or add a consumer.",
                          commands=[f"celery -A proj control add_consumer {q.name}",
                                    f"celery -A proj worker -Q {q.name}"])


def _redis_only(snap):
    return None if snap.broker_kind == "redis" else "in-flight bookkeeping is Redis-specific"


@check("QUE003", "unacked-past-visibility-timeout", needs=("redis_unacked",), applies=_redis_only)
def unacked_past_visibility_timeout(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    On Redis, in-flight messages (kombu's `unacked` hash) received longer ago than
    `visibility_timeout` (default 3600 s, from the app's or profile's transport options).

    ## Why it matters
    kombu's next sweep (about every 100 s, by any consumer) puts them back in their queue:
    if the worker that holds them is still running them — long tasks under `acks_late`, or
    ETA/countdown tasks — they execute twice (celery/kombu#337, celery/celery#2599).

    ## How to fix
    Raise `broker_transport_options = {"visibility_timeout": ...}` above your longest task
    time and longest ETA/countdown, on every app sharing the broker (the shortest wins).
    """
    un = snap.get("redis_unacked")
    opts = (snap.app_settings or {}).get("broker_transport_options") or {}
    vt = float(opts.get("visibility_timeout") or 3600)
    if un.oldest_seconds is not None and un.oldest_seconds > vt:
        yield Finding(Severity.WARNING, "unacked (Redis in-flight)",
                      f"oldest in-flight message received {un.oldest_seconds:.0f} s ago, "
                      f"past visibility_timeout {vt:.0f} s: it will be delivered again",
                      evidence={"oldest_seconds": round(un.oldest_seconds, 1),
                                "visibility_timeout": vt, "in_flight": un.total},
                      hint="Raise visibility_timeout above the longest task and ETA.",
                      commands=["redis-cli ZRANGE unacked_index 0 9 WITHSCORES"])
