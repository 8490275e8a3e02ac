"""Wrong types and garbage on a real Redis broker are reported, never fatal (issue 12, item 5).

A bound queue whose key (or a priority sub-list) is not a list, garbage in kombu's `unacked`
hash and `unacked_index` zset, binding tables that are not sets and binding members that do
not split in three: each costs only the numbers it feeds, with its reason; every other queue
and every other broker check is still there. The garbage is written with redis-py directly.
Databases 11-13 of the session Redis belong to this module (flushed at the start of each test).
"""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import run_cli

pytestmark = [pytest.mark.redis]

SEP = b"\x06\x16"
DB_WRONGTYPE, DB_UNACKED, DB_BINDINGS = 11, 12, 13


def _url(redis_server, db: int) -> str:
    return redis_server["url"].rsplit("/", 1)[0] + f"/{db}"


def _fresh(url):
    import redis

    r = redis.Redis.from_url(url)
    r.flushdb()
    return r


def _strict(text: str):
    """json.loads that refuses NaN / Infinity / -Infinity."""
    def refuse(name):
        raise AssertionError(f"non-finite number {name} in JSON output")

    return json.loads(text, parse_constant=refuse)


def _strict_cli(*args):
    code, out, err, _ = run_cli(*args, "--format", "json")
    return code, _strict(out), err


def _publish(url, queue, n):
    """n messages through kombu, priorities 0.. (so sub-lists too), and the queue's binding
    (kombu declares it only once per process: a later test's FLUSHDB would lose it)."""
    import redis
    from celery import Celery

    app = Celery(broker=url, set_as_current=False)
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task("celeryctl.lab.demoapp.add", (i, i), queue=queue, priority=i % 10,
                          producer=producer)
    app.close()
    _bind(redis.Redis.from_url(url), queue)


def _bind(r, queue: str) -> None:
    """kombu's binding for a queue on the default direct exchange named like the queue."""
    r.sadd(f"_kombu.binding.{queue}", queue.encode() + SEP + SEP + queue.encode())


def _dump(r):
    return {k: (r.type(k), r.dump(k)) for k in r.scan_iter()
            if not k.startswith((b"_kombu.binding_deadlines", b"_kombu.binding.reply."))}


def _wrongtype_broker(redis_server):
    url = _url(redis_server, DB_WRONGTYPE)
    r = _fresh(url)
    _publish(url, "good", 5)   # priorities 0..4: buckets 0:3, 3:2
    _publish(url, "other", 4)  # buckets 0:3, 3:1
    _bind(r, "bad")
    r.hset("bad", "field", "a hash where a queue list should be")
    _bind(r, "bad2")
    r.lpush("bad2", "{}")
    r.set(b"bad2" + SEP + b"3", "a string where a priority sub-list should be")
    return url, r


def _rows(doc):
    return {q["name"]: q for q in doc["queues"]}


def test_wrong_typed_queue_is_listed_with_its_type_and_the_others_keep_their_numbers(
        redis_server):
    url, _r = _wrongtype_broker(redis_server)
    code, out, err, _ = run_cli("queues", "--broker", url, "-t", "3")
    assert code == 3, (out, err)  # a listed queue could not be read (docs/exit-codes.md)
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["good"][1] == "5" and lines["other"][1] == "4", out
    assert lines["bad"][1] == "-" and lines["bad2"][1] == "-", out
    assert "not read: queue bad: WRONGTYPE: a hash, not a list" in err
    assert "not read: queue bad2: WRONGTYPE: a string, not a list (its priority 3 sub-list)" \
        in err
    assert "Traceback" not in err

    code, out_all, err_all, _ = run_cli("queues", "--all", "--broker", url, "-t", "3")
    assert code == 3 and "good" in out_all and "bad" in out_all and "WRONGTYPE" in err_all

    code, doc, err = _strict_cli("queues", "--broker", url, "-t", "3")
    assert code == 3, err
    rows = _rows(doc)
    assert rows["good"]["ready"] == 5 and rows["good"]["buckets"] == {"0": 3, "3": 2, "6": 0,
                                                                      "9": 0}
    assert rows["other"]["ready"] == 4 and rows["good"]["error"] is None
    assert rows["bad"]["ready"] is None and rows["bad"]["buckets"] is None
    assert rows["bad"]["error"] == "WRONGTYPE: a hash, not a list"
    assert rows["bad"]["type"] == "hash" and rows["bad2"]["type"] == "string"
    assert rows["bad2"]["error"] == "WRONGTYPE: a string, not a list (its priority 3 sub-list)"
    assert rows["good"]["type"] is None


