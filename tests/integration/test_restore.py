"""purge --backup / restore fidelity on real servers: Redis list entries come back
byte-identical whatever they are; RabbitMQ messages come back with the same property bytes
(header value types, delivery_mode, every basic property); damaged backups restore their
intact messages and say which lines were not."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celeryctl.actions import amqpwire
from tests.conftest import fresh_vhost, run_cli, run_json

pytestmark = [pytest.mark.redis]

# each example is two CLI runs against the real servers: few, but each a whole round trip
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


# --- Redis ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rurl(redis_server):
    return redis_server["url"].rsplit("/", 1)[0] + "/9"



def _records(backup):
    """The message records of a backup (not its header, control lines or end line)."""
    objs = [json.loads(x) for x in backup.read_text().splitlines()[1:]]
    return [o for o in objs if "celeryctl_marker" not in o and "end" not in o]

def _r(url):
    import redis

    return redis.Redis.from_url(url)


def _keys(queue):
    return [queue.encode()] + [f"{queue}\x06\x16{s}".encode() for s in (3, 6, 9)]


def _lists(r, queue):
    return {k: r.lrange(k, 0, -1) for k in _keys(queue)}


def _roundtrip_redis(url, queue, tmp_path, *extra):
    backup = tmp_path / f"{queue}.jsonl"
    # --timeout 1: no worker answers the active_queues broadcast here; do not wait for one
    code, out, err, _ = run_cli("purge", queue, "--broker", url, "--confirm", "--yes",
                                "--timeout", "1",
                                "--backup", str(backup), "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    code, out, err, _ = run_cli("restore", str(backup), "--broker", url, "--confirm", "--yes",
                                "--timeout", "1", "--audit-log", str(tmp_path / "a"), *extra)
    return code, out, err, backup


ODD_ENTRIES = [
    b'{"body": "aGk=", "unknown_key": [1, 2], "content-type": "application/json", '
    b'"properties": {"delivery_info": "a string", "body_encoding": "base64"}, "headers": {}}',
    '{"not": "kombu", "text": "é日本 — ünïcode", "n": 1.0}'.encode(),
    b"\x00\xff\xfe not json at all \x80",
    b"",
    b'{"body": "x", "headers": {"h": 1e400}, "properties": []}',
    b'{"body":"eyJ4IjoxfQ==","content-encoding":"utf-8","content-type":"application/json",'
    b'"headers":{"task":"t","id":"\\u00e9"},"properties":{"priority":0,"delivery_info":'
    b'{"exchange":"","routing_key":"odd"},"body_encoding":"base64","delivery_mode":1,'
    b'"delivery_tag":"7"}}',
]


def test_redis_arbitrary_entries_round_trip_byte_identical(rurl, tmp_path):
    r = _r(rurl)
    for e in ODD_ENTRIES:
        r.lpush("odd", e)
    r.lpush("odd\x06\x166", b"bucket six", '{"x": "é"}'.encode())
    r.lpush("odd\x06\x169", b'{"body": null}')
    before = _lists(r, "odd")
    code, out, err, backup = _roundtrip_redis(rurl, "odd", tmp_path)
    assert code == 0, err
    assert _lists(r, "odd") == before
    recs = _records(backup)
    assert all("raw" in x for x in recs) and backup.read_bytes().isascii()
    assert recs[0]["headers"] == {}  # decoded fields, for reading


@pytest.mark.timeout(600)
@SETTINGS
@given(st.lists(st.tuples(st.sampled_from([0, 3, 6, 9]), st.binary(max_size=64)
                          | st.text(max_size=20).map(lambda t: json.dumps(
                              {"body": t, "properties": {"delivery_info": t}}).encode())),
                min_size=1, max_size=8))
def test_redis_property_round_trip(rurl, tmp_path, entries):
    r = _r(rurl)
    queue = f"p{uuid.uuid4().hex[:8]}"
    for step, e in entries:
        r.lpush(_keys(queue)[[0, 3, 6, 9].index(step)], e)
    before = _lists(r, queue)
    code, out, err, _ = _roundtrip_redis(rurl, queue, tmp_path)
    assert code == 0, err
    assert _lists(r, queue) == before
    r.delete(*_keys(queue))


def _celery_backup(url, queue, n, tmp_path):
    from celery import Celery

    app = Celery(broker=url, set_as_current=False)
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task("t.add", (i, i), queue=queue, producer=producer)
    app.close()
    backup = tmp_path / f"{queue}.jsonl"
    code, out, err, _ = run_cli("purge", queue, "--broker", url, "--confirm", "--yes",
                                "--backup", str(backup), "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    return backup


def test_redis_damaged_backup_restores_the_intact_lines(rurl, tmp_path):
    r = _r(rurl)
    backup = _celery_backup(rurl, "dmg", 4, tmp_path)
    # header, the queue's control line, 4 records, queue_done, end, ""
    lines = backup.read_bytes().split(b"\n")
    originals = [base64.b64decode(json.loads(x)["raw"]) for x in lines[2:6]]
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(b"\n".join([lines[0], lines[1], lines[2], b"garbage {", b"\xff\xfe",
                                    b'{"queue": "dmg", "bucket": 0}', lines[3], lines[4],
                                    lines[5][:40]]))
    code, out, err, _ = run_cli("restore", str(damaged), "--broker", rurl)
    assert code == 0 and "dry run" in err and not r.exists("dmg")
    for text in ("line 4: not JSON", "line 5: not valid UTF-8", "line 6: a record missing",
                 "line 9: cut short", "no end line"):
        assert text in err, err
    code, doc, err, _ = run_json("restore", str(damaged), "--broker", rurl, "--confirm",
                                 "--yes", "--audit-log", str(tmp_path / "a"))
    assert code == 2, err
    assert [b["line"] for b in doc["bad_lines"]] == [4, 5, 6, 9]
    assert doc["result"]["queues"]["dmg"]["restored"] == 3
    assert r.lrange("dmg", 0, -1)[::-1] == originals[:3]  # first message first, as stored
    entry = json.loads((tmp_path / "a").read_text().splitlines()[-1])
    assert entry["result"].startswith("partial") and "4 damaged" in entry["result"]
    r.delete("dmg")
    # an end line early in the file: the lines after it are restored too, and said
    early = tmp_path / "early.jsonl"
    early.write_bytes(b"\n".join([lines[0], lines[1], lines[7], *lines[2:6], b""]))
    code, out, err, _ = run_cli("restore", str(early), "--broker", rurl, "--again", "--confirm", "--yes",
                                "--audit-log", str(tmp_path / "a"))
    assert code == 0 and "after the end line" in err and "restored 4 messages" in out, err
    assert r.lrange("dmg", 0, -1)[::-1] == originals
    r.delete("dmg")
    # not a backup at all: refused, nothing changed
    (tmp_path / "junk").write_bytes(b"\x00\x01 junk")
    code, out, err, _ = run_cli("restore", str(tmp_path / "junk"), "--broker", rurl)
    assert code == 64 and "not a celeryctl backup" in err and "Traceback" not in err


# --- RabbitMQ -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mvhost(rabbit):
    """One vhost for the module (the RabbitMQ tests here share it; queues are unique)."""
    yield from fresh_vhost(rabbit, "rs")


def _amqp(rabbit, vhost):
    import pika

    amqpwire.install()  # the test's own basic_get keeps the property bytes too
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", rabbit["amqp_port"], virtual_host=vhost))


def _declare(rabbit, vhost, *queues):
    conn = _amqp(rabbit, vhost)
    ch = conn.channel()
    for q in queues:
        ch.queue_declare(q, durable=True)
    conn.close()


def _get_all(rabbit, vhost, queue):
    """(body, exact property bytes, pika's view) of every message, in order."""
    conn = _amqp(rabbit, vhost)
    ch = conn.channel()
    out = []
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            break
        out.append((body, props.wire, props))
    conn.close()
    return out


def _rargs(rabbit, vhost):
    return ["--broker", f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}"]


def _roundtrip_rabbit(rabbit, vhost, queue, tmp_path):
    backup = tmp_path / f"{queue}.jsonl"
    code, out, err, _ = run_cli("purge", queue, *_rargs(rabbit, vhost), "--confirm", "--yes",
                                "--timeout", "2", "--backup", str(backup),
                                "--audit-log", str(tmp_path / "a"))
    assert code == 0 and ", backed up" in out, err
    code, out, err, _ = run_cli("restore", str(backup), *_rargs(rabbit, vhost), "--confirm",
                                "--yes", "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    return backup


def _publish_everything(rabbit, vhost, queue):
    """Messages from non-Celery producers: pika with every property and header type it
    encodes, py-amqp (floats, which pika cannot send), and hand-built frames (every integer
    width, single-precision floats)."""
    import amqp
    import pika

    conn = _amqp(rabbit, vhost)
    ch = conn.channel()
    headers = {"dec": decimal.Decimal("1.23"), "dec0": decimal.Decimal("-7"),
               "bytes": b"\x00\xff\x80", "when": datetime.datetime(2024, 5, 6, 7, 8, 9,
                                                                   tzinfo=datetime.timezone.utc),
               "null": None, "yes": True, "no": False, "small": 7, "neg": -2 ** 31,
               "big": 2 ** 40, "huge": 2 ** 63 - 1, "long": "ü" * 20000,
               "table": {"nested": {"deeper": [1, "two", None, {"k": b"v"}]}},
               "array": [1, 2 ** 40, "s", True, decimal.Decimal("0.5")]}
    ch.basic_publish("", queue, b"\x00binary body\xff", pika.BasicProperties(
        content_type="application/x-thing", content_encoding="binary", headers=headers,
        delivery_mode=1, priority=7, correlation_id="corr-1", reply_to="reply.q",
        expiration="3600000", message_id="msg-1", timestamp=1700000000, type="kind",
        user_id="guest", app_id="an-app", cluster_id="cl-1"))
    ch.basic_publish("", queue, b"no properties at all", pika.BasicProperties())
    ch.basic_publish("", queue, b"persistent", pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("", queue, b"raw", amqpwire.publishable(amqpwire.props_from_json({
        "headers": {"f32": {"$t": "float32", "v": 0.25},
                    **{f"int_{k}": {"$t": "int", "v": 5, "amqp": k} for k in "bBusiLl"},
                    "notutf8": {"$t": "string", "v": "/w=="}}, "delivery_mode": 1})))
    conn.close()
    c = amqp.Connection(f"127.0.0.1:{rabbit['amqp_port']}", virtual_host=vhost)
    c.connect()
    ch2 = c.channel()
    ch2.basic_publish(amqp.Message(b"from py-amqp", application_headers={
        "float": 1.5, "whole_float": 2.0, "tiny": 5e-324, "neg": -0.0, "int": 3},
        delivery_mode=1), exchange="", routing_key=queue)
    c.close()


@pytest.mark.rabbitmq
def test_rabbit_every_property_and_header_type_round_trips(rabbit, mvhost, tmp_path):
    _declare(rabbit, mvhost, "every", "every_ref")
    _publish_everything(rabbit, mvhost, "every")
    _publish_everything(rabbit, mvhost, "every_ref")  # the same messages, left untouched
    backup = _roundtrip_rabbit(rabbit, mvhost, "every", tmp_path)
    got, ref = _get_all(rabbit, mvhost, "every"), _get_all(rabbit, mvhost, "every_ref")
    assert len(got) == len(ref) == 5
    for (body, wire, props), (rbody, rwire, rprops) in zip(got, ref, strict=True):
        assert body == rbody and wire == rwire  # the same bytes: every type kept
        assert {k: getattr(props, k) for k in amqpwire.NAMES} == {
            k: getattr(rprops, k) for k in amqpwire.NAMES}
    first = got[0][2]
    assert first.delivery_mode == 1 and first.user_id == "guest" and first.cluster_id == "cl-1"
    assert isinstance(first.headers["dec"], decimal.Decimal) and first.headers["bytes"] == \
        b"\x00\xff\x80" and isinstance(first.headers["when"], datetime.datetime)
    assert got[1][2].delivery_mode is None and got[2][2].delivery_mode == 2
    floats = amqpwire.props_to_json(got[4][1])["headers"]
    assert floats["float"] == {"$t": "float", "v": 1.5} and floats["whole_float"] == {
        "$t": "float", "v": 2.0}
    assert amqpwire.props_to_json(got[3][1])["headers"]["int_b"] == {"$t": "int", "v": 5,
                                                                      "amqp": "b"}
    recs = _records(backup)
    assert recs[0]["properties"]["headers"]["dec"] == {"$t": "decimal", "v": "1.23"}


_typed = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1) | st.text(max_size=12)
    | st.builds(lambda v: {"$t": "float", "v": v}, st.floats(allow_nan=False,
                                                              allow_infinity=False))
    | st.builds(lambda v: {"$t": "decimal", "v": str(decimal.Decimal(v).scaleb(-2))},
                st.integers(-(2 ** 31), 2 ** 31 - 1))
    | st.builds(lambda b: {"$t": "bytes", "v": base64.b64encode(b).decode()},
                st.binary(max_size=10))
    | st.builds(lambda v: {"$t": "timestamp", "v": v}, st.integers(0, 253402300799)),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
        st.text(min_size=1, max_size=6).filter(lambda k: k != "$t"), kids, max_size=3),
    max_leaves=8)


