"""Scale on real servers: 16 workers seen by `workers` and `doctor` (which still return as
soon as all answered) with a drift finding that stays readable; Redis Sentinel resolving the
current master across a real failover. Wall-time and memory ratios are in benchmarks/
(bench_scale.py, bench_workers.py --workers 16), not here."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from celeryctl.lab import lab
from celeryctl.lab import servers as s
from tests.conftest import run_json

pytestmark = [pytest.mark.redis, pytest.mark.workers]
H = socket.gethostname()


def test_sixteen_workers_all_seen_early_with_grouped_drift(labdir):
    server = s.start_redis(labdir, name=f"redis-16-{time.monotonic_ns()}")
    url = server.info["url"]
    procs = []
    try:
        for i in range(16):
            env = {"CELERYCTL_LAB_PREFETCH": "1"} if i >= 12 else {}
            procs.append(s.start_worker(labdir, url, f"sw{i:02d}@%h", queues="celery",
                                        pool="threads", concurrency=1, env=env, wait=False))
        end = time.monotonic() + 120
        while time.monotonic() < end and not all(
                " ready." in Path(p.log).read_text(errors="replace") for p in procs
                if Path(p.log).exists()) or not all(Path(p.log).exists() for p in procs):
            time.sleep(0.5)
        code, doc, err, _ = run_json("workers", "--broker", url, "--timeout", "5")
        assert code == 0, err
        assert len(doc["workers"]) == 16 and doc["missing"] == []
        wsrc = next(x for x in doc["sources"] if x["name"] == "workers")
        assert "returned early" in wsrc["detail"], wsrc
        code, doc, err, _ = run_json("doctor", "--broker", url, "--timeout", "5",
                                     "--select", "WRK003")
        drift = [f for f in doc["findings"] if f["subject"] == "setting worker_prefetch_multiplier"]
        assert drift, doc
        assert drift[0]["message"].endswith("12 with 4; 4 with 1")
        groups = drift[0]["evidence"]["groups"]
        assert [g["count"] for g in groups] == [12, 4]
        assert len(groups[0]["workers"]) == 6 and groups[0]["workers"][-1] == "... 7 more"
        wsrc = next(x for x in doc["sources"] if x["name"] == "workers")
        assert "16 replied of 16 expected" in wsrc["detail"]
    finally:
        for p in procs:
            p.stop(timeout=5)
        server.stop()


def test_sentinel_follows_a_real_failover(tmp_path):
    import redis

    st = lab.up(tmp_path / "lab", scenario="sentinel-healthy", rabbitmq=False,
                progress=lambda *_: None)
    try:
        sport = st.sentinels[0]["info"]["port"]
        sentinel = redis.Redis(port=sport, socket_timeout=3)

        def master() -> int:
            return int(sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                                s.SENTINEL_MASTER)[1])

        before = master()
        assert before == st.redis["info"]["port"]
        from celery import Celery

        app = Celery(broker=st.sentinel_url, set_as_current=False)
        app.conf.broker_transport_options = {"master_name": s.SENTINEL_MASTER}
        for i in range(7):
            app.send_task("celeryctl.lab.demoapp.add", (i, i), queue="held")
        app.close()
        code, doc, err, _ = run_json("queues", "--broker", st.broker_url)
        assert code == 0, err
        assert next(q for q in doc["queues"] if q["name"] == "held")["ready"] == 7
        assert f"127.0.0.1:{before}" in doc["sources"][0]["detail"]
        code, doc, err, _ = run_json("doctor", "--broker", st.broker_url, "--select", "BRK")
        sview = next(x for x in doc["sources"] if x["name"] == "sentinel")
        assert sview["ok"] and f"at 127.0.0.1:{before}" in sview["detail"]
        assert "1 replica(s), quorum 2, 3 of 3 sentinels answered" in sview["detail"]
        assert doc["findings"] == []

        sentinel.execute_command("SENTINEL", "FAILOVER", s.SENTINEL_MASTER)
        end = time.monotonic() + 30
        while time.monotonic() < end and master() == before:
            time.sleep(0.2)
        after = master()
        assert after != before and after == st.replicas[0]["info"]["port"]
        time.sleep(1)
        code, doc, err, _ = run_json("queues", "--broker", st.broker_url)
        assert code == 0, err
        assert f"127.0.0.1:{after}" in doc["sources"][0]["detail"]  # the new master
        assert next(q for q in doc["queues"] if q["name"] == "held")["ready"] == 7
    finally:
        lab.down(tmp_path / "lab", progress=lambda *_: None)


def test_redis_queues_listed_across_pipeline_batches(labdir):
    """600 queues x 4 priority sub-lists = 2,400 LLENs: more than one pipeline batch."""
    import redis

    server = s.start_redis(labdir, name=f"redis-many-{time.monotonic_ns()}")
    try:
        r = redis.Redis(port=server.info["port"])
        pipe = r.pipeline(transaction=False)
        for i in range(600):
            q = f"mq-{i:04d}"
            pipe.sadd(f"_kombu.binding.{q}", f"{q}\x06\x16\x06\x16{q}")
            pipe.lpush(q, *[b"{}"] * (i % 5 + 1))
            pipe.lpush(f"{q}\x06\x169", b"{}")
        pipe.execute()
        code, doc, err, _ = run_json("queues", "--broker", server.info["url"])
        assert code == 0, err
        rows = {q["name"]: q for q in doc["queues"] if q["name"].startswith("mq-")}
        assert len(rows) == 600
        assert all(rows[f"mq-{i:04d}"]["ready"] == i % 5 + 2 for i in range(600))
        assert rows["mq-0599"]["buckets"]["9"] == 1
    finally:
        server.stop()


def test_rabbitmq_queues_listed_across_pages(rabbit, vhost):
    """More queues than one management API page (500)."""
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", rabbit["amqp_port"],
                                                             vhost))
    ch = conn.channel()
    for i in range(620):
        ch.queue_declare(f"pq-{i:04d}", auto_delete=False)
    conn.close()
    url = f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    api = f"http://guest:guest@127.0.0.1:{rabbit['management_port']}"
    code, doc, err, _ = run_json("queues", "--broker", url, "--rabbitmq-api", api)
    assert code == 0, err
    names = {q["name"] for q in doc["queues"]}
    assert {f"pq-{i:04d}" for i in range(620)} <= names


def test_five_thousand_real_clients_listed_and_classified(labdir):
    """5,000 open client connections to a real redis-server: `connections` lists them all,
    with the consumer (BRPOP-blocked) ones recognised."""
    import resource
    import threading

    import redis

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # 5,000 where the hard open-files limit allows it (it does on Debian's default, 1M, and
    # on this project's CI machines); never fewer than 1,000
    n = 5000 if hard == resource.RLIM_INFINITY else min(5000, hard - 500)
    assert n >= 1000, f"the hard open-files limit ({hard}) is far too low"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, n + 500), hard))
    server = s.start_redis(labdir, name=f"redis-5k-{time.monotonic_ns()}")  # inherits it
    clients = []
    try:
        for _ in range(n):
            c = redis.Redis(port=server.info["port"], single_connection_client=True)
            c.ping()
            clients.append(c)
        blocked = redis.Redis(port=server.info["port"], socket_timeout=30)

        def consume() -> None:
            try:
                blocked.brpop(["nothing-here"], timeout=20)
            except redis.RedisError:
                pass  # the server is stopped at the end of the test, as intended

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        time.sleep(0.5)
        code, doc, err, _ = run_json("connections", "--broker", server.info["url"])
        assert code == 0, err
        rows = doc["connections"]
        assert len(rows) >= n + 1
        assert sum(1 for r in rows if r["role"] == "consumer") == 1
    finally:
        for c in clients:
            c.close()
        server.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
