"""Every check's message, pinned: one positive case per check code, over a minimal hand-built
snapshot, asserting the exact severity, subject and message a person reads. A finding says
what is wrong, with its numbers, in plain words (issue 13: SER004 used to say the opposite of
what it meant). A new check without a case here fails `test_every_check_has_a_pinned_message`.
"""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from celeryctl.checks import Limits, Severity, catalogue, run_checks, select_checks
from celeryctl.snapshot import (
    BackendStatus,
    Connection,
    MessageSample,
    Observed,
    QueueDepth,
    QueueGrowth,
    RabbitServer,
    RedisServer,
    RedisUnacked,
    SourceStatus,
    WorkerNode,
)
from tests.unit.test_checks import conf, node, snap, versioned, with_report

W, C, INFO = Severity.WARNING, Severity.CRITICAL, Severity.INFO
NOW = 1_700_000_000.0


def _iso(seconds_from_now: float) -> str:
    return datetime.datetime.fromtimestamp(NOW + seconds_from_now,
                                           datetime.timezone.utc).isoformat()


def _redis(info=None, config=None, **kw):
    s = snap(**kw)
    s.parts["redis_server"] = Observed(RedisServer("7.2.4", info or {}, config, None, "",
                                                   "default"))
    return s


def _rs(**extra):
    return RabbitServer("3.13.7", "c", "3.13.7", {}, extra.pop("nodes", []), **extra)


def _with(s, **parts):
    for k, v in parts.items():
        s.parts[k] = Observed(v)
    return s


def _at(s):
    s.taken_at = NOW
    return s


def _sentinel(master_flags="master", quorum=2, others=2, replicas=None, addresses=None):
    addresses = addresses or ["127.0.0.1:26379"]
    sentinels = []
    for i, a in enumerate(addresses):
        sentinels.append({"address": a, "ok": True, "master": {
            "ip": "10.0.0.1" if i == 0 or master_flags != "split" else "10.0.0.2",
            "port": 6379, "flags": "master" if master_flags == "split" else master_flags,
            "quorum": quorum, "num-other-sentinels": others},
            "replicas": replicas if replicas is not None else
            [{"ip": "10.0.0.3", "port": 6379, "flags": "slave", "master-link-status": "ok"}]})
    s = snap(target={"broker": "sentinel://127.0.0.1:26379/0"})
    s.parts["sentinel"] = Observed({"master_name": "mymaster", "sentinels": sentinels})
    return s


def _conns_redis(n, **kw):
    return [Connection("redis", f"10.0.0.1:{i}", **kw) for i in range(n)]


def _set_aside():
    return QueueDepth("_celeryctl.purge.abc", "redis", ready=500, internal=True,
                      discovered_by=("interrupted purge",),
                      arguments={"purge_of": "reports", "token": "abc", "pid": 42, "host": "h1",
                                 "set_aside_seconds": 600.0})


def _scheduled(name, seconds, **stats):
    return WorkerNode(name, {"scheduled": [{"eta": _iso(seconds),
                                            "request": {"id": "1", "name": "t.later"}}],
                             "active_queues": [{"name": "celery"}], **stats})


