"""The pure part of `celeryctl task`: ids, runtime from time_start, verdicts, exit codes."""

from __future__ import annotations

import pytest

from celeryctl.taskfind import (
    Coverage,
    Evidence,
    check_ids,
    decide,
    exit_code,
    hard_limit_from_registered,
    parse_date,
    runtime_seconds,
)

NOW = 1_800_000_000.0


def test_bad_ids():
    for bad in ([""], ["  "], ["x" * 2000], [], [3]):
        with pytest.raises(ValueError):
            check_ids(bad)
    assert check_ids(["a", "b", "a"]) == ["a", "b"]


def test_runtime_never_wrong():
    assert runtime_seconds(NOW - 7980, NOW) == 7980
    assert runtime_seconds(12345.6, NOW) is None  # a monotonic time_start (Celery < 5.2)
    assert runtime_seconds(NOW + 3, NOW) == 0.0  # small skew (CLOCK_TOLERANCE)
    assert runtime_seconds(NOW + 10, NOW) is None
    assert runtime_seconds(NOW + 3600, NOW) is None
    assert runtime_seconds(None, NOW) is None
    assert runtime_seconds(float("nan"), NOW) is None
    assert runtime_seconds(True, NOW) is None


def test_time_limit_from_registered():
    lines = ["a.b [time_limit=300]", "c.d", "e.f [soft_time_limit=5]"]
    assert hard_limit_from_registered(lines, "a.b") == (True, 300.0)
    assert hard_limit_from_registered(lines, "c.d") == (True, None)
    assert hard_limit_from_registered(lines, "e.f") == (True, None)
    assert hard_limit_from_registered(lines, "x") == (False, None)


def test_dates():
    assert parse_date("2027-01-15T08:00:00") == parse_date("2027-01-15T08:00:00+00:00")
    assert parse_date("nonsense") is None


def test_verdicts():
    cov = Coverage()
    run = decide(Evidence("i", workers=[{"worker": "w1@h", "state": "active", "pid": 4312,
                                          "runtime_seconds": 7980, "time_limit": None,
                                          "time_limit_known": True}]), cov, NOW)
    assert (run.state, run.verdict) == ("active", "running 2h13m on w1@h pid 4312, "
                                                  "no hard time limit")
    failed = decide(Evidence("i", backend={"status": "FAILURE", "date_done_epoch": NOW - 300,
                                           "exception_type": "ValueError",
                                           "exception_message": "bad [red]x[/red]"}), cov, NOW)
    assert failed.verdict == "failed 5 min ago: ValueError: bad [red]x[/red]"
    q = decide(Evidence("i", queue={"queue": "billing", "priority_step": 0, "position": 4812,
                                    "of": 5000}), cov, NOW)
    assert q.verdict == "waiting in `billing`, position 4,812 of 5,000"
    none = decide(Evidence("i"), cov, NOW)
    assert none.verdict == "not found anywhere: never sent, already expired, or lost"
    assert exit_code([none], cov) == 1
    assert exit_code([q], cov) == 0


def test_unread_place_is_never_not_found():
    cov = Coverage(queue_gap="stopped after 60,000 of 100,000 messages in 7 queues: --timeout")
    f = decide(Evidence("i"), cov, NOW)
    assert f.state == "unknown" and "not found anywhere" not in f.verdict
    assert "stopped after 60,000" in f.verdict
    assert exit_code([f], cov) == 3


def test_in_flight_says_when_redelivered():
    cov = Coverage(visibility_timeout=3600)
    f = decide(Evidence("i", unacked={"queue": "celery", "delivered_seconds": 600}), cov, NOW)
    assert f.state == "in_flight"
    assert "delivered 10 min ago, redelivered in 50 min by visibility_timeout" in f.verdict
    late = decide(Evidence("i", unacked={"queue": "celery", "delivered_seconds": 4000}), cov,
                  NOW)
    assert "past visibility_timeout" in late.verdict


def test_revoked_while_running_then_succeeded_is_succeeded():
    """Defect 3: a revoke that came after the start does not stop the task: the backend's
    SUCCESS is what it is, the revoke is a note."""
    f = decide(Evidence("i", revoked_by=["w1@h"], backend={"status": "SUCCESS",
                                                           "date_done_epoch": NOW - 60}),
               Coverage(), NOW)
    assert f.state == "succeeded"
    assert f.verdict == ("succeeded 1 min ago; revoked on w1@h after it had started: the "
                         "revoke came too late")
    failed = decide(Evidence("i", revoked_by=["w1@h"], backend={"status": "FAILURE"}),
                    Coverage(), NOW)
    assert failed.state == "failed" and "too late" in failed.verdict
    # still queued: the revoke will discard it
    q = decide(Evidence("i", revoked_by=["w1@h"], queue={"queue": "q", "position": 1},
                        backend={"status": "SUCCESS"}), Coverage(), NOW)
    assert q.state == "revoked"
    assert decide(Evidence("i", revoked_by=["w1@h"]), Coverage(), NOW).state == "revoked"


