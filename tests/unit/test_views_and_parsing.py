from __future__ import annotations

import json
import sys

from celeryctl.collect.redis import (
    Binding,
    RedisDiscovery,
    RedisLayout,
    build_queue_depths,
    client_from_fields,
    parse_client_fields,
)
from celeryctl.collect.workers import _assemble
from celeryctl.knowledge import classify_queue
from celeryctl.snapshot import Connection, RedisUnacked, WorkerNode, WorkersView, to_jsonable
from celeryctl.status import ExitStatus, worst
from celeryctl.views import attribute_connections, duplicate_names, queue_rows, worker_rows

STATS = {"pid": 10, "uptime": 30, "prefetch_count": 8, "total": {"a": 3, "b": 2},
         "pool": {"implementation": "celery.concurrency.prefork:TaskPool", "max-concurrency": 2,
                  "max-tasks-per-child": None},
         "rusage": {"maxrss": 50000}}


def test_worker_rows_with_missing_and_duplicates():
    view = WorkersView(
        nodes=(WorkerNode("a@h", {"stats": STATS, "active": [{}], "reserved": [],
                                   "scheduled": [], "active_queues": [{"name": "celery"}]}),
               WorkerNode("a@h", {"stats": STATS})),
        methods=("stats", "active", "reserved", "scheduled", "active_queues"),
        expected=("a@h", "b@h"), expected_source="redis binding")
    rows = worker_rows(view)
    assert [r["name"] for r in rows] == ["a@h", "a@h", "b@h"]
    assert rows[0]["pool"] == "prefork" and rows[0]["processed"] == 5 and rows[0]["active"] == 1
    assert rows[0]["queues"] == ["celery"] and rows[1]["queues"] is None
    assert rows[1]["missing_replies"] == ["active", "reserved", "scheduled", "active_queues"]
    assert rows[2]["ok"] is False and "expected" in rows[2]["error"]
    assert duplicate_names(view) == ["a@h"]
    json.dumps(to_jsonable(view))


def test_assemble_keeps_duplicate_node_names_apart():
    replies = {"ping": [("x@h", {"ok": "pong"}), ("x@h", {"ok": "pong"}), ("y@h", {"ok": 1})],
               "stats": [("x@h", {"pid": 1}), ("y@h", {"pid": 3}), ("x@h", {"pid": 2})]}
    nodes = _assemble(("ping", "stats"), replies)
    assert [n.name for n in nodes] == ["x@h", "x@h", "y@h"]
    assert [n.replies["stats"]["pid"] for n in nodes] == [1, 2, 3]


def test_client_list_parsing_and_roles():
    line = ("id=4 addr=10.0.0.5:43158 laddr=10.0.0.9:6379 fd=7 name= age=30 idle=0 flags=b db=0 "
            "sub=0 psub=0 cmd=brpop user=default future-field=1")
    c = client_from_fields(parse_client_fields(line))
    assert c.role == "consumer" and c.age_seconds == 30 and c.db == 0 and c.name is None
    assert c.raw["future-field"] == "1"
    p = client_from_fields(parse_client_fields("id=8 addr=a:1 flags=P psub=1 cmd=psubscribe"))
    assert p.role == "pubsub"
    me = client_from_fields(parse_client_fields("id=9 addr=a:2 cmd=client|list"), own_id="9")
    assert me.role == "celeryctl"
    assert client_from_fields(parse_client_fields("garbage line")) is None


def test_discovery_and_lookup():
    d = RedisDiscovery(layout=RedisLayout(), bindings=[
        Binding("celery", "celery", "", "celery"),
        Binding("celery.pidbox", "", "", "w1@h.celery.pidbox"),
        Binding("reply.celery.pidbox", "oid", "", "oid.reply.celery.pidbox"),
        Binding("celeryev", "#", "", "celeryev.123"),
        Binding("tasks", "a", "", "qa"),
        Binding("tasks", "b", "", "qb"),
    ])
    assert d.pidbox_nodes == ["w1@h"]
    assert d.queue_names() == {"celery": False, "oid.reply.celery.pidbox": True, "qa": False,
                               "qb": False}
    assert d.resolve("", "anything") == ["anything"]
    assert d.resolve("tasks", "b") == ["qb"]
    assert d.resolve("nope", "x") == []


def test_layout_keys():
    lay = RedisLayout(prefix="p:", sep=":", priority_steps=(0, 5))
    assert lay.key("q") == b"p:q" and lay.key("q", 5) == b"p:q:5"
    assert RedisLayout().key("q", 3) == b"q\x06\x163"
    opts = RedisLayout.from_options({"global_keyprefix": "********"})  # masked by inspect conf
    assert opts.prefix == "" and opts.prefix_source == "default"


