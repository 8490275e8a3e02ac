"""WRK: workers — duplicates, drift, idle workers, prefetch with acks_late."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from celeryctl.checks import Finding, Limits, Severity, check

# Settings whose difference between workers of one cluster is worth a look.
DRIFT_KEYS = ("accept_content", "task_serializer", "result_serializer", "task_acks_late",
              "worker_prefetch_multiplier", "task_reject_on_worker_lost", "broker_pool_limit",
              "result_backend", "broker_transport_options", "task_time_limit",
              "task_soft_time_limit", "worker_max_tasks_per_child", "timezone",
              "broker_heartbeat", "result_expires", "task_default_queue")


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
    for name, count in sorted(seen.items()):
        if count > 1:
            yield Finding(Severity.WARNING, f"worker {name}",
                          f"{count} workers answer as {name}",
                          evidence={"count": count},
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
            yield Finding(Severity.WARNING, f"worker {n.name}", "consumes no queue",
                          hint="Add a consumer or restart the worker with -Q.",
                          commands=[f"celeryctl control add-consumer celery -d {n.name}"])


@check("WRK003", "worker-config-drift", needs=("workers",))
def worker_config_drift(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Settings (from `inspect conf` with defaults) that differ between workers: serializers,
    `accept_content`, `task_acks_late`, prefetch multiplier, time limits, pool limits,
    result backend and more.

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
        values = {name: c.get(key) for name, c in confs.items() if key in c}
        groups = drift_groups(values)
        if len(values) >= 2 and len(groups) > 1:
            summary = "; ".join(f"{g['count']} with {g['value']!r}" for g in groups)
            yield Finding(Severity.WARNING, f"setting {key}",
                          f"workers disagree on {key}: {summary}",
                          evidence={"groups": groups},
                          hint="Deploy one configuration to every worker.")


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
                          f"acks_late with prefetch multiplier {mult}",
                          evidence={"task_acks_late": True, "worker_prefetch_multiplier": mult},
                          hint="Set worker_prefetch_multiplier = 1.",
                          commands=["celery -A proj worker --prefetch-multiplier=1"])


@check("WRK005", "pool-saturated", needs=("workers", "queues"))
def pool_saturated(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A queue with a backlog (`--queue-warn`) whose every consuming worker runs as many tasks as
    its pool allows (`active == max-concurrency`).

    ## Why it matters
    The workers are not idle or stuck: there is simply not enough capacity. The backlog will
    keep growing until tasks get faster or capacity is added.

    ## How to fix
    Add workers or processes for that queue (`celery control pool_grow N`, `--autoscale`),
    or split slow tasks to their own queue.
    """
    by_name = {n.name: n for n in snap.workers.nodes}
    for q in snap.queues:
        if q.internal or not q.ready or q.ready < limits.queue_warn or not q.consumer_workers:
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
            yield Finding(Severity.WARNING, f"queue {q.name}",
                          f"{q.ready} waiting and every consumer is at full concurrency",
                          evidence={"ready": q.ready, "workers": full},
                          hint="Add capacity for this queue.",
                          commands=["celery -A proj control pool_grow 2"])


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
        regs = {n.name: frozenset(n.replies["registered"]) for n in nodes
                if isinstance(n.replies.get("registered"), list)}
        if len(set(regs.values())) > 1:
            union = frozenset().union(*regs.values())
            missing = {name: sorted(union - r)[:10] for name, r in regs.items() if union - r}
            yield Finding(Severity.WARNING, f"queue {qname}",
                          "its workers register different tasks",
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
                          f"peak RSS grew from {before} to {after} KiB without process "
                          f"recycling", evidence={"maxrss_before_kb": before,
                                                  "maxrss_after_kb": after},
                          hint="Set worker_max_tasks_per_child.",
                          commands=["celery -A proj worker --max-tasks-per-child=1000"])