def test_backend_location_has_every_key():
    """Defect 6: null where not known; the task is not its own child."""
    from celeryctl.taskfind import BACKEND_KEYS

    f = decide(Evidence("i", backend={"status": "RETRY", "children": ["i", "c1"]}),
               Coverage(), NOW)
    loc = [x for x in f.locations if x["kind"] == "result_backend"][0]
    assert set(BACKEND_KEYS) <= set(loc) and loc["exception_type"] is None
    assert loc["retries"] is None and loc["worker"] is None
    assert loc["children"] == ["c1"]
    assert "undecoded" not in loc


def test_contradictions_are_said():
    """Defect 7."""
    cov = Coverage()
    q = decide(Evidence("i", queue={"queue": "deep", "position": 4812, "of": 5000},
                        backend={"status": "SUCCESS", "date_done_epoch": NOW - 120}), cov, NOW)
    assert q.state == "queued"
    assert q.verdict == ("waiting in `deep`, position 4,812 of 5,000; but the result backend "
                         "already says SUCCESS (2 min ago): it will run again (a redelivery "
                         "or a duplicate message)")
    held = decide(Evidence("i", workers=[{"worker": "w", "state": "reserved"}],
                           backend={"status": "FAILURE"}), cov, NOW)
    assert held.state == "reserved" and "already says FAILURE" in held.verdict
    r0 = decide(Evidence("i", queue={"queue": "q", "position": 1, "retries": 0},
                         backend={"status": "RETRY"}), cov, NOW)
    assert r0.verdict.endswith("(retry 0)")
    r1 = decide(Evidence("i", queue={"queue": "q", "position": 1},
                         backend={"status": "RETRY", "retries": 2}), cov, NOW)
    assert r1.verdict.endswith("(retry 2)")
    und = decide(Evidence("i", backend={"status": None, "undecoded": "not JSON"}), cov, NOW)
    assert und.state == "unknown"
    assert und.verdict.startswith("the result backend has a record of it, not in JSON")
    assert "not found" not in und.verdict


def test_scheduled_says_how_far_away():
    """Defect 13."""
    from datetime import datetime, timezone

    eta = datetime.fromtimestamp(NOW + 720, timezone.utc).isoformat()
    f = decide(Evidence("i", workers=[{"worker": "w1@vm", "state": "scheduled", "eta": eta}]),
               Coverage(), NOW)
    assert f.verdict == f"scheduled on w1@vm, ETA {eta} (in 12 min)"
    past = datetime.fromtimestamp(NOW - 5, timezone.utc).isoformat()
    f = decide(Evidence("i", workers=[{"worker": "w1@vm", "state": "scheduled"}],
                        unacked={"eta": past, "delivered_seconds": 10}), Coverage(), NOW)
    assert f"ETA {past} (due 5 s ago, not started yet)" in f.verdict
    f = decide(Evidence("i", workers=[{"worker": "w1@vm", "state": "scheduled"}]),
               Coverage(), NOW)
    assert "ETA unknown" in f.verdict


def test_candidate_ids_one_pass():
    """Defect 5: the ids of an envelope, found in one pass (then a set lookup)."""
    import json

    from celeryctl.collect.taskfind import candidate_ids

    env = {"body": "eyJpZCI6ICJ4In0=", "headers": {"id": "ab-1", "parent_id": "p",
                                                   "argsrepr": '("id": "fake",)'},
           "properties": {"correlation_id": "ab-1"}}
    assert candidate_ids(json.dumps(env).encode()) == {"ab-1"}
    assert candidate_ids(json.dumps({"headers": {"id": "é\"x"}}).encode()) == {"é\"x"}
    assert candidate_ids(b'{"headers":{"id":"compact"}}') == {"compact"}
    assert candidate_ids(b"\x80\x04pickle") == set()


def test_scan_summary_before_lengths():
    """Defect 14: a scan stopped before the queue lengths were read does not read as if
    there was nothing to search."""
    from celeryctl.collect.taskfind import ScanProgress

    p = ScanProgress(named=3, stopped="--timeout", seconds=1.1)
    assert p.summary() == ("no message searched: stopped after 1.1 s before the lengths of "
                           "the 3 queues to search were read: --timeout")
    p = ScanProgress(named=1, seconds=0.2, sized=True, done=True, total=5, searched=5,
                     queues=1)
    assert p.summary() == "searched 5 of 5 messages in 1 queue in 0.2 s"


def test_runtime_past_the_hard_limit_is_a_skewed_clock():
    """`task ID` follows `tasks`: a runtime far past the task's hard time limit is a worker
    clock behind ours, not an age (the hostile review's worker 2 h behind)."""
    assert runtime_seconds(NOW - 7203, NOW, 3000.0) is None
    assert runtime_seconds(NOW - 2990, NOW, 3000.0) == 2990
    assert runtime_seconds(NOW - 7203, NOW) == 7203  # no limit known: nothing to judge by