def test_queue_depths_unknown_vs_zero():
    names = {"a": (False, ("binding",)), "b": (False, ("flag",))}
    depths = {"a": {"0": 2, "3": 1}, "b": {"0": 0, "3": 0}}
    rows = build_queue_depths(names, depths, None, None)
    assert rows[0].ready == 3 and rows[0].unacked is None and rows[0].consumers is None
    assert rows[1].exists is False
    un = RedisUnacked(total=2, oldest_seconds=5.0, per_queue={"a": 2}, oldest_per_queue={"a": 5.0})
    rows = build_queue_depths(names, depths, un, {"a": ["w@h"]})
    assert rows[0].unacked == 2 and rows[0].consumers == 1 and rows[1].consumers == 0
    assert rows[1].unacked == 0
    shown = queue_rows(rows, include_internal=False)
    assert [r["name"] for r in shown] == ["a", "b"]


def test_classify_queue():
    assert classify_queue("w@h.celery.pidbox") == "pidbox"
    assert classify_queue("5c1d-x.reply.celery.pidbox") == "pidbox-reply"
    assert classify_queue("celeryev.9f1c") == "events"
    assert classify_queue("e5c92d88-5caa-33d4-a25d-c26f80dfa699") == "result-rpc"
    assert classify_queue("e5c92d885caa33d4a25dc26f80dfa699") == "result-amqp"
    assert classify_queue("emails") == "task"


def test_attribution_by_host_and_name():
    view = WorkersView(nodes=(WorkerNode("w1@web1"), WorkerNode("w2@web2"),
                              WorkerNode("w3@web2")))
    hosts = {"web1": ["10.0.0.1"], "web2": ["10.0.0.2"]}
    conns = [Connection("redis", "10.0.0.1:5"), Connection("redis", "10.0.0.2:6"),
             Connection("redis", "10.0.0.3:7"), Connection("redis", "10.0.0.2:8", name="w3@web2"),
             Connection("rabbitmq", "10.0.0.9:9", worker="w1@web1", worker_match="exact")]
    out = attribute_connections(conns, view, hosts)
    assert out[0].worker == "w1@web1" and out[0].worker_match == "host"
    assert out[1].worker == "w2@web2, w3@web2" and "ambiguous" in out[1].worker_match
    assert out[2].worker is None
    assert out[3].worker == "w3@web2" and out[3].worker_match == "exact"
    assert out[4].worker == "w1@web1"


def test_worst_status():
    assert worst(ExitStatus.OK, ExitStatus.WARNING) == ExitStatus.WARNING
    assert worst(ExitStatus.UNKNOWN, ExitStatus.CRITICAL) == ExitStatus.CRITICAL
    assert worst() == ExitStatus.OK


