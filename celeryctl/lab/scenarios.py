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

from celeryctl.lab.servers import expand_node_name


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    queues: str = "celery,hipri,slow"
    pool: str = "threads"
    concurrency: int = 2
    env: dict[str, str] = field(default_factory=dict)
    db: int | None = None  # Redis: another database of the lab's Redis (another app)
    # "5.2", "5.3", "5.5", "5.7": run the worker with that Celery release, from its lab
    # virtualenv (celeryctl.lab.venvs); None: the Celery celeryctl runs with
    celery_version: str | None = None


def version_workers(versions: list[str] | tuple[str, ...], **kw: Any) -> tuple[WorkerSpec, ...]:
    """One worker per Celery version, named after it: `c52@%h`, `c57@%h`."""
    return tuple(WorkerSpec(f"c{v.replace('.', '')}@%h", celery_version=v, **kw)
                 for v in versions)


@dataclass
class ScenarioContext:
    broker_url: str
    redis_url: str | None
    api_url: str | None
    amqp_url: str | None = None
    doctor_args: list[str] = field(default_factory=list)
    worker_pids: list[int] = field(default_factory=list)
    spawn: Callable[[str, list[str]], None] | None = None
    stop_redis: Callable[[], None] | None = None
    rabbitmq_nodes: list[dict] = field(default_factory=list)  # each node's info (first: seed)
    rabbitmq_pids: list[int] = field(default_factory=list)  # the peers' (not the seed's)
    redis_pid: int | None = None
    sentinel_pids: list[int] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    lab: Any = None  # the LabState (accounts: lab.account_url(broker, tier))


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    expects: tuple[str, ...]
    workers: tuple[WorkerSpec, ...] = (WorkerSpec("w1@%h"), WorkerSpec("w2@%h"))
    broker: str = "redis"
    prepare: Callable[[ScenarioContext], None] | None = None
    needs_rabbitmq: bool = False  # start RabbitMQ too (e.g. as the result backend)
    # The producers' app, written to DIR/scenario_app.py for `doctor -A scenario_app` (run
    # from DIR, or with PYTHONPATH=DIR). `{broker}` is replaced with the lab's broker URL.
    app: str | None = None
    rabbitmq_nodes: int = 1  # > 1: a cluster; workers and doctor use the first node
    net_ticktime: int | None = None  # the cluster's Erlang tick time (partition scenarios)
    rabbitmq_fd_limit: int | None = None  # start the node under `ulimit -n` this
    # Servers listen on every interface (as an exposed production broker does): the lab then
    # runs in a private network namespace, and doctor must run in it (`lab up` says how).
    exposed: bool = False
    redis_password: str | None = None
    # Redis Sentinel: this many sentinels (quorum sentinel_quorum) and one replica watch the
    # lab's Redis; the broker URL is then sentinel://... (master_name celeryctl-lab)
    sentinels: int = 0
    sentinel_quorum: int = 2
    replica_priority: int = 100  # 0: never promoted (a failover has no candidate)
    redis_args: tuple[str, ...] = ()  # more redis-server arguments (renamed commands)
    # servers serve only TLS with the lab's private CA (and require client certificates)
    tls: bool = False
    tls_client_certs: bool = False
    accounts: bool = False  # create the least-privilege accounts of docs/permissions.md
    # What doctor must say beyond `expects`: its exit status (default: from the worst
    # finding), checks skipped with a reason containing a text ("CODE:text"), checks run on
    # partial data, and sources in a given state ("name=state").
    exit_status: int | None = None
    skipped: tuple[str, ...] = ()
    partial: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


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


def _wait_until(ready: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    """Poll until `ready()` is true, so doctor reads a settled state."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready():
            return
        time.sleep(0.2)
    raise TimeoutError(f"scenario set-up: {what} not seen within {timeout:.0f} s")


def _occupy(ctx: ScenarioContext, queue: str) -> None:
    """Give the consumer of `queue` an hour-long task and wait until it runs it: with
    acks_late and prefetch 1 it then takes nothing more, so what follows stays queued."""
    _publish(ctx, queue, 1, task="celeryctl.lab.demoapp.sleep", args=(3600,))
    _wait_until(lambda: _running(ctx, "celeryctl.lab.demoapp.sleep"), "the task running")


def _running(ctx: ScenarioContext, task: str) -> bool:
    replies = _celery(ctx.broker_url).control.inspect(timeout=1).active() or {}
    return any(t.get("name") == task for tasks in replies.values() for t in tasks or [])


def _held_for_eta(ctx: ScenarioContext) -> bool:
    replies = _celery(ctx.broker_url).control.inspect(timeout=1).scheduled() or {}
    return any(replies.values())


def _backlog(ctx: ScenarioContext) -> None:
    _publish(ctx, "reports", 1500)


def _purge_killed(ctx: ScenarioContext) -> None:
    """What `kill -9` of a `celeryctl purge` leaves between its two atomic steps: the
    queue's messages set aside (made here with the purge's own first step, so the state is
    exactly the real one, without racing a process)."""
    import redis

    from celeryctl.actions.purge import set_aside
    from celeryctl.collect.redis import RedisLayout

    _publish(ctx, "reports", 500)
    set_aside(redis.Redis.from_url(ctx.redis_url), RedisLayout(), "reports",
              info={"pid": 4194303, "backup": "/var/backups/reports.jsonl"})


def _pickle_in_queue(ctx: ScenarioContext) -> None:
    _occupy(ctx, "serq")
    _publish(ctx, "serq", 5, serializer="pickle")


def _eviction(ctx: ScenarioContext) -> None:
    import redis

    redis.Redis.from_url(ctx.redis_url).config_set("maxmemory-policy", "allkeys-lru")


def _same_db_backend(ctx: ScenarioContext) -> None:
    ctx.doctor_args += ["--result-backend", ctx.broker_url]


def _api(ctx: ScenarioContext, method: str, path: str, **kwargs: Any) -> Any:
    """A management API call on the lab node (user guest), raising on HTTP errors."""
    import requests

    from celeryctl.urls import parse_http

    api = parse_http(ctx.api_url or "")
    tls = getattr(ctx.lab, "tls", None)
    if tls:  # the lab's https management API: its CA, and its client certificate
        kwargs.setdefault("verify", tls["ca"])
        kwargs.setdefault("cert", (tls["client_cert"], tls["client_key"]))
    r = requests.request(method, f"{api.scheme}://{api.host}:{api.port}/api{path}",
                         auth=("guest", "guest"), timeout=5, **kwargs)
    r.raise_for_status()
    return r.json() if r.content else None


def _wait_api(ctx: ScenarioContext, ready: Callable[[dict[str, dict]], bool]) -> None:
    """The management API's statistics lag (new queues, policies, counts): wait until they
    show what the scenario set up."""
    _wait_until(lambda: ready({q["name"]: q for q in _api(ctx, "GET", "/queues/%2F")}),
                "the management API showing the scenario's state")


def _dlx_policy(ctx: ScenarioContext, extra: tuple[str, ...] = ()) -> None:
    """A production-like RabbitMQ: task queues dead-letter to `dlx` (by policy)."""
    _api(ctx, "PUT", "/policies/%2F/celeryctl-dlx",
         json={"pattern": "^(celery|hipri|slow|reports)$", "apply-to": "queues",
               "definition": {"dead-letter-exchange": "dlx"}})

    def settled(qs: dict[str, dict]) -> bool:
        task = [q for n, q in qs.items() if n in ("celery", "hipri", "slow", *extra)]
        return len(task) >= 3 + len(extra) and all(
            (q.get("effective_policy_definition") or {}).get("dead-letter-exchange")
            and q.get("messages_ready") is not None for q in task)

    _wait_api(ctx, settled)


def _rabbit_backlog(ctx: ScenarioContext) -> None:
    _publish(ctx, "reports", 150)
    _dlx_policy(ctx, extra=("reports",))
    _wait_api(ctx, lambda qs: (qs.get("reports") or {}).get("messages_ready") == 150)


def _rpc_results_piling(ctx: ScenarioContext) -> None:
    """A client sends tasks with the rpc:// backend and goes away without reading results."""

    from celery import Celery

    from celeryctl.knowledge import classify_queue

    _dlx_policy(ctx)
    app = Celery(broker=ctx.broker_url, backend="rpc://", set_as_current=False)
    for _ in range(5):
        app.send_task("celeryctl.lab.demoapp.add", (1, 2), queue="celery")
    app.close()
    _wait_api(ctx, lambda qs: any(classify_queue(n) == "result-rpc" and
                                  q.get("messages_ready") == 5 for n, q in qs.items()))


