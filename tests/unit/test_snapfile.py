"""Snapshot documents: redaction rules, and a round trip through JSON that the checks cannot
tell from the original."""

from __future__ import annotations

import json

import pytest

from celeryctl.checks import Limits, run_checks, select_checks
from celeryctl.snapfile import ARGS_MARKER, MASK, load_snapshot, redact_document, snapshot_document
from celeryctl.snapshot import Observed, QueueDepth, Snapshot, WorkerNode, WorkersView


def test_redaction_rules():
    doc = {"parts": {"workers": {"value": {"nodes": [{"name": "w1", "replies": {
        "conf": {"broker_url": "redis://:hunter22@h:6379/0", "my_api_token": "abc123",
                 "task_default_routing_key": "celery", "custom_dsn": "amqp://u:pw999@h//"},
        "scheduled": [{"request": {"args": [1, "secret"], "kwargs": {"a": 1},
                                   "argsrepr": "(1, 'secret')", "id": "t1"}}]}}]}},
        "app": {"value": {"result_backend": "redis://only-secret@h/1", "sentry_key": "k"}}}}
    out = json.dumps(redact_document(doc))
    for leaked in ("hunter22", "abc123", "pw999", "only-secret", "'secret'", '"k"'):
        assert leaked not in out, leaked
    assert '"task_default_routing_key": "celery"' in out and "t1" in out
    assert ARGS_MARKER in out and MASK in out
    kept = json.dumps(redact_document(doc, include_args=True))
    assert "(1, 'secret')" in kept and "hunter22" not in kept


def test_round_trip_gives_the_same_findings():
    view = WorkersView(nodes=(WorkerNode("w1", {"ping": {"ok": "pong"}, "active_queues": []}),
                              WorkerNode("w1", {"ping": {"ok": "pong"}})),
                       methods=("ping", "active_queues"), expected=("w1", "w2"))
    snap = Snapshot(broker_kind="redis", target={"broker": "redis://h:6379/0"}, parts={
        "broker": Observed(True), "workers": Observed(view),
        "queues": Observed([QueueDepth("q", "redis", ready=5000, consumers=0,
                                       buckets={"0": 5000})]),
        "connections": Observed(error="not asked"),
        "rss_growth": Observed({"w1": (100, 200, False)}),
        "app": Observed({"accept_content": ["json"], "task_serializer": "json"}),
    }, taken_at=1.0)
    doc = json.loads(json.dumps(snapshot_document(snap, tool_version="t",
                                                  collection_seconds=0.1)))
    back = load_snapshot(doc)
    checks = select_checks(None, None)
    a, b = run_checks(snap, Limits(), checks), run_checks(back, Limits(), checks)
    assert [f.to_dict() for f in a.findings] == [f.to_dict() for f in b.findings]
    assert a.findings and [s.to_dict() for s in a.skipped] == [s.to_dict() for s in b.skipped]
    assert back.workers.missing == ["w2"] and len(back.workers.nodes) == 2
    assert back.get("rss_growth") == {"w1": (100, 200, False)}
    assert back.get("app") == {"accept_content": ["json"], "task_serializer": "json"}


# --- validation (issue 12 item 9) --------------------------------------------------------------

def _doc():
    view = WorkersView(nodes=(WorkerNode("w1", {"ping": {"ok": "pong"}}),),
                       methods=("ping",), expected=("w1",))
    snap = Snapshot(broker_kind="redis", target={"broker": "redis://h:6379/0"}, parts={
        "broker": Observed(True), "workers": Observed(view),
        "queues": Observed([QueueDepth(f"q{i}", "redis", ready=i, consumers=1)
                            for i in range(5)]),
        "connections": Observed(error="not asked"),
        "rss_growth": Observed({"w1": (100, 200, False)}),
    }, taken_at=1.0)
    return json.loads(json.dumps(snapshot_document(snap, tool_version="t",
                                                   collection_seconds=0.1)))


