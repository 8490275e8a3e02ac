"""Pure parsing of what kombu keeps on Redis when it holds garbage, and the checks that report
it (QUE013 queue-key-wrong-type, BRK010 redis-bookkeeping-garbage, QUE003's skip)."""

from __future__ import annotations

import json

import pytest

from celeryctl.checks import Limits, run_checks, select_checks
from celeryctl.collect.redis import (
    _score,
    literal_text,
    parse_binding_members,
    parse_unacked_entry,
    type_phrase,
    wrongtype_reason,
)
from celeryctl.snapshot import Observed, QueueDepth, RedisServer, RedisUnacked, Snapshot

SEP = "\x06\x16"


@pytest.mark.parametrize("raw, expected", [
    (json.dumps([{"body": ""}, "", "celery"]), ("", "celery")),
    (json.dumps([{}, "celery", "celery"]), ("celery", "celery")),
    (json.dumps([{}, None, None]), ("", "")),
    (b"\xff\xfe not json", "not JSON (UnicodeDecodeError)"),
    (b"{nope", "not JSON (JSONDecodeError)"),
    (b'[{}, "", NaN]', "not JSON (ValueError)"),
    (b'[{}, "", -Infinity]', "not JSON (ValueError)"),
    (json.dumps({"a": 1}), "a JSON object, not a list of 3"),
    (json.dumps(5), "a JSON number, not a list of 3"),
    (json.dumps([{}, ""]), "a JSON list of 2, not 3"),
    (json.dumps(["body", "", "celery"]), "its message is a JSON string, not an object"),
    (json.dumps([{}, 5, ["x"]]), "its exchange or routing key is not a string"),
])
def test_unacked_entries(raw, expected):
    assert parse_unacked_entry(raw) == expected


def test_deeply_nested_unacked_entry_is_a_reason_not_a_crash():
    assert parse_unacked_entry("[" * 100_000 + "]" * 100_000).startswith("not JSON")


@pytest.mark.parametrize("value, expected", [
    (1700000000.5, 1700000000.5), (0.0, 0.0), ("12.5", 12.5),
    (float("inf"), None), (float("-inf"), None), (float("nan"), None), (-5.0, None),
    ("abc", None), (None, None), (b"inf", None),
])
def test_scores_are_finite_receive_times_or_none(value, expected):
    assert _score(value) == expected


def test_binding_members():
    good = f"celery{SEP}{SEP}celery".encode()
    bindings, problems = parse_binding_members("celery", [good], SEP)
    assert [(b.routing_key, b.pattern, b.queue) for b in bindings] == [("celery", "", "celery")]
    assert problems == []

    bindings, problems = parse_binding_members(
        "x", [good, b"nosep", f"a{SEP}b".encode(), b"rk" + SEP.encode() * 2 + b"q\xff"], SEP)
    assert sorted(b.queue for b in bindings) == ["celery", "q\ufffd"]  # as kombu decodes it
    assert len(problems) == 2
    assert problems[0].startswith("2 member(s) not kombu's 'routing_key\\x06\\x16pattern")
    assert "e.g. 'a\\x06\\x16b'" in problems[0]
    assert problems[1].startswith("1 member(s) not UTF-8") and "q\\xff'" in problems[1]
    assert all("\x06" not in p and "\udcff" not in p for p in problems)


def test_binding_members_with_a_custom_separator():
    bindings, problems = parse_binding_members("ex", [b"rk::::q1", b"rk\x06\x16\x06\x16q2"], "::")
    assert [b.queue for b in bindings] == ["q1"] and len(problems) == 1


def test_literal_text_and_type_phrases():
    assert literal_text(b"q\xff\x06\x16x") == "q\\xff\\x06\\x16x"
    assert literal_text("a\udcffb") == "a\\xffb"  # surrogateescape: back to the byte
    assert literal_text("x" * 100, 10) == "xxxxxxx..."
    assert type_phrase("zset") == "a sorted set" and type_phrase("ReJSON-RL") == \
        "a ReJSON-RL value"
    assert wrongtype_reason("hash", "list") == "WRONGTYPE: a hash, not a list"
    assert wrongtype_reason(None, "set") == \
        "WRONGTYPE: of a type that could not be read, not a set"