def _client_timeout(ctx: ScenarioContext) -> None:
    import redis

    redis.Redis.from_url(ctx.redis_url).config_set("timeout", 300)


def _eta_beyond_visibility(ctx: ScenarioContext) -> None:

    app = _celery(ctx.broker_url)
    app.send_task("celeryctl.lab.demoapp.add", (1, 2), queue="celery", countdown=3600)
    _wait_until(lambda: _held_for_eta(ctx), "the worker holding the task for its ETA")


def _pidbox_reply_bloat(ctx: ScenarioContext) -> None:
    """Replies that arrived after their inspect client gave up: a reply list nobody reads.
    (Written the way kombu does: binding member + LPUSHed envelopes.)"""
    import json
    import uuid

    import redis

    r = redis.Redis.from_url(ctx.redis_url)
    oid = str(uuid.uuid4())
    queue = f"{oid}.reply.celery.pidbox"
    r.sadd("_kombu.binding.reply.celery.pidbox", f"{oid}\x06\x16\x06\x16{queue}")
    env = {"body": "", "content-type": "application/json", "content-encoding": "utf-8",
           "headers": {"ticket": str(uuid.uuid4())}, "properties": {"priority": 0}}
    r.lpush(queue, *[json.dumps(env)] * 150)


def _pool_saturated(ctx: ScenarioContext) -> None:
    _occupy(ctx, "work")
    _publish(ctx, "work", 150)


def _seed_amqp_backend(ctx: ScenarioContext) -> None:
    ctx.doctor_args += ["--result-backend", ctx.amqp_url or ""]


def _seed_rabbit_redis_backend(ctx: ScenarioContext) -> None:
    _dlx_policy(ctx)
    ctx.doctor_args += ["--result-backend", (ctx.redis_url or "").rsplit("/", 1)[0] + "/1"]


def _seed_rabbit_rpc_backend(ctx: ScenarioContext) -> None:
    _dlx_policy(ctx)
    ctx.doctor_args += ["--result-backend", "rpc://"]


def _kill_one_worker(ctx: ScenarioContext) -> None:
    """SIGKILL: no clean shutdown, so its pidbox binding stays behind."""
    import os
    import signal
    import time

    os.kill(ctx.worker_pids[-1], signal.SIGKILL)
    time.sleep(0.5)


def _maxclients(ctx: ScenarioContext) -> None:
    import redis

    r = redis.Redis.from_url(ctx.redis_url)
    r.config_set("maxclients", int(r.info("clients")["connected_clients"]) + 1)


def _persistence_off(ctx: ScenarioContext) -> None:
    import redis

    redis.Redis.from_url(ctx.redis_url).config_set("appendonly", "no")


def _stale(ctx: ScenarioContext) -> None:
    import time

    ctx.doctor_args += ["--stale-after", "1"]
    time.sleep(2.5)  # the workers' pool connections sit idle


def _visibility_exceeded(ctx: ScenarioContext) -> None:
    import time

    _occupy(ctx, "celery")
    time.sleep(3.0)  # held unacked (acks_late) longer than visibility_timeout 2 s


def _api_down(ctx: ScenarioContext) -> None:
    from celeryctl.lab.servers import free_port

    ctx.doctor_args += ["--rabbitmq-api", f"http://127.0.0.1:{free_port()}"]


def _backend_down(ctx: ScenarioContext) -> None:
    from celeryctl.lab.servers import free_port

    ctx.doctor_args += ["--result-backend", f"redis://127.0.0.1:{free_port()}/1"]


def _no_dlx(ctx: ScenarioContext) -> None:
    _wait_api(ctx, lambda qs: all(qs.get(n, {}).get("messages_ready") is not None
                                  for n in ("celery", "hipri", "slow")))


def _orphan_event_queue(ctx: ScenarioContext) -> None:
    """An old monitor's event queue: declared without x-expires, left without a consumer,
    still bound to celeryev and filling with every event."""
    import pika

    from celeryctl.urls import parse_endpoint

    _dlx_policy(ctx)
    ep = parse_endpoint(ctx.broker_url)
    conn = pika.BlockingConnection(pika.ConnectionParameters(ep.host, ep.port))
    ch = conn.channel()
    ch.exchange_declare("celeryev", "topic", durable=True)
    ch.queue_declare("celeryev.old-flower", auto_delete=False)
    ch.queue_bind("celeryev.old-flower", "celeryev", "#")
    for _ in range(20):
        ch.basic_publish("celeryev", "worker.heartbeat", b"{}")
    conn.close()
    # the API lists a new queue before its statistics (consumers, counts) are in
    _wait_api(ctx, lambda qs: (qs.get("celeryev.old-flower") or {}).get("consumers")
              is not None)


def _vhost_limit(ctx: ScenarioContext) -> None:
    _dlx_policy(ctx)
    n = len(_api(ctx, "GET", "/vhosts/%2F/connections"))
    _api(ctx, "PUT", "/vhost-limits/%2F/max-connections", json={"value": n + 1})


def _user_limit(ctx: ScenarioContext) -> None:
    _dlx_policy(ctx)
    n = len(_api(ctx, "GET", "/vhosts/%2F/connections"))
    _api(ctx, "PUT", "/user-limits/guest/max-connections", json={"value": n + 1})


def _results_never_expire(ctx: ScenarioContext) -> None:
    import redis

    backend = (ctx.redis_url or "").rsplit("/", 1)[0] + "/1"
    ctx.doctor_args += ["--result-backend", backend]
    _publish(ctx, "celery", 10)
    r = redis.Redis.from_url(backend)
    _wait_until(lambda: len(list(r.scan_iter("celery-task-meta-*"))) >= 10, "10 results stored")


def _eta_beyond_consumer_timeout(ctx: ScenarioContext) -> None:

    _dlx_policy(ctx)
    _celery(ctx.broker_url).send_task("celeryctl.lab.demoapp.add", (1, 2), queue="celery",
                                      countdown=7200)
    _wait_until(lambda: _held_for_eta(ctx), "the worker holding the task for its ETA")


