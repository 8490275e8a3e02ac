"""Snapshot documents: redaction rules, and a round trip through JSON that the checks cannot
tell from the original."""

from __future__ import annotations

import json

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