# code -> (snapshot builder, limits, severity, subject, message)
CASES: dict[str, tuple] = {
    "SRC001": (lambda: snap(sources=[SourceStatus("broker", "redis://127.0.0.1:6379/0", False,
                                                  "connection refused", kind="unreachable")]),
               {}, C, "broker redis://127.0.0.1:6379/0",
               "broker unreachable: connection refused"),
    "SRC002": (lambda: snap(kind="amqp", sources=[SourceStatus(
                   "management-api", "http://127.0.0.1:15672", False, "connection refused",
                   kind="unreachable")]),
               {}, W, "management API http://127.0.0.1:15672",
               "management API unreachable: connection refused"),
    "SRC003": (lambda: snap(sources=[SourceStatus(
                   "result-backend", "redis://:***@127.0.0.1:6379/1", False,
                   "invalid username-password pair", kind="auth-failed")]),
               {}, C, "result backend redis://:***@127.0.0.1:6379/1",
               "result backend refused the credentials: invalid username-password pair"),
    "SRC004": (lambda: snap(), {}, C, "workers", "no worker replied within 1.0 s"),
    "SRC005": (lambda: snap(nodes=[node("a@h")], expected=("a@h", "b@h")), {}, W, "worker b@h",
               "did not reply within 1.0 s, though its pidbox binding says it runs"),
    "WRK001": (lambda: snap(nodes=[node("a@h"), node("a@h")]), {}, W, "worker a@h",
               "2 workers answer as a@h"),
    "WRK002": (lambda: snap(nodes=[node("a@h", queues=())]), {}, W, "worker a@h",
               "consumes no queue: it runs no task"),
    "WRK003": (lambda: snap(nodes=[node("a@h"), node("b@h", c=conf(task_serializer="pickle"))]),
               {}, W, "setting task_serializer",
               "workers disagree on task_serializer: 1 with 'json'; 1 with 'pickle'"),
    "WRK004": (lambda: snap(nodes=[node("a@h", c=conf(task_acks_late=True,
                                                      task_reject_on_worker_lost=True))]),
               {}, W, "worker a@h",
               "task_acks_late with worker_prefetch_multiplier 4: each process holds up to 4 "
               "messages, all redelivered if it crashes"),
    "WRK005": (lambda: snap(
                   nodes=[WorkerNode("a@h", {"active": [{}, {}],
                                             "stats": {"pool": {"max-concurrency": 2}}})],
                   queues=[QueueDepth("q", "redis", ready=500, consumers=1,
                                      consumer_workers=("a@h",))]),
               {}, W, "queue q",
               "500 messages waiting and its only consumer runs at full concurrency: not "
               "enough capacity"),
    "WRK006": (lambda: snap(nodes=[
                   WorkerNode("a@h", {"active_queues": [{"name": "q"}],
                                      "registered": ["t.a", "t.b"]}),
                   WorkerNode("b@h", {"active_queues": [{"name": "q"}],
                                      "registered": ["t.a"]})]),
               {}, W, "queue q",
               "1 of its 2 workers lacks tasks the others register (e.g. b@h lacks t.b): "
               "those tasks fail as unregistered there"),
    "WRK007": (lambda: _with(snap(), rss_growth={"a@h": (100000, 180000, False)}), {}, W,
               "worker a@h",
               "peak RSS grew from 100000 to 180000 KiB and its processes are never recycled "
               "(no max_tasks_per_child)"),
    "WRK008": (lambda: with_report(snap(nodes=[versioned("a@h", "5.5.3", "5.5.4"),
                                               versioned("b@h", "5.7.0", "5.7.0")])),
               {}, INFO, "celery versions",
               "workers run 2 Celery versions: 5.5.3 (1), 5.7.0 (1); kombu 5.5.4 (1), "
               "5.7.0 (1)"),
    "SER001": (lambda: snap(nodes=[node("a@h", c=conf(accept_content=["json", "pickle"]))]),
               {}, W, "worker a@h",
               "accepts pickle: anyone who can publish to the broker can run code on this "
               "worker"),
    "SER002": (lambda: snap(nodes=[node("a@h")], app={"task_serializer": "pickle"}), {}, C,
               "worker a@h",
               "producers send pickle but the worker accepts only application/json: it "
               "discards those tasks unrun"),
    "SER003": (lambda: snap(nodes=[node("a@h"), node("b@h"), node(
                   "c@h", c=conf(accept_content=["json", "msgpack"]))]),
               {}, W, "setting accept_content",
               "3 workers accept 2 different sets of content types: a message one of them "
               "runs, another discards"),
    "SER004": (lambda: _with(snap(
                   nodes=[node("a@h", queues=("q",))],
                   queues=[QueueDepth("q", "redis", ready=5, consumers=1,
                                      consumer_workers=("a@h",))]),
                   samples={"q": [MessageSample("q", 0, "application/x-python-serialize",
                                                task="t.a")] * 5}),
               {}, C, "queue q",
               "5 of 5 sampled messages are application/x-python-serialize, which its "
               "consumers do not accept: they will discard them unrun"),
    "SER005": (lambda: snap(nodes=[node("a@h", c=conf(result_serializer="pickle"))],
                            app={"accept_content": ["json"]}),
               {}, C, "worker a@h",
               "stores results as pickle, which the producers do not accept: "
               "AsyncResult.get() raises ContentDisallowed for tasks that succeeded"),
    "CON001": (lambda: snap(conns=_conns_redis(6, idle_seconds=900, role="client")),
               {"stale_after": 300}, W, "connections",
               "6 client connections look stale (6 idle for 300 s or more; consumers and "
               "subscribers not counted)"),
    "CON002": (lambda: snap(nodes=[node("a@h")], conns=_conns_redis(
                   31, role="client", worker="a@h", worker_match="exact")),
               {}, W, "worker a@h",
               "holds 31 broker connections, more than 30 (--connections-per-worker): "
               "probably a leak"),
    "CON003": (lambda: snap(nodes=[node("a@h")], conns=_conns_redis(2, role="pubsub")),
               {}, INFO, "pub/sub clients", "2 pub/sub clients belong to no live worker"),
    "POOL001": (lambda: _redis({"connected_clients": 850, "maxclients": 1000}), {}, W,
                "redis clients", "850 of 1000 client slots used (85%)"),
    "POOL002": (lambda: snap(nodes=[node("a@h", c=conf(broker_pool_limit=4), concurrency=8)]),
                {}, W, "worker a@h",
                "broker_pool_limit 4 is below its concurrency 8: tasks that publish wait for "
                "a free connection"),
    "POOL003": (lambda: _with(snap(kind="amqp"), rabbit_server=_rs(nodes=[
                    {"name": "rabbit@a", "running": True, "fd_used": 900, "fd_total": 1000}])),
                {}, W, "node rabbit@a", "900 of 1000 file descriptors used (90%)"),
    "POOL004": (lambda: snap(nodes=[node("a@h", c=conf(broker_pool_acquire_timeout=None))]),
                {}, INFO, "worker a@h", "broker_pool_acquire_timeout unset: pool exhaustion hangs"),
    "POOL005": (lambda: _with(snap(kind="amqp", conns=[Connection("rabbitmq", f"h:{i}")
                                                       for i in range(9)],
                                   target={"broker": "amqp://h//", "vhost": "/"}),
                              rabbit_server=_rs(vhost_limits={"/": {"max-connections": 10}})),
                {}, W, "vhost /", "9 of 10 connections allowed in use (max-connections, 90%)"),
    "POOL006": (lambda: _with(snap(kind="amqp", conns=[
                    Connection("rabbitmq", f"h:{i}", user="app", channels=1) for i in range(9)]),
                    rabbit_server=_rs(user_limits={"app": {"max-connections": 10}})),
                {}, W, "user app",
                "9 of 10 connections allowed in use (max-connections, 90%; counted in this "
                "vhost)"),
    "QUE001": (lambda: snap(queues=[QueueDepth("big", "redis", ready=150, consumers=2)]), {}, W,
               "queue big", "150 messages ready, 2 consumers"),
    "QUE002": (lambda: snap(queues=[QueueDepth("big", "redis", ready=15, consumers=0)]), {}, C,
               "queue big", "15 messages waiting and no worker consumes 'big'"),
    "QUE003": (lambda: snap(unacked=RedisUnacked(total=3, oldest_seconds=4000.0, per_queue={},
                                                 oldest_per_queue={})),
               {}, W, "unacked (Redis in-flight)",
               "oldest in-flight message received 4000 s ago, past visibility_timeout 3600 s: "
               "it will be delivered again"),
    "QUE004": (lambda: snap(queues=[QueueDepth("x.reply.celery.pidbox", "redis", ready=300,
                                               internal=True)]),
               {}, W, "pidbox reply queues", "1 reply queue holds 300 unread replies"),
    "QUE005": (lambda: snap(kind="amqp", queues=[QueueDepth(
                   "e5c92d88-5caa-33d4-a25d-c26f80dfa699", "rabbitmq", ready=4, consumers=0,
                   internal=True)]),
               {}, W, "rpc result queues",
               "1 rpc reply queue with no consumer holds 4 unread results"),
    "QUE006": (lambda: snap(kind="amqp", queues=[QueueDepth("celery", "rabbitmq", ready=1,
                                                            consumers=1)]),
               {}, INFO, "dead-lettering",
               "1 task queue has no dead-letter exchange (argument or policy): messages "
               "rejected there are dropped"),
    "QUE007": (lambda: _at(snap(nodes=[_scheduled("a@h", 7200)])), {}, W, "worker a@h",
               "1 scheduled task has an ETA beyond visibility_timeout 3600 s (kombu "
               "default): it will be delivered again"),
    "QUE008": (lambda: _with(snap(), growth={"a": QueueGrowth("a", 150, 25.0, "samples", 2.0)}),
               {}, W, "queue a",
               "growing by 25.0 messages/s (150 ready); time to drain: never at this rate"),
    "QUE009": (lambda: snap(kind="amqp", queues=[QueueDepth("celery", "rabbitmq", ready=0,
                                                            consumers=1)],
                            app={"task_queue_max_priority": 10}),
               {}, W, "queue celery",
               "declared without x-max-priority, but the app sets task_queue_max_priority 10: "
               "message priorities are ignored"),
    "QUE010": (lambda: snap(kind="amqp", queues=[QueueDepth("celeryev.1", "rabbitmq", ready=9,
                                                            consumers=0, internal=True)]),
               {}, W, "control and event queues",
               "1 celeryev/pidbox queue needs cleaning up: 1 never expires, 1 holds messages "
               "nobody consumes"),
    "QUE011": (lambda: _at(snap(kind="amqp", nodes=[_scheduled("a@h", 7200)])), {}, W,
               "worker a@h",
               "1 scheduled task waits longer than consumer_timeout 1800 s (assumed): the "
               "broker will close the worker's channel"),
    "QUE012": (lambda: snap(kind="amqp", queues=[QueueDepth(
                   "orders", "rabbitmq", ready=0, type="quorum",
                   members=("rabbit@a", "rabbit@b", "rabbit@c"), online=("rabbit@a",))]),
               {}, C, "queue orders",
               "2 of 3 quorum members offline: no majority, the queue is unavailable"),
    "QUE013": (lambda: snap(queues=[QueueDepth(
                   "celery", "redis", type="hash",
                   error="key celery is a hash, not a list")]),
               {}, C, "queue celery",
               "key celery is a hash, not a list: publishing to or consuming from it fails "
               "with WRONGTYPE, and its depth is unknown"),
    "QUE014": (lambda: snap(queues=[_set_aside()]), {}, W, "queue reports",
               "500 messages set aside by a purge that never finished (pid 42 on h1, 10m ago)"),
    "RES001": (lambda: snap(target={"broker": "redis://h/0",
                                    "result_backend": "amqp://guest:***@h//"}),
               {}, C, "result backend amqp://guest:***@h//",
               "amqp:// result backend, which Celery 5 removed: workers and producers fail at "
               "start-up ('Unknown result backend: amqp')"),
    "RES002": (lambda: snap(backend=BackendStatus("redis://h/0", "redis", True,
                                                  same_instance_as_broker=True,
                                                  same_db_as_broker=True),
                            target={"broker": "redis://h/0", "result_backend": "redis://h/0"}),
               {}, W, "result backend redis://h/0",
               "result backend shares the broker's Redis database"),
    "RES003": (lambda: snap(nodes=[node("a@h", c=conf(result_expires=None,
                                                      result_backend="redis://h/1"))]),
               {}, W, "setting result_expires (worker a@h)",
               "result_expires is None: results are kept forever"),
    "RES004": (lambda: snap(kind="amqp", queues=[QueueDepth(
                   "e5c92d88-5caa-33d4-a25d-c26f80dfa699", "rabbitmq", ready=0, consumers=2,
                   internal=True)]),
               {}, W, "queue e5c92d88-5caa-33d4-a25d-c26f80dfa699",
               "rpc reply queue read by 2 consumers"),
    "RES005": (lambda: snap(backend=BackendStatus("redis://h/1", "redis", True,
                                                  result_keys_sampled=50,
                                                  result_keys_without_ttl=12),
                            target={"broker": "redis://h/0", "result_backend": "redis://h/1"}),
               {}, W, "result backend redis://h/1",
               "12 of 50 sampled result keys never expire"),
    "BRK001": (lambda: _redis(config={"maxmemory-policy": "allkeys-lru"}), {}, C,
               "redis maxmemory-policy",
               "maxmemory-policy is allkeys-lru: queued tasks can be evicted"),
    "BRK002": (lambda: _redis({"used_memory": 85, "maxmemory": 100}), {}, W, "redis memory",
               "85% of maxmemory used: at 100% writes fail (noeviction) or keys are evicted"),
    "BRK003": (lambda: _with(snap(kind="amqp"), rabbit_server=_rs(nodes=[
                   {"name": "rabbit@a", "running": True, "mem_alarm": True,
                    "disk_free_alarm": False}])),
               {}, C, "node rabbit@a", "memory alarm is set: publishers are blocked"),
    "BRK004": (lambda: _redis(config={"save": "", "appendonly": "no"}), {}, INFO,
               "redis persistence",
               "no RDB snapshots and no AOF: a restart loses every queued task"),
    "BRK005": (lambda: _redis({"evicted_keys": 7}), {}, W, "redis evictions",
               "7 keys evicted since Redis started: queued tasks may have been lost"),
    "BRK006": (lambda: _redis(config={"timeout": "5"}), {}, W, "redis timeout",
               "Redis closes clients idle for 5 s (timeout): workers' idle pool connections "
               "drop and reconnect"),
    "BRK007": (lambda: _with(snap(kind="amqp"), rabbit_server=_rs(nodes=[
                   {"name": "rabbit@a", "running": True, "partitions": ["rabbit@b"]}])),
               {}, C, "node rabbit@a", "network partition: partitioned from rabbit@b"),
    "BRK008": (lambda: _sentinel(master_flags="s_down,master"), {}, W,
               "sentinel master mymaster",
               "a sentinel cannot reach the master (s_down); no quorum agrees yet"),
    "BRK009": (lambda: _sentinel(), {}, C, "sentinel master mymaster",
               "1 sentinel answered, 3 known to each other, quorum 2: no failover is possible"),
    "BRK010": (lambda: snap(unacked=RedisUnacked(
                   total=None, oldest_seconds=None, per_queue=None, oldest_per_queue=None,
                   problems=("unacked is a string, not a hash: in-flight count unknown",))),
               {}, W, "unacked (Redis in-flight bookkeeping)",
               "unacked is a string, not a hash: in-flight count unknown"),
    "CFG001": (lambda: snap(nodes=[node("a@h", c=conf(task_acks_late=True,
                                                      worker_prefetch_multiplier=1))]),
               {}, INFO, "worker a@h",
               "task_acks_late without task_reject_on_worker_lost: a task whose process dies "
               "is acked and lost, not redelivered"),
    "CFG002": (lambda: snap(kind="amqp", nodes=[node("a@h", c=conf(broker_heartbeat=0))]),
               {}, W, "worker a@h",
               "broker_heartbeat is 0: heartbeats are off, so a silently dropped connection "
               "goes unnoticed"),
    "CFG003": (lambda: snap(nodes=[node("a@h", c=conf(broker_connection_retry_on_startup=None))]),
               {}, INFO, "worker a@h",
               "broker_connection_retry_on_startup is not set: whether the worker waits for a "
               "broker that is down at start-up follows broker_connection_retry, with a "
               "deprecation warning"),
    "CFG004": (lambda: snap(nodes=[node("a@h", c=conf(timezone="Europe/Paris"))]), {}, INFO,
               "worker a@h",
               "timezone is 'Europe/Paris', not UTC: ETAs and schedules shift with DST and "
               "between hosts"),
    "CFG005": (lambda: snap(nodes=[node("a@h", c=conf(task_acks_late=True,
                                                      task_time_limit=7200))]),
               {}, W, "worker a@h",
               "task_time_limit 7200 s > visibility_timeout 3600 s (kombu default) with "
               "acks_late: long tasks run twice"),
    "CFG006": (lambda: snap(kind="amqp", app={"broker_transport_options": {}}), {}, INFO,
               "setting broker_transport_options",
               "publisher confirms off: published tasks can be lost"),
    "SEC001": (lambda: _remote(snap(target={"broker": "redis://10.0.0.5:6379/0"})), {}, W,
               "broker redis://10.0.0.5:6379/0",
               "Redis broker on a non-loopback host, reached without a password: any host "
               "that reaches the port can read and run tasks"),
    "SEC002": (lambda: _remote(snap(target={"broker": "redis://:***@10.0.0.5:6379/0"})), {}, W,
               "broker redis://:***@10.0.0.5:6379/0",
               "credentials sent in clear text to a remote broker"),
    "SEC003": (lambda: _remote(snap(kind="amqp", target={"broker": "amqp://10.0.0.5:5672//"})),
               {}, W, "broker amqp://10.0.0.5:5672//",
               "RabbitMQ on a non-loopback host accepts the guest user: anyone who knows "
               "guest/guest can connect"),
}


