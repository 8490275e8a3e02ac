"""The pure task view (celeryctl.tasks): parsing `registered`, the time_start clock per Celery
version, limits, joining the Redis in-flight entries, what was not seen, snapshots."""

from __future__ import annotations

import json

from celeryctl.checks import Limits, run_checks, select_checks
from celeryctl.collect.redis import parse_inflight_entry
from celeryctl.snapfile import load_snapshot, snapshot_document, validate_document
from celeryctl.snapshot import (
    InFlightMessage,
    Observed,
    RedisInFlight,
    Snapshot,
    WorkerNode,
    WorkersView,
)
from celeryctl.tasks import (
    filter_rows,
    held_of,
    parse_registered,
    registered_name,
    runtime_of,
    snapshot_task_view,
    task_limits,
    task_view,
    tasks_part,
)

NOW = 1_800_000_000.0


def req(tid, name="proj.slow", **kw):
    return {"id": tid, "name": name, "args": [1, "s3kr1t-arg"], "kwargs": {}, "type": name,
            "hostname": "w1@h", "time_start": kw.get("time_start"),
            "acknowledged": kw.get("acknowledged", False),
            "delivery_info": {"exchange": "", "routing_key": "celery", "priority": 0,
                              "redelivered": kw.get("redelivered", False)},
            "worker_pid": kw.get("pid")}


def snap(nodes, *, methods=("active", "reserved", "scheduled", "registered", "conf",
                            "report"), expected=None, inflight=None, broker="redis"):
    view = WorkersView(nodes=tuple(nodes), methods=methods, expected=expected,
                       expected_source="redis binding")
    parts = {"workers": Observed(view)}
    if inflight is not None:
        parts["redis_inflight"] = Observed(inflight)
    return Snapshot(broker_kind=broker, target={}, parts=parts, taken_at=NOW)


def node(name="w1@h", version="5.7.0", **replies):
    base = {"active": [], "reserved": [], "scheduled": [],
            "registered": ["proj.slow [time_limit=300 acks_late=True]", "proj.fast"],
            "conf": {"task_time_limit": None, "task_soft_time_limit": 60,
                     "task_acks_late": False},
            "report": {"celery": version}}
    base.update(replies)
    return WorkerNode(name=name, replies=base)


def test_registered_entries_with_and_without_attributes():
    reg = parse_registered(["a.b [time_limit=30 soft_time_limit=20.5 acks_late=False "
                            "rate_limit=10/m]", "c.d"])
    assert reg == {"a.b": {"time_limit": "30", "soft_time_limit": "20.5",
                           "acks_late": "False", "rate_limit": "10/m"}, "c.d": {}}
    assert registered_name("a.b [acks_late=True]") == "a.b"
    assert registered_name("c.d") == "c.d"


def test_runtime_only_when_time_start_is_known_to_be_wall_clock():
    assert runtime_of(NOW - 90, "5.2.7", NOW)[0] == 90
    assert runtime_of(NOW - 90, "4.4.0", NOW)[0] == 90
    rt, _, why = runtime_of(12345.6, "4.3.0", NOW)  # monotonic before 4.4
    assert rt is None and "monotonic" in why
    # no version: an epoch-sized value is wall-clock (no monotonic clock reads 1e9 s), a
    # small one is a monotonic clock
    assert runtime_of(NOW - 90, None, NOW)[0] == 90
    rt, _, why = runtime_of(12345.6, None, NOW)
    assert rt is None and "version" in why and "monotonic" in why
    rt, _, why = runtime_of(NOW + 600, "5.7.0", NOW)  # worker clock ahead
    assert rt is None and "future" in why
    assert runtime_of(NOW + 1, "5.7.0", NOW)[0] == 0.0  # within tolerance
    assert runtime_of(float("nan"), "5.7.0", NOW)[0] is None


def test_limits_from_the_task_else_the_conf_and_unknown_without_either():
    hard, soft, acks, known, src = task_limits({"time_limit": "300", "acks_late": "True"},
                                               {"task_soft_time_limit": 60})
    assert (hard, soft, acks, known, src) == (300.0, 60.0, True, True,
                                              "registered and worker conf")
    assert task_limits({}, {"task_time_limit": None, "task_acks_late": False})[2:] == (
        False, True, "none set")
    hard, soft, acks, known, src = task_limits(None, {"task_time_limit": 10})
    assert hard == 10 and known is False  # the task may set its own: not known
    assert task_limits(None, None)[3] is False


