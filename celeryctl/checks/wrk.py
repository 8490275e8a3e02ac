"""WRK: workers — duplicates, drift, idle workers, prefetch with acks_late, mixed versions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from celeryctl.checks import Finding, Limits, Severity, check, count, verb
from celeryctl.invocation import quote
from celeryctl.tasks import registered_name

# Settings whose difference between workers of one cluster is worth a look.
DRIFT_KEYS = ("accept_content", "task_serializer", "result_serializer", "task_acks_late",
              "worker_prefetch_multiplier", "task_reject_on_worker_lost", "broker_pool_limit",
              "result_backend", "broker_transport_options", "task_time_limit",
              "task_soft_time_limit", "worker_max_tasks_per_child", "timezone",
              "broker_heartbeat", "result_expires", "task_default_queue",
              # Celery >= 5.5 only: older workers do not report it (never counted as drift)
              "task_default_queue_type")


@check("WRK001", "duplicate-node-names", needs=("workers",))
def duplicate_node_names(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Two or more workers answering with the same node name (`-n name@host`).

    ## Why it matters
    Remote control cannot address them separately, `celery inspect` merges their replies,
    and on RabbitMQ the second one cannot even bind its exclusive pidbox queue. Monitoring
    counts one worker where there are several.

    ## How to fix
    Give every worker a unique name, e.g. `-n worker1@%h` with a per-process number, or
    `%h`/`%n` placeholders in containers whose host names repeat.
    """
    seen: dict[str, int] = {}
    for n in snap.workers.nodes:
        seen[n.name] = seen.get(n.name, 0) + 1
    for name, times in sorted(seen.items()):
        if times > 1:
            yield Finding(Severity.WARNING, f"worker {name}",
                          f"{times} workers answer as {name}",
                          evidence={"count": times},
                          hint="Start each worker with a unique -n NAME@%h.")