def test_purge_works_beside_a_wrong_typed_queue_and_refuses_that_queue(redis_server):
    url, r = _wrongtype_broker(redis_server)
    before = _dump(r)
    code, out, err, _ = run_cli("purge", "other", "--broker", url, "-t", "3")
    assert code == 0 and "dry run" in err, (out, err)
    assert "4 ready messages" in out
    assert _dump(r) == before

    for queue, reason in (("bad", "WRONGTYPE: a hash, not a list"),
                          ("bad2", "WRONGTYPE: a string, not a list (its priority 3 sub-list)")):
        code, out, err, _ = run_cli("purge", queue, "--broker", url, "-t", "3", "--confirm",
                                    "--yes")
        assert code == 64, (out, err)
        assert f"refused: queue '{queue}' could not be read: {reason}" in err
        assert _dump(r) == before  # nothing changed

    code, out, err, _ = run_cli("purge", "bad", "other", "--broker", url, "-t", "3",
                                "--confirm", "--yes")
    assert code == 64 and "WRONGTYPE" in err and _dump(r) == before

    code, out, err, _ = run_cli("purge", "other", "--broker", url, "-t", "3", "--confirm",
                                "--yes")
    assert code == 0, (out, err)
    assert r.llen("other") == 0 and r.llen(b"other" + SEP + b"3") == 0
    assert r.llen("good") == 3 and r.type("bad") == b"hash" and r.hget("bad", "field")
    assert r.get(b"bad2" + SEP + b"3") is not None


def test_doctor_reports_a_wrong_typed_queue_and_never_an_all_clear(redis_server, tmp_path):
    url, _r = _wrongtype_broker(redis_server)
    code, doc, err = _strict_cli("doctor", "--broker", url, "-t", "2")
    assert code == 2, err  # QUE013 is critical for a task queue
    found = {(f["code"], f["subject"]): f for f in doc["findings"]}
    bad = found[("QUE013", "queue bad")]
    assert bad["severity"] == "critical" and "WRONGTYPE: a hash, not a list" in bad["message"]
    assert bad["evidence"]["type"] == "hash"
    assert "a string, not a list (its priority 3 sub-list)" in \
        found[("QUE013", "queue bad2")]["message"]
    assert not doc["summary"]["complete"]
    assert any(n["name"] == "queues" and "bad" in n["reason"]
               for n in doc["summary"]["not_observed"])
    # the healthy queues were still checked with their real numbers
    assert found[("QUE002", "queue good")][
        "evidence"]["ready"] == 5
    # --ignore QUE013 cannot turn the unread queue into an all-clear
    code, out, err, _ = run_cli("doctor", "--broker", url, "-t", "2", "--ignore", "QUE013",
                                "--ignore", "QUE002", "--ignore", "SRC004")
    assert code == 3 and "INCOMPLETE" in out.upper(), (out, err)

    snap = tmp_path / "s.json"
    code, out, err, _ = run_cli("snapshot", "--broker", url, "-t", "2", "-o", str(snap))
    assert code == 0, err
    rows = {q["name"]: q for q in _strict(snap.read_text())["parts"]["queues"]["value"]}
    assert rows["bad"]["error"] == "WRONGTYPE: a hash, not a list" and rows["good"]["ready"] == 5
    code, doc, err = _strict_cli("doctor", "--from", str(snap))
    assert code == 2 and {f["subject"] for f in doc["findings"] if f["code"] == "QUE013"} == {
        "queue bad", "queue bad2"}