def test_view_joins_states_inflight_and_sorts_oldest_first():
    inflight = RedisInFlight(messages=(
        InFlightMessage("t1", id="r1", delivered_at=NOW - 50, restored=False),
        InFlightMessage("t2", id="r2", delivered_at=NOW - 500, restored=True),
        InFlightMessage("t3", id="s1", delivered_at=NOW - 5)), total=3, read=3)
    n = node(active=[req("a1", time_start=NOW - 100, pid=42)],
             reserved=[req("r1", name="proj.fast"),
                       req("r2", name="proj.fast", redelivered=True)],
             scheduled=[{"eta": "2027-01-15T10:00:00+00:00", "priority": 6,
                         "request": req("s1")}])
    v = task_view(snap([n], inflight=inflight), NOW)
    assert v.complete and v.observed
    assert [r.id for r in v.rows] == ["r2", "a1", "r1", "s1"]  # 500, 100, 50, 5 s
    r2, a1, r1, s1 = v.rows
    assert r2.redelivered is True and r2.restored is True and r2.held_seconds == 500
    assert a1.runtime_seconds == 100 and a1.pid == 42 and a1.time_limit == 300
    assert a1.soft_time_limit == 60 and a1.acks_late is True
    assert r1.acks_late is False and r1.time_limit is None and r1.time_limits_known
    assert s1.eta_in_seconds > 0 and s1.priority == 6
    assert [r.id for r in filter_rows(v.rows, older_than=60)] == ["r2", "a1"]
    assert [r.id for r in filter_rows(v.rows, states=["scheduled"])] == ["s1"]
    assert [r.id for r in filter_rows(v.rows, name="proj.f*")] == ["r2", "r1"]
    assert "args" not in a1.to_dict() and a1.to_dict(include_args=True)["args"] == [1,
                                                                                   "s3kr1t-arg"]


def test_what_was_not_seen_is_said():
    silent = snap([node(reserved=None)], expected=("w1@h", "w2@h"))
    v = task_view(silent, NOW)
    assert not v.complete
    assert any(u.startswith("w2@h: expected") for u in v.unseen)
    assert any("did not answer reserved" in u for u in v.unseen)
    down = Snapshot(broker_kind="redis", target={}, parts={
        "workers": Observed(error="connection refused", kind="unreachable")})
    v = task_view(down, NOW)
    assert not v.observed and v.error == "connection refused" and v.rows == ()
    mq = task_view(snap([node(active=[req("a", time_start=NOW - 1)])], broker="amqp"), NOW)
    assert mq.rows[0].held_seconds is None
    assert any("RabbitMQ" in n for n in mq.notes)


def test_inflight_entry_is_reduced_to_headers_and_routing():
    raw = json.dumps([{"body": "c2VjcmV0", "headers": {"id": "x", "task": "t",
                                                       "redelivered": True, "eta": None},
                       "properties": {"delivery_info": {"exchange": "", "routing_key": "q"}}},
                      "", "q"])
    m = parse_inflight_entry("tag", raw, NOW)
    assert (m.id, m.task, m.routing_key, m.restored, m.delivered_at) == ("x", "t", "q", True,
                                                                         NOW)
    assert "c2VjcmV0" not in repr(m)
    assert parse_inflight_entry("tag", b"garbage", None) is None


def test_snapshot_round_trip_keeps_the_view_and_redacts_arguments():
    s = snap([node(active=[req("a1", time_start=NOW - 100)])],
             inflight=RedisInFlight(total=0))
    s.parts["tasks"] = tasks_part(task_view(s, NOW))
    doc = json.loads(json.dumps(snapshot_document(s, tool_version="t",
                                                  collection_seconds=0.1)))
    assert "s3kr1t-arg" not in json.dumps(doc)
    validate_document(doc)
    back = load_snapshot(doc)
    v = snapshot_task_view(back)
    assert [r.id for r in v.rows] == ["a1"] and v.rows[0].runtime_seconds == 100
    # a snapshot written before the task view: computed from its workers at taken_at
    del doc["parts"]["tasks"]
    assert [r.id for r in snapshot_task_view(load_snapshot(doc)).rows] == ["a1"]


def test_registered_attributes_do_not_make_workers_differ():
    a = node("w1@h", registered=["proj.slow [acks_late=True]"],
             active_queues=[{"name": "celery"}])
    b = node("w2@h", registered=["proj.slow [acks_late=False]"],
             active_queues=[{"name": "celery"}])
    report = run_checks(snap([a, b]), Limits(), select_checks(["WRK006"], None))
    assert not report.findings


def test_worker_clock_skew_is_unknown_never_an_age_or_zero():
    """Issue 14 #2: a worker clock behind gives a runtime past the hard limit; ahead gives a
    negative age. Both are "worker clock skew" (a note), never a runtime, never 0 s."""
    rt, ts, note = runtime_of(NOW - 7200, "5.5.3", NOW, 3000.0)
    assert rt is None and ts == NOW - 7200 and "worker clock skew" in note
    assert "behind" in note
    assert runtime_of(NOW - 3000, "5.5.3", NOW, 3000.0)[0] == 3000  # at its limit: fine
    assert runtime_of(NOW - 7200, "5.5.3", NOW)[0] == 7200  # no limit: nothing to refute
    rt, _, note = runtime_of(NOW + 3600, "5.5.3", NOW, 3000.0)
    assert rt is None and "ahead" in note and "worker clock skew" in note
    assert runtime_of(NOW + 2, "5.5.3", NOW)[0] == 0.0  # within tolerance
    assert held_of(NOW + 3600, NOW)[0] is None and "worker clock skew" in held_of(
        NOW + 3600, NOW)[1]
    assert held_of(NOW - 3, NOW) == (3, None)
    behind = node(active=[req("a1", time_start=NOW - 7200)])  # proj.slow: time_limit=300
    ahead = node("w2@h", reserved=[req("r1", name="proj.fast")])
    inflight = RedisInFlight(messages=(
        InFlightMessage("t1", id="r1", delivered_at=NOW + 3600, restored=False),), total=1,
        read=1)
    v = task_view(snap([behind, ahead], inflight=inflight), NOW)
    a1, r1 = sorted(v.rows, key=lambda r: r.id)
    assert a1.runtime_seconds is None and any("clock skew" in n for n in a1.notes)
    assert r1.held_seconds is None and any("clock skew" in n for n in r1.notes)
    assert filter_rows(v.rows, older_than=3600) == []