def _remote(s):
    s.broker_hosts = ("10.0.0.5",)
    return s


@pytest.mark.parametrize("code", sorted(CASES))
def test_check_message_is_pinned(code):
    build, limits, severity, subject, message = CASES[code]
    report = run_checks(build(), Limits(**limits), select_checks([code], None))
    assert not report.skipped and not report.not_applicable, (report.skipped,
                                                             report.not_applicable)
    got = [(f.severity, f.subject, f.message) for f in report.findings]
    assert got and got[0] == (severity, subject, message), got
    f = report.findings[0]
    assert f.hint, f"{code}: a finding says what to do (hint)"


def test_every_check_has_a_pinned_message():
    codes = {c.code for c in catalogue()}
    assert codes - set(CASES) == set(), "pin a positive case for each new check code"
    assert set(CASES) - codes == set(), "a pinned case for a check that no longer exists"


def test_ser004_says_the_consumers_do_not_accept_and_who_discards():
    """The issue 13 wording: 'which its consumers accept: they will be discarded' read as
    the opposite. Both cases say 'do not accept' / 'no live worker accepts'."""
    _, _, _, _, consuming = CASES["SER004"]
    assert "do not accept" in consuming
    s = snap(nodes=[node("a@h", queues=("other",))],
             queues=[QueueDepth("q", "redis", ready=2, consumers=0)])
    s.parts["samples"] = Observed({"q": [MessageSample("q", 0, "application/x-yaml")] * 2})
    [f] = run_checks(s, Limits(), select_checks(["SER004"], None)).findings
    assert (f.severity, f.message) == (W, "2 of 2 sampled messages are application/x-yaml, "
                                          "which no live worker accepts: any of them that "
                                          "consumes this queue will discard them unrun")