def _unacked_broker(redis_server, garbage):
    url = _url(redis_server, DB_UNACKED)
    r = _fresh(url)
    _publish(url, "celery", 3)
    garbage(r)
    return url, r


def _entry(routing_key="celery"):
    return json.dumps([{"body": "", "headers": {}, "properties": {}}, "", routing_key])


def _finite_numbers(obj):
    if isinstance(obj, float):
        assert math.isfinite(obj), obj
    elif isinstance(obj, dict):
        for v in obj.values():
            _finite_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            _finite_numbers(v)


def test_non_finite_unacked_scores_never_reach_the_output(redis_server, tmp_path):
    import time

    def garbage(r):
        now = time.time()
        r.hset("unacked", mapping={"t-ninf": _entry(), "t-pinf": _entry(), "t-neg": _entry(),
                                   "t-ok": _entry()})
        r.zadd("unacked_index", {"t-ninf": float("-inf"), "t-pinf": float("inf"),
                                 "t-neg": -5.0, "t-ok": now - 30})

    url, _r = _unacked_broker(redis_server, garbage)
    code, doc, err = _strict_cli("queues", "--broker", url, "-t", "3")
    assert code == 0, err
    row = _rows(doc)["celery"]
    assert row["ready"] == 3 and row["unacked"] == 4
    assert 25 <= row["oldest_unacked_seconds"] < 120  # the one real receive time
    un = doc["redis_unacked"]
    assert un["total"] == 4 and 25 <= un["oldest_seconds"] < 120
    assert any("3 score(s) that are no receive time" in p for p in un["problems"])
    assert any("no receive time" in n for n in doc["notes"])
    _finite_numbers(doc)

    code, out, err, _ = run_cli("queues", "--broker", url, "-t", "3")
    assert code == 0 and "inf" not in out.lower() and "no receive time" in err

    snap = tmp_path / "s.json"
    assert run_cli("snapshot", "--broker", url, "-t", "2", "-o", str(snap))[0] == 0
    _finite_numbers(_strict(snap.read_text()))

    code, doc, err = _strict_cli("doctor", "--broker", url, "-t", "2")
    codes = {f["code"] for f in doc["findings"]}
    assert "BRK010" in codes, doc["findings"]
    _finite_numbers(doc)


def test_only_the_index_scores_garbage_skips_the_age_check_with_the_reason(redis_server):
    def garbage(r):
        r.hset("unacked", mapping={"a": _entry(), "b": _entry()})
        r.zadd("unacked_index", {"a": float("-inf"), "b": float("inf")})

    url, _r = _unacked_broker(redis_server, garbage)
    code, doc, err = _strict_cli("queues", "--broker", url, "-t", "3")
    assert code == 0 and doc["redis_unacked"]["oldest_seconds"] is None
    assert _rows(doc)["celery"]["oldest_unacked_seconds"] is None
    assert _rows(doc)["celery"]["unacked"] == 2
    code, doc, err = _strict_cli("doctor", "--broker", url, "-t", "2")
    skipped = {s["code"]: s["reason"] for s in doc["skipped"]}
    assert "ages of in-flight messages unknown" in skipped["QUE003"]
    assert "BRK010" in {f["code"] for f in doc["findings"]}