def _leak(ctx: ScenarioContext) -> None:
    import redis

    _publish(ctx, "celery", 1, task="celeryctl.lab.demoapp.leak_connections", args=(40,))
    r = redis.Redis.from_url(ctx.redis_url)
    _wait_until(lambda: int(r.info("clients")["connected_clients"]) >= 45,
                "40 leaked connections")


def _wrong_credentials(ctx: ScenarioContext) -> None:
    from celeryctl.urls import parse_endpoint, parse_http

    ep, api = parse_endpoint(ctx.broker_url), parse_http(ctx.api_url or "")
    ctx.doctor_args += ["--broker", f"amqp://guest:not-the-password@{ep.host}:{ep.port}//",
                        "--rabbitmq-api",
                        f"http://guest:not-the-password@{api.host}:{api.port}"]


def _memory_near_limit(ctx: ScenarioContext) -> None:
    import redis

    r = redis.Redis.from_url(ctx.redis_url)
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", int(used / 0.85))


def _evictions_happened(ctx: ScenarioContext) -> None:
    """Fill a db under allkeys-random until Redis evicts, then put the safe policy back:
    what remains is the evidence (evicted_keys) of what already happened."""
    import redis

    r = redis.Redis.from_url(ctx.redis_url.rsplit("/", 1)[0] + "/15")
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", used + 2 * 1024 * 1024)
    r.config_set("maxmemory-policy", "allkeys-random")
    blob = b"x" * 10_000
    for i in range(600):
        r.set(f"junk:{i}", blob)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", 0)
    r.flushdb()


def _memory_growth(ctx: ScenarioContext) -> None:
    ctx.doctor_args += ["--sample-interval", "2"]
    # A process's peak RSS (what `stats` reports: getrusage maxrss) starts at its parent's RSS
    # when it was forked — Linux carries it through fork and exec. A worker spawned by a big
    # process (a long test run) must first pass that inherited peak before growth shows:
    # allocate past it at once, then 20 MB a second for 40 s.
    import resource

    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    _publish(ctx, "celery", 1, task="celeryctl.lab.demoapp.grow_memory",
             args=(800, 40, inherited_mb + 100))
    # doctor's two samples must fall while the task allocates, and after the process's
    # earlier peak (start-up) is passed: maxrss only moves once the current RSS exceeds it
    _wait_until(lambda: _running(ctx, "celeryctl.lab.demoapp.grow_memory"), "the task running")
    import time

    time.sleep(4)


def _stray_subscriber(ctx: ScenarioContext) -> None:
    """A monitor left behind: subscribed to Celery's event topic, no worker behind it."""
    import shutil
    import time

    from celeryctl.urls import parse_endpoint

    ep = parse_endpoint(ctx.redis_url or "")
    ctx.spawn("stray-subscriber", [shutil.which("redis-cli") or "redis-cli", "-h", ep.host,
                                   "-p", str(ep.port), "psubscribe", "/0.celeryev/*"])
    time.sleep(0.5)


_SHARED_CONSUMER = """
import sys, pika
params = pika.ConnectionParameters("{host}", {port})
ch = pika.BlockingConnection(params).channel()
ch.queue_declare(sys.argv[1], durable=True, auto_delete=True,
                 arguments={{"x-expires": 86400000}})
ch.basic_consume(sys.argv[1], lambda *a: None)
ch.start_consuming()
"""


def _rpc_queue_shared(ctx: ScenarioContext) -> None:
    """Two processes reading one rpc reply queue (what a fork sharing its parent's app does)."""
    import sys
    import uuid

    from celeryctl.urls import parse_endpoint

    _dlx_policy(ctx)
    ep = parse_endpoint(ctx.broker_url)
    queue = str(uuid.uuid3(uuid.NAMESPACE_OID, "celeryctl-shared-rpc"))
    code = _SHARED_CONSUMER.format(host=ep.host, port=ep.port)
    for i in (1, 2):
        ctx.spawn(f"rpc-reader-{i}", [sys.executable, "-c", code, queue])
    _wait_api(ctx, lambda qs: (qs.get(queue) or {}).get("consumers") == 2)


def _queue_growing(ctx: ScenarioContext) -> None:
    """A producer publishing 25 tasks a second to `reports`, which nobody consumes."""
    import sys

    import redis

    ctx.spawn("producer", ["env", f"CELERY_BROKER_URL={ctx.broker_url}", sys.executable, "-m",
                           "celeryctl.lab.publish", "--queue", "reports", "--rate", "25",
                           "--count", "0"])
    r = redis.Redis.from_url(ctx.broker_url)
    _wait_until(lambda: r.llen("reports") > 0, "the producer publishing")
    ctx.doctor_args += ["--sample-interval", "1.5"]


# --- tasks (issue 14): what the workers hold -----------------------------------------------

def _inspect(ctx: ScenarioContext, method: str) -> dict[str, list]:
    return getattr(_celery(ctx.broker_url).control.inspect(timeout=1), method)() or {}


def _held_by(ctx: ScenarioContext, method: str, worker: str, queue: str | None = None) -> int:
    """How many tasks `worker` reports in `method` (active/reserved/scheduled)."""
    items = _inspect(ctx, method).get(expand_node_name(worker)) or []
    if method == "scheduled":
        items = [i.get("request") or {} for i in items]
    return sum(1 for t in items if queue is None
               or (t.get("delivery_info") or {}).get("routing_key") == queue)


def _long_task_reserved_behind(ctx: ScenarioContext) -> None:
    """w1 (one pool process, prefetch 4) runs a task with no time limit and reserves tasks
    of `slow` behind it; w2 then consumes `slow` too, with both its processes free. Tasks
    sent to `celery`, which only w1 consumes, wait in the queue behind its busy pool."""
    import redis

    ctx.doctor_args += ["--long-task-after", "1"]
    _publish(ctx, "slow", 1, task="celeryctl.lab.demoapp.sleep_unbounded", args=(3600,))
    _wait_until(lambda: _running(ctx, "celeryctl.lab.demoapp.sleep_unbounded"),
                "the task without a time limit running")
    _publish(ctx, "slow", 8)
    _wait_until(lambda: _held_by(ctx, "reserved", "w1@%h", "slow") >= 3,
                "w1 reserving tasks of `slow`")
    _celery(ctx.broker_url).control.add_consumer("slow", destination=[expand_node_name(
        "w2@%h")], reply=True, timeout=5)
    r = redis.Redis.from_url(ctx.broker_url)
    _wait_until(lambda: r.llen("slow") == 0, "w2 taking the rest of `slow`")
    import time

    _publish(ctx, "celery", 8)  # w1 may take one or two more before its prefetch is full

    def settled() -> bool:
        before = r.llen("celery")
        time.sleep(0.5)
        return 0 < r.llen("celery") == before
    _wait_until(settled, "tasks waiting in `celery`")

    time.sleep(1.2)  # past --long-task-after 1


def _acks_late_near_visibility(ctx: ScenarioContext) -> None:
    """An acks_late task running toward visibility_timeout (15 s; kombu sweeps every
    second): doctor runs when it has been unacknowledged for 80 % of it, 3 s before it is
    delivered again."""
    import time

    import redis

    _publish(ctx, "celery", 1, task="celeryctl.lab.demoapp.sleep", args=(120,))
    _wait_until(lambda: _running(ctx, "celeryctl.lab.demoapp.sleep"), "the task running",
                timeout=10)
    # when kombu delivered it (its unacked_index score, epoch seconds)
    [(_, delivered)] = redis.Redis.from_url(ctx.broker_url).zrange(
        "unacked_index", 0, 0, withscores=True)
    time.sleep(max(0.0, delivered + 0.8 * ACKS_LATE_VT + 0.2 - time.time()))