def test_cli_module_imports_nothing_heavy():
    """`celeryctl --help` stays fast: the CLI module imports neither celery, kombu, redis,
    pika, requests nor rich."""
    import subprocess

    code = ("import sys; import celeryctl.cli; "
            "heavy = [m for m in ('celery', 'kombu', 'redis', 'pika', 'requests', 'rich') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lab_state_tolerates_unknown_fields(tmp_path):
    from celeryctl.lab import lab

    (tmp_path / "state.json").write_text(json.dumps({
        "dir": str(tmp_path), "broker": "redis", "workers": [], "future_field": 1,
        "redis": {"kind": "redis", "name": "r", "pid": 1, "marker": "x", "log": "l",
                  "info": {}, "newer": True}}))
    st = lab.load(tmp_path)
    assert st is not None and st.broker == "redis"
    assert [p.name for p in st.procs()] == ["r"]
    (tmp_path / "state.json").write_text("[]")
    assert lab.load(tmp_path) is None


def test_attribution_known_local_owner_that_is_not_a_worker():
    view = WorkersView(nodes=(WorkerNode("w1@h", {"stats": {"pid": 100,
                                                            "pool": {"processes": [101]}}}),))
    conns = [Connection("redis", "127.0.0.1:5001"), Connection("redis", "127.0.0.1:5002"),
             Connection("redis", "127.0.0.1:5003")]
    out = attribute_connections(conns, view, {"h": ["127.0.0.1"]},
                                {"127.0.0.1:5001": 101, "127.0.0.1:5002": 999})
    assert (out[0].worker, out[0].worker_match) == ("w1@h", "exact")  # a pool child
    assert out[1].worker is None and "not a worker" in out[1].worker_match
    assert out[2].worker == "w1@h" and out[2].worker_match == "host"  # owner unknown


def test_five_thousand_client_list_lines_parse():
    from celeryctl.collect.redis import client_from_fields, parse_client_fields

    lines = [f"id={i} addr=10.0.{i // 250}.{i % 250}:{40000 + i} laddr=10.0.0.1:6379 fd={i} "
             f"name= age={i} idle={i % 600} flags={'b' if i % 10 == 0 else 'N'} db=0 sub=0 "
             f"psub={1 if i % 97 == 0 else 0} ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 "
             f"obl=0 oll=0 omem=0 tot-mem=20000 events=r "
             f"cmd={'brpop' if i % 10 == 0 else 'ping'} user=default redir=-1 resp=2"
             for i in range(5000)]
    conns = [client_from_fields(parse_client_fields(x)) for x in lines]
    assert len(conns) == 5000
    roles = {}
    for c in conns:
        roles[c.role] = roles.get(c.role, 0) + 1
    assert roles == {"consumer": 494, "pubsub": 52, "client": 4454}  # pub/sub wins
    assert conns[4999].idle_seconds == 4999 % 600 and conns[4999].address == "10.0.19.249:44999"


REPORT_52 = ("\nsoftware -> celery:5.2.7 (dawn-chorus) kombu:5.2.4 py:3.11.7\n"
             "            billiard:3.6.4.0 redis:4.3.4\n"
             "platform -> system:Linux arch:64bit, ELF\n"
             "            kernel version:6.1.0 imp:CPython\n"
             "loader   -> celery.loaders.app.AppLoader\n"
             "settings -> transport:redis results:disabled\n\n"
             "broker_url: 'redis://:********@10.0.0.5:6379/0'\npy: 'not-a-version'\n")


def test_report_is_reduced_to_versions_and_the_settings_dropped():
    from celeryctl.collect.workers import report_versions

    v = report_versions({"ok": REPORT_52})
    assert v == {"celery": "5.2.7", "codename": "dawn-chorus", "kombu": "5.2.4",
                 "python": "3.11.7", "billiard": "3.6.4.0", "driver": "redis:4.3.4",
                 "implementation": "CPython"}
    amqp = REPORT_52.replace("redis:4.3.4", "py-amqp:5.1.1")
    assert report_versions({"ok": amqp})["driver"] == "py-amqp:5.1.1"
    assert report_versions({"error": "no such method"}) == {} == report_versions(None)
    assert report_versions({"ok": "garbage"}) == {}
    assert "broker_url" not in json.dumps(v)


def test_pool_named_by_stats_or_inferred_from_a_celery_52_stats_shape():
    from celeryctl.views import pool_name

    assert pool_name(STATS) == ("prefork", "stats.pool.implementation")
    assert pool_name({"pool": {"implementation": "my.pools:Custom"}})[0] == "my.pools:Custom"
    shapes = {  # Celery 5.2.7's `stats`.pool per pool (celery/concurrency/*.py `_get_info`)
        "prefork": {"max-concurrency": 2, "processes": [11, 12], "max-tasks-per-child": "N/A",
                    "put-guarded-by-semaphore": False, "timeouts": [0, 0], "writes": {}},
        "threads": {"max-concurrency": 2, "threads": 0},
        "solo": {"max-concurrency": 1, "processes": [10], "max-tasks-per-child": None,
                 "put-guarded-by-semaphore": True, "timeouts": []},
        "eventlet": {"max-concurrency": 100, "free-threads": 99, "running-threads": 1},
        "gevent": {"max-concurrency": 100},
    }
    for want, pool in shapes.items():
        assert pool_name({"pid": 10, "pool": pool}) == (
            want, "inferred from stats.pool (Celery <= 5.2)"), want
    assert pool_name({}) == (None, None)
    assert pool_name({"pid": 10, "pool": {"max-concurrency": 2, "mystery": 1}}) == (None, None)


def test_worker_rows_carry_versions():
    from celeryctl.collect.workers import report_versions

    view = WorkersView(
        nodes=(WorkerNode("old@h", {"stats": {"pid": 1, "pool": {"max-concurrency": 2,
                                                                  "threads": 0}},
                                    "report": report_versions({"ok": REPORT_52})}),
               WorkerNode("new@h", {"stats": STATS})),
        methods=("stats", "report"), expected=("gone@h", "new@h", "old@h"),
        expected_source="redis binding")
    rows = worker_rows(view)
    # replying workers by name (stable between runs), then the silent ones
    assert [(r["name"], r["celery_version"], r["kombu_version"], r["pool"]) for r in rows] == [
        ("new@h", None, None, "prefork"), ("old@h", "5.2.7", "5.2.4", "threads"),
        ("gone@h", None, None, None)]
    assert rows[1]["python_version"] == "3.11.7" and rows[0]["missing_replies"] == ["report"]
    assert set(rows[1]) == set(rows[2])  # silent workers have every key too