@check("WRK002", "worker-consumes-no-queue", needs=("workers",))
def worker_consumes_no_queue(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A worker whose `active_queues` is empty.

    ## Why it matters
    It holds a process slot and a broker connection but runs nothing: usually after
    `cancel_consumer` of its last queue, or a `-Q` naming a queue that tasks are not routed to.

    ## How to fix
    Add a consumer (`celeryctl control add-consumer QUEUE -d NODE`, or Celery's
    `control add_consumer`) or restart it with the right `-Q`.
    """
    for n in snap.workers.nodes:
        q = n.replies.get("active_queues")
        if isinstance(q, list) and not q:
            yield Finding(Severity.WARNING, f"worker {n.name}",
                          "consumes no queue: it runs no task",
                          hint="Add a consumer or restart the worker with -Q.",
                          commands=[f"celeryctl control add-consumer celery -d {quote(n.name)}"])


@check("WRK003", "worker-config-drift", needs=("workers",))
def worker_config_drift(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Settings (from `inspect conf` with defaults) that differ between workers: serializers,
    `accept_content`, `task_acks_late`, prefetch multiplier, time limits, pool limits,
    result backend, `task_default_queue_type` and more.

    A setting is compared only between the workers that report it: in a cluster of several
    Celery versions, a setting added in a later release (`task_default_queue_type` in 5.5) is
    absent from the older workers' `conf`, and that absence is not drift (the evidence lists
    them as `not_reported`; WRK008 reports the version mix itself).

    ## Why it matters
    Workers of one cluster that disagree behave differently for the same task: one acks
    late and one early, one accepts pickle, one drops messages as "untrusted content". Drift
    is the usual sign of a partial deploy.

    ## How to fix
    Deploy the same configuration everywhere; restart the workers left on the old one.
    """
    confs = snap.worker_confs()
    if len(confs) < 2:
        return
    for key in DRIFT_KEYS:
        values, absent = reported(confs, key)
        groups = drift_groups(values)
        if len(values) >= 2 and len(groups) > 1:
            summary = "; ".join(f"{g['count']} with {g['value']!r}" for g in groups)
            evidence: dict[str, Any] = {"groups": groups}
            if absent:
                evidence["not_reported"] = absent[:5] + (
                    [f"... {len(absent) - 5} more"] if len(absent) > 5 else [])
            yield Finding(Severity.WARNING, f"setting {key}",
                          f"workers disagree on {key}: {summary}",
                          evidence=evidence,
                          hint="Deploy one configuration to every worker.")


def reported(confs: dict[str, dict[str, Any]], key: str) -> tuple[dict[str, Any], list[str]]:
    """({worker: value} for the workers whose conf reports `key`, [the workers that do not]).
    Drift is judged on the first only: a worker whose Celery predates a setting does not
    list it, and a missing key is not a value."""
    values = {name: c[key] for name, c in confs.items() if key in c}
    return values, sorted(n for n in confs if n not in values)


def drift_groups(values: dict[str, Any], names_shown: int = 5) -> list[dict[str, Any]]:
    """Workers grouped by the value they have, the largest group first: with 40 workers the
    finding reads "36 with 4; 4 with 1", not 40 lines. Each group names its first workers."""
    by: dict[str, dict[str, Any]] = {}
    for name, v in sorted(values.items()):
        g = by.setdefault(repr(v), {"value": v, "workers": []})
        g["workers"].append(name)
    out = sorted(by.values(), key=lambda g: (-len(g["workers"]), repr(g["value"])))
    return [{"value": g["value"], "count": len(g["workers"]),
             "workers": g["workers"][:names_shown]
             + ([f"... {len(g['workers']) - names_shown} more"]
                if len(g["workers"]) > names_shown else [])} for g in out]


@check("WRK004", "prefetch-multiplier-with-acks-late", needs=("workers",))
def prefetch_multiplier_with_acks_late(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers with `task_acks_late = True` and `worker_prefetch_multiplier > 1`.

    ## Why it matters
    Each process reserves several messages it will not start for a while; with late acks a
    crash or restart redelivers all of them, and long tasks starve short ones queued behind
    them on the same worker.

    ## How to fix
    Set `worker_prefetch_multiplier = 1` for workers running long tasks with acks_late.
    """
    for name, c in snap.worker_confs().items():
        mult = c.get("worker_prefetch_multiplier")
        if c.get("task_acks_late") is True and isinstance(mult, int) and mult > 1:
            yield Finding(Severity.WARNING, f"worker {name}",
                          f"task_acks_late with worker_prefetch_multiplier {mult}: each "
                          f"process holds up to {mult} messages, all redelivered if it crashes",
                          evidence={"task_acks_late": True, "worker_prefetch_multiplier": mult},
                          hint="Set worker_prefetch_multiplier = 1.",
                          commands=["celery -A proj worker --prefetch-multiplier=1"])


@check("WRK005", "pool-saturated", needs=("workers", "queues"))
def pool_saturated(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A queue with messages waiting whose every consuming worker runs as many tasks as its
    pool allows (`active == max-concurrency`): a warning from `--queue-warn` messages on,
    info below it. Below `--queue-warn`, only when the longest of those running tasks has run
    2 s or more (or no runtime is known): one sample of pools full of sub-second tasks is a
    short burst being worked off, not a lack of capacity. The finding names the tasks keeping
    the pools busy and how long they have run (the longest first).

    ## Why it matters
    The workers are not idle or stuck: there is simply not enough capacity. The backlog will
    keep growing until tasks get faster or capacity is added. A small backlog behind pools
    held by a few long tasks is the first sign of it (or of hung tasks: TSK001).

    ## How to fix
    Add workers or processes for that queue (`celery control pool_grow N`, `--autoscale`),
    or split slow tasks to their own queue.
    """
    by_name = {n.name: n for n in snap.workers.nodes}
    for q in snap.queues:
        if q.internal or not q.ready or not q.consumer_workers:
            continue
        full = []
        for name in q.consumer_workers:
            n = by_name.get(name)
            if n is None:
                continue
            active = n.replies.get("active")
            conc = ((n.replies.get("stats") or {}).get("pool") or {}).get("max-concurrency")
            if isinstance(active, list) and isinstance(conc, int) and len(active) >= conc:
                full.append(name)
        if full and len(full) == len(q.consumer_workers):
            longest = _longest_runtime(snap, full)
            if longest is not None and longest < SATURATED_AFTER and \
                    q.ready < limits.queue_warn:
                continue  # one sample of a short burst: full pools, but not for long
            busy = _busy_tasks(snap, full)
            yield Finding(Severity.WARNING if q.ready >= limits.queue_warn else Severity.INFO,
                          f"queue {q.name}",
                          f"{count(q.ready, 'message')} waiting and "
                          + ("its only consumer runs" if len(full) == 1 else
                             f"all {len(full)} consumers run")
                          + " at full concurrency: not enough capacity"
                          + (f" (busy with {busy[0]})" if busy else ""),
                          evidence={"ready": q.ready, "workers": full}
                          | ({"busy_with": busy[1]} if busy else {}),
                          hint="Add capacity for this queue.",
                          commands=["celery -A proj control pool_grow 2"])


# WRK005: below --queue-warn, the pools' longest running task has run at least this long
# (a sub-second burst being worked off is no lack of capacity)
SATURATED_AFTER = 2.0


def _longest_runtime(snap, workers: list[str]) -> float | None:
    """The longest runtime among the tasks running on `workers`; None when none is known."""
    from celeryctl.tasks import snapshot_task_view

    known = [r.runtime_seconds for r in snapshot_task_view(snap).rows
             if r.state == "active" and r.worker in workers and r.runtime_seconds is not None]
    return max(known) if known else None


def _busy_tasks(snap, workers: list[str]) -> tuple[str, list[dict]] | None:
    """("t.a for 2h13m on w1@h, ...", evidence) for the tasks running on `workers`, the
    longest first; None when no running task is named."""
    from celeryctl.tasks import snapshot_task_view
    from celeryctl.views import human_age as age

    rows = [r for r in snapshot_task_view(snap).rows
            if r.state == "active" and r.worker in workers and r.name]
    if not rows:
        return None
    rows.sort(key=lambda r: (r.runtime_seconds is None, -(r.runtime_seconds or 0.0)))
    text = ", ".join(f"{r.name}" + (f" for {age(r.runtime_seconds)}"
                                    if r.runtime_seconds is not None else "")
                     + f" on {r.worker}" for r in rows[:3])
    if len(rows) > 3:
        text += f" and {len(rows) - 3} more"
    return text, [{"id": r.id, "task": r.name, "worker": r.worker, "pid": r.pid,
                   "runtime_seconds": round(r.runtime_seconds, 1)
                   if r.runtime_seconds is not None else None} for r in rows[:10]]


@check("WRK006", "registered-tasks-differ", needs=("workers",))
def registered_tasks_differ(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers consuming the same queue that do not register the same tasks.

    ## Why it matters
    A task routed to that queue fails with "Received unregistered task" (NotRegistered) on
    the workers that lack it — intermittently, depending on who picks it up. Typical of a
    partial deploy or a missing `include`.

    ## How to fix
    Deploy the same code to every worker of a queue; check `include`/autodiscovery.
    """
    queues: dict[str, list] = {}
    for n in snap.workers.nodes:
        for q in n.replies.get("active_queues") or []:
            if isinstance(q, dict) and q.get("name"):
                queues.setdefault(q["name"], []).append(n)
    for qname, nodes in sorted(queues.items()):
        # names only: `registered` entries carry task attributes ("add [acks_late=False]")
        regs = {n.name: frozenset(map(registered_name, n.replies["registered"])) for n in nodes
                if isinstance(n.replies.get("registered"), list)}
        if len(set(regs.values())) > 1:
            union = frozenset().union(*regs.values())
            missing = {name: sorted(union - r)[:10] for name, r in regs.items() if union - r}
            first = sorted(missing)[0]
            yield Finding(Severity.WARNING, f"queue {qname}",
                          f"{len(missing)} of its {len(regs)} workers "
                          f"{verb(len(missing), 'lacks', 'lack')} tasks the others register "
                          f"(e.g. {first} lacks {', '.join(missing[first][:3])}): "
                          "those tasks fail as unregistered there",
                          evidence={"missing_per_worker": missing},
                          hint="Deploy the same code to every worker of the queue.")


@check("WRK007", "rss-growing-without-recycling", needs=("rss_growth",))
def rss_growing_without_recycling(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers whose peak RSS (`stats().rusage.maxrss`) rose between the two samples of
    `--sample-interval` while processes are never recycled (no `max_tasks_per_child`).
    Linux carries a process's peak RSS over from its parent through fork and exec, so a worker
    started by a bigger process shows growth only once it passes that inherited peak.

    ## Why it matters
    Memory that only grows ends in the OOM killer: with prefork the kernel kills a pool
    process mid-task (WorkerLostError), with threads/solo the whole worker.

    ## How to fix
    Set `worker_max_tasks_per_child` (and/or `worker_max_memory_per_child`) and find the leak.
    """
    for name, (before, after, recycling) in sorted((snap.get("rss_growth") or {}).items()):
        if after > before and not recycling:
            yield Finding(Severity.WARNING, f"worker {name}",
                          f"peak RSS grew from {before} to {after} KiB and its processes are "
                          f"never recycled (no max_tasks_per_child)", evidence={"maxrss_before_kb": before,
                                                  "maxrss_after_kb": after},
                          hint="Set worker_max_tasks_per_child.",
                          commands=["celery -A proj worker --max-tasks-per-child=1000"])


def _release(text: Any) -> tuple[int, ...] | None:
    """"5.3.0rc1" -> (5, 3, 0); None when it names no version."""
    import re

    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str(text or ""))
    return tuple(int(x) for x in m.groups(default="0")) if m else None


def _by_version(versions: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, v in sorted(versions.items()):
        out.setdefault(v, []).append(name)
    return dict(sorted(out.items(), key=lambda kv: _release(kv[0]) or (0,)))


def _names(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more"
                                       if len(names) > shown else "")


def _accepts_json(conf: dict[str, Any] | None) -> bool:
    """True unless the worker's conf is known and accepts no JSON."""
    if not conf or "accept_content" not in conf:
        return True
    return any(str(a) in ("json", "application/json") for a in conf["accept_content"] or ())


@check("WRK008", "mixed-celery-versions", needs=("workers",))
def mixed_celery_versions(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers of one cluster running different Celery or kombu releases, as each names them in
    its `inspect report`: an info finding lists the versions and their workers, and a mix
    known to break something is reported apart, saying what breaks.

    The versions come from the bug-report header (`celery:5.2.7 (dawn-chorus) kombu:5.2.4
    py:3.11.7`). The mixes known to break something:

    - **kombu < 5.3 next to kombu >= 5.3** (warning, when the workers accept JSON). kombu 5.3
      rewrote its JSON serializer (`kombu/utils/json.py`; changelog 5.3.0: "Datetime
      serialization and deserialization fixed (#1515)", "Avoid losing type of UUID (#1575)",
      "binary messages in json (#1516)"): it encodes datetime, date, time, Decimal, UUID and
      bytes as `{"__type__": "datetime", "__value__": "..."}` and decodes them back. kombu 5.2
      encodes them as plain strings (bytes not at all: EncodeError) and has no decoder for the
      markers. So a task argument or result changes type with who sent it and who runs it: a
      kombu 5.2 worker receives the dict `{"__type__": "datetime", ...}` where the caller
      passed a datetime, and a kombu >= 5.3 worker receives a string where a kombu 5.2 caller
      passed one. Seen on real workers: Celery 5.2.7/kombu 5.2.4 next to 5.3.6/5.3.7,
      5.5.3/5.5.4 and 5.7.0/5.7.0.
    - **quorum queues with Celery < 5.5 workers on RabbitMQ** (info). Before 5.5 a worker
      always sets global QoS on RabbitMQ (`celery/worker/consumer/tasks.py`: `qos_global = not
      qos_semantics_matches_spec`), and RabbitMQ refuses it on a quorum queue: `Basic.consume:
      (540) NOT_IMPLEMENTED - queue 'q' in vhost '/' does not support global qos`. The worker
      reconnects in a loop and never consumes (seen with Celery 5.3.6 on RabbitMQ 3.10).
      Celery 5.5 switches global QoS off when it detects quorum queues
      (`worker_detect_quorum_queues`). Such a worker never answers remote control, so doctor
      names the old workers that do answer and the quorum queues they must not be given.

    Workers that did not answer `report` are listed as unknown; a cluster on one release
    reports nothing.

    ## Why it matters
    Mixed versions are normal for the length of a rolling upgrade, and a risk when they
    last: defaults, settings and wire formats differ between releases, so the same task can
    behave differently depending on which worker picks it up — the kind of intermittent
    failure that is hard to trace back to a version.

    ## How to fix
    Finish the upgrade: deploy one Celery and kombu release to every worker (`celeryctl
    workers` shows each worker's versions). Until then, keep old and new workers on separate
    queues, pass datetimes, Decimals, UUIDs and bytes as strings in task arguments and
    results, and do not route old workers to quorum queues.
    """
    view = snap.workers
    if "report" not in view.methods:
        from celeryctl.checks import Skip

        raise Skip("the workers were not asked for `report` (a snapshot from an older "
                   "celeryctl)")
    reports = {n.name: n.replies.get("report") for n in view.nodes}
    celery = {n: r["celery"] for n, r in reports.items()
              if isinstance(r, dict) and r.get("celery")}
    kombu = {n: r["kombu"] for n, r in reports.items()
             if isinstance(r, dict) and r.get("kombu")}
    if not celery and not kombu:
        from celeryctl.checks import Skip

        raise Skip("no worker's `report` named its versions")
    unknown = sorted(n for n in reports if n not in celery and n not in kombu)
    by_celery, by_kombu = _by_version(celery), _by_version(kombu)
    if len(by_celery) > 1 or len(by_kombu) > 1:
        parts = []
        if len(by_celery) > 1:
            parts.append(f"{len(by_celery)} Celery versions: " + ", ".join(
                f"{v} ({len(ns)})" for v, ns in by_celery.items()))
        parts.append(("kombu " if len(by_kombu) > 1 else "one kombu: ") + ", ".join(
            f"{v} ({len(ns)})" if len(by_kombu) > 1 else v for v, ns in by_kombu.items()))
        if unknown:
            parts.append(f"{len(unknown)} unknown")
        yield Finding(Severity.INFO, "celery versions",
                      f"workers run {'; '.join(parts)}",
                      evidence={"celery": {v: ns[:10] for v, ns in by_celery.items()},
                                "kombu": {v: ns[:10] for v, ns in by_kombu.items()},
                                "unknown": unknown[:10]},
                      hint="Finish the upgrade: one Celery and kombu release everywhere.",
                      commands=["celeryctl workers"])
    old = sorted(n for n, v in kombu.items() if (_release(v) or (9,)) < (5, 3))
    new = sorted(n for n, v in kombu.items() if (_release(v) or (0,)) >= (5, 3))
    confs = snap.worker_confs()
    if old and new and any(_accepts_json(confs.get(n)) for n in old) and \
            any(_accepts_json(confs.get(n)) for n in new):
        yield Finding(
            Severity.WARNING, "kombu json",
            f"kombu < 5.3 ({_names(old)}) and kombu >= 5.3 ({_names(new)}) encode JSON "
            "differently: datetime, date, time, Decimal, UUID and bytes values from kombu "
            ">= 5.3 senders reach the kombu < 5.3 workers as {\"__type__\": ..., "
            "\"__value__\": ...} dicts, and kombu >= 5.3 workers get plain strings from "
            "kombu < 5.3 senders",
            evidence={"kombu_before_5_3": old[:10], "kombu_5_3_or_later": new[:10]},
            hint="Upgrade kombu on the old workers, or pass such values as strings.",
            commands=["celeryctl workers"])
    if snap.broker_kind == "amqp":
        quorum = sorted(q.name for q in snap.queues if q.type == "quorum" and not q.internal)
        before_55 = sorted(n for n, v in celery.items() if (_release(v) or (9,)) < (5, 5))
        if quorum and before_55:
            yield Finding(
                Severity.INFO, "quorum queues",
                f"Celery < 5.5 workers ({_names(before_55)}) cannot consume the quorum "
                f"queues ({_names(quorum)}): they set global QoS, which RabbitMQ refuses on "
                "quorum queues (NOT_IMPLEMENTED ... does not support global qos), and "
                "reconnect in a loop",
                evidence={"workers": before_55[:10], "quorum_queues": quorum[:10]},
                hint="Do not route Celery < 5.5 workers to quorum queues; upgrade them first.")
