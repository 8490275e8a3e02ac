"""The TSK checks (and WRK005) over hand-built task views: second forms, negatives, skips."""

from __future__ import annotations

from celeryctl.checks import Limits, Severity, run_checks, select_checks
from celeryctl.snapshot import Connection, Observed, QueueDepth
from celeryctl.tasks import task_view, tasks_part
from tests.unit.test_check_messages import (
    _LATE,
    NOW,
    _inflight,
    _iso,
    _req,
    _tsk,
    _tw,
)
from tests.unit.test_checks import conf

W, C, INFO = Severity.WARNING, Severity.CRITICAL, Severity.INFO


def run(s, code, **limits):
    return run_checks(s, Limits(**limits), select_checks([code], None))


def found(s, code, **limits):
    return [(f.severity, f.subject, f.message) for f in run(s, code, **limits).findings]


def test_long_task_with_a_limit_unknown_limits_short_and_unknown_runtime():
    limited = _tw("w1@h", c=conf(task_time_limit=10800), active=[_req("t", started=4000)])
    [(sev, _, msg)] = found(_tsk([limited]), "TSK001")
    assert sev is W and msg.endswith("hard time limit 3h00m: killed in 1h53m")
    unknown = _tw("w1@h", active=[_req("t", started=4000)])
    unknown.replies.pop("registered")
    [(sev, _, msg)] = found(_tsk([unknown]), "TSK001")
    assert sev is W and msg.endswith("time limits unknown")
    assert found(_tsk([_tw("w1@h", active=[_req("t", started=100)])]), "TSK001") == []
    # --long-task-after
    assert found(_tsk([_tw("w1@h", active=[_req("t", started=100)])]), "TSK001",
                 long_task_after=60)[0][0] is C
    old = _tw("w1@h", active=[{**_req("t"), "time_start": 12345.6}])
    old.replies["report"] = {"celery": "4.3.0"}  # monotonic time_start: runtime unknown
    assert found(_tsk([old]), "TSK001") == []


def test_long_tasks_beyond_ten_are_summed_up():
    rows = [_req(f"t{i}", started=4000 + i) for i in range(12)]
    got = found(_tsk([_tw("w1@h", active=rows, concurrency=12)]), "TSK001")
    assert len(got) == 11 and got[-1][1] == "long-running tasks"
    assert got[-1][2].startswith("2 more tasks have run longer than 30 min")


def test_visibility_timeout_past_twice_reserved_and_not_judged():
    late = dict(c=_LATE)
    # past it: critical, and says another worker may be running it
    s = _tsk([_tw("w1@h", **late, active=[_req("a", started=50, acked=False)])],
             redis_inflight=_inflight(("a", 70)),
             app={"broker_transport_options": {"visibility_timeout": 60}})
    [(sev, _, msg)] = found(s, "TSK002")
    assert sev is C and "(delivered 1 min ago), visibility_timeout 1 min (app)" in msg
    assert "already past it by 10 s" in msg and "another worker may be running it" in msg
    # the same id running on two workers: critical, once
    s = _tsk([_tw("w1@h", **late, active=[_req("a", started=80, acked=False)]),
              _tw("w2@h", **late, active=[_req("a", started=5, pid=99, acked=False)])],
             redis_inflight=_inflight(("a", 5)),
             app={"broker_transport_options": {"visibility_timeout": 60}})
    [(sev, subject, msg)] = found(s, "TSK002")
    assert (sev, subject) == (C, "task a")
    assert msg.startswith("proj.crunch is running twice: on w1@h pid 4312 and on w2@h pid 99")
    # a reserved task (any acks mode) waiting unacknowledged
    s = _tsk([_tw("w1@h", active=[_req("b", started=3500, acked=True)],
                  reserved=[_req("r", pid=None)])],
             redis_inflight=_inflight(("r", 3000)))
    [(sev, subject, msg)] = found(s, "TSK002")
    assert (sev, subject) == (W, "task r")
    assert "task proj.crunch has waited reserved (not started) on w1@h" in msg
    assert msg.endswith("redelivered in 10 min")
    # early ack, or a hard time limit below the timeout: nothing to say
    early = _tsk([_tw("w1@h", active=[_req("a", started=3500, acked=True)])])
    assert found(early, "TSK002") == []
    bounded = _tsk([_tw("w1@h", c=conf(task_acks_late=True, task_time_limit=3000),
                        active=[_req("a", started=2900, acked=False)])])
    assert found(bounded, "TSK002") == []
    # the workers' own visibility_timeout (stats) when the app is not known
    w = _tw("w1@h", **late, active=[_req("a", started=9, acked=False)])
    w.replies["stats"] = {"pool": {"max-concurrency": 2},
                          "broker": {"transport_options": {"visibility_timeout": 10}}}
    [(sev, _, msg)] = found(_tsk([w]), "TSK002")
    assert sev is W and "visibility_timeout 10 s (workers)" in msg and "redelivered in 1 s" in msg
    assert run(_tsk([w], kind="amqp"), "TSK002").not_applicable


