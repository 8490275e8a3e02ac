"""purge / restore on real servers: dry run changes nothing, backup + restore gives back the
same messages in the same order, refusals delete nothing, publishes during a purge survive."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.conftest import run_cli, run_json

pytestmark = [pytest.mark.redis]


def _redis(url):
    import redis

    return redis.Redis.from_url(url)


def _publish(url, queue, n, start=0):
    from celery import Celery

    app = Celery(broker=url, set_as_current=False)
    with app.producer_or_acquire() as producer:
        for i in range(start, start + n):
            app.send_task("celeryctl.lab.demoapp.add", (i, i), queue=queue, priority=i % 10,
                          producer=producer, headers={"n": i})
    app.close()


def _messages(backup):
    """The message records of a backup (not its header, control lines or end line)."""
    recs = [json.loads(x) for x in backup.read_text().splitlines()[1:]]
    return [r for r in recs if "celeryctl_marker" not in r and "end" not in r]


def _lists(r, queue):
    """Every priority sub-list's content, in kombu's key order."""
    keys = [queue.encode()] + [f"{queue}\x06\x16{s}".encode() for s in (3, 6, 9)]
    return {k: r.lrange(k, 0, -1) for k in keys}


def _dbdump(r):
    """Every key but remote control's own bookkeeping (the reply queue binding celeryctl's
    inspect declares, as `celery inspect` does)."""
    return {k: (r.type(k), r.dump(k)) for k in r.scan_iter()
            if not k.startswith((b"_kombu.binding_deadlines", b"_kombu.binding.reply."))}


def test_redis_dry_run_purge_backup_restore_roundtrip(redis_server, tmp_path):
    url = redis_server["url"].rsplit("/", 1)[0] + "/3"
    r = _redis(url)
    r.flushdb()
    _publish(url, "roundtrip", 50)
    before = _lists(r, "roundtrip")
    state = _dbdump(r)
    code, out, err, _ = run_cli("purge", "roundtrip", "--broker", url)
    assert code == 0 and "dry run" in err and "50 ready messages" in out
    assert _dbdump(r) == state  # the dry run changed nothing
    backup = tmp_path / "b.jsonl"
    audit = tmp_path / "audit.log"
    code, out, err, _ = run_cli("purge", "roundtrip", "--broker", url, "--confirm", "--yes",
                                "--backup", str(backup), "--audit-log", str(audit))
    assert code == 0, err
    assert "purged 50, remaining 0" in out
    assert all(not v for v in _lists(r, "roundtrip").values())
    lines = backup.read_text().splitlines()
    end = json.loads(lines[-1])
    assert json.loads(lines[0])["planned"] == 50
    assert end["end"] is True and end["count"] == 50 and end["complete"] is True
    entry = json.loads(audit.read_text().splitlines()[-1])
    assert entry["result"] == "ok" and entry["counts"]["roundtrip"]["purged"] == 50
    code, out, err, _ = run_cli("restore", str(backup), "--broker", url)
    assert code == 0 and "dry run" in err and all(not v for v in
                                                  _lists(r, "roundtrip").values())
    code, out, err, _ = run_cli("restore", str(backup), "--broker", url, "--confirm", "--yes",
                                "--audit-log", str(audit))
    assert code == 0, err
    assert _lists(r, "roundtrip") == before  # same envelopes, same buckets, same order


def test_redis_refusals_delete_nothing(redis_server, tmp_path):
    url = redis_server["url"].rsplit("/", 1)[0] + "/15"
    r = _redis(url)
    r.flushdb()
    _publish(url, "reports", 5)
    r.sadd("_kombu.binding.celery", "reports\x06\x16\x06\x16reports")
    state = _dbdump(r)
    code, out, err, _ = run_cli("purge", "reprots", "--broker", url, "--confirm", "--yes")
    assert code == 64 and "did you mean: reports" in err
    code, out, err, _ = run_cli("purge", "reports", "--broker", url, "--confirm")  # no TTY
    assert code == 64 and "--yes" in err
    r.lpush("abc.reply.celery.pidbox", b"{}")
    state = _dbdump(r)
    code, out, err, _ = run_cli("purge", "abc.reply.celery.pidbox", "--broker", url, "--confirm",
                                "--yes")
    assert code == 64 and "--include-internal" in err
    unwritable = tmp_path / "no-such-dir" / "b.jsonl"
    code, out, err, _ = run_cli("purge", "reports", "--broker", url, "--confirm", "--yes",
                                "--backup", str(unwritable))
    assert code == 2 and "Nothing was deleted" in err
    assert _dbdump(r) == state


def test_redis_consumers_attached_refused(redis_workers, tmp_path):
    url = redis_workers["url"]
    code, out, err, _ = run_cli("purge", "celery", "--broker", url, "--confirm", "--yes")
    assert code == 64 and "consumers attached" in err
    code, doc, err, _ = run_json("purge", "--all-worker-queues", "--broker", url)
    assert code == 64 and {"celery", "hipri"} <= {
        r.split("'")[1] for r in doc["plan"]["refusals"]}


def test_redis_publishes_during_purge_survive(redis_server, tmp_path):
    url = redis_server["url"].rsplit("/", 1)[0] + "/5"
    r = _redis(url)
    r.flushdb()
    _publish(url, "busy", 20000)
    stop = threading.Event()
    published = []

    def producer():
        i = 0
        while not stop.is_set():
            _publish(url, "busy", 1, start=100000 + i)
            published.append(i)
            i += 1

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.2)
    backup = tmp_path / "b.jsonl"
    code, out, err, _ = run_cli("purge", "busy", "--broker", url, "--confirm", "--yes",
                                "--backup", str(backup))
    stop.set()
    t.join()
    assert code == 0, err
    in_backup = len(_messages(backup))
    left = sum(len(v) for v in _lists(r, "busy").values())
    assert in_backup + left == 20000 + len(published)  # nothing lost: deleted == backed up


# --- RabbitMQ ------------------------------------------------------------------------------

def _amqp(rabbit, vhost):
    import pika

    params = pika.ConnectionParameters("127.0.0.1", rabbit["amqp_port"], virtual_host=vhost)
    return pika.BlockingConnection(params)


def _rabbit_publish(rabbit, vhost, queue, n, start=0, declare=True):
    import pika

    conn = _amqp(rabbit, vhost)
    ch = conn.channel()
    if declare:
        ch.queue_declare(queue, durable=True, arguments={"x-max-priority": 10})
    for i in range(start, start + n):
        ch.basic_publish("", queue, json.dumps([[i], {}, {}]).encode(),
                         pika.BasicProperties(content_type="application/json",
                                              content_encoding="utf-8", priority=i % 3,
                                              headers={"task": "t.add", "id": f"id-{i}"},
                                              delivery_mode=2))
    conn.close()


def _drain(rabbit, vhost, queue):
    """What a consumer would receive, in order (test-side: consuming is fine here)."""
    conn = _amqp(rabbit, vhost)
    ch = conn.channel()
    out = []
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            break
        out.append((body, props.headers, props.content_type, props.content_encoding,
                    props.priority))
    conn.close()
    return out


def _ready(rabbit, vhost, queue):
    conn = _amqp(rabbit, vhost)
    n = conn.channel().queue_declare(queue, passive=True).method.message_count
    conn.close()
    return n


def _args(rabbit, vhost):
    return ["--broker", f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}",
            "--rabbitmq-api", f"http://127.0.0.1:{rabbit['management_port']}"]


def _api_ready(rabbit, vhost, queue, n):
    import requests

    from tests.conftest import wait_for

    url = f"http://127.0.0.1:{rabbit['management_port']}/api/queues/{vhost}/{queue}"
    wait_for(lambda: requests.get(url, auth=("guest", "guest"), timeout=5).json().get(
        "messages_ready") == n, timeout=20)


@pytest.mark.rabbitmq
def test_rabbit_purge_backup_restore_roundtrip(rabbit, vhost, tmp_path):
    _rabbit_publish(rabbit, vhost, "rt", 60)
    _api_ready(rabbit, vhost, "rt", 60)
    # the reference order: copy the queue's content through a second queue
    code, out, err, _ = run_cli("purge", "rt", *_args(rabbit, vhost))
    assert code == 0 and "dry run" in err and _ready(rabbit, vhost, "rt") == 60
    backup = tmp_path / "b.jsonl"
    code, out, err, _ = run_cli("purge", "rt", *_args(rabbit, vhost), "--confirm", "--yes",
                                "--backup", str(backup), "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    assert "purged 60, remaining 0" in out and _ready(rabbit, vhost, "rt") == 0
    recs = _messages(backup)
    assert len(recs) == 60
    # restore into a fresh priority queue: the same messages, delivered in the same order
    # as the original queue would have (priority first, then publish order)
    code, out, err, _ = run_cli("restore", str(backup), *_args(rabbit, vhost), "--to", "nowhere",
                                "--confirm", "--yes")
    assert code == 64 and "would drop" in err  # an undeclared queue: refused, nothing sent
    conn = _amqp(rabbit, vhost)
    conn.channel().queue_declare("rt2", durable=True, arguments={"x-max-priority": 10})
    conn.close()
    code, out, err, _ = run_cli("restore", str(backup), *_args(rabbit, vhost), "--to", "rt2",
                                "--confirm", "--yes", "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    got = _drain(rabbit, vhost, "rt2")
    expected = sorted(range(60), key=lambda i: (-(i % 3), i))
    assert [json.loads(b)[0][0] for b, *_ in got] == expected
    assert all(h == {"task": "t.add", "id": f"id-{json.loads(b)[0][0]}"} and
               ct == "application/json" and ce == "utf-8" and p == json.loads(b)[0][0] % 3
               for b, h, ct, ce, p in got)
    assert [r["properties"]["headers"]["id"] for r in recs] == [f"id-{i}" for i in expected]


@pytest.mark.rabbitmq
def test_rabbit_purge_without_backup_uses_api_and_refusals(rabbit, vhost, tmp_path):
    _rabbit_publish(rabbit, vhost, "nb", 30)
    _api_ready(rabbit, vhost, "nb", 30)
    code, out, err, _ = run_cli("purge", "nbb", *_args(rabbit, vhost), "--confirm", "--yes")
    assert code == 64 and "did you mean: nb" in err and _ready(rabbit, vhost, "nb") == 30
    code, out, err, _ = run_cli("purge", "nb", *_args(rabbit, vhost), "--confirm", "--yes",
                                "--backup", str(tmp_path / "missing-dir" / "b.jsonl"))
    assert code == 2 and _ready(rabbit, vhost, "nb") == 30
    code, out, err, _ = run_cli("purge", "nb", *_args(rabbit, vhost), "--confirm", "--yes")
    assert code == 0, err
    assert _ready(rabbit, vhost, "nb") == 0


@pytest.mark.rabbitmq
def test_rabbit_publishes_during_purge_survive(rabbit, vhost, tmp_path):
    _rabbit_publish(rabbit, vhost, "busy", 3000)
    _api_ready(rabbit, vhost, "busy", 3000)
    stop = threading.Event()
    count = [0]

    def producer():
        import pika

        conn = _amqp(rabbit, vhost)
        ch = conn.channel()
        while not stop.is_set():
            ch.basic_publish("", "busy", b"[[0],{},{}]", pika.BasicProperties(priority=0))
            count[0] += 1
            time.sleep(0.002)
        conn.close()

    t = threading.Thread(target=producer)
    t.start()
    backup = tmp_path / "b.jsonl"
    code, out, err, _ = run_cli("purge", "busy", *_args(rabbit, vhost), "--confirm", "--yes",
                                "--backup", str(backup))
    stop.set()
    t.join()
    assert code == 0, err
    in_backup = len(_messages(backup))
    planned = json.loads(backup.read_text().splitlines()[0])["planned"]
    assert planned >= 3000 and in_backup <= planned  # never more than the plan showed
    time.sleep(0.5)
    assert in_backup + _ready(rabbit, vhost, "busy") == 3000 + count[0]