def _snap(queues=(), unacked=None, server=None):
    parts = {"broker": Observed(True), "queues": Observed(list(queues)),
             "workers": Observed(error="x"),
             "redis_unacked": Observed(unacked) if unacked else Observed(error="not read"),
             "redis_server": Observed(server) if server else Observed(error="not read")}
    return Snapshot(broker_kind="redis", target={"broker": "redis://127.0.0.1:6379/0"},
                    parts=parts)


def _run(snap, *codes):
    return run_checks(snap, Limits(), select_checks(list(codes), None))


def test_que013_queue_key_wrong_type():
    qs = [QueueDepth("good", "redis", ready=5, buckets={"0": 5}),
          QueueDepth("bad", "redis", ready=None, error="WRONGTYPE: a hash, not a list",
                     type="hash"),
          QueueDepth("x.reply.celery.pidbox", "redis", ready=None, internal=True,
                     error="WRONGTYPE: a string, not a list", type="string"),
          QueueDepth("denied", "redis", ready=None, error="LLEN denied: permission denied")]
    report = _run(_snap(qs), "QUE013")
    got = {(f.subject, f.severity.label) for f in report.findings}
    assert got == {("queue bad", "critical"), ("queue x.reply.celery.pidbox", "warning")}
    bad = next(f for f in report.findings if f.subject == "queue bad")
    assert "WRONGTYPE: a hash, not a list" in bad.message and bad.evidence["type"] == "hash"
    # unread task queues keep the verdict incomplete whatever the findings
    assert any(m.name == "queues" for m in report.missing)
    assert _run(_snap([qs[0]]), "QUE013").findings == []


def test_brk010_bookkeeping_garbage():
    un = RedisUnacked(total=None, oldest_seconds=None, per_queue=None, oldest_per_queue=None,
                      problems=("unacked: WRONGTYPE: a list, not a hash: ...",))
    srv = RedisServer(version="7.0", info={}, config={}, config_error=None, keyprefix="p:",
                      keyprefix_source="transport options",
                      binding_garbage=("_kombu.binding.y: WRONGTYPE: a string, not a set",))
    report = _run(_snap(unacked=un, server=srv), "BRK010")
    subjects = {f.subject: f for f in report.findings}
    assert set(subjects) == {"unacked (Redis in-flight bookkeeping)", "kombu binding tables"}
    assert "a list, not a hash" in subjects["unacked (Redis in-flight bookkeeping)"].message
    assert "redis-cli TYPE p:unacked" in subjects[
        "unacked (Redis in-flight bookkeeping)"].commands
    clean = RedisUnacked(total=0, oldest_seconds=None, per_queue={}, oldest_per_queue={})
    assert _run(_snap(unacked=clean), "BRK010").findings == []
    skipped = _run(_snap(), "BRK010").skipped
    assert [s.code for s in skipped] == ["BRK010"]


def test_que003_skips_when_the_ages_are_garbage_and_runs_otherwise():
    garbage = RedisUnacked(total=2, oldest_seconds=None, per_queue={"celery": 2},
                           oldest_per_queue={}, problems=("unacked_index: 2 score(s) ...",))
    report = _run(_snap(unacked=garbage), "QUE003")
    assert [s.code for s in report.skipped] == ["QUE003"]
    assert "ages of in-flight messages unknown" in report.skipped[0].reason
    old = RedisUnacked(total=1, oldest_seconds=7200.0, per_queue={"celery": 1},
                       oldest_per_queue={"celery": 7200.0},
                       problems=("unacked_index: 1 score(s) ...",))
    assert [f.code for f in _run(_snap(unacked=old), "QUE003").findings] == ["QUE003"]
    empty = RedisUnacked(total=0, oldest_seconds=None, per_queue={}, oldest_per_queue=None,
                         problems=("unacked_index: WRONGTYPE: ...",))
    assert _run(_snap(unacked=empty), "QUE003").skipped == []


def test_server_numbers_are_never_non_finite():
    from celeryctl.collect.redis import _jsonable_info, client_from_fields

    info = _jsonable_info({"mem_fragmentation_ratio": float("nan"), "x": {"y": float("inf")},
                           "used_memory": 5, "ratio": 1.5})
    assert info == {"mem_fragmentation_ratio": "nan", "x": {"y": "inf"}, "used_memory": 5,
                    "ratio": 1.5}
    c = client_from_fields({"addr": "127.0.0.1:1", "age": "inf", "idle": "nan"})
    assert c.age_seconds is None and c.idle_seconds is None
