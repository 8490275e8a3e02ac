"""TSK: tasks — what the workers hold right now (the task view, celeryctl.tasks): tasks
running too long, running toward a second delivery, starved behind a busy pool, ETA
hoarding, and tasks without any time limit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from celeryctl.checks import Finding, Limits, Severity, Skip, check, count, rabbit, verb
from celeryctl.views import human_age as age  # 5 s, 4 min, 2h13m: as `task ID` writes it

SHOWN = 10  # findings (or names) shown one by one before the rest are summed up
NEAR = 0.8  # warn from this share of a timeout on


def task_view(snap):
    """The snapshot's task view (collected with it, or derived from a snapshot's workers'
    replies); Skip when the workers' task lists were not observed."""
    from celeryctl.tasks import snapshot_task_view

    view = snapshot_task_view(snap)
    if not view.observed:
        raise Skip(f"the task view was not observed: {view.error or 'workers not observed'}")
    return view


def where(row) -> str:
    return f"{row.worker}" + (f" pid {row.pid}" if row.pid is not None else "")


def limits_text(row) -> str:
    if row.time_limit is not None:
        soft = (f", soft {age(row.soft_time_limit)}" if row.soft_time_limit is not None
                else "")
        return f"hard time limit {age(row.time_limit)}{soft}"
    if row.time_limits_known:
        return ("no hard time limit" + (f" (soft {age(row.soft_time_limit)} only)"
                                        if row.soft_time_limit is not None else ""))
    return "time limits unknown"


def _evidence(row, **extra: Any) -> dict[str, Any]:
    out = {"id": row.id, "task": row.name, "worker": row.worker, "pid": row.pid,
           "queue": row.queue, "runtime_seconds": _r(row.runtime_seconds),
           "held_seconds": _r(row.held_seconds), "time_limit": row.time_limit,
           "soft_time_limit": row.soft_time_limit,
           "time_limits_source": row.time_limits_source, "acks_late": row.acks_late}
    out.update(extra)
    return out


def _r(v: float | None) -> float | None:
    return round(v, 1) if v is not None else None


def _task_cmd(row) -> list[str]:
    return [f"celeryctl task {row.id}"] if row.id else []


