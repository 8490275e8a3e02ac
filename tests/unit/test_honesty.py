"""What a failure is (permission denied, authentication failed, unreachable), the verdict
that follows from what was and was not observed, and the least-privilege page."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from celeryctl.checks import Limits, Report, Severity, Skipped, Unobserved, run_checks
from celeryctl.cli.doctor import doctor_status
from celeryctl.collect.errors import (
    AUTH_FAILED,
    DENIED,
    FAILED,
    UNREACHABLE,
    Denied,
    classify,
    redis_op,
)
from celeryctl.render.report import verdict
from celeryctl.snapshot import Observed, Snapshot, SourceStatus

ROOT = Path(__file__).resolve().parents[2]


def test_permissions_page_is_current():
    from celeryctl.permissions import render_page

    page = ROOT / "docs" / "permissions.md"
    assert page.read_text() == render_page(), \
        "docs/permissions.md is stale: python -m celeryctl.permissions docs/permissions.md"


def test_accounts_are_nested_and_start_from_nothing():
    from celeryctl.permissions import ACCOUNTS

    m, i, o = (ACCOUNTS[t] for t in ("monitor", "inspect", "operator"))
    assert set(m.redis_rules) < set(i.redis_rules) < set(o.redis_rules)
    args = m.redis_setuser("pw")
    assert args[:7] == ["ACL", "SETUSER", "celeryctl-monitor", "reset", "on", ">pw", "-@all"]
    # the monitor account can neither write a key nor publish
    assert "%R~*" in m.redis_rules and not any(r.startswith(("~", "&")) for r in m.redis_rules)
    assert not {"+publish", "+rename", "+del"} & set(m.redis_rules)
    assert m.rabbit_perms == ("^$", "^$", "^$") and m.rabbit_tags == ("monitoring",)


# --- classification --------------------------------------------------------------------------

def _redis_errors():
    import redis.exceptions as rx

    return rx


@pytest.mark.parametrize("make,kind,needle", [
    (lambda rx: rx.NoPermissionError("this user has no permissions to run the 'config|get' "
                                     "command"), DENIED, "ACL"),
    (lambda rx: rx.ResponseError("unknown command 'CONFIG', with args beginning with: 'GET' "),
     DENIED, "renamed or disabled"),
    (lambda rx: rx.ResponseError("ERR command is not allowed"), DENIED, "not allowed"),
    (lambda rx: rx.AuthenticationError("invalid username-password pair or user is disabled."),
     AUTH_FAILED, "authentication failed"),
    (lambda rx: rx.AuthenticationError("Authentication required."), AUTH_FAILED,
     "Authentication required"),
    (lambda rx: rx.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection "
                                   "refused."), UNREACHABLE, "refused"),
    (lambda rx: rx.TimeoutError("Timeout reading from socket"), UNREACHABLE, "timed out"),
    (lambda rx: ValueError("something else"), FAILED, "something else"),
])
def test_redis_failures_are_told_apart(make, kind, needle):
    got_kind, text = classify(make(_redis_errors()))
    assert got_kind == kind and needle in text, text


def test_amqp_login_refusal_is_not_a_permission_refusal():
    from amqp.exceptions import AccessRefused, NotAllowed

    login = AccessRefused("ACCESS_REFUSED - Login was refused using authentication mechanism "
                          "PLAIN. For details see the broker logfile.")
    declare = AccessRefused("ACCESS_REFUSED - access to exchange 'reply.celery.pidbox' in "
                            "vhost '/' refused for user 'mon'")
    vhost = NotAllowed("NOT_ALLOWED - access to vhost '/' refused for user 'noperm'")
    assert classify(login)[0] == AUTH_FAILED
    assert classify(declare)[0] == DENIED
    assert classify(vhost)[0] == DENIED
    assert classify(socket.gaierror(-2, "Name or service not known"))[0] == UNREACHABLE


@pytest.mark.parametrize("status,body,kind,needle", [
    (401, '{"error":"not_authorized","reason":"Login failed"}', AUTH_FAILED, "wrong user"),
    (401, '{"error":"not_authorized","reason":"Not_Authorized"}', AUTH_FAILED, "wrong user"),
    (401, '{"error":"not_authorised","reason":"Not management user"}', DENIED,
     "monitoring tag"),
    (401, '{"error":"not_authorised","reason":"Not monitor user"}', DENIED, "management tag"),
    (401, '{"error":"not_authorised","reason":"User not authorised to access virtual host"}',
     DENIED, "set_permissions"),
    (401, '{"error":"not_authorised","reason":"User not authorised to access object"}', DENIED,
     "administrators"),
    (401, '{"error":"not_authorised","reason":"User can only log in via localhost"}', DENIED,
     "localhost"),
    (401, '{"error":"not_authorised","reason":"Not administrator user"}', DENIED,
     "Not administrator"),
])
def test_management_api_refusals(status, body, kind, needle):
    from celeryctl.collect.rabbitmq import refusal

    exc = refusal(status, body, "/nodes")
    got, text = classify(exc)
    assert got == kind and needle in text, text


def test_redis_op_names_the_operation_and_the_rule():
    import redis.exceptions as rx

    with pytest.raises(Denied) as info, redis_op("CLIENT LIST", "+client|list"):
        raise rx.NoPermissionError("this user has no permissions to run the 'client|list' "
                                   "command")
    assert "CLIENT LIST refused" in str(info.value) and "ACL +client|list" in str(info.value)
    # not a refusal: passes through unchanged
    with pytest.raises(rx.ConnectionError), redis_op("INFO", "+info"):
        raise rx.ConnectionError("Connection refused")


# --- verdict and exit status ---------------------------------------------------------------

def report(findings=(), missing=(), partial=(), unobserved=()):
    from celeryctl.checks import Finding

    fs = [Finding(sev, "s", "m", code=code, name="n") for code, sev in findings]
    return Report(fs, [], [], ["X"] * 10, list(partial), list(missing), list(unobserved))


WORKERS_DENIED = Unobserved("workers", "permission-denied",
                            "workers via redis h:1: permission denied: remote control refused "
                            "(refused by the ACL of this user); needs ACL rules")


def test_all_clear_only_when_broker_and_workers_were_observed():
    assert verdict(report()).startswith("All clear: 10 checks ran")
    assert doctor_status(report(), Severity.WARNING) == 0
    r = report(missing=[WORKERS_DENIED])
    assert verdict(r).startswith("INCOMPLETE: workers not observed — permission denied: "
                                 "remote control refused — 10 checks ran")
    assert "All clear" not in verdict(r)
    assert doctor_status(r, Severity.WARNING) == 3


def test_verdict_counts_agree_with_their_nouns():
    """Issue 13 follow-up, item 13: "3 warnings", "1 warning", "1 check ran"."""
    r = report(findings=[("QUE001", Severity.WARNING)] * 3 + [("QUE002", Severity.CRITICAL)])
    assert verdict(r).startswith("CRITICAL: 1 critical, 3 warnings — 10 checks ran")
    r = report(findings=[("QUE001", Severity.WARNING), ("BRK004", Severity.INFO)])
    assert verdict(r).startswith("WARNING: 1 warning, 1 info — 10 checks ran")
    one = Report([], [], [], ["X"], [], [], [])
    assert verdict(one) == "All clear: 1 check ran, nothing wrong."


def test_findings_decide_when_there_are_some_and_incompleteness_is_said():
    r = report(findings=[("QUE001", Severity.WARNING)], missing=[WORKERS_DENIED])
    assert doctor_status(r, Severity.WARNING) == 1
    assert "Incomplete: workers not observed" in verdict(r)
    # below --fail-on the warning does not count: what is left is the incompleteness
    assert doctor_status(r, Severity.CRITICAL) == 3
    r = report(findings=[("QUE002", Severity.CRITICAL)], missing=[WORKERS_DENIED])
    assert doctor_status(r, Severity.WARNING) == 2
    r = report(findings=[("BRK004", Severity.INFO)], missing=[WORKERS_DENIED])
    assert verdict(r).startswith("INCOMPLETE") and "(1 info)" in verdict(r)


def test_partial_data_is_not_a_plain_all_clear():
    r = report(partial=[Skipped("QUE002", "queue-without-consumers", "queue discovery was "
                                "partial")],
               unobserved=[Unobserved("management-api", "permission-denied", "x")])
    text = verdict(r)
    assert text.startswith("All clear in what was observed")
    assert "Not observed: management-api (permission denied)" in text
    assert "Partial: queue discovery was partial" in text


def _snap(parts, sources=(), target=None):
    return Snapshot(broker_kind="redis", target=target or {"broker": "redis://h/0"},
                    parts=parts, sources=list(sources), taken_at=time.time())


def test_run_checks_marks_the_essential_parts_and_partial_ones():
    parts = {"broker": Observed(True), "workers": Observed(error="refused",
                                                           kind="permission-denied"),
             "queues": Observed([], partial="queue discovery was partial")}
    r = run_checks(_snap(parts, [SourceStatus("broker", "u", True)]), Limits())
    names = [(m.name, m.state) for m in r.missing]
    assert ("workers", "permission-denied") in names and ("queues", "partial") in names
    assert any(p.code == "QUE001" for p in r.partial)
    # queues named by the operator (-Q/-A): partial discovery is accepted, not incomplete
    r = run_checks(_snap(parts, target={"broker": "redis://h/0", "queues": ["a"]}), Limits())
    assert [m.name for m in r.missing] == ["workers"]


# --- BRK004 without CONFIG -----------------------------------------------------------------

def _brk004(info, config_error="permission denied: CONFIG GET refused"):
    parts = {"redis_info": Observed(info),
             "redis_config": Observed(error=config_error, kind="permission-denied")}
    r = run_checks(_snap(parts), Limits(), [c for c in __import__(
        "celeryctl.checks", fromlist=["catalogue"]).catalogue() if c.code == "BRK004"])
    return r


def test_persistence_from_info_when_config_is_renamed():
    now = time.time()
    off_long = {"aof_enabled": 0, "rdb_last_save_time": int(now - 7200),
                "rdb_changes_since_last_save": 500, "rdb_saves": 0, "uptime_in_seconds": 7300}
    r = _brk004(off_long)
    assert [f.code for f in r.findings] == ["BRK004"]
    assert "from INFO persistence" in r.findings[0].message
    assert _brk004({**off_long, "aof_enabled": 1}).findings == []
    fresh = {**off_long, "rdb_last_save_time": int(now - 60), "uptime_in_seconds": 60}
    r = _brk004(fresh)
    assert r.findings == [] and "cannot be told yet" in r.skipped[0].reason
    saving = {**off_long, "rdb_last_save_time": int(now - 60), "rdb_saves": 12}
    assert _brk004(saving).findings == [] and _brk004(saving).skipped == []
    r = _brk004({})
    assert "persistence unknown" in r.skipped[0].reason
