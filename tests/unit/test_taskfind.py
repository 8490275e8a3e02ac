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