def test_messages_with_a_second_form():
    """The other form of a few messages whose wording depends on the case."""
    s = snap(kind="amqp", queues=[QueueDepth("celery", "rabbitmq", ready=0, consumers=1,
                                             arguments={"x-max-priority": 5})],
             app={"task_queue_max_priority": 10})
    [f] = run_checks(s, Limits(), select_checks(["QUE009"], None)).findings
    assert f.message == "declared with x-max-priority 5, but the app sets " \
                        "task_queue_max_priority 10"
    s = snap(nodes=[node("a@h", c=conf(enable_utc=False, timezone="UTC"))])
    [f] = run_checks(s, Limits(), select_checks(["CFG004"], None)).findings
    assert f.message == "enable_utc is False: ETAs and schedules shift with DST and between hosts"
    s = snap(kind="amqp", conns=[Connection("rabbitmq", "h:1", idle_seconds=0, role="worker",
                                            heartbeat_seconds=0)])
    s.parts["rabbit_server"] = Observed(RabbitServer("3.13.7", "c", "3.13.7",
                                                     {"api_user_is_monitor": True}, []))
    [f] = run_checks(s, Limits(), select_checks(["CON001"], None)).findings
    assert (f.severity, f.message) == (INFO, "1 client connection looks stale (1 without "
                                          "heartbeats; consumers and subscribers not counted)")
    for state, words in (("unreachable", "unreachable"), ("not-configured", "not configured"),
                         ("permission-denied", "refused an operation (permission denied)"),
                         ("failed", "could not be read")):
        s = snap(sources=[SourceStatus("result-backend", "redis://h/1", False, "boom",
                                       kind=state)])
        [f] = run_checks(s, Limits(), select_checks(["SRC003"], None)).findings
        assert f.message == f"result backend {words}: boom"