ACKS_LATE_VT = 15  # the acks-late-past-visibility scenario's visibility_timeout (seconds)
FAST_SWEEP = {"CELERYCTL_LAB_PREFETCH": "1", "CELERYCTL_LAB_ACKS_LATE": "1",
              "CELERYCTL_LAB_SETTINGS": (
                  f'{{"broker_transport_options": {{"visibility_timeout": {ACKS_LATE_VT}, '
                  '"unacked_restore_interval": 1, "unacked_restore_throttle": 1}}')}


def _acks_late_past_consumer_timeout(ctx: ScenarioContext) -> None:
    """RabbitMQ with consumer_timeout set to 5 s (the node's setting, `rabbitmqctl eval`;
    3.10 and 3.11 have no per-queue timeout, and no API says the node's): an acks_late task
    runs past it. Doctor is told the node's value with --consumer-timeout."""
    import time

    from celeryctl.lab.servers import rabbitmqctl

    _dlx_policy(ctx)
    rabbitmqctl(ctx.rabbitmq_nodes[0], "eval",
                "application:set_env(rabbit, consumer_timeout, 5000).")
    ctx.doctor_args += ["--consumer-timeout", "5"]
    _publish(ctx, "celery", 1, task="celeryctl.lab.demoapp.sleep", args=(120,))
    _wait_until(lambda: _running(ctx, "celeryctl.lab.demoapp.sleep"), "the task running")
    time.sleep(5.5)


def _eta_hoarding(ctx: ScenarioContext) -> None:
    """120 tasks with a 10-minute countdown: the only worker holds them all in memory."""
    app = _celery(ctx.broker_url)
    with app.producer_or_acquire() as producer:
        for i in range(120):
            app.send_task("celeryctl.lab.demoapp.add", (i, i), queue="celery", countdown=600,
                          producer=producer)
    _wait_until(lambda: _held_by(ctx, "scheduled", "w1@%h") >= 120,
                "the worker holding the 120 ETA tasks")


def _api_nodes(ctx: ScenarioContext) -> list[dict]:
    return _api(ctx, "GET", "/nodes")


def _disk_alarm(ctx: ScenarioContext) -> None:
    """A disk free limit far above the free space: RabbitMQ raises the disk alarm and blocks
    every publisher (what a full disk does)."""
    from celeryctl.lab.servers import rabbitmqctl

    _dlx_policy(ctx)
    rabbitmqctl(ctx.rabbitmq_nodes[0], "set_disk_free_limit", "100000GB")
    _wait_until(lambda: any(n.get("disk_free_alarm") for n in _api_nodes(ctx)),
                "the disk alarm")


def _node_down(ctx: ScenarioContext) -> None:
    from celeryctl.lab.servers import rabbitmqctl

    _dlx_policy(ctx)
    # a quorum queue on both nodes: with one of two members gone it has no majority
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", ctx.rabbitmq_nodes[0]["amqp_port"], connection_attempts=1,
        socket_timeout=5))
    conn.channel().queue_declare("reports-quorum", durable=True,
                                 arguments={"x-queue-type": "quorum"})
    conn.close()
    _wait_until(lambda: len(_quorum_members(ctx, "reports-quorum")) == 2,
                "both quorum members listed")
    rabbitmqctl(ctx.rabbitmq_nodes[1], "stop_app")
    _wait_until(lambda: any(n.get("running") is False for n in _api_nodes(ctx)),
                "the second node reported down")
    _wait_until(lambda: len(_quorum_online(ctx, "reports-quorum")) == 1,
                "the quorum queue's second member offline", 30)


def _quorum_info(ctx: ScenarioContext, name: str) -> dict:
    try:
        return _api(ctx, "GET", f"/queues/%2F/{name}") or {}
    except Exception:  # noqa: BLE001 - not listed yet
        return {}


def _quorum_members(ctx: ScenarioContext, name: str) -> list:
    return _quorum_info(ctx, name).get("members") or []


def _quorum_online(ctx: ScenarioContext, name: str) -> list:
    return _quorum_info(ctx, name).get("online") or []


def _partition(ctx: ScenarioContext) -> None:
    """Pause the second node longer than the cluster's tick time (what a VM suspended or a
    network blip does), then resume it: both sides saw the other go, and with
    `cluster_partition_handling = ignore` (the default) they stay partitioned."""
    import os
    import signal
    import time

    _dlx_policy(ctx)
    pgid = os.getpgid(ctx.rabbitmq_pids[0])
    os.killpg(pgid, signal.SIGSTOP)
    try:
        _wait_until(lambda: any(n.get("running") is False for n in _api_nodes(ctx)),
                    "the paused node seen as down", timeout=30)
        time.sleep(2)
    finally:
        os.killpg(pgid, signal.SIGCONT)
    _wait_until(lambda: any(n.get("partitions") for n in _api_nodes(ctx)),
                "the partition reported", timeout=60)


_HOLD_CONNECTIONS = """
import sys, time, pika
params = pika.ConnectionParameters("{host}", {port})
conns = [pika.BlockingConnection(params) for _ in range(int(sys.argv[1]))]
while True:
    for c in conns:
        c.process_data_events(0)
    time.sleep(1)
"""


def _socket_headroom(ctx: ScenarioContext) -> None:
    """The node runs under `ulimit -n 128`, which leaves it 25 sockets; a client holds
    connections until 85% of them are in use."""
    import sys

    from celeryctl.urls import parse_endpoint

    _dlx_policy(ctx)

    def sockets() -> tuple[int, int]:
        n = _api_nodes(ctx)[0]
        return n.get("sockets_used") or 0, n.get("sockets_total") or 0

    _wait_until(lambda: sockets()[1] > 0, "socket statistics")
    used, total = sockets()
    need = max(1, int(total * 0.85) - used + 1)
    ep = parse_endpoint(ctx.broker_url)
    ctx.spawn("connection-holder", [sys.executable, "-c",
                                    _HOLD_CONNECTIONS.format(host=ep.host, port=ep.port),
                                    str(need)])
    _wait_until(lambda: sockets()[0] >= total * 0.8, "80% of the sockets in use")


PRODUCER_APP = """\
from celery import Celery

app = Celery("producers", broker="{broker}")
app.conf.update({settings})
"""


def producer_app(**settings: Any) -> str:
    return PRODUCER_APP.replace("{settings}", repr(settings))


def _broker_down(ctx: ScenarioContext) -> None:
    if ctx.stop_redis:
        ctx.stop_redis()


STRICT = {"CELERYCTL_LAB_PREFETCH": "1", "CELERYCTL_LAB_ACKS_LATE": "1"}


# --- production shapes: accounts, managed Redis, shared instances ---------------------------

def _as_account(tier: str, then: Callable[[ScenarioContext], None] | None = None):
    """Doctor runs as one of the least-privilege accounts (docs/permissions.md); `then`
    prepares the rest of the scenario first."""
    def prepare(ctx: ScenarioContext) -> None:
        if then is not None:
            then(ctx)
        # placeholders, expanded when run (LabState.doctor_argv): the password stays in its
        # 0600 file, never in state.json nor on the screen
        if ctx.lab.broker == "redis":
            ctx.doctor_args += ["--broker", f"{{account:redis:{tier}}}"]
        else:
            ctx.doctor_args += ["--broker", f"{{account:rabbitmq:{tier}}}",
                                "--rabbitmq-api", f"{{account:api:{tier}}}"]
    return prepare