def test_consumer_timeout_from_the_broker_and_near():
    w = _tw("w1@h", c=_LATE, active=[_req("a", started=50, acked=False)])
    s = _tsk([w], kind="amqp", connections=[Connection(
        "rabbitmq", "h:1", role="worker", worker="w1@h", worker_match="exact",
        raw={"consumer_timeouts_ms": {"celery": 60_000}})])
    [(sev, _, msg)] = found(s, "TSK003")
    assert sev is W and "consumer_timeout 1 min:" in msg
    assert msg.endswith("the broker closes the worker's channel in 10 s if it is still running")
    assert found(_tsk([w], kind="amqp"), "TSK003") == []  # 50 s of an assumed 30 min
    assert run(_tsk([w]), "TSK003").not_applicable


def test_no_starvation_without_a_free_consumer():
    busy = _tw("w1@h", concurrency=1, active=[_req("t", started=60)],
               reserved=[_req("r", pid=None)])
    other = _tw("w2@h", concurrency=1, active=[_req("u", started=60, pid=7)])
    assert found(_tsk([busy, other]), "TSK004") == []
    elsewhere = _tw("w2@h", queues=("other",))
    assert found(_tsk([busy, elsewhere]), "TSK004") == []


def test_eta_hoarding_threshold_and_visibility():
    sched = [{"eta": _iso(7200), "priority": 0, "request": _req(f"e{i}", pid=None)}
             for i in range(5)]
    assert found(_tsk([_tw("w1@h", scheduled=sched)]), "TSK005") == []
    [(sev, _, msg)] = found(_tsk([_tw("w1@h", scheduled=sched)]), "TSK005", scheduled_warn=5)
    assert sev is W and msg.endswith("5 of them are due beyond visibility_timeout 1h00m "
                                      "and will be delivered again meanwhile")
    [(_, _, msg)] = found(_tsk([_tw("w1@h", scheduled=sched)], kind="amqp"), "TSK005",
                          scheduled_warn=5)
    assert "visibility_timeout" not in msg


def test_time_limits_from_conf_and_skip_without_registered():
    assert found(_tsk([_tw("w1@h", c=conf(task_soft_time_limit=60))]), "TSK006") == []
    w = _tw("w1@h")
    w.replies.pop("registered")
    r = run(_tsk([w]), "TSK006")
    assert r.skipped and "registered and conf" in r.skipped[0].reason


def test_pool_saturated_info_below_queue_warn_names_the_busy_tasks():
    w = _tw("w1@h", concurrency=1, active=[_req("t", name="proj.report", started=7500)])
    q = [QueueDepth("celery", "redis", ready=5, consumers=1, consumer_workers=("w1@h",))]
    [(sev, subject, msg)] = found(_tsk([w], queues=q), "WRK005")
    assert (sev, subject) == (INFO, "queue celery")
    assert msg == ("5 messages waiting and its only consumer runs at full concurrency: not "
                   "enough capacity (busy with proj.report for 2h05m on w1@h)")
    q = [QueueDepth("celery", "redis", ready=500, consumers=1, consumer_workers=("w1@h",))]
    assert found(_tsk([w], queues=q), "WRK005")[0][0] is W
    idle = _tw("w1@h", concurrency=2, active=[_req("t", started=7500)])
    assert found(_tsk([idle], queues=q), "WRK005") == []


def test_checks_read_the_collected_task_view_when_there_is_one():
    """Doctor stores the view at collection (parts.tasks); the checks read that one."""
    s = _tsk([_tw("w1@h", active=[_req("t", started=100)])])
    s.parts["tasks"] = tasks_part(task_view(s, NOW + 4000))  # as seen later
    assert found(s, "TSK001")[0][1] == "task t"
    s.parts["tasks"] = Observed(error="workers not observed")
    assert run(s, "TSK001").skipped


def test_past_visibility_beyond_ten_are_summed_up():
    rows = [_req(f"r{i}", pid=None) for i in range(12)]
    s = _tsk([_tw("w1@h", reserved=rows)],
             redis_inflight=_inflight(*[(f"r{i}", 3000 + i) for i in range(12)]))
    got = found(s, "TSK002")
    assert len(got) == 11 and got[-1][1] == "tasks near visibility_timeout"
    assert got[-1][2] == "2 more tasks unacknowledged for over 80% of visibility_timeout 1h00m"
    # the ten oldest named (doctor then orders findings by severity and subject)
    assert {g[1] for g in got[:10]} == {f"task r{i}" for i in range(2, 12)}


def test_pool_saturated_not_claimed_from_one_sample_of_a_short_burst():
    """Issue 14 #11: pools full of tasks that all started seconds ago are a burst being
    worked off, not a lack of capacity; a task running 2 s or more makes it one."""
    q = [QueueDepth("celery", "redis", ready=50, consumers=1, consumer_workers=("w1@h",))]
    burst = _tw("w1@h", concurrency=2, active=[_req("a", started=1), _req("b", started=0.5)])
    assert found(_tsk([burst], queues=q), "WRK005") == []
    # a backlog at --queue-warn behind full pools is said even in the first seconds
    big = [QueueDepth("celery", "redis", ready=150, consumers=1, consumer_workers=("w1@h",))]
    assert found(_tsk([burst], queues=big), "WRK005")[0][0] is not INFO
    slow = _tw("w1@h", concurrency=2, active=[_req("a", started=61), _req("b", started=1)])
    assert found(_tsk([slow], queues=q), "WRK005")[0][0] is INFO