def test_ser002_never_recommends_pickle():
    """Issue 13 follow-up, item 9: producers that send pickle are told to switch to json, not
    to add pickle to accept_content (that is SER001, remote code execution)."""
    [f] = run_checks(CASES["SER002"][0](), Limits(), select_checks(["SER002"], None)).findings
    assert "json" in f.hint and "do not add pickle" in f.hint and "SER001" in f.hint
    assert "Add the producers' serializer" not in f.hint
    s = snap(nodes=[node("a@h")], app={"task_serializer": "msgpack"})
    [f] = run_checks(s, Limits(), select_checks(["SER002"], None)).findings
    assert f.hint == "Add the producers' serializer to accept_content, or change task_serializer."


def test_counts_agree_with_their_nouns():
    """Issue 13 follow-up, item 13: "1 message", never "1 messages"."""
    def one(code, s, **limits):
        [f] = run_checks(s, Limits(**limits), select_checks([code], None)).findings
        return f.message

    assert one("QUE002", snap(queues=[QueueDepth("q", "redis", ready=1, consumers=0)])) == \
        "1 message waiting and no worker consumes 'q'"
    assert one("QUE001", snap(queues=[QueueDepth("q", "redis", ready=1, consumers=1)]),
               queue_warn=1) == "1 message ready, 1 consumer"
    assert one("BRK005", _redis(info={"evicted_keys": 1})).startswith("1 key evicted since")
    assert one("POOL001", _redis(info={"rejected_connections": 1, "connected_clients": 1,
                                       "maxclients": 100})).startswith("1 connection rejected")
    s = _sentinel()
    s.parts["sentinel"].value["sentinels"][0].update(ok=False, error="refused")
    assert one("BRK009", s) == "the only sentinel did not answer"
    one_aside = dataclasses.replace(_set_aside(), ready=1)
    assert one("QUE014", snap(queues=[one_aside])).startswith("1 message set aside by a purge")


