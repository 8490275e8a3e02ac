"""Property-based, on the real Redis and RabbitMQ: random queue names and task names
(markup, escapes, control characters, unicode, separators) written to the broker, then
`queues` (table and JSON), `doctor` (table and JSON) and the `purge` dry run — every name
comes back literally in JSON, the tables never crash or pass a raw ESC, JSON is strict.
(tests/integration/test_restore.py does the same for envelopes and header values through
purge/restore round trips.)"""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import fresh_vhost, run_cli

pytestmark = [pytest.mark.redis]

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# what makes names hostile: rich markup, ANSI/OSC escapes, control characters, bidi
# overrides, JSON/markdown/shell specials, non-BMP unicode
HOSTILE = st.sampled_from(["[", "]", "[/]", "[bold]", "\x1b[31m", "\x1b]0;t\x07", "\n",
                           "\t", "\r", "\x00", "\x7f", "\u202e", "|", "`", '"', "\\", "$(",
                           "'", "é", "日本", "\U0001f525", "*", "%", " "])
NAMES = st.lists(st.one_of(HOSTILE, st.text(min_size=1, max_size=4)), min_size=1,
                 max_size=6).map("".join)


def _strict(text: str):
    def bad(c):
        raise ValueError(f"not strict JSON: {c}")

    return json.loads(text, parse_constant=bad)


def _no_escape(out: str, err: str) -> None:
    assert "\x1b" not in out and "\x1b" not in err, (out, err)
    assert "internal error" not in err and "Traceback" not in err, err


@pytest.fixture(scope="module")
def rurl(redis_server):
    return redis_server["url"].rsplit("/", 1)[0] + "/14"


@SETTINGS
@given(queue=NAMES, task=NAMES)
def test_redis_random_names_read_back_literally(rurl, queue, task):
    import redis

    r = redis.Redis.from_url(rurl)
    r.flushdb()
    r.sadd("_kombu.binding.celery", f"{queue}\x06\x16\x06\x16{queue}".encode("utf-8",
                                                                             "surrogatepass"))
    env = {"body": "W1tdLCB7fSwge31d", "content-encoding": "utf-8",
           "content-type": "application/json",
           "headers": {"task": task, "id": str(uuid.uuid4())},
           "properties": {"delivery_mode": 2, "priority": 0, "body_encoding": "base64",
                          "delivery_info": {"exchange": "", "routing_key": queue},
                          "delivery_tag": "t"}}
    r.lpush(queue.encode("utf-8", "surrogatepass"), json.dumps(env))
    args = ("--broker", rurl, "--timeout", "1")
    code, out, err, _ = run_cli("queues", *args, "--format", "json")
    doc = _strict(out)
    assert [q["name"] for q in doc["queues"]] == [queue], (queue, doc["queues"])
    assert doc["queues"][0]["ready"] == 1
    code, out, err, _ = run_cli("queues", *args)
    _no_escape(out, err)
    code, out, err, _ = run_cli("doctor", *args, "--format", "json")
    _strict(out)
    code, out, err, _ = run_cli("doctor", *args)
    _no_escape(out, err)
    code, out, err, _ = run_cli("purge", queue, *args, "--format", "json")
    plan = _strict(out)["plan"]
    assert code == 0 and [q["queue"] for q in plan["queues"]] == [queue], (out, err)
    assert [f["task"] for f in plan["queues"][0]["first"]] == [task]
    code, out, err, _ = run_cli("purge", queue, *args)
    _no_escape(out, err)
    assert code == 0 and r.llen(queue.encode("utf-8", "surrogatepass")) == 1  # a dry run


@pytest.fixture(scope="module")
def pvhost(rabbit):
    yield from fresh_vhost(rabbit, "hp")


# RabbitMQ: queue names are AMQP short strings (at most 255 bytes); names starting with
# "amq." are reserved, and a newline in a declare never gets an answer from RabbitMQ 3.x
AMQP_NAMES = NAMES.filter(lambda n: "\n" not in n and "\r" not in n and "\x00" not in n
                          and not n.startswith("amq.") and len(n.encode()) <= 200)


@pytest.mark.rabbitmq
@SETTINGS
@given(queue=AMQP_NAMES, task=NAMES)
def test_rabbit_random_names_read_back_literally(rabbit, pvhost, queue, task):
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", rabbit["amqp_port"], virtual_host=pvhost))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    ch.basic_publish("", queue, b"[[], {}, {}]", pika.BasicProperties(
        content_type="application/json", headers={"task": task, "id": "x"}))
    conn.close()
    args = ("--broker", f"amqp://127.0.0.1:{rabbit['amqp_port']}/{pvhost}", "--rabbitmq-api",
            f"http://127.0.0.1:{rabbit['management_port']}", "--timeout", "2")
    try:
        code, out, err, _ = run_cli("queues", *args, "--format", "json")
        names = [q["name"] for q in _strict(out)["queues"]]
        assert queue in names, (queue, names, err)
        code, out, err, _ = run_cli("queues", *args)
        _no_escape(out, err)
        code, out, err, _ = run_cli("purge", queue, *args, "--format", "json")
        plan = _strict(out)["plan"]
        assert code == 0 and [q["queue"] for q in plan["queues"]] == [queue], (out, err)
        assert plan["queues"][0]["ready"] == 1  # the broker's own count (passive declare)
        code, out, err, _ = run_cli("purge", queue, *args)
        _no_escape(out, err)
    finally:
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", rabbit["amqp_port"], virtual_host=pvhost))
        conn.channel().queue_delete(queue)
        conn.close()