@check("TSK001", "long-running-task", needs=("workers",))
def long_running_task(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Tasks running for longer than `--long-task-after` (default 1800 s), from the `time_start`
    each worker reports in `inspect active` (wall-clock from Celery 4.4; older workers'
    runtimes are unknown and not judged). Critical when the task has no hard time limit
    (neither its own `time_limit` nor the worker's `task_time_limit`): nothing will ever
    stop it. A warning otherwise, or when its limits are unknown. Each finding names the
    task, its id, the worker and pool process (pid), how long it has run and its limits.

    ## Why it matters
    A hung task holds a pool process for good: the worker's capacity shrinks by one, the
    tasks prefetched behind it wait (TSK004), and under `acks_late` it is delivered again
    (TSK002/TSK003). Celery has no hang detection of its own (celery/celery#2668): without
    a hard time limit only a person notices.

    ## How to fix
    Find what it waits on (`py-spy dump --pid PID` on the worker host: a lock, a socket
    without timeout, an external API), then revoke it if it must go
    (`celery -A proj control revoke --terminate ID`). Give the task a hard time limit
    (`@app.task(time_limit=...)`, or `task_time_limit` for every task) and timeouts on its
    network calls.
    """
    view = task_view(snap)
    long = [r for r in view.rows if r.state == "active" and r.runtime_seconds is not None
            and r.runtime_seconds > limits.long_task_after]
    long.sort(key=lambda r: -(r.runtime_seconds or 0.0))
    for r in long[:SHOWN]:
        unlimited = r.time_limits_known and r.time_limit is None
        tail = ": nothing will stop it" if unlimited else (
            f": killed in {age(r.time_limit - r.runtime_seconds)}"
            if r.time_limit is not None and r.time_limit > (r.runtime_seconds or 0) else "")
        yield Finding(Severity.CRITICAL if unlimited else Severity.WARNING,
                      f"task {r.id}",
                      f"{r.name} has run {age(r.runtime_seconds)} on {where(r)} "
                      f"(over {age(limits.long_task_after)}), {limits_text(r)}{tail}",
                      evidence=_evidence(r, long_task_after=limits.long_task_after),
                      hint=("Find what it waits on (py-spy dump --pid PID on its host); "
                            "give the task a hard time limit."),
                      commands=_task_cmd(r))
    if len(long) > SHOWN:
        rest = long[SHOWN:]
        yield Finding(Severity.WARNING, "long-running tasks",
                      f"{count(len(rest), 'more task')} {verb(len(rest), 'has', 'have')} run "
                      f"longer than {age(limits.long_task_after)} "
                      f"(celeryctl tasks --older-than {limits.long_task_after:.0f} lists them)",
                      evidence={"ids": [r.id for r in rest[:20]]},
                      hint="Give long tasks hard time limits.",
                      commands=[f"celeryctl tasks --state active --older-than "
                                f"{limits.long_task_after:.0f}"])


def _unacked_age(row) -> float | None:
    """How long a delivery has been unacknowledged: since kombu received it
    (`unacked_index`), else — running — since it started (no less)."""
    known = [v for v in (row.held_seconds, row.runtime_seconds if row.state == "active"
                         else None) if v is not None]
    return max(known) if known else None


def _unacked(row) -> bool:
    """The row's message is not acknowledged yet: acks_late and running, or not started."""
    if row.state == "reserved":
        return True
    if row.state != "active":
        return False
    if row.acknowledged is not None:
        return row.acknowledged is False
    return row.acks_late is True


def _running_twice(rows) -> dict[str, list]:
    by_id: dict[str, list] = {}
    for r in rows:
        if r.state == "active" and r.id:
            by_id.setdefault(r.id, []).append(r)
    # the view keeps one row per id and worker: two rows are two workers running it
    return {i: rs for i, rs in by_id.items() if len(rs) > 1}


@check("TSK002", "task-past-visibility-timeout", needs=("workers",), broker="redis")
def task_past_visibility_timeout(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    On Redis, a task whose message is still unacknowledged — running under `acks_late`, or
    reserved and not started — for 80% of `visibility_timeout` or more (the app's transport
    options, else the workers' `stats`, else kombu's 3600 s). The time counts from when kombu
    delivered it (`unacked_index`), else from the task's start. A warning says when it will
    be delivered again ("redelivered in 4 min"); critical once it is past the timeout
    ("another worker may be running it already"), or when the same task id is seen running
    on two workers (or is flagged redelivered while it runs).

    ## Why it matters
    Redis has no acknowledgements: kombu keeps every delivered message in its `unacked`
    hash, and a sweep by any consumer (every `unacked_restore_interval` x
    `unacked_restore_throttle` seconds, 100 s by default) puts back in the queue those
    delivered longer than `visibility_timeout` ago — whether the worker that holds them is
    still running them or not. The task then runs twice, or more: duplicate emails,
    double charges (celery/celery#5935, #3312; celery/kombu#337). The finding comes before
    the second delivery, while there is still time to act.

    ## How to fix
    Raise `broker_transport_options = {"visibility_timeout": ...}` above your longest task
    runtime (plus time spent reserved), on every app sharing the broker (the shortest
    wins); give long tasks a hard time limit below it; keep `worker_prefetch_multiplier = 1`
    so that tasks do not wait reserved behind long ones; make tasks idempotent.
    """
    from celeryctl.checks.que import visibility_timeout

    view = task_view(snap)
    vt, source = visibility_timeout(snap)
    twice = _running_twice(view.rows)
    shown = 0
    for tid, rs in sorted(twice.items()):
        shown += 1
        yield Finding(Severity.CRITICAL, f"task {tid}",
                      f"{rs[0].name} is running twice: on "
                      + " and on ".join(where(r) for r in rs)
                      + f" (delivered again after visibility_timeout {age(vt)}, {source})",
                      evidence={"id": tid, "task": rs[0].name,
                                "copies": [_evidence(r) for r in rs[:5]],
                                "visibility_timeout": vt, "visibility_timeout_source": source},
                      hint="Raise visibility_timeout above the longest task runtime.",
                      commands=[f"celeryctl task {tid}"])
    near = []
    for r in view.rows:
        if (r.id in twice) or not _unacked(r):
            continue
        held = _unacked_age(r)
        if held is None or held < NEAR * vt:
            continue
        if r.state == "active" and r.time_limit is not None and r.time_limit < vt \
                and held < vt:
            continue  # its hard time limit ends it before the timeout
        near.append((held, r))
    near.sort(key=lambda x: (-x[0], x[1].worker, x[1].id or ""))
    room = max(0, SHOWN - shown)
    for held, r in near[:room]:
        doing = (f"has run {age(r.runtime_seconds)}" if r.state == "active"
                 and r.runtime_seconds is not None else
                 "has been held unacknowledged" if r.state == "active" else
                 "has waited reserved (not started)")
        what = "acks_late task" if r.state == "active" else "task"
        held_txt = (f" (delivered {age(held)} ago)" if r.state != "active"
                    or r.runtime_seconds is None or held - r.runtime_seconds >= 1 else "")
        if held >= vt or r.redelivered:
            sev = Severity.CRITICAL
            when = (f"already past it by {age(held - vt)}: the next sweep delivers it again, "
                    "and another worker may be running it already") if held >= vt else (
                "it was delivered again already (redelivered): another worker may be "
                "running it too")
        else:
            sev = Severity.WARNING
            when = f"it will be delivered again and run twice: redelivered in {age(vt - held)}"
        yield Finding(sev, f"task {r.id}",
                      f"{what} {r.name} {doing} on {where(r)}{held_txt}, visibility_timeout "
                      f"{age(vt)} ({source}): {when}",
                      evidence=_evidence(r, unacked_seconds=_r(held), visibility_timeout=vt,
                                         visibility_timeout_source=source,
                                         redelivered=r.redelivered),
                      hint="Raise visibility_timeout above the longest task runtime; make "
                           "the task idempotent.",
                      commands=_task_cmd(r))
    rest = near[room:]
    if rest:
        yield Finding(Severity.WARNING, "tasks near visibility_timeout",
                      f"{count(len(rest), 'more task')} unacknowledged for over "
                      f"{NEAR:.0%} of visibility_timeout {age(vt)}",
                      evidence={"ids": [r.id for _, r in rest[:20]], "visibility_timeout": vt},
                      hint="Raise visibility_timeout above the longest task runtime.")


@check("TSK003", "task-past-consumer-timeout", needs=("workers",), broker="amqp")
def task_past_consumer_timeout(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    On RabbitMQ, a task running unacknowledged (`acks_late`: the worker acknowledges when it
    ends) for 80% of its queue's delivery acknowledgement timeout (`consumer_timeout`) or
    more. The timeout is read as QUE011 reads it: the value RabbitMQ 3.12+ reports for the
    worker's consumer (/api/consumers), the queue's `x-consumer-timeout` argument or
    `consumer-timeout` policy key, else `--consumer-timeout` (default RabbitMQ's 1800 s,
    assumed: older servers do not expose the node's setting). Warning when near, critical
    once past.

    ## Why it matters
    When a delivery stays unacknowledged longer than consumer_timeout, RabbitMQ closes the
    worker's channel (`PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed
    out`): the worker fails with an unrecoverable error and reconnects or exits, every
    message it held goes back to the queue, and the long task is delivered again — to run
    from the start (celery/celery#6760, #6954). RabbitMQ checks the timeout periodically,
    so the channel closes somewhat after the limit, not at once.

    ## How to fix
    Raise `consumer_timeout` in rabbitmq.conf (or per queue on 3.12+: the
    `consumer-timeout` policy key or `x-consumer-timeout` argument) above the longest task
    runtime; or give the task a hard time limit below it; or, for tasks that may run that
    long, do not use `acks_late`.
    """
    view = task_view(snap)
    nodes = {n.name: n for n in snap.workers.nodes}
    cache: dict[str, Any] = {}
    found = []
    for r in view.rows:
        if r.state != "active" or not _unacked(r) or r.runtime_seconds is None:
            continue
        node = nodes.get(r.worker)
        if node is None:
            continue
        if r.worker not in cache:
            cache[r.worker] = rabbit.consumer_timeouts(snap, node, limits)
        timeouts, fallback = cache[r.worker]
        limit, source = timeouts.get(r.queue or "", fallback)
        if limit is None or r.runtime_seconds < NEAR * limit:
            continue
        if r.time_limit is not None and r.time_limit < limit and r.runtime_seconds < limit:
            continue  # its hard time limit ends it first
        found.append((r, limit, source))
    found.sort(key=lambda x: -(x[0].runtime_seconds or 0.0))
    for r, limit, source in found[:SHOWN]:
        # --consumer-timeout left at RabbitMQ's default is an assumption; set, the operator's
        assumed = "" if not source.startswith("assumed") else (
            " (assumed)" if limit == Limits.consumer_timeout else " (--consumer-timeout)")
        past = r.runtime_seconds >= limit
        when = (f"past it by {age(r.runtime_seconds - limit)}: the broker closes the worker's "
                "channel at its next check, and the task is delivered again"
                if past else f"the broker closes the worker's channel in "
                f"{age(limit - r.runtime_seconds)} if it is still running")
        yield Finding(Severity.CRITICAL if past else Severity.WARNING, f"task {r.id}",
                      f"acks_late task {r.name} has run {age(r.runtime_seconds)} on "
                      f"{where(r)} unacknowledged, consumer_timeout {age(limit)}{assumed}: "
                      f"{when}",
                      evidence=_evidence(r, consumer_timeout=limit,
                                         consumer_timeout_source=source),
                      hint="Raise consumer_timeout above the longest task runtime, or give "
                           "the task a hard time limit below it.",
                      commands=_task_cmd(r))


def _busy(node) -> tuple[int | None, int | None]:
    """(tasks active, pool size) of a worker; None where not reported."""
    active = node.replies.get("active")
    conc = ((node.replies.get("stats") or {}).get("pool") or {}).get("max-concurrency")
    return (len(active) if isinstance(active, list) else None,
            conc if isinstance(conc, int) and not isinstance(conc, bool) else None)


def _consumes(node) -> set[str]:
    return {q["name"] for q in node.replies.get("active_queues") or []
            if isinstance(q, dict) and isinstance(q.get("name"), str)}


@check("TSK004", "prefetch-starvation", needs=("workers",))
def prefetch_starvation(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Tasks reserved (prefetched, not started) by a worker whose every pool process is busy,
    while another worker consuming the same queue has free pool processes: the tasks wait
    for the busy worker's running tasks instead of running now. A task's queue is the
    routing key it was delivered with.

    ## Why it matters
    A worker reserves up to `worker_prefetch_multiplier` x concurrency messages ahead. Behind
    a long task they can wait for hours while the rest of the cluster idles
    (celery/celery#6500); under `acks_late` on Redis, past `visibility_timeout` they are
    delivered again (TSK002).

    ## How to fix
    For queues with long tasks: `worker_prefetch_multiplier = 1` with `task_acks_late =
    True` (a worker then reserves nothing beyond what it runs), and `-O fair` with prefork;
    route long tasks to their own queue and workers.
    """
    view = task_view(snap)
    nodes = {n.name: n for n in snap.workers.nodes}
    running: dict[str, list] = {}
    reserved: dict[tuple[str, str], list] = {}
    for r in view.rows:
        if r.state == "active":
            running.setdefault(r.worker, []).append(r)
        elif r.state == "reserved" and r.queue:
            reserved.setdefault((r.worker, r.queue), []).append(r)
    for (wname, queue), rows in sorted(reserved.items()):
        node = nodes.get(wname)
        if node is None:
            continue
        active, conc = _busy(node)
        if active is None or conc is None or active < conc:
            continue
        free = []
        for other in snap.workers.nodes:
            if other.name == wname or queue not in _consumes(other):
                continue
            a, c = _busy(other)
            if a is not None and c is not None and a < c:
                free.append((other.name, c - a))
        if not free:
            continue
        busy = sorted(running.get(wname, []), key=lambda r: -(r.runtime_seconds or 0.0))
        longest = busy[0] if busy else None
        behind = (f"; its longest has run {age(longest.runtime_seconds)} ({longest.name})"
                  if longest is not None and longest.runtime_seconds is not None else "")
        others = ", ".join(f"{n} ({count(k, 'free process', 'free processes')})"
                           for n, k in free[:3]) + (f" and {len(free) - 3} more"
                                                    if len(free) > 3 else "")
        pool = count(conc, "busy pool process", "busy pool processes")
        yield Finding(Severity.WARNING, f"worker {wname}",
                      f"{count(len(rows), 'task')} from {queue} "
                      f"{verb(len(rows), 'waits', 'wait')} reserved behind its {pool} while "
                      f"{others} also {verb(len(free), 'consumes', 'consume')} {queue}"
                      f"{behind}",
                      evidence={"queue": queue, "reserved": len(rows),
                                "reserved_ids": [r.id for r in rows[:10]],
                                "pool_size": conc, "free_workers": dict(free[:10]),
                                "running": [_evidence(r) for r in busy[:5]]},
                      hint="Set worker_prefetch_multiplier = 1 with acks_late for long tasks, "
                           "or route them to their own queue.",
                      commands=["celery -A proj worker --prefetch-multiplier=1 -O fair"])


@check("TSK005", "eta-hoarding", needs=("workers",))
def eta_hoarding(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A worker holding `--scheduled-warn` (default 100) or more ETA/countdown tasks
    (`inspect scheduled`): messages it received and keeps, unacknowledged, in its own memory
    until they are due. On Redis it also counts those due beyond `visibility_timeout`.

    ## Why it matters
    Every ETA task stays in the worker's memory and keeps the broker's prefetch window open
    (Celery raises the channel's prefetch by one per task it holds): a worker hoarding
    thousands grows in memory, is slow to start and stop, and a restart or crash sends them
    all back to the queue at once to be hoarded again — the restart loops of
    celery/celery#2218. On Redis, those due beyond `visibility_timeout` are delivered again
    meanwhile (QUE007); on RabbitMQ, beyond `consumer_timeout` the channel is closed (QUE011).

    ## How to fix
    Do not use ETAs/countdowns for far-future or mass scheduling: store the work (a
    database row, celery beat, a delayed queue) and send the task when it is due. Keep
    countdowns short.
    """
    view = task_view(snap)
    vt, source = (None, "")
    if snap.broker_kind == "redis":
        from celeryctl.checks.que import visibility_timeout

        vt, source = visibility_timeout(snap)
    held: dict[str, list] = {}
    for r in view.rows:
        if r.state == "scheduled":
            held.setdefault(r.worker, []).append(r)
    for wname, rows in sorted(held.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if len(rows) < limits.scheduled_warn:
            continue
        etas = [r.eta_in_seconds for r in rows if r.eta_in_seconds is not None]
        names: dict[str, int] = {}
        for r in rows:
            names[r.name or "?"] = names.get(r.name or "?", 0) + 1
        top = ", ".join(f"{n} ({k})" for n, k in sorted(names.items(), key=lambda x: -x[1])[:3])
        far = [e for e in etas if vt is not None and e > vt]
        tail = (f"; {len(far)} of them {verb(len(far), 'is', 'are')} due beyond "
                f"visibility_timeout {age(vt)} and will be delivered again meanwhile"
                if far else "")
        furthest = f", the furthest due in {age(max(etas))}" if etas else ""
        yield Finding(Severity.WARNING, f"worker {wname}",
                      f"holds {count(len(rows), 'ETA/countdown task')} in memory, "
                      f"unacknowledged ({top}{furthest}): a restart sends them all back to "
                      f"the queue at once{tail}",
                      evidence={"scheduled": len(rows), "threshold": limits.scheduled_warn,
                                "by_task": dict(sorted(names.items(), key=lambda x: -x[1])[:10]),
                                "furthest_eta_in_seconds": _r(max(etas)) if etas else None,
                                "beyond_visibility_timeout": len(far),
                                "visibility_timeout": vt}
                      | ({"visibility_timeout_source": source} if vt is not None else {}),
                      hint="Schedule far-future work outside the worker (a database, celery "
                           "beat) and send it when due.",
                      commands=[f"celeryctl tasks --state scheduled --worker {wname}"])


@check("TSK006", "task-without-time-limit", needs=("workers",))
def task_without_time_limit(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Registered tasks with no time limit at all: neither a hard nor a soft limit of their own
    (`@app.task(time_limit=..., soft_time_limit=...)`, as `inspect registered` reports the
    task's attributes) nor the worker's `task_time_limit` / `task_soft_time_limit`. Only
    workers that answered both `registered` and `conf` are judged. Info.

    ## Why it matters
    A task without a time limit that hangs (a socket without timeout, a lock, a deadlock in
    a C extension) holds its pool process forever; nothing but a person notices (TSK001
    finds it once it has run long).

    ## How to fix
    Set `task_time_limit` (hard) and `task_soft_time_limit` (raises SoftTimeLimitExceeded in
    the task, to clean up) for every task, and a per-task `time_limit` for the long ones.
    A per-call `apply_async(time_limit=...)` is not visible to a third party and is not
    counted.
    """
    from celeryctl.tasks import parse_registered, task_limits

    confs = snap.worker_confs()
    unlimited: dict[str, list[str]] = {}
    judged = 0
    for n in snap.workers.nodes:
        reply = n.replies.get("registered")
        conf = confs.get(n.name)
        if not isinstance(reply, list) or conf is None:
            continue
        judged += 1
        for name, attrs in sorted(parse_registered(reply).items()):
            hard, soft, _acks, known, _src = task_limits(attrs, conf)
            if known and hard is None and soft is None:
                unlimited.setdefault(name, []).append(n.name)
    for ws in unlimited.values():
        ws.sort()
    if not judged:
        raise Skip("no worker answered both registered and conf")
    if not unlimited:
        return
    names = sorted(unlimited)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    workers = sorted({w for ws in unlimited.values() for w in ws})
    yield Finding(Severity.INFO, "registered tasks",
                  f"{count(len(names), 'registered task')} {verb(len(names), 'has', 'have')} "
                  f"no time limit at all ({shown}) on "
                  f"{count(len(workers), 'worker')}: a hung one runs forever",
                  evidence={"tasks": {n: unlimited[n][:5] for n in names[:SHOWN * 2]},
                            "count": len(names), "workers": workers[:SHOWN]},
                  hint="Set task_time_limit and task_soft_time_limit.",
                  commands=["celery -A proj worker --time-limit=3600 --soft-time-limit=3300"])