def test_que002_fix_names_a_live_worker_and_quotes_control_characters():
    """Issue 13 follow-up, item 14: `-d` names a live worker (those consuming some queue),
    the others are listed in the fix; a name with an ESC is written $'...' (pastes back)."""
    esc = "esc\x1b[2Jq"
    s = snap(nodes=[node("b@h"), node("a@h"), node("idle@h", queues=())],
             queues=[QueueDepth(esc, "redis", ready=2, consumers=0)])
    [f] = run_checks(s, Limits(), select_checks(["QUE002"], None)).findings
    assert f.commands[0] == "celeryctl control add-consumer $'esc\\x1b[2Jq' -d a@h"
    assert f.commands[1] == "celery -A proj worker -Q $'esc\\x1b[2Jq'"
    assert "a@h, b@h" in f.hint and "idle@h" not in f.hint
    s = snap(nodes=[node("w\x1b@h")], queues=[QueueDepth("q", "redis", ready=2, consumers=0)])
    [f] = run_checks(s, Limits(), select_checks(["QUE002"], None)).findings
    assert f.commands[0] == "celeryctl control add-consumer q -d $'w\\x1b@h'"
    assert f.hint == "Start a worker with -Q q or add a consumer."


# --- TSK: the task view (issue 14) ----------------------------------------------------------

def _req(tid, name="proj.crunch", started=None, pid=4312, queue="celery", acked=None):
    req = {"id": tid, "name": name, "worker_pid": pid, "args": [], "kwargs": {},
           "delivery_info": {"routing_key": queue, "exchange": "", "redelivered": False}}
    if started is not None:
        req["time_start"] = NOW - started
    if acked is not None:
        req["acknowledged"] = acked
    return req


def _tw(name, *, active=(), reserved=(), scheduled=(), registered=("proj.crunch",), c=None,
        concurrency=2, queues=("celery",)):
    """A worker (Celery 5.5.3) answering the task view's methods."""
    n = node(name, queues=queues, c=c, concurrency=concurrency)
    return WorkerNode(name, dict(n.replies, active=list(active), reserved=list(reserved),
                                 scheduled=list(scheduled), registered=list(registered),
                                 report={"celery": "5.5.3", "kombu": "5.5.4"}))


