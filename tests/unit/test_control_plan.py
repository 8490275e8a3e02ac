"""The pure half of `celeryctl control`: argument parsing, the plan (who is targeted, what is
disruptive, what is refused) and the reply rows."""

from __future__ import annotations

import pytest

from celeryctl.actions.control import (
    ControlArgumentError,
    control_rows,
    parse_command,
    plan_control,
    verified,
)

LIVE = {"w1@h": ["celery", "a"], "w2@h": ["celery"], "w3@h": None}


@pytest.mark.parametrize("words,cmd,expected", [
    (["pool-grow"], "pool-grow", {"n": 1}),
    (["pool_shrink", "3"], "pool-shrink", {"n": 3}),
    (["autoscale", "8", "2"], "autoscale", {"max": 8, "min": 2}),
    (["rate-limit", "t.x", "10/m"], "rate-limit", {"task_name": "t.x", "rate_limit": "10/m"}),
    (["time-limit", "t.x", "30"], "time-limit", {"task_name": "t.x", "soft": 30.0, "hard": None}),
    (["add-consumer", "q"], "add-consumer", {"queue": "q"}),
    (["revoke", "a", "b"], "revoke", {"task_id": ["a", "b"], "terminate": False}),
    (["shutdown"], "shutdown", {}),
])
def test_parse_command(words, cmd, expected):
    assert parse_command(words[0], words[1:]) == (cmd, expected)


@pytest.mark.parametrize("words,kw,message", [
    (["pool-grow", "x"], {}, "not a number"),
    (["pool-grow", "0"], {}, "at least 1"),
    (["autoscale", "1", "4"], {}, "MAX >= MIN"),
    (["rate-limit", "t", "5/x"], {}, "not a Celery rate"),
    (["time-limit", "t", "30", "10"], {}, "above the hard limit"),
    (["revoke", "a"], {"signal": "KILL"}, "only applies with --terminate"),
    (["revoke", "a"], {"terminate": True, "signal": "NOPE"}, "unknown signal"),
    (["shutdown", "now"], {}, "takes no arguments"),
    (["pool-grow"], {"terminate": True}, "only apply to revoke"),
    (["shutdwon"], {}, "did you mean shutdown"),
])
def test_parse_command_refuses(words, kw, message):
    with pytest.raises(ControlArgumentError, match=message):
        parse_command(words[0], words[1:], **kw)


def test_signal_spellings():
    for spelled in ("KILL", "kill", "SIGKILL", "9"):
        assert parse_command("revoke", ["a"], terminate=True, signal=spelled)[1]["signal"] \
            == "SIGKILL"


def test_named_destinations_are_not_disruptive():
    plan = plan_control("pool-grow", {"n": 1}, ["w1@h"], LIVE)
    assert plan.targets == ["w1@h"] and not plan.guarded and not plan.refusals


def test_no_destination_reaches_everyone_and_is_guarded():
    plan = plan_control("enable-events", {}, None, LIVE)
    assert plan.destination is None and plan.targets == ["w1@h", "w2@h", "w3@h"]
    assert plan.guarded and "every worker" in plan.disruptive[0]


def test_unknown_destination_refused_with_close_match():
    plan = plan_control("pool-grow", {"n": 1}, ["w1@h", "w11@h"], LIVE)
    assert plan.refusals and "did you mean" in plan.refusals[0]
    assert plan_control("shutdown", {}, None, {}).refusals  # nobody answered


def test_cancel_consumer_of_last_or_unknown_queue_is_guarded():
    assert plan_control("cancel-consumer", {"queue": "a"}, ["w1@h"], LIVE).disruptive == []
    last = plan_control("cancel-consumer", {"queue": "celery"}, ["w2@h"], LIVE)
    assert "only queue" in last.disruptive[0]
    unknown = plan_control("cancel-consumer", {"queue": "celery"}, ["w3@h"], LIVE)
    assert "unknown" in unknown.disruptive[0]
    notes = plan_control("cancel-consumer", {"queue": "zzz"}, ["w1@h"], LIVE).notes
    assert "does not consume" in notes[0]


def test_revoke_terminate_is_guarded_and_says_where_it_runs():
    plan = plan_control("revoke", {"task_id": ["t1"], "terminate": True, "signal": "SIGKILL"},
                        ["w1@h"], LIVE, active={"w1@h": ["t1"], "w2@h": []})
    assert "SIGKILL" in plan.disruptive[0] and plan.notes == ["running on: w1@h"]
    assert not plan_control("revoke", {"task_id": ["t1"], "terminate": False}, ["w1@h"],
                            LIVE).guarded


def test_rows_answered_error_silent_and_stopped():
    plan = plan_control("rate-limit", {"task_name": "t", "rate_limit": "1/s"},
                        ["w1@h", "w2@h", "w3@h"], LIVE)
    rows = control_rows(plan, {"w1@h": [{"ok": "new rate limit set successfully"}],
                               "w2@h": [{"error": "unknown task"}],
                               "x@h": [{"ok": "x"}]})
    assert [(r["worker"], r["answered"], r["ok"], r["targeted"]) for r in rows] == [
        ("w1@h", True, True, True), ("w2@h", True, False, True), ("w3@h", False, False, True),
        ("x@h", True, True, False)]
    sd = plan_control("shutdown", {}, ["w1@h", "w2@h"], LIVE)
    rows = control_rows(sd, {}, {"w1@h": True, "w2@h": False})
    assert [r["result"] for r in rows] == ["stopped (no longer answers ping)",
                                           "still answering ping"]


def test_verified():
    grow = plan_control("pool-grow", {"n": 2}, ["w1@h"], LIVE)
    stats = {"pool": {"processes": [1, 2]}}
    assert verified(grow, stats, {"pool": {"processes": [1, 2, 3, 4]}}) == ("pool 2 -> 4", True)
    assert verified(grow, stats, stats) == ("pool 2 -> 2", False)
    add = plan_control("add-consumer", {"queue": "n"}, ["w1@h"], LIVE)
    assert verified(add, None, [{"name": "celery"}, {"name": "n"}]) == ("celery, n", True)
