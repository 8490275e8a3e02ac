"""Real rabbitmq-server with the management plugin + real Celery workers."""

from __future__ import annotations

import pika
import pytest

from tests.conftest import closed_port, run_cli, run_json, wait_for

pytestmark = [pytest.mark.rabbitmq]


def _amqp(rabbit, vhost: str) -> str:
    return f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}"


def _api(rabbit) -> str:
    return f"http://127.0.0.1:{rabbit['management_port']}"


def _fill(rabbit, vhost: str, queue: str, n: int, hold: int):
    """Publish n messages; a consumer with prefetch `hold` receives and never acks them."""
    params = pika.ConnectionParameters("127.0.0.1", rabbit["amqp_port"], vhost)
    pub = pika.BlockingConnection(params)
    ch = pub.channel()
    ch.queue_declare(queue, durable=True, arguments={"x-max-priority": 10})
    for i in range(n):
        ch.basic_publish("", queue, b'{"x": 1}', pika.BasicProperties(
            content_type="application/json", priority=i % 10,
            headers={"task": "demo.t", "id": f"id-{i}"}))
    pub.close()
    cons = pika.BlockingConnection(params)
    cch = cons.channel()
    cch.basic_qos(prefetch_count=hold)
    cch.basic_consume(queue, lambda *a: None, auto_ack=False)
    cons.process_data_events(time_limit=0.5)
    return cons


def test_management_api_ready_unacked_consumers(rabbit, vhost):
    cons = _fill(rabbit, vhost, "work", 10, hold=3)
    try:
        def read():
            code, doc, err, _ = run_json("queues", "--broker", _amqp(rabbit, vhost),
                                         "--rabbitmq-api", _api(rabbit))
            assert code == 0, err
            row = next((r for r in doc["queues"] if r["name"] == "work"), None)
            return (row, doc) if row and row["ready"] == 7 and row["unacked"] == 3 else None

        got = wait_for(read, timeout=20)
        assert got, "management API never showed ready=7 unacked=3"
        row, doc = got
        assert row["consumers"] == 1 and row["source"] == "management-api"
        assert row["vhost"] == vhost and row["arguments"]["x-max-priority"] == 10
        api = next(s for s in doc["sources"] if s["name"] == "management-api")
        assert api["ok"] and api["detail"].startswith("RabbitMQ 3.")
    finally:
        cons.close()


def test_amqp_fallback_when_api_unreachable(rabbit, vhost):
    cons = _fill(rabbit, vhost, "work", 6, hold=2)
    try:
        code, doc, err, _ = run_json("queues", "--broker", _amqp(rabbit, vhost),
                                     "--rabbitmq-api", f"http://127.0.0.1:{closed_port()}",
                                     "--queue", "work", "--queue", "absent")
        assert code == 0, err
        row = next(r for r in doc["queues"] if r["name"] == "work")
        assert row["source"] == "amqp"
        assert row["ready"] == 4 and row["consumers"] == 1
        assert row["unacked"] is None  # unknown over AMQP, never reported as 0
        absent = next(r for r in doc["queues"] if r["name"] == "absent")
        assert absent["exists"] is False
        api = next(s for s in doc["sources"] if s["name"] == "management-api")
        assert not api["ok"] and "refused" in api["error"]
        amqp = next(s for s in doc["sources"] if s["name"] == "amqp")
        assert amqp["ok"]
        assert any("passive declare" in n for n in doc["notes"])
    finally:
        cons.close()


def test_workers_on_rabbitmq_return_early(rabbit_workers):
    code, doc, err, secs = run_json("workers", "--broker", rabbit_workers["url"],
                                    "--rabbitmq-api", rabbit_workers["api"], "--timeout", "5")
    assert code == 0, err
    assert sorted(w["name"] for w in doc["workers"]) == sorted(rabbit_workers["names"])
    assert sorted(doc["expected"]) == sorted(rabbit_workers["names"])
    src = next(s for s in doc["sources"] if s["name"] == "workers")
    assert "returned early" in src["detail"]
    assert secs < 3.5


