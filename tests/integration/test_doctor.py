"""`celeryctl doctor` against real servers and workers."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import closed_port, run_cli, run_json
from tests.integration.test_redis import _db, _publish

pytestmark = [pytest.mark.redis]


def test_broker_down_still_reports_within_bound(silent_listener):
    for url in (f"redis://127.0.0.1:{closed_port()}/0",
                f"redis://127.0.0.1:{silent_listener.port}/0"):
        code, doc, err, secs = run_json("doctor", "--broker", url, "--timeout", "1")
        assert code == 2, err
        assert [f["code"] for f in doc["findings"]] == ["SRC001"]
        assert any(s["code"] == "QUE001" for s in doc["skipped"])
        assert secs <= 2.0, secs


def test_healthy_cluster_is_clean(redis_workers):
    code, doc, err, _ = run_json("doctor", "--broker", redis_workers["url"], "--timeout", "5")
    assert code == 0, json.dumps(doc["findings"], indent=1)
    assert doc["findings"] == [], json.dumps(doc["findings"], indent=1)
    assert doc["summary"]["worst"] == "ok" and doc["summary"]["checks_ran"] >= 15
    code, out, err, _ = run_cli("doctor", "--broker", redis_workers["url"])
    assert out.startswith("All clear")


def test_backlog_without_consumer_and_read_only(redis_server):
    import redis

    url = _db(redis_server["url"], 11)
    q = f"orphan-{uuid.uuid4().hex[:6]}"
    _publish(url, q, [0, 3, 6, 9] * 40)
    r = redis.Redis.from_url(url)

    def dump():
        # Every key, byte for byte — except kombu 5.7's `_kombu.binding_deadlines` zset, whose
        # `reply.celery.pidbox` member any remote-control client (celery inspect included)
        # refreshes; it is shared, and kombu's sweep owns it.
        return {k: (r.type(k), r.dump(k)) for k in sorted(r.scan_iter(count=1000))
                if k != b"_kombu.binding_deadlines"}

    before = dump()
    code, doc, err, _ = run_json("doctor", "--broker", url, "--timeout", "1")
    after = dump()
    assert before == after  # byte-identical: doctor changed nothing
    got = {(f["code"], f["subject"]) for f in doc["findings"]}
    assert ("QUE001", f"queue {q}") in got
    assert ("SRC004", "workers") in got  # no worker on this db
    assert code == 2
    code, doc, err, _ = run_json("doctor", "--broker", url, "--timeout", "1",
                                 "--ignore", "SRC004", "--select", "QUE")
    assert {f["code"] for f in doc["findings"]} == {"QUE001", "QUE002"}
    code, out, err, _ = run_cli("doctor", "--broker", url, "--timeout", "1", "--format",
                                "markdown", "--select", "QUE001")
    assert out.startswith("## celeryctl doctor") and "| warning | QUE001 queue-backlog" in out
    code, out, err, _ = run_cli("doctor", "--broker", url, "--timeout", "1", "--select",
                                "QUE001", "--fail-on", "critical")
    # a warning does not fail with --fail-on critical; what is left is that no worker
    # replied on this db: incomplete (3), never "all clear" (0)
    assert code == 3 and "Incomplete: workers not observed (no reply)" in out, out


def test_checks_and_explain():
    code, doc, err, _ = run_json("checks")
    assert code == 0 and len(doc["checks"]) >= 20
    assert {"code", "name", "family", "summary"} <= set(doc["checks"][0])
    code, out, err, _ = run_cli("explain", "queue-backlog")
    assert code == 0 and "## How to fix" in out
    assert run_cli("explain", "NOPE123")[0] == 64
    assert run_cli("doctor", "--select", "NOPE123")[0] == 64


def test_queued_pickle_messages_that_consumers_refuse(labdir, redis_server):
    """SER004 on real messages: a json-only worker consumes `serq`; it is busy (acks_late,
    prefetch 1, one thread) so the pickle messages published after stay in the list."""
    import time

    from celery import Celery

    from celeryctl.lab import servers as s

    url = _db(redis_server["url"], 12)
    w = s.start_worker(labdir, url, "ser@%h", queues="serq", pool="threads", concurrency=1,
                       env={"CELERYCTL_LAB_PREFETCH": "1", "CELERYCTL_LAB_ACKS_LATE": "1"})
    try:
        app = Celery(broker=url, set_as_current=False)
        app.send_task("celeryctl.lab.demoapp.sleep", (60,), queue="serq")
        time.sleep(1.5)  # the worker picks it up and holds it (acks_late, prefetch 1)
        for _ in range(3):
            app.send_task("celeryctl.lab.demoapp.add", (1, 2), queue="serq", serializer="pickle")
        app.send_task("celeryctl.lab.demoapp.add", (1, 2), queue="serq", serializer="json")
        code, doc, err, _ = run_json("doctor", "--broker", url, "--timeout", "3",
                                     "--select", "SER")
        ser = [f for f in doc["findings"] if f["code"] == "SER004"]
        assert len(ser) == 1, json.dumps(doc, indent=1)
        f = ser[0]
        assert f["severity"] == "critical" and f["subject"] == "queue serq"
        assert f["evidence"]["content_type"] == "application/x-python-serialize"
        assert f["evidence"]["not_accepted"] == 3 and f["evidence"]["sampled"] == 4
        assert f["evidence"]["tasks"] == ["celeryctl.lab.demoapp.add"]
        import redis

        assert redis.Redis.from_url(url).llen("serq") == 4  # sampled, not consumed
    finally:
        w.stop(timeout=2)  # do not wait out the 60 s task


def test_growth_over_two_samples(redis_server):
    import threading
    import time

    url = _db(redis_server["url"], 13)
    q = f"growing-{uuid.uuid4().hex[:6]}"
    _publish(url, q, [0] * 20)
    stop = threading.Event()

    def producer():
        while not stop.is_set():
            _publish(url, q, [0] * 10)
            time.sleep(0.1)

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    try:
        code, doc, err, secs = run_json("doctor", "--broker", url, "--timeout", "1",
                                        "--sample-interval", "1.5", "--select", "QUE008")
    finally:
        stop.set()
        t.join(5)
    f = [x for x in doc["findings"] if x["code"] == "QUE008"]
    assert f and f[0]["subject"] == f"queue {q}", json.dumps(doc, indent=1)
    assert f[0]["evidence"]["rate_per_second"] > 10 and f[0]["evidence"]["source"] == "samples"
    code, doc, err, _ = run_json("doctor", "--broker", url, "--timeout", "1", "--select", "QUE008")
    assert [s["code"] for s in doc["skipped"]] == ["QUE008"]  # one sample: skipped, said why


def test_seed_amqp_backend_config_gives_res001_not_a_crash(redis_server, tmp_path):
    """Seed 000's exact configuration through -A: its amqp:// backend is unreachable, and
    RES001 must still be reported (from the URL), with no traceback. Its backend's default
    address, localhost:5672, becomes a port the test controls (nothing listens): a
    developer's machine may run a RabbitMQ there."""
    from pathlib import Path

    seed = Path(__file__).parent.parent / "fixtures" / "seed_000_celery_config.py"
    port = closed_port()
    text = seed.read_text()
    assert "@localhost:5672//" in text
    (tmp_path / seed.name).write_text(text.replace("@localhost:5672//", f"@127.0.0.1:{port}//"))
    code, doc, err, _ = run_json("doctor", "-A", "seed_000_celery_config", "--timeout", "1",
                                 env={"CELERY_BROKER_URL": _db(redis_server["url"], 14),
                                      "PYTHONPATH": str(tmp_path)})
    assert "Traceback" not in err
    res = [f for f in doc["findings"] if f["code"] == "RES001"]
    assert res and res[0]["severity"] == "critical"
    assert res[0]["subject"] == f"result backend amqp://guest:***@127.0.0.1:{port}//"
    assert res[0]["evidence"]["from"] == "app seed_000_celery_config"
    backend = next(s for s in doc["sources"] if s["name"] == "result-backend")
    assert backend["ok"] is False  # unreachable, reported as such
    assert "guest:guest" not in json.dumps(doc)
