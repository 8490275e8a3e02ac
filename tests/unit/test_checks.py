"""The catalogue's contract, and checks over hand-built snapshots (positive, negative, skipped)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from celeryctl.checks import HEADINGS, Limits, Severity, catalogue, find, run_checks, select_checks
from celeryctl.render.report import render_check_page
from celeryctl.snapshot import (
    BackendStatus,
    Connection,
    Observed,
    QueueDepth,
    RedisServer,
    RedisUnacked,
    Snapshot,
    SourceStatus,
    WorkerNode,
    WorkersView,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "checks"


def test_every_check_is_documented_and_unique():
    cat = catalogue()
    assert len({c.code for c in cat}) == len(cat) and len({c.name for c in cat}) == len(cat)
    for c in cat:
        for h in HEADINGS:
            assert c.section(h), f"{c.code} lacks '## {h}'"
        page = DOCS / f"{c.code}.md"
        assert page.exists(), f"docs/checks/{c.code}.md missing: python -m celeryctl.checks.docs"
        assert page.read_text() == render_check_page(c), \
            f"docs/checks/{c.code}.md is stale: python -m celeryctl.checks.docs"
        assert c.fn.__name__ == c.name.replace("-", "_")
    assert find("que001") is find("queue-backlog") is not None


def conf(**kw):
    base = {"accept_content": ["json"], "task_serializer": "json", "task_acks_late": False,
            "worker_prefetch_multiplier": 4, "broker_pool_limit": 10, "broker_heartbeat": 120}
    base.update(kw)
    return base


def node(name, queues=("celery",), c=None, concurrency=2):
    return WorkerNode(name, {"ping": {"ok": "pong"}, "active_queues": [{"name": q} for q in queues],
                             "conf": c or conf(),
                             "stats": {"pool": {"max-concurrency": concurrency}}})


def snap(kind="redis", nodes=(), expected=None, queues=(), app=None, server=None, unacked=None,
         backend=None, conns=None, sources=None, target=None):
    view = WorkersView(nodes=tuple(nodes), methods=("ping", "active_queues", "conf", "stats"),
                       expected=expected, expected_source="redis binding", waited_seconds=1.0)
    parts = {
        "broker": Observed(True), "workers": Observed(view), "queues": Observed(list(queues)),
        "app": Observed(app) if app is not None else Observed(error="no app"),
        "redis_server": Observed(server) if server else Observed(error="x"),
        "redis_unacked": Observed(unacked) if unacked else Observed(error="x"),
        "backend": Observed(backend) if backend else Observed(error="x"),
        "connections": Observed(conns) if conns is not None else Observed(error="x"),
        "rabbit_server": Observed(error="x"),
    }
    return Snapshot(broker_kind=kind, target=target or {"broker": "redis://127.0.0.1:6379/0"},
                    parts=parts, sources=sources or [], broker_hosts=("127.0.0.1",))


def codes(report):
    return [(f.code, f.severity.label, f.subject) for f in report.findings]


def run(s, sel, **limits):
    return run_checks(s, Limits(**limits), select_checks(sel, None))


def test_queue_backlog_and_no_consumers():
    q = [QueueDepth("big", "redis", ready=1500, consumers=0),
         QueueDepth("mid", "redis", ready=150, consumers=2),
         QueueDepth("ok", "redis", ready=3, consumers=1),
         QueueDepth("x.reply.celery.pidbox", "redis", ready=5000, internal=True)]
    r = run(snap(queues=q), ["QUE001", "QUE002"])
    assert codes(r) == [("QUE001", "critical", "queue big"), ("QUE002", "critical", "queue big"),
                        ("QUE001", "warning", "queue mid")]
    assert codes(run(snap(queues=q), ["QUE001"], queue_warn=2000, queue_crit=5000)) == []


def test_skipped_when_inputs_missing():
    s = snap()
    s.parts["queues"] = Observed(error="the broker did not answer")
    r = run(s, ["QUE001", "SER002"])
    assert [x.code for x in r.skipped] == ["SER002", "QUE001"] or \
        {x.code for x in r.skipped} == {"QUE001", "SER002"}
    assert "the broker did not answer" in next(x.reason for x in r.skipped if x.code == "QUE001")
    assert r.findings == []


def test_not_applicable_by_broker_kind():
    r = run(snap(kind="amqp"), ["QUE003", "BRK001"])
    assert {x.code for x in r.not_applicable} == {"QUE003", "BRK001"}


def test_unacked_past_visibility_timeout():
    un = RedisUnacked(total=3, oldest_seconds=4000.0, per_queue={}, oldest_per_queue={})
    assert codes(run(snap(unacked=un), ["QUE003"])) == [
        ("QUE003", "warning", "unacked (Redis in-flight)")]
    app = {"broker_transport_options": {"visibility_timeout": 7200}}
    assert codes(run(snap(unacked=un, app=app), ["QUE003"])) == []


def test_workers_checks():
    nodes = [node("a@h", c=conf(task_acks_late=True)), node("a@h"), node("b@h", queues=()),
             node("c@h", c=conf(accept_content=["json", "pickle"]))]
    r = run(snap(nodes=nodes, expected=("a@h", "b@h", "c@h", "d@h")),
            ["WRK", "SER001", "SER003", "SRC005", "CFG001"])
    got = codes(r)
    assert ("SRC005", "warning", "worker d@h") in got
    assert ("WRK001", "warning", "worker a@h") in got
    assert ("WRK002", "warning", "worker b@h") in got
    assert ("WRK004", "warning", "worker a@h") in got
    assert ("SER001", "warning", "worker c@h") in got
    assert ("SER003", "warning", "setting accept_content") in got
    assert ("CFG001", "info", "worker a@h") in got
    drift = {f.subject for f in r.findings if f.code == "WRK003"}
    assert {"setting task_acks_late", "setting accept_content"} <= drift
    healthy = run(snap(nodes=[node("a@h"), node("b@h")], expected=("a@h", "b@h")),
                  ["WRK", "SER", "SRC", "CFG", "POOL002"])
    assert healthy.findings == []


def test_producer_serializer_not_accepted():
    r = run(snap(nodes=[node("a@h")], app={"task_serializer": "pickle"}), ["SER002"])
    assert codes(r) == [("SER002", "critical", "worker a@h")]
    assert run(snap(nodes=[node("a@h")], app={"task_serializer": "json"}), ["SER002"]).findings == []


def test_no_worker_replied():
    assert codes(run(snap(), ["SRC004"])) == [("SRC004", "critical", "workers")]


def test_redis_server_checks():
    srv = RedisServer("7.0.15", {"connected_clients": 9600, "maxclients": 10000,
                                 "rejected_connections": 3, "used_memory": 90, "maxmemory": 100},
                      {"maxmemory-policy": "allkeys-lru"}, None, "", "default")
    got = codes(run(snap(server=srv), ["BRK", "POOL001"]))
    assert ("BRK001", "critical", "redis maxmemory-policy") in got
    assert ("BRK002", "warning", "redis memory") in got
    assert ("POOL001", "critical", "redis clients") in got
    assert ("POOL001", "warning", "redis clients") in got
    fine = RedisServer("7", {"connected_clients": 5, "maxclients": 10000, "maxmemory": 0},
                       {"maxmemory-policy": "noeviction"}, None, "", "default")
    assert run(snap(server=fine), ["BRK", "POOL001"]).findings == []


def test_result_backend_checks():
    t = {"broker": "redis://h/0", "result_backend": "amqp://guest:***@h//"}
    amqp = BackendStatus(url="amqp://guest:***@h//", kind="amqp", reachable=True)
    assert codes(run(snap(backend=amqp, target=t), ["RES001"]))[0][:2] == ("RES001", "critical")
    same = BackendStatus(url="redis://h/0", kind="redis", reachable=True,
                         same_instance_as_broker=True, same_db_as_broker=True)
    t2 = {"broker": "redis://h/0", "result_backend": "redis://h/0"}
    assert codes(run(snap(backend=same, target=t2), ["RES002"]))[0][:2] == ("RES002", "warning")
    assert {x.code for x in run(snap(), ["RES001"]).not_applicable} == {"RES001"}


def test_sources_and_security():
    src = [SourceStatus("broker", "redis://h/0", False, "connection refused")]
    assert codes(run(snap(sources=src), ["SRC001"]))[0][:2] == ("SRC001", "critical")
    remote = snap(target={"broker": "redis://10.0.0.5:6379/0"})
    remote.broker_hosts = ("10.0.0.5",)
    assert codes(run(remote, ["SEC001"]))[0][:2] == ("SEC001", "warning")
    remote.target = {"broker": "amqp://u:***@10.0.0.5//"}
    assert codes(run(remote, ["SEC002"]))[0][:2] == ("SEC002", "warning")
    assert run(snap(), ["SEC"]).findings == []  # loopback


def test_security_from_the_servers_own_listeners():
    """Reached over loopback, but the server listens beyond it: what other hosts can do."""
    from celeryctl.snapshot import RabbitServer

    def redis_with(bind, protected, url="redis://127.0.0.1:6379/0"):
        s = snap(target={"broker": url})
        s.broker_hosts = ("127.0.0.1",)
        s.parts["redis_server"] = Observed(RedisServer("7.0", {}, {"bind": bind,
                                                                 "protected-mode": protected},
                                                       None, "", "default"))
        return s

    f = run(redis_with("* -::*", "no"), ["SEC"]).findings
    assert [(x.code, x.severity.label) for x in f] == [("SEC001", "critical")]
    assert f[0].evidence == {"bind": "* -::*", "protected-mode": "no"}
    # protected mode with no password: Redis refuses non-local clients itself
    assert run(redis_with("0.0.0.0", "yes"), ["SEC"]).findings == []
    assert run(redis_with("127.0.0.1 -::1", "no"), ["SEC"]).findings == []
    with_pw = redis_with("10.0.0.2 127.0.0.1", "yes", url="redis://:***@127.0.0.1:6379/0")
    assert codes(run(with_pw, ["SEC"])) == [("SEC002", "warning", with_pw.target["broker"].join(
        ("broker ", "")))]
    no_config = redis_with("x", "no")
    no_config.parts["redis_server"] = Observed(RedisServer("7.0", {}, None, "CONFIG refused",
                                                           "", "default"))
    assert run(no_config, ["SEC"]).findings == []  # managed Redis: cannot tell, says nothing

    s = snap(kind="amqp", target={"broker": "amqp://127.0.0.1:5672//"})
    s.broker_hosts = ("127.0.0.1",)
    listeners = [{"node": "rabbit@a", "protocol": "amqp", "ip_address": "::", "port": 5672},
                 {"node": "rabbit@a", "protocol": "http", "ip_address": "::", "port": 15672}]
    s.parts["rabbit_server"] = Observed(RabbitServer("3.10.8", "c", "3.10.8", {}, [],
                                                     listeners=listeners))
    f = run(s, ["SEC"]).findings
    assert [x.code for x in f] == ["SEC003"] and f[0].evidence["listeners"] == listeners[:1]
    s.target = {"broker": "amqp://ops:***@127.0.0.1:5672//"}
    assert [x.code for x in run(s, ["SEC"]).findings] == ["SEC002"]
    listeners[0]["ip_address"] = "127.0.0.1"
    assert run(s, ["SEC"]).findings == []


def test_stale_connections():
    conns = [Connection("redis", f"10.0.0.1:{i}", idle_seconds=900, role="client")
             for i in range(6)] + [Connection("redis", "10.0.0.1:99", idle_seconds=900,
                                              role="consumer")]
    r = run(snap(conns=conns), ["CON001"], stale_after=300)
    assert codes(r) == [("CON001", "warning", "connections")]
    assert len(r.findings[0].evidence["connections"]) == 6
    assert run(snap(conns=conns[-1:]), ["CON001"]).findings == []


def test_select_ignore_and_severity():
    assert {c.family for c in select_checks(["QUE"], None)} == {"QUE"}
    assert "QUE001" not in {c.code for c in select_checks(None, ["queue-backlog"])}
    with pytest.raises(KeyError):
        select_checks(["NOPE999"], None)
    assert Severity.parse("warning") is Severity.WARNING


def test_parse_envelope_never_touches_the_body():
    import base64
    import json
    import pickle

    from celeryctl.collect.redis import parse_envelope

    body = base64.b64encode(pickle.dumps(("boom",))).decode()
    env = {"body": body, "content-type": "application/x-python-serialize",
           "content-encoding": "binary", "headers": {"task": "t.x", "id": "1", "retries": 2},
           "properties": {"priority": 0, "delivery_info": {"redelivered": True}}}
    m = parse_envelope("q", 0, json.dumps(env).encode())
    assert (m.content_type, m.task, m.retries, m.redelivered) == \
        ("application/x-python-serialize", "t.x", 2, True)
    for garbage in (b"\xff\xfe not json", b"[1, 2]", b""):
        m = parse_envelope("q", 3, garbage)
        assert m.error and m.content_type is None


def test_queued_content_not_accepted():
    from celeryctl.snapshot import MessageSample

    nodes = [node("a@h", queues=("q",))]
    q = [QueueDepth("q", "redis", ready=3, consumers=1, consumer_workers=("a@h",))]
    s = snap(nodes=nodes, queues=q)
    s.parts["samples"] = Observed({"q": [
        MessageSample("q", 0, "application/x-python-serialize", task="t.a"),
        MessageSample("q", 0, "application/json", task="t.b"),
        MessageSample("q", 0, "application/data", task="t.signed")]})
    r = run(s, ["SER004"])
    assert codes(r) == [("SER004", "critical", "queue q")]
    assert r.findings[0].evidence["not_accepted"] == 1
    s.parts["samples"] = Observed({"q": [MessageSample("q", 0, "application/json")]})
    assert run(s, ["SER004"]).findings == []
    s.parts["samples"] = Observed(error="on RabbitMQ ... not sampled")
    assert [x.code for x in run(s, ["SER004"]).skipped] == ["SER004"]


def test_second_batch_queue_checks():
    import datetime

    q = [QueueDepth("x.reply.celery.pidbox", "redis", ready=300, internal=True, consumers=0),
         QueueDepth("e5c92d88-5caa-33d4-a25d-c26f80dfa699", "rabbitmq", ready=4, consumers=0,
                    internal=True),
         QueueDepth("celery", "rabbitmq", ready=1, consumers=1, arguments={}),
         QueueDepth("dl", "rabbitmq", ready=0, consumers=1,
                    arguments={"x-dead-letter-exchange": "dlx"})]
    assert codes(run(snap(queues=q), ["QUE004"])) == [("QUE004", "warning", "pidbox reply queues")]
    got = codes(run(snap(kind="amqp", queues=q), ["QUE005", "QUE006"]))
    assert ("QUE005", "warning", "rpc result queues") in got
    assert ("QUE006", "info", "dead-lettering") in got
    far = (datetime.datetime.now(datetime.timezone.utc)
           + datetime.timedelta(hours=3)).isoformat()
    n = WorkerNode("a@h", {"scheduled": [{"eta": far, "request": {"id": "1", "name": "t"}}],
                           "stats": {"broker": {"transport_options":
                                                {"visibility_timeout": 3600}}}})
    s = snap(nodes=[n])
    import time

    s.taken_at = time.time()
    assert codes(run(s, ["QUE007"])) == [("QUE007", "warning", "worker a@h")]
    n2 = WorkerNode("a@h", {"scheduled": [{"eta": far, "request": {}}],
                            "stats": {"broker": {"transport_options":
                                                 {"visibility_timeout": 36000}}}})
    assert run(snap(nodes=[n2]), ["QUE007"]).findings == []


def test_second_batch_broker_and_config_checks():
    srv = RedisServer("7", {"evicted_keys": 7}, {"save": "", "appendonly": "no", "timeout": "5"},
                      None, "", "default")
    got = codes(run(snap(server=srv), ["BRK004", "BRK005", "BRK006"]))
    assert [c[0] for c in got] == ["BRK005", "BRK006", "BRK004"] or \
        {c[0] for c in got} == {"BRK004", "BRK005", "BRK006"}
    ok = RedisServer("7", {"evicted_keys": 0}, {"save": "3600 1", "appendonly": "yes",
                                                "timeout": "0"}, None, "", "default")
    assert run(snap(server=ok), ["BRK004", "BRK005", "BRK006"]).findings == []
    c = conf(task_acks_late=True, task_time_limit=7200, timezone="Europe/Paris",
             broker_connection_retry_on_startup=None, broker_pool_acquire_timeout=None)
    got = {x[0] for x in codes(run(snap(nodes=[node("a@h", c=c)]),
                                   ["CFG003", "CFG004", "CFG005", "POOL004"]))}
    assert got == {"CFG003", "CFG004", "CFG005", "POOL004"}


def test_pool_saturated_and_registered_differ():
    busy = WorkerNode("a@h", {"active": [{}, {}], "stats": {"pool": {"max-concurrency": 2}},
                              "active_queues": [{"name": "q"}], "registered": ["t.a", "t.b"]})
    other = WorkerNode("b@h", {"active": [{}], "stats": {"pool": {"max-concurrency": 2}},
                               "active_queues": [{"name": "q"}], "registered": ["t.a"]})
    q = [QueueDepth("q", "redis", ready=500, consumers=1, consumer_workers=("a@h",))]
    assert codes(run(snap(nodes=[busy, other], queues=q), ["WRK005", "WRK006"])) == [
        ("WRK005", "warning", "queue q"), ("WRK006", "warning", "queue q")]
    q2 = [QueueDepth("q", "redis", ready=500, consumers=2, consumer_workers=("a@h", "b@h"))]
    assert codes(run(snap(nodes=[busy, other], queues=q2), ["WRK005"])) == []


def test_rabbitmq_headroom_and_guest():
    from celeryctl.snapshot import RabbitServer

    rs = RabbitServer("3.10.8", "c", "3.10.8", {}, [
        {"name": "rabbit@a", "running": True, "fd_used": 990, "fd_total": 1000,
         "sockets_used": 10, "sockets_total": 900}])
    s = snap(kind="amqp")
    s.parts["rabbit_server"] = Observed(rs)
    assert codes(run(s, ["POOL003"])) == [("POOL003", "critical", "node rabbit@a")]
    s.target = {"broker": "amqp://10.1.1.1:5672//"}
    s.broker_hosts = ("10.1.1.1",)
    assert codes(run(s, ["SEC003"]))[0][:2] == ("SEC003", "warning")
    s.target = {"broker": "amqp://ops:***@10.1.1.1:5672//"}
    assert run(s, ["SEC003"]).findings == []


def test_growth_and_time_to_drain():
    from celeryctl.snapshot import QueueGrowth, growth_from_rates, growth_from_samples

    before = [QueueDepth("a", "redis", ready=100), QueueDepth("b", "redis", ready=100),
              QueueDepth("r.reply.celery.pidbox", "redis", ready=1, internal=True)]
    after = [QueueDepth("a", "redis", ready=150), QueueDepth("b", "redis", ready=80),
             QueueDepth("new", "redis", ready=5)]
    g = growth_from_samples(before, after, 2.0)
    assert g["a"].rate_per_second == 25 and g["a"].seconds_to_drain is None
    assert g["b"].rate_per_second == -10 and g["b"].seconds_to_drain == 8.0
    assert "new" not in g and "r.reply.celery.pidbox" not in g
    rq = [QueueDepth("q", "rabbitmq", ready=10, publish_rate=5.0, ack_rate=1.0)]
    assert growth_from_rates(rq)["q"].rate_per_second == 4.0
    assert QueueGrowth("z", 0, 3.0, "samples").seconds_to_drain == 0.0
    s = snap()
    s.parts["growth"] = Observed(g)
    assert codes(run(s, ["QUE008"])) == [("QUE008", "warning", "queue a")]
    s.parts["growth"] = Observed(error="one sample only")
    assert [x.code for x in run(s, ["QUE008"]).skipped] == ["QUE008"]


def test_third_batch_checks():
    from celeryctl.snapshot import RabbitServer

    conns = [Connection("redis", f"1.1.1.1:{i}", role="client", worker="a@h",
                        worker_match="exact") for i in range(40)] + \
            [Connection("redis", "2.2.2.2:1", role="pubsub"),
             Connection("redis", "1.1.1.1:99", role="pubsub", worker="a@h", worker_match="exact")]
    got = codes(run(snap(nodes=[node("a@h")], conns=conns), ["CON002", "CON003"]))
    assert got == [("CON002", "warning", "worker a@h"), ("CON003", "info", "pub/sub clients")]
    assert run(snap(nodes=[node("a@h")], conns=conns[-1:]), ["CON002", "CON003"]).findings == []

    q = [QueueDepth("celery", "rabbitmq", ready=0, consumers=1, arguments={"x-max-priority": 5}),
         QueueDepth("celeryev.1", "rabbitmq", ready=9, consumers=0, internal=True, arguments={}),
         QueueDepth("w@h.celery.pidbox", "rabbitmq", ready=0, consumers=1, internal=True,
                    arguments={"x-expires": 10000}),
         QueueDepth("e5c92d88-5caa-33d4-a25d-c26f80dfa699", "rabbitmq", ready=0, consumers=2,
                    internal=True)]
    got = codes(run(snap(kind="amqp", queues=q, app={"task_queue_max_priority": 10}),
                    ["QUE009", "QUE010", "RES004", "CFG006"]))
    assert ("QUE009", "warning", "queue celery") in got
    assert ("QUE010", "warning", "control and event queues") in got
    assert ("RES004", "warning", "queue e5c92d88-5caa-33d4-a25d-c26f80dfa699") in got
    assert ("CFG006", "info", "setting broker_transport_options") in got
    app_ok = {"task_queue_max_priority": 5, "broker_transport_options": {"confirm_publish": True}}
    got = codes(run(snap(kind="amqp", queues=q[:1], app=app_ok), ["QUE009", "CFG006"]))
    assert got == []

    s = snap(kind="amqp")
    s.parts["rabbit_server"] = Observed(RabbitServer("3", "c", "3", {}, [
        {"name": "rabbit@a", "running": True, "partitions": ["rabbit@b"]}]))
    assert codes(run(s, ["BRK007"])) == [("BRK007", "critical", "node rabbit@a")]

    s = snap()
    s.parts["rss_growth"] = Observed({"a@h": (100, 200, False), "b@h": (100, 200, True),
                                      "c@h": (100, 100, False)})
    assert codes(run(s, ["WRK007"])) == [("WRK007", "warning", "worker a@h")]


def test_fourth_batch_checks():
    import datetime
    import time

    from celeryctl.snapshot import RabbitServer

    s = snap(kind="amqp", conns=[Connection("rabbitmq", f"h:{i}") for i in range(9)],
             queues=[QueueDepth("celery", "rabbitmq", ready=0, consumers=1)],
             target={"broker": "amqp://h//", "vhost": "/"})
    s.parts["rabbit_server"] = Observed(RabbitServer("3", "c", "3", {}, [],
                                                     {"/": {"max-connections": 10}}))
    assert codes(run(s, ["POOL005"])) == [("POOL005", "warning", "vhost /")]
    s.parts["rabbit_server"] = Observed(RabbitServer("3", "c", "3", {}, [], {}))
    assert run(s, ["POOL005"]).findings == []

    t = {"broker": "redis://h/0", "result_backend": "redis://h/1"}
    b = BackendStatus(url="redis://h/1", kind="redis", reachable=True, result_keys_sampled=50,
                      result_keys_without_ttl=12)
    assert codes(run(snap(backend=b, target=t), ["RES005"]))[0][:2] == ("RES005", "warning")
    b0 = BackendStatus(url="redis://h/1", kind="redis", reachable=True, result_keys_sampled=50,
                       result_keys_without_ttl=0)
    assert run(snap(backend=b0, target=t), ["RES005"]).findings == []

    eta = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)).isoformat()
    n = WorkerNode("a@h", {"scheduled": [{"eta": eta, "request": {"id": "1", "name": "t"}}]})
    s = snap(kind="amqp", nodes=[n])
    s.taken_at = time.time()
    assert codes(run(s, ["QUE011"])) == [("QUE011", "warning", "worker a@h")]
    assert run(s, ["QUE011"], consumer_timeout=10800).findings == []


def test_result_serializer_and_expiry_from_workers():
    nodes = [node("a@h", c=conf(result_serializer="pickle", result_expires=None,
                                result_backend="redis://h/1"))]
    got = codes(run(snap(nodes=nodes, app={"accept_content": ["json"]}), ["SER005", "RES003"]))
    assert ("SER005", "critical", "worker a@h") in got
    assert ("RES003", "warning", "setting result_expires (worker a@h)") in got
    ok = [node("a@h", c=conf(result_serializer="json", result_expires=86400,
                             result_backend="redis://h/1"))]
    assert run(snap(nodes=ok, app={"accept_content": ["json"]}), ["SER005", "RES003"]).findings == []
    s = snap()
    s.parts["workers"] = Observed(error="broker down")
    r = run(s, ["RES003"])
    assert [x.code for x in r.skipped] == ["RES003"] and "neither" in r.skipped[0].reason


def test_rss_growth_is_derived_from_two_stats_replies():
    from celeryctl.snapshot import rss_growth

    def view(*nodes):
        return WorkersView(nodes=tuple(WorkerNode(n, {"stats": {
            "rusage": {"maxrss": rss}, "pool": {"max-tasks-per-child": mtpc}}})
            for n, rss, mtpc in nodes))

    before = view(("a@h", 100, None), ("b@h", 100, 50), ("gone@h", 1, None))
    after = view(("a@h", 180, None), ("b@h", 120, 50), ("new@h", 5, None))
    assert rss_growth(before, after) == {"a@h": (100, 180, False), "b@h": (100, 120, True)}


def versioned(name, celery, kombu, c=None, queues=("celery",)):
    n = node(name, queues=queues, c=c)
    replies = dict(n.replies, report={"celery": celery, "kombu": kombu, "python": "3.11.7"})
    return WorkerNode(name, replies)


def with_report(s):
    s.parts["workers"] = Observed(dataclasses.replace(s.workers,
                                                      methods=(*s.workers.methods, "report")))
    return s


def test_mixed_celery_versions_kombu_json_break():
    nodes = [versioned("c52@h", "5.2.7", "5.2.4"), versioned("c53@h", "5.3.6", "5.3.7"),
             versioned("c57@h", "5.7.0", "5.7.0"), node("quiet@h")]
    r = run(with_report(snap(nodes=nodes)), ["WRK008"])
    assert codes(r) == [("WRK008", "warning", "kombu json"),
                        ("WRK008", "info", "celery versions")]
    warn, info = r.findings
    assert "c52@h" in warn.message and "__type__" in warn.message
    assert warn.evidence == {"kombu_before_5_3": ["c52@h"],
                             "kombu_5_3_or_later": ["c53@h", "c57@h"]}
    assert info.message == ("workers run 3 Celery versions: 5.2.7 (1), 5.3.6 (1), 5.7.0 (1); "
                            "kombu 5.2.4 (1), 5.3.7 (1), 5.7.0 (1); 1 unknown")
    assert info.evidence["unknown"] == ["quiet@h"]


def test_mixed_celery_versions_without_a_known_break_is_info_only():
    nodes = [versioned("a@h", "5.3.6", "5.3.7"), versioned("b@h", "5.5.3", "5.5.4")]
    assert codes(run(with_report(snap(nodes=nodes)), ["WRK008"])) == [
        ("WRK008", "info", "celery versions")]
    # kombu < 5.3 next to >= 5.3, but no worker takes JSON: no JSON to misread
    pickle_only = conf(accept_content=["pickle"])
    nodes = [versioned("a@h", "5.2.7", "5.2.4", c=pickle_only),
             versioned("b@h", "5.7.0", "5.7.0", c=pickle_only)]
    assert [f.severity for f in run(with_report(snap(nodes=nodes)), ["WRK008"]).findings] == [
        Severity.INFO]


def test_one_celery_version_is_not_a_finding():
    nodes = [versioned("a@h", "5.7.0", "5.7.0"), versioned("b@h", "5.7.0", "5.7.0")]
    r = run(with_report(snap(nodes=nodes)), ["WRK008"])
    assert r.findings == [] and r.ran == ["WRK008"]


def test_mixed_celery_versions_skipped_without_report():
    nodes = [node("a@h"), node("b@h")]
    r = run(snap(nodes=nodes), ["WRK008"])  # `report` not asked (an older snapshot)
    assert [x.code for x in r.skipped] == ["WRK008"] and "report" in r.skipped[0].reason
    r = run(with_report(snap(nodes=nodes)), ["WRK008"])  # asked, nobody named a version
    assert [x.code for x in r.skipped] == ["WRK008"] and "named" in r.skipped[0].reason
    s = snap()
    s.parts["workers"] = Observed(error="broker down")
    assert [x.code for x in run(s, ["WRK008"]).skipped] == ["WRK008"]


def test_mixed_celery_versions_quorum_queues_on_rabbitmq():
    nodes = [versioned("c53@h", "5.3.6", "5.3.7"), versioned("c55@h", "5.5.3", "5.5.4")]
    qs = [QueueDepth("orders", "rabbitmq", ready=0, type="quorum"),
          QueueDepth("celery", "rabbitmq", ready=0, type="classic")]
    got = codes(run(with_report(snap(kind="amqp", nodes=nodes, queues=qs)), ["WRK008"]))
    assert got == [("WRK008", "info", "celery versions"), ("WRK008", "info", "quorum queues")]
    f = run(with_report(snap(kind="amqp", nodes=nodes, queues=qs)), ["WRK008"]).findings[1]
    assert f.evidence == {"workers": ["c53@h"], "quorum_queues": ["orders"]}
    # the same cluster on Redis has no quorum queues to speak of
    assert codes(run(with_report(snap(nodes=nodes, queues=qs)), ["WRK008"])) == [
        ("WRK008", "info", "celery versions")]


def test_config_drift_ignores_settings_older_workers_do_not_have():
    # a 5.2 worker's conf has no task_default_queue_type (added in 5.5): not drift
    old = {k: v for k, v in conf().items()}
    new = conf(task_default_queue_type="classic", broker_connection_retry_on_startup=True)
    nodes = [node("c52@h", c=old), node("c55@h", c=new), node("c57@h", c=dict(new))]
    assert codes(run(snap(nodes=nodes), ["WRK003", "SER003"])) == []
    # ... but workers that do have it and disagree drift; the old one is named as not reporting
    nodes[2] = node("c57@h", c=conf(task_default_queue_type="quorum"))
    r = run(snap(nodes=nodes), ["WRK003"])
    assert codes(r) == [("WRK003", "warning", "setting task_default_queue_type")]
    assert r.findings[0].evidence["not_reported"] == ["c52@h"]
    assert [g["count"] for g in r.findings[0].evidence["groups"]] == [1, 1]
    # a setting only one worker reports has nothing to be compared with
    nodes = [node("c52@h", c=old), node("c57@h", c=conf(task_default_queue_type="quorum"))]
    assert codes(run(snap(nodes=nodes), ["WRK003"])) == []


def test_purge_left_messages_set_aside():
    aside = QueueDepth("_celeryctl.purge.abc", "redis", ready=500, internal=True,
                       discovered_by=("interrupted purge",),
                       arguments={"purge_of": "reports", "token": "abc", "pid": 42,
                                  "host": "h1", "set_aside_seconds": 600.0})
    rep = run(snap(queues=[aside, QueueDepth("reports", "redis", ready=0, consumers=0)]),
              ["QUE014"])
    [f] = rep.findings
    assert f.severity is Severity.WARNING and f.subject == "queue reports"
    assert f.message == ("500 messages set aside by a purge that never finished (pid 42 on "
                         "h1, 10m ago)")
    assert "restore --set-aside" in f.hint
    assert not run(snap(queues=[QueueDepth("reports", "redis", ready=3)]), ["QUE014"]).findings