def test_rabbit_connections_exact_worker_match(rabbit_workers):
    def read():
        code, doc, err, _ = run_json("connections", "--broker", rabbit_workers["url"],
                                     "--rabbitmq-api", rabbit_workers["api"])
        assert code == 0, err
        exact = {c["worker"] for c in doc["connections"] if c["worker_match"] == "exact"}
        return doc if exact == set(rabbit_workers["names"]) else None

    doc = wait_for(read, timeout=20)  # the statistics DB lags the consumers a little
    assert doc, "pidbox consumers never named both workers' connections"
    worker_conn = next(c for c in doc["connections"] if c["worker_match"] == "exact")
    assert worker_conn["heartbeat_seconds"] is not None and worker_conn["age_seconds"] >= 0


def test_queues_rabbit_shows_worker_queues(rabbit_workers):
    def read():
        code, doc, err, _ = run_json("queues", "--broker", rabbit_workers["url"],
                                     "--rabbitmq-api", rabbit_workers["api"])
        row = next((r for r in doc["queues"] if r["name"] == "mq_work"), None)
        return doc if row and row["consumers"] == 2 else None

    doc = wait_for(read, timeout=20)
    assert doc, "mq_work never showed 2 consumers"
    assert not any(r["internal"] for r in doc["queues"])  # pidbox queues hidden by default
    code, doc, err, _ = run_json("queues", "--broker", rabbit_workers["url"],
                                 "--rabbitmq-api", rabbit_workers["api"], "--all")
    assert any(r["kind"] == "pidbox" for r in doc["queues"])


def test_wrong_password_amqp_and_management(rabbit, vhost):
    bad_amqp = f"amqp://guest:bad-amqp-pw@127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    bad_api = f"http://guest:bad-api-pw@127.0.0.1:{rabbit['management_port']}"
    code, out, err, _ = run_cli("queues", "--broker", bad_amqp, "--rabbitmq-api", bad_api)
    assert code == 3, (out, err)
    assert "bad-amqp-pw" not in out + err and "bad-api-pw" not in out + err
    assert "401" in err and "authentication" in err.lower()
    code, out, err, _ = run_cli("workers", "--broker", bad_amqp, "--rabbitmq-api", bad_api)
    assert code == 3
    assert "bad-amqp-pw" not in out + err
    assert "access_refused" in err.lower() or "authentication" in err.lower(), err
    code, doc, err, _ = run_json("connections", "--broker", bad_amqp, "--rabbitmq-api", bad_api)
    assert code == 3 and doc["connections"] is None
    assert "bad-api-pw" not in str(doc)


def test_doctor_never_marks_messages_redelivered_unless_peek(rabbit, vhost):
    """Without --peek doctor does not touch RabbitMQ messages; with --peek it samples through
    the management API, says so, and the messages come back marked redelivered. Each queue is
    probed once only: the probe itself (basic_get, then close) requeues and flags."""
    params = pika.ConnectionParameters("127.0.0.1", rabbit["amqp_port"], vhost)

    def fill(queue):
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        ch.queue_declare(queue)
        for i in range(3):
            ch.basic_publish("", queue, b"\x80\x04K\x01.", pika.BasicProperties(
                content_type="application/x-python-serialize",
                headers={"task": "t.p", "id": str(i)}))
        conn.close()

    def first_redelivered(queue):
        c = pika.BlockingConnection(params)
        try:
            method, _props, _body = c.channel().basic_get(queue, auto_ack=False)
            return method.redelivered
        finally:
            c.close()

    args = ("doctor", "--broker", _amqp(rabbit, vhost), "--rabbitmq-api", _api(rabbit),
            "--timeout", "3")
    fill("untouched")
    wait_for(lambda: any(r["name"] == "untouched" and r["ready"] == 3 for r in
                         run_json("queues", *args[1:5])[1]["queues"] or []), timeout=15)
    code, doc, err, _ = run_json(*args)
    assert not any("--peek" in n for n in doc["notes"])
    assert first_redelivered("untouched") is False  # doctor without --peek left it alone

    fill("peeked")
    wait_for(lambda: any(r["name"] == "peeked" and r["ready"] == 3 for r in
                         run_json("queues", *args[1:5])[1]["queues"] or []), timeout=15)
    code, doc, err, _ = run_json(*args, "--peek")
    assert any("--peek" in n for n in doc["notes"])
    assert all(s["code"] != "SER004" for s in doc["skipped"])  # sampled this time
    assert first_redelivered("peeked") is True