@pytest.mark.rabbitmq
@pytest.mark.timeout(600)
@SETTINGS
@given(st.lists(st.tuples(
    st.dictionaries(st.text(min_size=1, max_size=6).filter(lambda k: k != "$t"), _typed,
                    max_size=4),
    st.fixed_dictionaries({}, optional={"delivery_mode": st.sampled_from([1, 2]),
                                        "content_type": st.text(max_size=10),
                                        "priority": st.integers(0, 9),
                                        "timestamp": st.integers(0, 2 ** 40)}),
    st.binary(max_size=32)), min_size=1, max_size=4))
def test_rabbit_property_round_trip(rabbit, mvhost, tmp_path, messages):
    queue = f"p{uuid.uuid4().hex[:8]}"
    _declare(rabbit, mvhost, queue)
    conn = _amqp(rabbit, mvhost)
    ch = conn.channel()
    sent = []
    for headers, props, body in messages:
        wire = amqpwire.props_from_json({**props, "headers": headers})
        ch.basic_publish("", queue, body, amqpwire.publishable(wire))
        sent.append((body, wire))
    conn.close()
    _roundtrip_rabbit(rabbit, mvhost, queue, tmp_path)
    assert [(b, w) for b, w, _ in _get_all(rabbit, mvhost, queue)] == sent