def _unconsumed_20(ctx: ScenarioContext) -> None:
    """20 tasks in `reports`, which no worker consumes: below --queue-warn, so only the
    queue-without-consumers check can see the problem."""
    _publish(ctx, "reports", 20)


def _rabbit_unconsumed_20(ctx: ScenarioContext) -> None:
    _dlx_policy(ctx)
    _publish(ctx, "reports", 20)
    _wait_api(ctx, lambda qs: (qs.get("reports") or {}).get("messages_ready") == 20)


def _shared_instance(ctx: ScenarioContext) -> None:
    """Another app on db 1 of the same Redis, with its own workers and a monitor subscribed
    to its events: none of it is this cluster's."""
    import shutil
    import time

    from celeryctl.urls import parse_endpoint

    ep = parse_endpoint(ctx.redis_url or "")
    ctx.spawn("other-app-monitor", [shutil.which("redis-cli") or "redis-cli", "-h", ep.host,
                                    "-p", str(ep.port), "-n", "1", "psubscribe",
                                    "/1.celeryev/*"])
    time.sleep(0.5)


def _management_tag_user(ctx: ScenarioContext) -> None:
    """A user tagged `management` only (not `monitoring`), with the remote-control
    permissions: /api/nodes is refused to it and it sees only its own connections."""
    from celeryctl.permissions import RC_CONFIGURE, RC_READ, RC_WRITE
    from celeryctl.urls import parse_endpoint

    _dlx_policy(ctx)
    _api(ctx, "PUT", "/users/mgmt-only", json={"password": "mgmt-only-pw",
                                               "tags": "management"})
    _api(ctx, "PUT", "/permissions/%2F/mgmt-only",
         json={"configure": RC_CONFIGURE, "write": RC_WRITE, "read": RC_READ})
    ep = parse_endpoint(ctx.broker_url)
    api = parse_endpoint(ctx.api_url or "")
    ctx.doctor_args += ["--broker", f"amqp://mgmt-only:mgmt-only-pw@{ep.host}:{ep.port}//",
                        "--rabbitmq-api",
                        f"http://mgmt-only:mgmt-only-pw@{api.host}:{api.port}"]


def _api_down_with_backlog(ctx: ScenarioContext) -> None:
    _publish(ctx, "reports", 150)
    _api_down(ctx)


def _redis_wrong_password(ctx: ScenarioContext) -> None:
    from celeryctl.urls import parse_endpoint

    ep = parse_endpoint(ctx.redis_url or "")
    ctx.doctor_args += ["--broker",
                        f"redis://celeryctl-monitor:not-the-password@{ep.host}:{ep.port}/0"]


def _tls_api_ca(ctx: ScenarioContext) -> None:
    """doctor trusts the lab's CA for the https management API (the client certificate comes
    from the environment the scenario test sets: CELERYCTL_RABBITMQ_API_CERT/KEY)."""
    _dlx_policy(ctx)
    ctx.doctor_args += ["--rabbitmq-api-ca", ctx.lab.tls["ca"]]


def _tls_wrong_ca(ctx: ScenarioContext) -> None:
    """doctor given a CA that did not sign the server's certificate."""
    url = ctx.broker_url.replace(ctx.lab.tls["ca"], ctx.lab.tls["other_ca"])
    ctx.doctor_args += ["--broker", url]


MANAGED_REDIS = ("--rename-command", "CONFIG", "", "--rename-command", "CLIENT", "",
                 "--rename-command", "SCAN", "", "--appendonly", "no")

# Celery releases the lab has virtualenvs for (celeryctl.lab.venvs): one worker of each
LAB_CELERY_VERSIONS = ("5.2", "5.3", "5.5", "5.7")