def _inflight(*entries):
    from celeryctl.snapshot import InFlightMessage, RedisInFlight

    msgs = tuple(InFlightMessage(f"tag{i}", id=tid, delivered_at=NOW - ago)
                 for i, (tid, ago) in enumerate(entries))
    return RedisInFlight(messages=msgs, total=len(msgs), read=len(msgs))


def _tsk(nodes, kind="redis", queues=(), **parts):
    return _at(_with(snap(kind=kind, nodes=nodes, queues=queues), **parts))


_LATE = conf(task_acks_late=True, worker_prefetch_multiplier=1)

TSK_CASES: dict[str, tuple] = {
    "TSK001": (lambda: _tsk([_tw("w1@h", active=[_req("t-1", started=8000)])]),
               {}, C, "task t-1",
               "proj.crunch has run 2h13m on w1@h pid 4312 (over 30 min), no hard time "
               "limit: nothing will stop it"),
    "TSK002": (lambda: _tsk([_tw("w1@h", c=_LATE,
                                 active=[_req("t-2", started=2900, acked=False)])],
                            redis_inflight=_inflight(("t-2", 3000))),
               {}, W, "task t-2",
               "acks_late task proj.crunch has run 48 min on w1@h pid 4312 (delivered 50 min "
               "ago), visibility_timeout 1h00m (kombu default): it will be delivered again "
               "and run twice: redelivered in 10 min"),
    "TSK003": (lambda: _tsk([_tw("w1@h", c=_LATE,
                                 active=[_req("t-3", started=2000, acked=False)])],
                            kind="amqp"),
               {}, C, "task t-3",
               "acks_late task proj.crunch has run 33 min on w1@h pid 4312 unacknowledged, "
               "consumer_timeout 30 min (assumed): past it by 3 min: the broker closes the "
               "worker's channel at its next check, and the task is delivered again"),
    "TSK004": (lambda: _tsk([_tw("w1@h", concurrency=1,
                                 active=[_req("t-4", started=600)],
                                 reserved=[_req("t-5", pid=None), _req("t-6", pid=None)]),
                             _tw("w2@h")]),
               {}, W, "worker w1@h",
               "2 tasks from celery wait reserved behind its 1 busy pool process while w2@h "
               "(2 free processes) also consumes celery; its longest has run 10 min "
               "(proj.crunch)"),
    "TSK005": (lambda: _tsk([_tw("w1@h", scheduled=[
                   {"eta": _iso(600 + i), "priority": 0, "request": _req(f"e-{i}", pid=None)}
                   for i in range(120)])]),
               {}, W, "worker w1@h",
               "holds 120 ETA/countdown tasks in memory, unacknowledged (proj.crunch (120), "
               "the furthest due in 11 min): a restart sends them all back to the queue at "
               "once"),
    "TSK006": (lambda: _tsk([_tw("w1@h", registered=(
                   "proj.crunch", "proj.add [time_limit=60]", "proj.mail [soft_time_limit=30]"))]),
               {}, INFO, "registered tasks",
               "1 registered task has no time limit at all (proj.crunch) on 1 worker: a hung "
               "one runs forever"),
}
CASES.update(TSK_CASES)


@pytest.mark.parametrize("code", sorted(TSK_CASES))
def test_tsk_message_is_pinned(code):
    test_check_message_is_pinned(code)


# --- EVT (issue 15: doctor --events) --------------------------------------------------------

def _task(name="proj.charge", **counts):
    row = {"name": name, "received": 0, "started": 0, "succeeded": 0, "failed": 0,
           "retried": 0, "rejected": 0, "revoked": 0, "exceptions": [], "unfinished_count": 0,
           "unfinished": []}
    row.update(counts)
    return row


def _window(tasks=(), workers=(), seconds=10.0):
    return _with(snap(), events={"schema": 1, "window_seconds": seconds, "tasks": list(tasks),
                                 "workers": list(workers), "notes": []})


def _ev_worker(name="a@h", **kw):
    row = {"name": name, "heartbeats": 5, "heartbeat_freq_seconds": 2.0,
           "heartbeat_age_seconds": 1.0, "heartbeat_late": False, "clock_drift_seconds": 0.01,
           "event_delay_max_seconds": 0.05, "events_were_enabled": False, "restored": True}
    row.update(kw)
    return row


