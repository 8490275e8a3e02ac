"""Lab scenarios: real faults on real servers, to rehearse runbooks and to test doctor.

`celeryctl lab up --scenario NAME` starts the servers and workers a scenario describes, then
`prepare` breaks something (publishes messages nobody can run, changes a server setting, ...).
`expects` lists the check codes doctor must report on it; the test suite runs every scenario
and asserts exactly that (and that `healthy` stays clean).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    queues: str = "celery,hipri,slow"
    pool: str = "threads"
    concurrency: int = 2
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class ScenarioContext:
    broker_url: str
    redis_url: str | None
    api_url: str | None
    doctor_args: list[str] = field(default_factory=list)
    stop_redis: Callable[[], None] | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    expects: tuple[str, ...]
    workers: tuple[WorkerSpec, ...] = (WorkerSpec("w1@%h"), WorkerSpec("w2@%h"))
    broker: str = "redis"
    prepare: Callable[[ScenarioContext], None] | None = None


def _celery(url: str):
    from celery import Celery

    return Celery(broker=url, set_as_current=False)


def _publish(ctx: ScenarioContext, queue: str, n: int, serializer: str = "json",
             task: str = "celeryctl.lab.demoapp.add", args: tuple[Any, ...] = (1, 2)) -> None:
    app = _celery(ctx.broker_url)
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task(task, args, queue=queue, serializer=serializer, priority=i % 10,
                          producer=producer)


def _backlog(ctx: ScenarioContext) -> None:
    _publish(ctx, "reports", 1500)


def _pickle_in_queue(ctx: ScenarioContext) -> None:
    import time

    _publish(ctx, "serq", 1, task="celeryctl.lab.demoapp.sleep", args=(3600,))
    time.sleep(1.5)  # the only consumer takes it and holds it (acks_late, prefetch 1)
    _publish(ctx, "serq", 5, serializer="pickle")


def _eviction(ctx: ScenarioContext) -> None:
    import redis

    redis.Redis.from_url(ctx.redis_url).config_set("maxmemory-policy", "allkeys-lru")


def _same_db_backend(ctx: ScenarioContext) -> None:
    ctx.doctor_args += ["--result-backend", ctx.broker_url]


def _broker_down(ctx: ScenarioContext) -> None:
    if ctx.stop_redis:
        ctx.stop_redis()


STRICT = {"CELERYCTL_LAB_PREFETCH": "1", "CELERYCTL_LAB_ACKS_LATE": "1"}

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("healthy", "Two workers, empty queues, sane settings: doctor stays clean.", ()),
    Scenario("backlog-no-consumer",
             "1,500 tasks routed to `reports`, which no worker consumes.",
             ("QUE001", "QUE002"), prepare=_backlog),
    Scenario("pickle-in-queue",
             "A json-only worker consumes `serq`; pickle tasks wait there and would be "
             "discarded on receipt.",
             ("SER004",),
             workers=(WorkerSpec("busy@%h", queues="serq", concurrency=1, env=STRICT),),
             prepare=_pickle_in_queue),
    Scenario("pickle-accepted", "A worker that accepts pickle next to json-only ones.",
             ("SER001", "SER003", "WRK003"),
             workers=(WorkerSpec("w1@%h"),
                      # Celery refuses pickle as root unless forced: the lab runs as root on
                      # CI machines, and this scenario exists to show exactly that risk.
                      WorkerSpec("w2@%h", env={"CELERYCTL_LAB_ACCEPT": "json,pickle",
                                               "C_FORCE_ROOT": "1"}))),
    Scenario("config-drift",
             "Two workers of one cluster with different acks_late / prefetch settings.",
             ("WRK003", "WRK004", "CFG001"),
             workers=(WorkerSpec("w1@%h"),
                      WorkerSpec("w2@%h", env={"CELERYCTL_LAB_ACKS_LATE": "1"}))),
    Scenario("duplicate-node-names", "Two workers started with the same -n name.",
             ("WRK001",), workers=(WorkerSpec("dup@samehost"), WorkerSpec("dup@samehost"))),
    Scenario("worker-without-queue",
             "A worker consuming no queue (its last consumer cancelled).",
             ("WRK002",), workers=(WorkerSpec("w1@%h"), WorkerSpec("idle@%h", queues="celery")),
             prepare=lambda ctx: _celery(ctx.broker_url).control.cancel_consumer(
                 "celery", destination=[_expand("idle@%h")], reply=True, timeout=2)),
    Scenario("eviction-policy", "The Redis broker evicts keys under memory pressure.",
             ("BRK001",), prepare=_eviction),
    Scenario("backend-same-db", "The result backend is the broker's Redis database.",
             ("RES002",), prepare=_same_db_backend),
    Scenario("broker-down", "The broker is stopped: doctor still reports within the budget.",
             ("SRC001",), prepare=_broker_down),
)}


def _expand(name: str) -> str:
    import socket

    return name.replace("%h", socket.gethostname())
