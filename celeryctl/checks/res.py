"""RES: result backend."""

from __future__ import annotations

from collections.abc import Iterator

from celeryctl.checks import Finding, Limits, Severity, check


def _has_backend(snap):
    return None if snap.target.get("result_backend") else "no result backend configured"


@check("RES001", "amqp-result-backend", applies=_has_backend)
def amqp_result_backend(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A result backend URL with the `amqp://` scheme.

    ## Why it matters
    Celery 5 removed the amqp result backend: workers and producers fail at start-up with
    "Unknown result backend: 'amqp'". Older Celery created one queue per task result, which
    bloats RabbitMQ.

    ## How to fix
    Use `rpc://` for results over RabbitMQ (one reply queue per client), or a Redis or
    database backend.
    """
    # From the URL alone: the finding must not depend on that backend answering.
    url = snap.target.get("result_backend") or ""
    if url.split("://", 1)[0].lower() in ("amqp", "amqps", "pyamqp"):
        yield Finding(Severity.CRITICAL, f"result backend {url}",
                      "amqp:// result backend, which Celery 5 removed: workers and producers "
                      "fail at start-up ('Unknown result backend: amqp')", evidence={"url": url,
                                          "from": snap.target.get("origins", {}).get(
                                              "result_backend")},
                      hint="Switch result_backend to rpc:// or redis://.",
                      commands=["celery -A proj report | grep result_backend"])


@check("RES002", "backend-shares-broker-db", needs=("backend",), applies=_has_backend)
def backend_shares_broker_db(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A Redis result backend on the same Redis instance and database as the broker.

    ## Why it matters
    Result keys and queues compete for memory and for eviction: a result flood can push the
    broker to maxmemory (publishes fail) or get queues evicted under a non-noeviction policy.
    Flushing one flushes both.

    ## How to fix
    Use another database at least (`redis://host:6379/1`), better another instance.
    """
    b = snap.get("backend")
    if b.kind == "redis" and b.same_db_as_broker:
        yield Finding(Severity.WARNING, f"result backend {b.url}",
                      "result backend shares the broker's Redis database",
                      evidence={"url": b.url}, hint="Move results to another db or instance.")


@check("RES003", "result-expires-disabled")
def result_expires_disabled(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    `result_expires` set to None or 0, in the app's configuration (`-A`) or in the workers'
    (`inspect conf`), with a result backend configured.

    ## Why it matters
    Results are kept forever: the backend grows without bound (Redis memory, database
    tables, rpc reply queues on RabbitMQ).

    ## How to fix
    Set `result_expires` (default 1 day) to how long results are needed.
    """
    sources: dict[str, dict] = {}
    if snap.app_settings:
        sources["app"] = snap.app_settings
    if snap.observed("workers"):
        sources.update({f"worker {n}": c for n, c in snap.worker_confs().items()})
    if not sources:
        from celeryctl.checks import Skip

        raise Skip("neither an app (-A) nor workers' configuration was observed")
    for who, conf in sorted(sources.items()):
        backend = conf.get("result_backend")
        if "result_expires" in conf and not conf.get("result_expires") and backend and \
                str(backend) not in ("disabled", "None"):
            yield Finding(Severity.WARNING, f"setting result_expires ({who})",
                          f"result_expires is {conf['result_expires']!r}: results are kept "
                          "forever",
                          evidence={"result_expires": conf["result_expires"]},
                          hint="Set result_expires, e.g. 86400.")


@check("RES004", "rpc-queue-shared", needs=("queues",),
       broker="amqp")
def rpc_queue_shared(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    An rpc:// reply queue with more than one consumer.

    ## Why it matters
    rpc results go to the process that sent the task. When several processes share one
    reply queue (a forked process reusing its parent's app, threads sharing a client), each
    receives results meant for the others: `AsyncResult.get()` hangs or returns the wrong
    task's result.

    ## How to fix
    Create the Celery app (or call `app.backend` fresh) after forking; do not share one
    client between processes; use a Redis or database backend for results read elsewhere.
    """
    from celeryctl.checks import Skip, rabbit
    from celeryctl.knowledge import classify_queue

    rpc = [q for q in snap.queues if classify_queue(q.name) == "result-rpc"]
    if rpc and all(q.consumers is None for q in rpc):
        raise Skip(rabbit.unknown(snap, "consumer counts"))
    for q in rpc:
        if (q.consumers or 0) > 1:
            yield Finding(Severity.WARNING, f"queue {q.name}",
                          f"rpc reply queue read by {q.consumers} consumers",
                          evidence={"consumers": q.consumers},
                          hint="One reply queue per process: create the app after fork.")


@check("RES005", "redis-result-keys-without-ttl", needs=("backend",), applies=_has_backend)
def redis_result_keys_without_ttl(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    `celery-task-meta-*` result keys without a TTL in a Redis result backend (a bounded
    sample of up to 200 keys).

    ## Why it matters
    Keys without a TTL are kept forever: the backend's memory only grows until maxmemory,
    then (under noeviction) result writes fail, or (under an eviction policy) keys — maybe
    the broker's, if shared — get evicted.

    ## How to fix
    Set `result_expires` (Celery gives each result that TTL); delete the old keys in batches
    (`redis-cli --scan --pattern 'celery-task-meta-*'` with `UNLINK`).
    """
    b = snap.get("backend")
    if b.kind == "redis" and b.result_keys_without_ttl:
        yield Finding(Severity.WARNING, f"result backend {b.url}",
                      f"{b.result_keys_without_ttl} of {b.result_keys_sampled} sampled result "
                      f"keys never expire", evidence={"sampled": b.result_keys_sampled,
                                                      "without_ttl": b.result_keys_without_ttl},
                      hint="Set result_expires; remove old result keys.")