@pytest.mark.rabbitmq
def test_cross_broker_restores(rabbit, mvhost, rurl, tmp_path):
    """A Redis backup restored to RabbitMQ and back (re-encoded: the documented limits)."""
    r = _r(rurl)
    backup = _celery_backup(rurl, "xb", 3, tmp_path)
    ids = [x["headers"]["id"] for x in _records(backup)]
    _declare(rabbit, mvhost, "xb")
    code, out, err, _ = run_cli("restore", str(backup), *_rargs(rabbit, mvhost), "--confirm",
                                "--yes", "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    got = _get_all(rabbit, mvhost, "xb")
    assert [p.headers["id"] for _, _, p in got] == ids
    assert all(p.content_type == "application/json" and p.delivery_mode == 2 and
               json.loads(b)[0][0] == i for i, (b, _, p) in enumerate(got))
    # and a RabbitMQ backup restored to Redis: kombu envelopes a worker can read
    _declare(rabbit, mvhost, "xb2")
    conn = _amqp(rabbit, mvhost)
    import pika

    conn.channel().basic_publish("", "xb2", b'[[1, 2], {}, {}]', pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8",
        headers={"task": "t.add", "id": "abc", "d": decimal.Decimal("1.5")}, delivery_mode=2))
    conn.close()
    rb = tmp_path / "xb2.jsonl"
    code, out, err, _ = run_cli("purge", "xb2", *_rargs(rabbit, mvhost), "--confirm", "--yes",
                                "--backup", str(rb), "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    code, out, err, _ = run_cli("restore", str(rb), "--broker", rurl, "--confirm", "--yes",
                                "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    env = json.loads(r.lrange("xb2", 0, -1)[0])
    assert base64.b64decode(env["body"]) == b'[[1, 2], {}, {}]'
    assert env["headers"] == {"task": "t.add", "id": "abc", "d": "1.5"}
    assert env["properties"]["delivery_info"] == {"exchange": "", "routing_key": "xb2"}
    r.delete("xb2")
