"""Real redis-server + real Celery workers."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from kombu import Connection, Exchange, Queue

from tests.conftest import run_cli, run_json

pytestmark = [pytest.mark.redis]


def _publish(url: str, queue: str, priorities: list[int], prefix: str | None = None) -> None:
    opts = {"global_keyprefix": prefix} if prefix else {}
    with Connection(url, transport_options=opts) as conn:
        q = Queue(queue, Exchange(queue, "direct"), routing_key=queue)
        with conn.Producer() as prod:
            for p in priorities:
                prod.publish({"x": p}, exchange=q.exchange, routing_key=queue, declare=[q],
                             priority=p, serializer="json",
                             headers={"task": "demo.t", "id": str(uuid.uuid4())})


def _db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


def test_depth_sums_priority_sublists(redis_server):
    url = _db(redis_server["url"], 3)
    q = f"prio-{uuid.uuid4().hex[:6]}"
    _publish(url, q, [0, 0, 1, 4, 5, 6, 9, 9, 9])  # buckets 0:3, 3:2, 6:1, 9:3
    code, doc, err, _ = run_json("queues", "--broker", url)
    assert code == 0, err
    row = next(r for r in doc["queues"] if r["name"] == q)
    assert row["buckets"] == {"0": 3, "3": 2, "6": 1, "9": 3}
    assert row["ready"] == 9
    assert row["consumers"] == 0 and row["consumers_source"] == "workers"
    assert "binding" in row["discovered_by"]
    assert doc["sources"][0]["name"] == "broker" and doc["sources"][0]["ok"] is True


def test_global_keyprefix_configured_and_detected(redis_server, tmp_path):
    url = _db(redis_server["url"], 4)
    redis.Redis.from_url(url).flushdb()  # detection needs a db with nothing unprefixed on it
    q = f"pfx-{uuid.uuid4().hex[:6]}"
    _publish(url, q, [0, 3, 3, 9], prefix="myapp:")
    # detected: nothing unprefixed on this db, one prefix found
    code, doc, err, _ = run_json("queues", "--broker", url)
    assert code == 0, err
    row = next(r for r in doc["queues"] if r["name"] == q)
    assert row["buckets"] == {"0": 1, "3": 2, "6": 0, "9": 1}
    assert any("detected" in n for n in doc["notes"])
    # configured through a profile's transport options
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[clusters.p]\nbroker = "{url}"\n'
                   '[clusters.p.transport_options]\nglobal_keyprefix = "myapp:"\n')
    code, doc, err, _ = run_json("queues", "--profile", "p",
                                 env={"CELERYCTL_CONFIG": str(cfg)})
    assert code == 0, err
    row = next(r for r in doc["queues"] if r["name"] == q)
    assert row["ready"] == 4
    assert doc["target"]["origins"]["broker"] == "profile p"


def test_custom_sep_and_priority_steps(redis_server, tmp_path):
    url = _db(redis_server["url"], 6)
    q = f"steps-{uuid.uuid4().hex[:6]}"
    opts = {"sep": ":", "priority_steps": list(range(10))}
    with Connection(url, transport_options=opts) as conn:
        queue = Queue(q, Exchange(q, "direct"), routing_key=q)
        with conn.Producer() as prod:
            for p in (0, 1, 2, 2, 7):
                prod.publish({"p": p}, exchange=queue.exchange, routing_key=q, declare=[queue],
                             priority=p)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[clusters.p]\nbroker = "{url}"\n'
                   '[clusters.p.transport_options]\nsep = ":"\n'
                   'priority_steps = [0,1,2,3,4,5,6,7,8,9]\n')
    code, doc, err, _ = run_json("queues", "--profile", "p", env={"CELERYCTL_CONFIG": str(cfg)})
    assert code == 0, err
    row = next(r for r in doc["queues"] if r["name"] == q)
    assert row["ready"] == 5
    assert row["buckets"]["2"] == 2 and row["buckets"]["7"] == 1


def test_in_flight_from_unacked(redis_server):
    url = _db(redis_server["url"], 7)
    q = f"inflight-{uuid.uuid4().hex[:6]}"
    _publish(url, q, [0, 0, 0])
    with Connection(url) as conn:
        sq = conn.SimpleQueue(q)
        msg = sq.get(timeout=2)  # received, never acked: kombu keeps it in `unacked`
        assert msg is not None
        time.sleep(1.1)
        code, doc, err, _ = run_json("queues", "--broker", url)
        assert code == 0, err
        row = next(r for r in doc["queues"] if r["name"] == q)
        assert row["ready"] == 2
        assert row["unacked"] == 1
        assert row["oldest_unacked_seconds"] >= 1.0
        assert doc["redis_unacked"]["total"] == 1
        # reading never restored or touched it: still in unacked, list unchanged
        import redis

        r = redis.Redis.from_url(url)
        assert r.hlen("unacked") == 1 and r.llen(q) == 2
        sq.close()


def test_workers_listed_and_inspect_returns_early(redis_workers):
    code, doc, err, secs = run_json("workers", "--broker", redis_workers["url"], "--timeout", "5")
    assert code == 0, err
    names = sorted(w["name"] for w in doc["workers"])
    assert names == sorted(redis_workers["names"])
    for w in doc["workers"]:
        assert w["ok"] and w["pool"] == "threads" and w["concurrency"] == 2
        assert w["queues"] == ["celery", "hipri"]
        assert w["prefetch_count"] == 8 and w["active"] == 0
    src = next(s for s in doc["sources"] if s["name"] == "workers")
    assert "returned early" in src["detail"]
    assert sorted(doc["expected"]) == names and doc["missing"] == []
    # early return: far below the 5 s timeout (process start-up included)
    assert secs < 3.5, secs


def test_workers_inspect_raw(redis_workers):
    code, doc, err, _ = run_json("workers", "inspect", "registered", "--broker",
                                 redis_workers["url"])
    assert code == 0, err
    assert len(doc["replies"]) == 2
    for r in doc["replies"]:  # each name with the attributes asked for (issue 14)
        entries = {x.split()[0]: x for x in r["reply"]}
        assert "time_limit=" in entries["celeryctl.lab.demoapp.add"], entries
    code, doc, err, _ = run_json("workers", "inspect", "conf", "--broker", redis_workers["url"])
    assert code == 0
    conf = doc["replies"][0]["reply"]
    assert conf["accept_content"] == ["json"] and "worker_prefetch_multiplier" in conf


def test_queues_consumers_from_workers(redis_workers):
    code, doc, err, _ = run_json("queues", "--broker", redis_workers["url"])
    assert code == 0, err
    row = next(r for r in doc["queues"] if r["name"] == "hipri")
    assert row["consumers"] == 2 and sorted(row["consumer_workers"]) == \
        sorted(redis_workers["names"])


def test_connections_attributes_workers(redis_workers):
    code, doc, err, _ = run_json("connections", "--broker", redis_workers["url"])
    assert code == 0, err
    roles = {c["role"] for c in doc["connections"]}
    assert {"consumer", "pubsub", "celeryctl"} <= roles
    # the session Redis is shared: other tests' workers on other databases are other apps'
    consumers = [c for c in doc["connections"] if c["role"] == "consumer" and not c["other_db"]]
    assert consumers and all(c["command"] == "brpop" for c in consumers)
    # the workers run on this machine: each socket's owning process names its worker exactly
    assert {c["worker"] for c in consumers} == set(redis_workers["names"])
    assert all(c["worker_match"] == "exact" for c in consumers)


def test_duplicate_node_names_are_kept(labdir, redis_server):
    from celeryctl.lab import servers as s

    url = _db(redis_server["url"], 9)
    procs = [s.start_worker(labdir, url, "dup@samehost", queues="celery", pool="solo",
                            concurrency=1) for _ in range(2)]
    try:
        code, doc, err, _ = run_json("workers", "--broker", url, "--timeout", "3")
        assert [w["name"] for w in doc["workers"]] == ["dup@samehost", "dup@samehost"]
        assert {w["pid"] for w in doc["workers"]} == {p.pid for p in procs} or \
            len({w["pid"] for w in doc["workers"]}) == 2
        assert any("duplicate" in n for n in doc["notes"])
    finally:
        for p in procs:
            p.stop()


def test_no_worker_replied_is_critical(redis_server):
    url = _db(redis_server["url"], 10)
    code, doc, err, secs = run_json("workers", "--broker", url, "--timeout", "1")
    assert code == 2
    assert doc["workers"] == []
    assert secs < 1 + 1.5


def test_wrong_password_is_clear_and_redacted(redis_auth):
    port = redis_auth["port"]
    for url in (f"redis://:wrong-pw-xyz@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"):
        for cmd in ("workers", "queues", "connections"):
            code, out, err, _ = run_cli(cmd, "--broker", url)
            assert code == 3, (cmd, out, err)
            assert "wrong-pw-xyz" not in out + err
            assert "authentication" in err.lower() or "auth" in err.lower(), err
    code, out, err, _ = run_cli("queues", "--broker",
                                f"redis://:s3cret-redis-pw@127.0.0.1:{port}/0")
    assert code == 0, err
    assert "s3cret-redis-pw" not in out + err


def test_managed_redis_with_config_disabled(labdir):
    """Managed Redis often renames CONFIG away: recorded, not fatal."""
    import subprocess

    from celeryctl.lab import servers as s

    port = s.free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--rename-command", "CONFIG", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        s._wait(lambda: s.port_open(port), 10, "redis", labdir / "none.log")
        url = f"redis://127.0.0.1:{port}/0"
        _publish(url, "managed", [0, 0])
        code, doc, err, _ = run_json("queues", "--broker", url)
        assert code == 0, err
        assert doc["server"]["version"].startswith("7.")
        assert next(r for r in doc["queues"] if r["name"] == "managed")["ready"] == 2
        code, doc, err, _ = run_json("doctor", "--broker", url, "--timeout", "1")
        broker = next(s for s in doc["sources"] if s["name"] == "broker")
        assert broker["state"] == "observed"
        assert any("CONFIG GET" in p and "renamed or disabled" in p for p in broker["partial"])
        # persistence judged from INFO persistence instead of a silent pass
        assert "BRK004" in {f["code"] for f in doc["findings"]} | {
            s["code"] for s in doc["skipped"]}
    finally:
        proc.terminate()
        proc.wait(5)


def test_server_summary_reports_clients(redis_server):
    code, doc, err, _ = run_json("connections", "--broker", redis_server["url"])
    assert code == 0, err
    info = doc["server"]["info"]
    assert info["connected_clients"] >= 1 and info["maxclients"] == 10000
    assert doc["server"]["config"]["maxmemory-policy"] == "noeviction"