def test_a_written_snapshot_validates():
    from celeryctl.snapfile import validate_document

    validate_document(_doc())


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["parts"]["queues"]["value"][3].__setitem__("ready", "abc"),
     'snapshot.parts.queues.value[3].ready: expected an integer or null, got "abc"'),
    (lambda d: d["parts"]["queues"]["value"][0].__setitem__("ready", True),
     "snapshot.parts.queues.value[0].ready: expected an integer or null, got true"),
    (lambda d: d["parts"]["queues"]["value"][0].__setitem__("ready", float("nan")),
     "snapshot.parts.queues.value[0].ready: expected an integer or null, got NaN"),
    (lambda d: d["parts"]["queues"]["value"][0].pop("name"),
     "snapshot.parts.queues.value[0].name: missing (expected a string)"),
    (lambda d: d["parts"]["queues"].__setitem__("value", {"q": 1}),
     "snapshot.parts.queues.value: expected an array, got an object"),
    (lambda d: d["parts"]["workers"]["value"]["nodes"][0].__setitem__("replies", []),
     "snapshot.parts.workers.value.nodes[0].replies: expected an object, got an array"),
    (lambda d: d["parts"].__setitem__("broker", "yes"),
     'snapshot.parts.broker: expected an object, got "yes"'),
    (lambda d: d["parts"]["broker"].__setitem__("error", 5),
     "snapshot.parts.broker.error: expected a string or null, got 5"),
    (lambda d: d.__setitem__("parts", []), "snapshot.parts: expected an object or null"),
    (lambda d: d.__setitem__("sources", [{"name": 1}]),
     "snapshot.sources[0].name: expected a string, got 1"),
    (lambda d: d.__setitem__("broker_kind", "kafka"),
     'snapshot.broker_kind: expected redis or amqp, got "kafka"'),
    (lambda d: d.__setitem__("taken_at_epoch", "yesterday"),
     'snapshot.taken_at_epoch: expected a number or null, got "yesterday"'),
    (lambda d: d["parts"]["rss_growth"]["value"].__setitem__("w1", 3),
     "snapshot.parts.rss_growth.value.w1: expected an array, got 3"),
    (lambda d: d["parts"]["queues"]["value"][0].__setitem__("ready", "\x1b[31mred" * 10),
     'snapshot.parts.queues.value[0].ready: expected an integer or null, got "\\u001b[31mred'),
])
def test_wrong_types_are_named_by_path(mutate, message):
    from celeryctl.snapfile import SnapshotError, validate_document

    doc = _doc()
    mutate(doc)
    with pytest.raises(SnapshotError) as info:
        validate_document(doc)
    assert str(info.value).startswith(message), str(info.value)
    assert "\x1b" not in str(info.value) and len(str(info.value)) < 200  # escaped, cut short


def test_read_snapshot_names_the_file_and_the_field(tmp_path):
    from celeryctl.snapfile import SnapshotError, read_snapshot

    doc = _doc()
    doc["parts"]["queues"]["value"][3]["ready"] = "abc"
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SnapshotError, match=r"s\.json: .*queues\.value\[3\]\.ready"):
        read_snapshot(path)


@pytest.mark.parametrize("drop", [("broker",), ("workers",), ("queues",),
                                  ("broker", "workers", "queues")])
def test_a_snapshot_without_essential_parts_is_incomplete(drop):
    doc = _doc()
    for name in drop:
        del doc["parts"][name]
    report = run_checks(load_snapshot(doc), Limits(), select_checks(None, None))
    assert report.incomplete and {m.name for m in report.missing} >= set(drop)


def test_an_empty_document_is_incomplete_not_all_clear():
    from celeryctl.render.report import verdict
    from celeryctl.snapfile import SCHEMA, validate_document

    for doc in ({"schema": SCHEMA}, {"schema": SCHEMA, "parts": {}}):
        validate_document(doc)
        report = run_checks(load_snapshot(doc), Limits(), select_checks(None, None))
        assert report.incomplete and verdict(report).startswith("INCOMPLETE")


def _events_part():
    return {"value": {"schema": 1, "window_seconds": 5.0, "notes": [],
                      "tasks": [{"name": "t", "failed": 3, "succeeded": 0, "failure_ratio": 1.0,
                                 "exceptions": [{"type": "E", "count": 3, "example": "E()"}],
                                 "unfinished_count": 0, "unfinished": []}],
                      "workers": [{"name": "a@h", "clock_drift_seconds": None,
                                   "heartbeat_late": None, "events_were_enabled": True}]},
            "error": None, "source": "events"}


@pytest.mark.parametrize("mutate,message", [
    (lambda p: p["value"]["tasks"][0].__setitem__("failed", "3"),
     'snapshot.parts.events.value.tasks[0].failed: expected an integer, got "3"'),
    (lambda p: p["value"]["tasks"][0]["exceptions"][0].pop("type"),
     "snapshot.parts.events.value.tasks[0].exceptions[0].type: missing (expected a string)"),
    (lambda p: p["value"]["workers"][0].__setitem__("heartbeat_late", "no"),
     'snapshot.parts.events.value.workers[0].heartbeat_late: expected true or false or null'),
    (lambda p: p["value"].pop("window_seconds"),
     "snapshot.parts.events.value.window_seconds: missing (expected a number)"),
])
def test_the_events_window_part_is_validated(mutate, message):
    """doctor --events saves its window as the `events` part; --from checks its types."""
    from celeryctl.snapfile import SnapshotError, validate_document

    doc = _doc()
    doc["parts"]["events"] = _events_part()
    doc["parts"]["event_consumers"] = {"value": {"senders": [{"worker": "a@h", "why": "x"}],
                                                 "consumers": [], "unknown": None}}
    validate_document(doc)
    s = load_snapshot(doc)
    assert s.get("events")["tasks"][0]["failed"] == 3
    r = run_checks(s, Limits(), select_checks(["EVT001", "EVT005"], None))
    assert sorted(f.code for f in r.findings) == ["EVT001", "EVT005"]
    mutate(doc["parts"]["events"])
    with pytest.raises(SnapshotError) as info:
        validate_document(doc)
    assert str(info.value).startswith(message), str(info.value)