def test_malformed_unacked_entries_cost_only_their_attribution(redis_server):
    def garbage(r):
        now = __import__("time").time()
        r.hset("unacked", mapping={
            "ok": _entry(),
            "notjson": b"\xff\xfe not json at all",
            "nan": b'[{}, "", NaN]',
            "object": json.dumps({"a": 1}),
            "short": json.dumps([{}, ""]),
            "badtypes": json.dumps([{}, 5, ["x"]]),
            "msgstr": json.dumps(["body", "", "celery"]),
        })
        r.zadd("unacked_index", {k: now - 10 for k in ("ok", "notjson", "nan", "object",
                                                        "short", "badtypes", "msgstr")})

    url, _r = _unacked_broker(redis_server, garbage)
    code, doc, err = _strict_cli("queues", "--broker", url, "-t", "3")
    assert code == 0, err
    un = doc["redis_unacked"]
    assert un["total"] == 7 and un["malformed"] == 6
    assert any("6 entries not kombu's JSON [message, exchange, routing_key]" in p
               for p in un["problems"])
    assert _rows(doc)["celery"]["unacked"] == 1 and _rows(doc)["celery"]["ready"] == 3
    code, doc, err = _strict_cli("doctor", "--broker", url, "-t", "2")
    brk = [f for f in doc["findings"] if f["code"] == "BRK010"]
    assert brk and brk[0]["evidence"]["malformed"] == 6
    assert "QUE003" not in {s["code"] for s in doc["skipped"]}  # ages are known: it ran


def test_unacked_keys_of_the_wrong_type_lose_only_their_numbers(redis_server):
    def garbage(r):
        r.rpush("unacked", "not", "a", "hash")
        r.set("unacked_index", "not a zset")

    url, _r = _unacked_broker(redis_server, garbage)
    code, doc, err = _strict_cli("queues", "--broker", url, "-t", "3")
    assert code == 0, err
    row = _rows(doc)["celery"]
    assert row["ready"] == 3 and row["unacked"] is None and row["oldest_unacked_seconds"] is None
    un = doc["redis_unacked"]
    assert un["total"] is None and un["oldest_seconds"] is None
    problems = " | ".join(un["problems"])
    assert "unacked: WRONGTYPE: a list, not a hash" in problems
    assert "unacked_index: WRONGTYPE: a string, not a sorted set" in problems
    broker = next(s for s in doc["sources"] if s["name"] == "broker")
    assert broker["state"] == "observed"

    code, doc, err = _strict_cli("doctor", "--broker", url, "-t", "2")
    skipped = {s["code"] for s in doc["skipped"]}
    # the other broker checks still ran on INFO / CONFIG / the queues
    assert not skipped & {"BRK001", "BRK002", "BRK004", "BRK005", "BRK006", "POOL001",
                          "QUE001"}, doc["skipped"]
    assert "QUE003" in skipped
    brk = next(f for f in doc["findings"] if f["code"] == "BRK010")
    assert "a list, not a hash" in brk["message"] and brk["evidence"]["in_flight"] is None


def test_binding_garbage_is_named_and_the_real_queues_still_counted(redis_server):
    url = _url(redis_server, DB_BINDINGS)
    r = _fresh(url)
    _publish(url, "celery", 2)
    r.set("_kombu.binding.notaset", "a string")
    r.sadd("_kombu.binding.mixed", b"nosep", b"a" + SEP + b"b",
           b"rk" + SEP + SEP + b"fine", b"rk2" + SEP + SEP + b"q\xff\xfe")
    code, doc, err = _strict_cli("queues", "--broker", url, "-t", "3")
    assert code == 0, err
    rows = _rows(doc)
    assert rows["celery"]["ready"] == 2 and rows["fine"]["ready"] == 0
    # kombu reads that member with errors="replace": the queue it routes to is q\ufffd\ufffd
    assert rows["q\ufffd\ufffd"]["ready"] == 0 and rows["q\ufffd\ufffd"]["error"] is None
    notes = " | ".join(doc["notes"])
    assert "_kombu.binding.notaset: WRONGTYPE: a string, not a set" in notes
    assert "_kombu.binding.mixed: 2 member(s) not kombu's" in notes
    assert "not UTF-8" in notes and "\\xff\\xfe" in notes
    assert "\x06" not in notes  # the separator shown escaped, never raw

    code, out, err, _ = run_cli("queues", "--broker", url, "-t", "3")
    assert code == 0 and "celery" in out and "Traceback" not in err

    code, doc, err = _strict_cli("doctor", "--broker", url, "-t", "2")
    brk = [f for f in doc["findings"] if f["code"] == "BRK010"]
    assert brk and brk[0]["subject"] == "kombu binding tables"
    assert "not a set" in brk[0]["message"]