def _mixed_rabbitmq(ctx: ScenarioContext) -> None:
    """Dead-lettering as in production, and a quorum queue (which the Celery < 5.5 workers
    must not be given: WRK008 says why)."""
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", ctx.rabbitmq_nodes[0]["amqp_port"], connection_attempts=1,
        socket_timeout=5))
    conn.channel().queue_declare("reports", durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()
    _dlx_policy(ctx, extra=("reports",))
    _wait_api(ctx, lambda qs: (qs.get("reports") or {}).get("type") == "quorum")


def _sentinel_master_down(ctx: ScenarioContext) -> None:
    """The master freezes (SIGSTOP); its only replica has priority 0, so no failover can
    happen: the sentinels agree it is down (o_down)."""
    import os
    import signal

    assert ctx.redis_pid is not None
    os.killpg(os.getpgid(ctx.redis_pid), signal.SIGSTOP)
    _wait_until(lambda: "o_down" in _sentinel_flags(ctx), "the sentinels' o_down", 30)


def _sentinel_flags(ctx: ScenarioContext) -> str:
    import redis

    m = redis.Redis(port=ctx.sentinel_ports[0], socket_timeout=2).execute_command(
        "SENTINEL", "MASTER", "celeryctl-lab")
    items = list(m.items()) if isinstance(m, dict) else list(zip(m[::2], m[1::2],
                                                                  strict=False))
    flags = dict((k.decode() if isinstance(k, bytes) else k, v) for k, v in items)["flags"]
    return flags.decode() if isinstance(flags, bytes) else str(flags)


def _sentinel_quorum_lost(ctx: ScenarioContext) -> None:
    """Two of the three sentinels (quorum 2) stop: the master is fine, but a failover could
    no longer be authorised."""
    import os
    import signal

    for pid in ctx.sentinel_pids[1:]:
        os.killpg(os.getpgid(pid), signal.SIGTERM)


# --- task events (doctor --events SECONDS: the EVT family) -----------------------------------

EVENTS_WINDOW = 4  # seconds of `doctor --events` in the EVT scenarios
SKEW_DIR = str(__import__("pathlib").Path(__file__).parent / "skew")


def _events_producer(*publish: str, window: float = EVENTS_WINDOW
                     ) -> Callable[[ScenarioContext], None]:
    """A producer publishing demo tasks for as long as the lab runs (`celeryctl.lab.publish
    ... --count 0`), so that doctor's `--events` window sees them sent, run and fail."""
    def prepare(ctx: ScenarioContext) -> None:
        import sys
        import time

        ctx.spawn("producer", ["env", f"CELERY_BROKER_URL={ctx.broker_url}", sys.executable,
                               "-m", "celeryctl.lab.publish", "--count", "0", *publish])
        time.sleep(0.5)
        ctx.doctor_args += ["--events", f"{window:g}"]

    prepare.__doc__ = f"A producer running `celeryctl.lab.publish {' '.join(publish)}`."
    return prepare


def _events_window(ctx: ScenarioContext) -> None:
    ctx.doctor_args += ["--events", "3"]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("healthy", "Two workers, empty queues, sane settings: doctor stays clean.", ()),
    Scenario("sentinel-healthy", "Redis behind three sentinels (quorum 2) with a replica in "
             "sync; workers and doctor reach the master through sentinel:// URLs.", (),
             sentinels=3),
    Scenario("sentinel-master-down", "The master behind Sentinel freezes and its replica may "
             "not be promoted: the sentinels agree it is down, no failover.",
             ("BRK008",), sentinels=3, replica_priority=0, prepare=_sentinel_master_down),
    Scenario("sentinel-quorum-lost", "Two of three sentinels (quorum 2) are gone: the next "
             "master failure would not be failed over.", ("BRK009",), sentinels=3,
             prepare=_sentinel_quorum_lost),
    Scenario("backlog-no-consumer",
             "1,500 tasks routed to `reports`, which no worker consumes.",
             ("QUE001", "QUE002"), prepare=_backlog),
    Scenario("purge-killed", "A `celeryctl purge --backup` was killed with kill -9 mid-way: "
             "500 messages of `reports` are set aside, in no queue; `restore --set-aside` "
             "puts them back.", ("QUE014",), prepare=_purge_killed),
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
                 "celery", destination=[expand_node_name("idle@%h")], reply=True, timeout=2)),
    Scenario("eviction-policy", "The Redis broker evicts keys under memory pressure.",
             ("BRK001",), prepare=_eviction),
    Scenario("backend-same-db", "The result backend is the broker's Redis database.",
             ("RES002",), prepare=_same_db_backend),
    Scenario("broker-down", "The broker is stopped: doctor still reports within the budget.",
             ("SRC001",), prepare=_broker_down),
    Scenario("healthy-rabbitmq", "RabbitMQ broker, two workers, dead-lettering by policy: "
             "doctor stays clean.", (), broker="rabbitmq", prepare=_dlx_policy),
    Scenario("backlog-rabbitmq", "RabbitMQ: 150 tasks in `reports`, which nobody consumes.",
             ("QUE001", "QUE002"), broker="rabbitmq", prepare=_rabbit_backlog),
    Scenario("rpc-results-piling", "RabbitMQ with the rpc:// backend: a client left without "
             "reading its results; they wait in its reply queue.", ("QUE005",),
             broker="rabbitmq",
             workers=(WorkerSpec("w1@%h", env={"CELERY_RESULT_BACKEND": "rpc://"}),),
             prepare=_rpc_results_piling),
    Scenario("client-timeout", "Redis closes idle clients after 300 s (timeout 300).",
             ("BRK006",), prepare=_client_timeout),
    Scenario("eta-beyond-visibility", "A countdown of 1 h with visibility_timeout 60 s: the "
             "task will be delivered again while the worker holds it.", ("QUE007",),
             workers=(WorkerSpec("w1@%h", env={"CELERYCTL_LAB_VISIBILITY": "60"}),),
             prepare=_eta_beyond_visibility),
    Scenario("pidbox-reply-bloat", "150 remote-control replies nobody will read.",
             ("QUE004",), prepare=_pidbox_reply_bloat),
    Scenario("pool-saturated", "The only consumer of `work` is busy at full concurrency "
             "with 150 tasks waiting.", ("QUE001", "WRK005"),
             workers=(WorkerSpec("w1@%h"),
                      WorkerSpec("busy@%h", queues="work", concurrency=1, env=STRICT)),
             prepare=_pool_saturated),
    Scenario("registered-drift", "Two workers of one queue, one from an older deploy without "
             "a task.", ("WRK006",),
             workers=(WorkerSpec("w1@%h"),
                      WorkerSpec("old@%h", env={"CELERYCTL_LAB_OLD_CODE": "1"}))),
    Scenario("seed-redis-broker-amqp-backend", "Seed 000: Redis broker with the amqp:// "
             "result backend Celery 5 removed.", ("RES001",), needs_rabbitmq=True,
             prepare=_seed_amqp_backend),
    Scenario("seed-rabbitmq-broker-redis-backend", "RabbitMQ broker, Redis result backend: "
             "a healthy shape.", (), broker="rabbitmq", prepare=_seed_rabbit_redis_backend),
    Scenario("seed-rabbitmq-broker-rpc-backend", "RabbitMQ broker, rpc:// results: a healthy "
             "shape.", (), broker="rabbitmq",
             workers=(WorkerSpec("w1@%h", env={"CELERY_RESULT_BACKEND": "rpc://"}),
                      WorkerSpec("w2@%h", env={"CELERY_RESULT_BACKEND": "rpc://"})),
             prepare=_seed_rabbit_rpc_backend),
    Scenario("worker-killed", "One of two workers SIGKILLed: its pidbox binding says it should "
             "answer, and it does not.", ("SRC005",), prepare=_kill_one_worker),
    Scenario("maxclients", "Redis maxclients set just above the clients connected.",
             ("POOL001",), prepare=_maxclients),
    Scenario("persistence-off", "Redis with neither RDB snapshots nor AOF.", ("BRK004",),
             prepare=_persistence_off),
    Scenario("stale-connections", "With --stale-after 1, the workers' idle pool connections "
             "count as stale.", ("CON001",), prepare=_stale),
    Scenario("visibility-timeout-exceeded", "A task held unacknowledged (acks_late) longer "
             "than visibility_timeout (2 s): the next sweep delivers it again.", ("QUE003", "TSK002"),
             workers=(WorkerSpec("w1@%h", concurrency=1,
                                 env={**STRICT, "CELERYCTL_LAB_VISIBILITY": "2"}),),
             prepare=_visibility_exceeded),
    Scenario("heartbeat-off", "RabbitMQ workers with broker_heartbeat = 0.", ("CFG002",),
             broker="rabbitmq",
             workers=(WorkerSpec("w1@%h", env={"CELERYCTL_LAB_HEARTBEAT": "0"}),),
             prepare=_dlx_policy),
    Scenario("management-api-down", "RabbitMQ whose management API does not answer: depth "
             "comes from AMQP passive declares, and doctor says so.", ("SRC002",),
             broker="rabbitmq", prepare=_api_down),
    Scenario("backend-down", "The result backend does not answer.", ("SRC003",),
             prepare=_backend_down),
    Scenario("rabbitmq-no-dlx", "RabbitMQ task queues without a dead-letter exchange.",
             ("QUE006",), broker="rabbitmq", prepare=_no_dlx),
    Scenario("orphan-event-queue", "An old monitor's celeryev queue without expiry, filling "
             "with events nobody reads.", ("QUE010",), broker="rabbitmq",
             prepare=_orphan_event_queue),
    Scenario("rabbitmq-vhost-limit", "The vhost's max-connections is one above what is in "
             "use.", ("POOL005",), broker="rabbitmq", prepare=_vhost_limit),
    Scenario("rabbitmq-user-limit", "The guest user's max-connections is one above what it "
             "uses.", ("POOL006",), broker="rabbitmq", prepare=_user_limit),
    Scenario("results-never-expire", "A Redis result backend whose results have no TTL "
             "(result_expires = None).", ("RES003", "RES005"),
             workers=(WorkerSpec("w1@%h", env={
                 "CELERY_RESULT_BACKEND": "{redis}/1",  # this lab's Redis, db 1
                 "CELERYCTL_LAB_RESULT_EXPIRES": "0"}),),
             prepare=_results_never_expire),
    Scenario("eta-beyond-consumer-timeout", "RabbitMQ: a countdown of 2 h, beyond the default "
             "consumer_timeout of 30 min.", ("QUE011",), broker="rabbitmq",
             prepare=_eta_beyond_consumer_timeout),
    Scenario("connection-leak", "Task code opening a Redis client per call and never closing "
             "it: 40 extra connections in one worker.", ("CON002",),
             workers=(WorkerSpec("w1@%h"),), prepare=_leak),
    Scenario("wrong-credentials", "RabbitMQ broker and management API reached with a wrong "
             "password: nothing is wrong with the cluster that celeryctl could see — the "
             "report is INCOMPLETE (exit 3), never 'broker unreachable'.", (),
             broker="rabbitmq", prepare=_wrong_credentials, exit_status=3,
             sources=("broker=auth-failed", "management-api=auth-failed")),
    Scenario("redis-acl-monitor", "A read-only Redis ACL user (celeryctl-monitor): remote "
             "control is refused, and 20 tasks wait in `reports`, which no worker consumes. "
             "Only the workers say who consumes a Redis queue, so doctor says it could not "
             "tell — INCOMPLETE, exit 3, never All clear.", (), accounts=True,
             prepare=_as_account("monitor", _unconsumed_20), exit_status=3,
             skipped=("QUE002:workers were not observed", "SRC004:permission-denied"),
             sources=("broker=observed", "workers=permission-denied")),
    Scenario("redis-acl-inspect", "The same cluster through the celeryctl-inspect ACL user "
             "(read + remote control): the queue nobody consumes is found.", ("QUE002",),
             accounts=True, prepare=_as_account("inspect", _unconsumed_20),
             sources=("broker=observed", "workers=observed")),
    Scenario("redis-acl-wrong-password", "The monitor ACL user with a wrong password: "
             "authentication failed, not 'unreachable'.", (), accounts=True,
             prepare=_redis_wrong_password, exit_status=3,
             sources=("broker=auth-failed",)),
    Scenario("redis-managed-renamed", "A managed-style Redis with CONFIG, CLIENT and SCAN "
             "renamed away and AOF off; 20 tasks wait in `reports`, which no worker consumes. "
             "Each refused read costs only its checks (skipped with the reason); queue "
             "discovery is partial, so the report is INCOMPLETE (exit 3) unless -Q/-A name "
             "the queues.", (), redis_args=MANAGED_REDIS, prepare=_unconsumed_20,
             exit_status=3,
             skipped=("BRK004:CONFIG GET save is not readable", "BRK006:renamed or disabled",
                      "CON001:renamed or disabled", "SEC001:listen addresses are unknown"),
             partial=("QUE001", "QUE002"), sources=("broker=observed", "workers=observed")),
    Scenario("redis-shared-instance", "Two apps on one Redis (db 0 and db 1), the other with "
             "its own worker and an event monitor: doctor of db 0 counts none of db 1's "
             "clients as strays or leaks.", (),
             workers=(WorkerSpec("w1@%h"), WorkerSpec("w2@%h"),
                      WorkerSpec("otherapp@%h", db=1)),
             prepare=_shared_instance),
    Scenario("rabbitmq-monitoring-user", "A read-only RabbitMQ user (celeryctl-monitor: tag "
             "monitoring, no permissions): remote control is refused, but the management "
             "API's consumer counts show the queue nobody consumes.", ("QUE002",),
             broker="rabbitmq", accounts=True,
             prepare=_as_account("monitor", _rabbit_unconsumed_20),
             sources=("broker=observed", "management-api=observed",
                      "workers=permission-denied")),
    Scenario("rabbitmq-monitoring-user-healthy", "A healthy cluster seen through the "
             "read-only monitor user: nothing wrong found, but the workers were not observed "
             "— INCOMPLETE, exit 3.", (), broker="rabbitmq", accounts=True,
             prepare=_as_account("monitor", _dlx_policy), exit_status=3,
             sources=("workers=permission-denied",)),
    Scenario("rabbitmq-inspect-user", "A healthy cluster through celeryctl-inspect (monitoring "
             "tag, remote control only): everything observed, clean.", (), broker="rabbitmq",
             accounts=True, prepare=_as_account("inspect", _dlx_policy),
             sources=("workers=observed",)),
    Scenario("rabbitmq-management-tag-user", "A user tagged management (not monitoring): "
             "/api/nodes is refused and only its own connections are listed — the node and "
             "connection checks are skipped with the tag to add.", (), broker="rabbitmq",
             prepare=_management_tag_user,
             skipped=("BRK003:monitoring tag", "BRK007:monitoring tag",
                      "CON001:own connections"),
             sources=("workers=observed",)),
    Scenario("redis-tls", "Redis serving only TLS with a private CA and requiring client "
             "certificates; workers and doctor connect with rediss:// and the CA and client "
             "certificate as URL parameters: everything observed, clean.", (),
             tls_client_certs=True, sources=("broker=observed", "workers=observed")),
    Scenario("rabbitmq-tls", "RabbitMQ serving only amqps:// and the management API over "
             "https with a private CA and client certificates: doctor reads it all with "
             "--rabbitmq-api-ca and the client certificate.", (), broker="rabbitmq",
             tls_client_certs=True, prepare=_tls_api_ca,
             sources=("broker=observed", "management-api=observed", "workers=observed")),
    Scenario("redis-tls-wrong-ca", "doctor given a CA that did not sign the Redis server's "
             "certificate: the TLS handshake fails at once and says which file to give "
             "(a broker doctor cannot reach is critical).", ("SRC001",),
             tls_client_certs=True, prepare=_tls_wrong_ca,
             sources=("broker=unreachable",)),
    Scenario("rabbitmq-no-api-backlog", "No management API, and 150 tasks in `reports`, which "
             "no worker consumes: without the API that queue cannot be discovered — doctor "
             "says so and marks the queue checks partial.", ("SRC002",), broker="rabbitmq",
             prepare=_api_down_with_backlog, partial=("QUE001", "QUE002")),
    Scenario("producer-pickle", "Producers send pickle; the workers accept only json: every "
             "task is discarded on receipt.", ("SER002",),
             app=producer_app(task_serializer="pickle", accept_content=["json"])),
    Scenario("result-serializer-refused", "Workers store results in pickle; the producers "
             "decode only json.", ("SER005",),
             workers=(WorkerSpec("w1@%h", env={"CELERYCTL_LAB_RESULT_SERIALIZER": "pickle"}),),
             app=producer_app(accept_content=["json"], result_accept_content=["json"])),
    Scenario("priority-mismatch", "RabbitMQ queues declared without x-max-priority while the "
             "app sets task_queue_max_priority = 10.", ("QUE009",), broker="rabbitmq",
             prepare=_dlx_policy,
             app=producer_app(task_queue_max_priority=10, broker_transport_options={
                 "confirm_publish": True})),
    Scenario("confirms-off", "RabbitMQ producers without publisher confirms.", ("CFG006",),
             broker="rabbitmq", prepare=_dlx_policy, app=producer_app()),
    Scenario("memory-near-limit", "Redis at 85% of maxmemory (noeviction: publishes will "
             "start failing).", ("BRK002",), prepare=_memory_near_limit),
    Scenario("evictions-happened", "Redis already evicted keys under memory pressure.",
             ("BRK005",), prepare=_evictions_happened),
    Scenario("risky-worker-settings", "broker_pool_limit 1 below concurrency 2, no "
             "broker_pool_acquire_timeout, retry_on_startup unset, a non-UTC timezone.",
             ("POOL002", "POOL004", "CFG003", "CFG004"),
             workers=(WorkerSpec("w1@%h", env={"CELERYCTL_LAB_RISKY": "1"}),)),
    Scenario("memory-growth", "A task keeps allocating memory: the worker's peak RSS grows "
             "between two samples, and processes are never recycled.", ("WRK007",),
             workers=(WorkerSpec("w1@%h"),), prepare=_memory_growth),
    Scenario("stray-subscriber", "A monitor left subscribed to Celery's events, with no "
             "worker behind it.", ("CON003",), prepare=_stray_subscriber),
    Scenario("rpc-queue-shared", "Two processes read one rpc:// reply queue.", ("RES004",),
             broker="rabbitmq", prepare=_rpc_queue_shared),
    Scenario("no-worker", "A broker with no worker at all (all crashed, or never deployed).",
             ("SRC004",), workers=()),
    Scenario("queue-growing", "A producer publishes 25 tasks a second to `reports`, which "
             "nobody consumes: doctor measures the growth over two samples.",
             ("QUE008", "QUE002"), prepare=_queue_growing),
    Scenario("time-limit-beyond-visibility", "acks_late tasks with a 2 h hard time limit "
             "and a visibility_timeout of 60 s: a long task is delivered again while it runs.",
             ("CFG005",),
             workers=(WorkerSpec("w1@%h", env={**STRICT, "CELERYCTL_LAB_VISIBILITY": "60",
                                               "CELERYCTL_LAB_TIME_LIMIT": "7200"}),)),
    Scenario("rabbitmq-disk-alarm", "RabbitMQ's disk alarm is raised: every publisher is "
             "blocked.", ("BRK003",), broker="rabbitmq", prepare=_disk_alarm),
    Scenario("rabbitmq-node-down", "A two-node RabbitMQ cluster with one node stopped; a "
             "quorum queue on both nodes loses its majority.",
             ("BRK003", "QUE012"), broker="rabbitmq", rabbitmq_nodes=2, prepare=_node_down),
    Scenario("rabbitmq-partition", "A two-node RabbitMQ cluster partitioned: the second node "
             "was paused longer than the tick time, then resumed.", ("BRK007",),
             broker="rabbitmq", rabbitmq_nodes=2, net_ticktime=4, prepare=_partition),
    Scenario("redis-exposed-without-password", "Redis listening on every interface with "
             "protected-mode off and no password (in a private network namespace).",
             ("SEC001",), workers=(WorkerSpec("w1@%h"),), exposed=True),
    Scenario("redis-exposed-cleartext-password", "A password-protected Redis with its "
             "plain-text port open on every interface: remote clients send the password in "
             "clear (in a private network namespace).", ("SEC002",),
             workers=(WorkerSpec("w1@%h"),), exposed=True,
             redis_password="lab-secret-password"),
    Scenario("rabbitmq-guest-exposed", "RabbitMQ used as guest while its AMQP listener is "
             "open on every interface and loopback_users is none (in a private network "
             "namespace).", ("SEC003",), broker="rabbitmq", workers=(WorkerSpec("w1@%h"),),
             exposed=True, prepare=_dlx_policy),
    Scenario("mixed-celery-versions", "A rolling upgrade left half-way: one worker each of "
             "Celery 5.2, 5.3, 5.5 and 5.7 (from the lab's virtualenvs); kombu 5.2 and >= 5.3 "
             "read each other's JSON differently.", ("WRK008",),
             workers=version_workers(LAB_CELERY_VERSIONS)),
    Scenario("mixed-celery-versions-rabbitmq", "RabbitMQ: one worker each of Celery 5.2, 5.3, "
             "5.5 and 5.7, and a quorum queue the pre-5.5 workers could not consume.",
             ("WRK008",), broker="rabbitmq", workers=version_workers(LAB_CELERY_VERSIONS),
             prepare=_mixed_rabbitmq),
    Scenario("long-task-reserved-behind", "A task with no time limit has run past "
             "--long-task-after on w1's only pool process, with tasks of `slow` reserved "
             "behind it while w2, also consuming `slow`, sits idle; tasks sent to `celery` "
             "(w1 only) wait in the queue.", ("TSK001", "TSK004", "TSK006", "WRK005"),
             workers=(WorkerSpec("w1@%h", queues="slow,celery", concurrency=1,
                                 env={"CELERYCTL_LAB_UNBOUNDED": "1"}),
                      WorkerSpec("w2@%h", queues="hipri",
                                 env={"CELERYCTL_LAB_UNBOUNDED": "1"})),
             prepare=_long_task_reserved_behind),
    Scenario("acks-late-past-visibility", "An acks_late task running toward a "
             f"visibility_timeout of {ACKS_LATE_VT} s: doctor says it will be delivered "
             "again (and when) before it is, and it then runs on both workers.", ("TSK002",),
             workers=(WorkerSpec("w1@%h", concurrency=1, env=FAST_SWEEP),
                      WorkerSpec("w2@%h", concurrency=1, env=FAST_SWEEP)),
             prepare=_acks_late_near_visibility),
    Scenario("acks-late-past-consumer-timeout", "RabbitMQ with consumer_timeout 5 s: an "
             "acks_late task has run past it unacknowledged, and the broker will close the "
             "worker's channel.", ("TSK003",), broker="rabbitmq",
             workers=(WorkerSpec("w1@%h", concurrency=1, env=STRICT),),
             prepare=_acks_late_past_consumer_timeout),
    Scenario("eta-hoarding", "One worker holds 120 tasks with a 10-minute countdown in "
             "memory.", ("TSK005",), workers=(WorkerSpec("w1@%h"),), prepare=_eta_hoarding),
    Scenario("rabbitmq-socket-headroom", "A RabbitMQ node under `ulimit -n 128` (25 "
             "sockets) with 85% of its sockets in use: the next reconnects are refused.",
             ("POOL003",), broker="rabbitmq", workers=(WorkerSpec("w1@%h"),),
             rabbitmq_fd_limit=128, prepare=_socket_headroom),
    Scenario("events-failing", "A task that always fails, published 3 times a second: the "
             "`doctor --events` window sees its failure ratio and its exception.", ("EVT001",),
             workers=(WorkerSpec("w1@%h", concurrency=4),),
             prepare=_events_producer("--task", "fail", "--queue", "celery", "--rate", "3")),
    Scenario("events-retry-storm", "A task retrying itself 4 times at once (no countdown), "
             "published twice a second: a retry storm in the `doctor --events` window.",
             ("EVT002",), workers=(WorkerSpec("w1@%h", concurrency=4),),
             prepare=_events_producer("--task", "flaky", "--retries", "4", "--queue",
                                      "celery", "--rate", "2")),
    Scenario("events-unfinished", "Two-minute tasks started every second: the `doctor "
             "--events` window ends with tasks it saw start and not finish.", ("EVT003",),
             workers=(WorkerSpec("w1@%h", queues="slow", concurrency=12),),
             prepare=_events_producer("--task", "sleep", "--seconds", "120", "--queue",
                                      "slow", "--rate", "1.5", window=6)),
    Scenario("events-clock-skew", "A worker whose host clock is 30 s ahead: its events "
             "arrive with timestamps from the future.", ("EVT004",),
             workers=(WorkerSpec("w1@%h", env={"PYTHONPATH": SKEW_DIR,
                                               "CELERYCTL_LAB_CLOCK_SKEW": "30"}),),
             prepare=_events_window),
    Scenario("events-no-consumer", "A worker configured with worker_send_task_events and no "
             "event monitor: every task's events are published for nobody (no --events "
             "window needed).", ("EVT005",),
             workers=(WorkerSpec("w1@%h", env={
                 "CELERYCTL_LAB_SETTINGS": '{"worker_send_task_events": true}'}),)),
)}