EVT_CASES = {
    "EVT001": (lambda: _window([_task(succeeded=6, failed=4, exceptions=[
                   {"type": "TimeoutError", "count": 3, "example": "TimeoutError('api')"},
                   {"type": "KeyError", "count": 1, "example": "KeyError('x')"}])]), {}, W,
               "task proj.charge",
               "4 of 10 runs failed (40%) in the 10 s window; mostly TimeoutError (3)"),
    "EVT002": (lambda: _window([_task(succeeded=2, retried=30)]), {}, W, "task proj.charge",
               "30 retries in 10 s (3.0/s), 94% of its runs ended in a retry"),
    "EVT003": (lambda: _window([_task(started=2, unfinished_count=2, unfinished=[
                   {"id": "u1", "worker": "a@h", "age_seconds": 8.5},
                   {"id": "u2", "worker": "b@h", "age_seconds": 6.0}])]), {}, INFO,
               "task proj.charge",
               "2 runs started in the window and were still running at its end (the oldest "
               "for 8.5 s, on a@h)"),
    "EVT004": (lambda: _window(workers=[_ev_worker(clock_drift_seconds=-30.2)]), {}, W,
               "worker a@h", "events arrive late: its clock is 30 s ahead of this host's"),
    "EVT005": (lambda: _with(snap(nodes=[node("a@h")]), event_consumers={
                   "senders": [{"worker": "a@h", "why": "worker_send_task_events is on in its "
                                                       "conf"}],
                   "consumers": [], "unknown": None}), {}, W, "worker a@h",
               "sends task events and nothing consumes them (worker_send_task_events is on "
               "in its conf)"),
}
CASES.update(EVT_CASES)


@pytest.mark.parametrize("code", sorted(EVT_CASES))
def test_evt_message_is_pinned(code):
    test_check_message_is_pinned(code)


def test_evt_thresholds_and_skips():
    def found(s, code, **limits):
        return run_checks(s, Limits(**limits), select_checks([code], None))

    # 1 failure of 2 is not an alarm (failure_min), nor 1 of 20 (ratio)
    assert not found(_window([_task(succeeded=1, failed=1)]), "EVT001").findings
    assert not found(_window([_task(succeeded=19, failed=1)]), "EVT001").findings
    assert not found(_window([_task(succeeded=90, failed=10)]), "EVT001").findings  # = 0.1
    assert found(_window([_task(succeeded=90, failed=10)]), "EVT001",
                 failure_ratio_warn=0.05).findings
    # a few retries, or a slow trickle of them, is no storm
    assert not found(_window([_task(succeeded=10, retried=4)]), "EVT002").findings
    assert not found(_window([_task(succeeded=100, retried=6)], seconds=60), "EVT002").findings
    # a task that started in the window's last moments is not "never finished"
    assert not found(_window([_task(unfinished_count=1, unfinished=[
        {"id": "u", "worker": "a@h", "age_seconds": 1.0}])]), "EVT003").findings
    late = found(_window(workers=[_ev_worker(heartbeat_late=True, heartbeat_age_seconds=12.0),
                                  _ev_worker("b@h", heartbeats=0)]), "EVT004").findings
    assert [f.message for f in late] == [
        "events arrive late: its last heartbeat is 12 s old (every 2.0 s expected)",
        "events arrive late: no heartbeat in the 10 s window"]
    # without a window: skipped, saying how to get one
    s = snap()
    s.parts["events"] = Observed(error="no events window: pass --events SECONDS",
                                 kind="not-asked")
    r = found(s, "EVT001")
    assert not r.findings and "pass --events SECONDS" in r.skipped[0].reason
    # EVT005: a consumer, or nobody sending, is silence; unknown consumers is a skip
    ec = {"senders": [{"worker": "a@h", "why": "x"}], "consumers": [], "unknown": None}
    assert not found(_with(snap(), event_consumers={**ec, "consumers": ["queue celeryev.x"]}),
                     "EVT005").findings
    assert not found(_with(snap(), event_consumers={**ec, "senders": []}), "EVT005").findings
    r = found(_with(snap(), event_consumers={**ec, "unknown": "no management API"}), "EVT005")
    assert not r.findings and "no management API" in r.skipped[0].reason
    # an extra Redis pattern subscriber (maybe `*pidbox*`, maybe Flower) cannot be attributed:
    # skipped saying so, not a pass; a certain consumer still wins
    maybe = ["1 pattern subscriber(s) on db 0 beyond one per worker (1)"]
    r = found(_with(snap(), event_consumers={**ec, "maybe": maybe}), "EVT005")
    assert not r.findings and "cannot be told" in r.skipped[0].reason
    assert "1 pattern subscriber(s)" in r.skipped[0].reason
    r = found(_with(snap(), event_consumers={**ec, "maybe": maybe,
                                             "consumers": ["1 other subscriber(s)"]}), "EVT005")
    assert not r.findings and not r.skipped
    # with a window, a worker that had task events on already is a sender too
    s = _window(workers=[_ev_worker("e@h", events_were_enabled=True)])
    s.parts["event_consumers"] = Observed({"senders": [], "consumers": [], "unknown": None})
    [f] = found(s, "EVT005").findings
    assert f.subject == "worker e@h" and "already on when the --events window" in f.message