def test_each_row_keeps_its_own_delivery_after_a_restore():
    """Issue 14 #4: after a visibility-timeout restore the same task id is held by the
    first worker (first delivery, its unacked entry gone) and the second (the restored
    copy): only the second row gets the copy's held time and redelivered."""
    inflight = RedisInFlight(messages=(
        InFlightMessage("t2", id="x", delivered_at=NOW - 3, restored=True),), total=1, read=1)
    first = node("w1@h", active=[req("x", time_start=NOW - 20)])
    second = node("w2@h", active=[req("x", time_start=NOW - 3, redelivered=True)])
    v = task_view(snap([first, second], inflight=inflight), NOW)
    rows = {r.worker: r for r in v.rows}
    assert rows["w1@h"].held_seconds is None and rows["w1@h"].redelivered is False
    assert any("no longer in kombu's unacked" in n for n in rows["w1@h"].notes)
    assert rows["w2@h"].held_seconds == 3 and rows["w2@h"].redelivered is True


def _table(rows, width=80) -> str:
    import io

    from rich.console import Console

    from celeryctl.render.tasks import render_tasks

    buf = io.StringIO()
    render_tasks(Console(file=buf, width=width, color_system=None),
                 [r.to_dict() for r in rows])
    return buf.getvalue()


def test_table_counts_by_state_and_worker_and_keeps_each_rows_notes():
    """Issue 14 #8, #9: a summary line under the table; `for` of a scheduled task is the
    time to its ETA; an unknown runtime shows "?" and its note is printed under the table."""
    many = node(reserved=[req(f"r{i}", name="proj.fast") for i in range(2500)],
                active=[req("a1", time_start=NOW - 7200)],
                scheduled=[{"eta": "2027-01-15T10:12:00+00:00", "request": req("s1")}])
    other = node("w2@h", active=[req("a2", time_start=NOW - 30)])
    v = task_view(snap([many, other], inflight=RedisInFlight(total=0)), NOW)
    text = _table(v.rows)
    assert "2,503 tasks: 2 active, 2,500 reserved, 1 scheduled — 2,502 on w1@h, 1 on w2@h" \
        in text
    line_a1 = next(ln for ln in text.splitlines() if " a1 " in ln)
    assert line_a1.split()[4] == "?"  # runtime unknown (`for`): why is said below
    assert "note (a1): runtime unknown (worker clock skew)" in text
    assert "note (2,501 tasks, e.g. r0): not in kombu's unacked hash" in text  # once
    sched = task_view(snap([node(scheduled=[{"eta": "2027-01-15T10:12:00+00:00",
                                             "request": req("s1")}])]),
                      1_800_000_000.0 + 0).rows
    due = sched[0].eta_in_seconds
    assert due > 0
    from celeryctl.views import human_seconds

    assert ("in " + human_seconds(due)) in _table(sched)


def test_tasks_filters_refuse_empty_name_nan_and_inf():
    """Issue 14 #12: usage errors (64) with the right words, before connecting anywhere."""
    from tests.conftest import run_cli

    for args, words in ((["--name", ""], "--name must be a task name"),
                        (["--older-than", "nan"], "finite number of seconds >= 0, got nan"),
                        (["--older-than", "inf"], "finite number of seconds >= 0, got inf"),
                        (["--older-than", "-1"], "finite number of seconds >= 0, got -1")):
        code, out, err, _ = run_cli("tasks", "--broker", "redis://127.0.0.1:1/0", *args)
        assert code == 64 and words in err and "Traceback" not in err, (args, err)


def test_demoapp_tasks_all_carry_the_lab_time_limits():
    """Issue 14 #10: `flaky` too (TSK006 stays quiet on a healthy lab)."""
    import os
    import subprocess
    import sys

    code = ("from celeryctl.lab import demoapp as d;"
            "print(d.flaky.time_limit, d.flaky.soft_time_limit, d.add.time_limit)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "CELERYCTL_LAB_TIME_LIMITS": "1"}, check=True)
    assert out.stdout.split() == ["3000", "2900", "3000"]
