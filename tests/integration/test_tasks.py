"""`celeryctl tasks` against real workers: a long task active on a prefork worker with
concurrency 1, tasks prefetched behind it (reserved), one with a countdown (scheduled); the
filters, --include-args, the JSON shape, snapshots carrying the view (`snapshot`, `tasks
--from`, `snapshot diff`), a Celery 5.2 worker (time_start semantics), and RabbitMQ once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from celeryctl.lab import servers as s
from tests.conftest import closed_port, run_cli, run_json, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.workers]
H = socket.gethostname()
ISSUE_FIELDS = {"id", "name", "state", "worker", "pid", "queue", "runtime_seconds",
                "held_seconds", "eta", "time_limit", "soft_time_limit", "acks_late",
                "redelivered"}
SECRET_ARG = "s3cret-argument-value"


def publish(url: str, code: str, env: dict[str, str] | None = None) -> str:
    """Send tasks with the demo app in a child process (as a producer would); its stdout."""
    e = dict(os.environ, CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND="", **(env or {}))
    p = subprocess.run([sys.executable, "-c",
                        "from celeryctl.lab.demoapp import add, sleep\n" + code],
                       capture_output=True, text=True, env=e, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def held(url: str, *args: str) -> dict:
    code, doc, err, _ = run_json("tasks", "--broker", url, *args)
    assert code in (0, 3), err
    return doc


@pytest.fixture(scope="module")
def busy(labdir, redis_server):
    """One prefork worker (concurrency 1, prefetch 4) on a db of its own: a 120 s task
    running, three tasks reserved behind it, one scheduled 300 s ahead."""
    import redis

    url = redis_server["url"].rsplit("/", 1)[0] + "/11"
    redis.Redis.from_url(url).flushdb()
    w = s.start_worker(labdir / "tasks", url, "tk1@%h", queues="celery,slow", pool="prefork",
                       concurrency=1, env={"CELERYCTL_LAB_PREFETCH": "4"})
    try:
        long_id = str(uuid.uuid4())
        publish(url, f"sleep.apply_async((120,), task_id={long_id!r}, queue='celery')\n"
                "import time; time.sleep(0.5)\n"
                f"for i in range(3): add.delay(i, {SECRET_ARG!r})\n"
                "print(add.apply_async((7, 7), countdown=300).id)\n")
        ok = wait_for(lambda: len(held(url)["tasks"] or []) >= 5, timeout=20)
        assert ok, held(url)
        time.sleep(1.5)  # a runtime of more than a second
        yield {"url": url, "long_id": long_id, "node": f"tk1@{H}", "proc": w}
    finally:
        w.stop(timeout=5)


def test_active_reserved_scheduled_with_ages(busy):
    code, doc, err, _ = run_json("tasks", "--broker", busy["url"])
    assert code == 0, err
    assert doc["schema"] == 1 and doc["complete"] is True and doc["not_seen"] == []
    assert {s["name"] for s in doc["sources"]} >= {"broker", "workers"}
    rows = doc["tasks"]
    assert all(set(r) >= ISSUE_FIELDS for r in rows)
    assert all("args" not in r and "kwargs" not in r for r in rows)
    by_state: dict[str, list] = {}
    for r in rows:
        by_state.setdefault(r["state"], []).append(r)
    (active,) = by_state["active"]
    assert active["id"] == busy["long_id"] and active["name"].endswith(".sleep")
    assert active["worker"] == busy["node"] and isinstance(active["pid"], int)
    assert active["queue"] == "celery" and active["runtime_seconds"] >= 1.0
    # no limit anywhere: known to be none (the worker's conf and the task's attributes)
    assert active["time_limit"] is None and active["time_limits_known"] is True
    assert active["time_limits_source"] == "none set" and active["acks_late"] is False
    assert active["redelivered"] is False and active["celery_version"]
    reserved = by_state["reserved"]
    assert len(reserved) == 3
    for r in reserved:  # held since the worker received them (unacked_index)
        assert r["held_seconds"] is not None and r["held_seconds"] >= 0
        assert r["runtime_seconds"] is None and r["pid"] is None
        assert r["redelivered"] is False and r["restored"] is False
    (sched,) = by_state["scheduled"]
    assert 200 < sched["eta_in_seconds"] <= 300 and sched["eta"]
    ages = [r["runtime_seconds"] if r["state"] == "active" else r["held_seconds"]
            for r in rows]
    assert ages == sorted(ages, reverse=True), ages  # oldest first


def test_filters(busy):
    url = busy["url"]
    assert [r["state"] for r in held(url, "--state", "scheduled")["tasks"]] == ["scheduled"]
    names = {r["name"] for r in held(url, "--name", "*.sleep")["tasks"]}
    assert names == {"celeryctl.lab.demoapp.sleep"}
    both = held(url, "--state", "active", "--state", "scheduled")["tasks"]
    assert sorted(r["state"] for r in both) == ["active", "scheduled"]
    assert held(url, "--worker", busy["node"])["complete"] is True
    code, doc, err, _ = run_json("tasks", "--broker", url, "--older-than", "100000")
    assert code == 0 and doc["tasks"] == [], err
    code, out, err, _ = run_cli("tasks", "--broker", url, "--older-than", "100000")
    assert code == 0 and "no task held by the 1 worker(s) that answered matching" in err
    code, _, err, _ = run_cli("tasks", "--broker", url, "--state", "running")
    assert code == 64 and "--state must be one of" in err and "Traceback" not in err


def test_a_silent_worker_is_never_no_tasks(busy):
    code, doc, err, _ = run_json("tasks", "--broker", busy["url"], "--worker", f"nobody@{H}",
                                 "--timeout", "1")
    assert code == 3 and doc["tasks"] == [] and doc["complete"] is False
    assert doc["not_seen"], doc
    code, out, err, _ = run_cli("tasks", "--broker", busy["url"], "--worker", f"nobody@{H}",
                                "--timeout", "1")
    assert code == 3 and "no task held" not in err and "not seen" in err


def test_unreachable_broker_exits_3():
    code, doc, err, _ = run_json("tasks", "--broker", f"redis://127.0.0.1:{closed_port()}/0",
                                 "--timeout", "1")
    assert code == 3 and doc["tasks"] is None and doc["error"]
    code, out, err, _ = run_cli("tasks", "--broker", f"redis://127.0.0.1:{closed_port()}/0",
                                "--timeout", "1")
    assert code == 3 and "tasks not observed" in err and not out.strip()


def test_arguments_only_with_include_args(busy):
    url = busy["url"]
    code, out, err, _ = run_cli("tasks", "--broker", url, "--wide")
    assert code == 0 and SECRET_ARG not in out + err
    assert busy["long_id"] in out  # the id is never cut
    code, doc, err, _ = run_json("tasks", "--broker", url)
    assert SECRET_ARG not in json.dumps(doc)
    code, doc, err, _ = run_json("tasks", "--broker", url, "--include-args",
                                 "--state", "reserved")
    assert all(SECRET_ARG in json.dumps(r["args"]) for r in doc["tasks"]), doc["tasks"]
    code, out, err, _ = run_cli("tasks", "--broker", url, "--include-args", "--wide")
    assert SECRET_ARG in out


def test_80_columns_keep_ids_and_ages(busy):
    code, out, err, _ = run_cli("tasks", "--broker", busy["url"], env={"COLUMNS": "80"})
    assert code == 0, err
    assert all(len(line) <= 80 for line in out.splitlines())
    assert " for " in out and "columns hidden" in out
    # the id whole on its row's first line (pasteable into `celeryctl task ID`), with the
    # age beside it
    line = next(x for x in out.splitlines() if busy["long_id"] in x)
    assert line.split()[0] == "active" and line.split()[-1].endswith("s"), line


def test_snapshots_carry_the_task_view(busy, labdir, tmp_path):
    url = busy["url"]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    code, _, err, _ = run_cli("snapshot", "-o", str(a), "--broker", url)
    assert code == 0, err
    doc = json.loads(a.read_text())
    rows = doc["parts"]["tasks"]["value"]
    assert {r["state"] for r in rows} == {"active", "reserved", "scheduled"}
    assert SECRET_ARG not in a.read_text()  # arguments redacted as everywhere
    assert doc["parts"]["redis_inflight"]["value"]["total"] >= 4
    # the view as it was when taken, from the file alone
    code, fdoc, err, _ = run_json("tasks", "--from", str(a))
    assert code == 0, err
    assert [r["id"] for r in fdoc["tasks"]] == [r["id"] for r in rows]
    code, _, err, _ = run_cli("doctor", "--from", str(a))
    assert code in (0, 1, 2), err
    # a new task starts between A and B on a second worker
    w2 = s.start_worker(labdir / "tasks", url, "tk2@%h",
                        queues="hipri", pool="threads", concurrency=1)
    try:
        started_id = str(uuid.uuid4())
        publish(url, f"sleep.apply_async((60,), task_id={started_id!r}, queue='hipri')")
        assert wait_for(lambda: any(r["id"] == started_id and r["state"] == "active"
                                    for r in held(url)["tasks"]), timeout=15)
        code, _, err, _ = run_cli("snapshot", "-o", str(b), "--broker", url)
        assert code == 0, err
    finally:
        w2.stop(timeout=5)
    code, d, err, _ = run_json("snapshot", "diff", str(a), str(b))
    assert code == 0, err
    t = d["tasks"]
    assert t["observed"] is True
    assert started_id in [r["id"] for r in t["started"]]
    assert busy["long_id"] not in [r["id"] for r in t["started"]]
    code, out, err, _ = run_cli("snapshot", "diff", str(a), str(b))
    assert "started" in out and started_id[:8] in out


def test_celery_52_worker_reports_wall_clock_time_start(labdir, redis_server):
    """Celery 5.2 (like every release from 4.4) converts the pool's monotonic accept time to
    epoch seconds: its runtime is given, and agrees with the 5.7 worker's."""
    import redis

    url = redis_server["url"].rsplit("/", 1)[0] + "/12"
    redis.Redis.from_url(url).flushdb()
    w = s.start_worker(labdir / "tasks52", url, "tk52@%h", queues="celery", pool="prefork",
                       concurrency=1, celery_version="5.2", timeout=60)
    try:
        tid = str(uuid.uuid4())
        t0 = time.time()
        publish(url, f"sleep.apply_async((60,), task_id={tid!r}, queue='celery')")
        rows = wait_for(lambda: [r for r in held(url)["tasks"] or [] if r["id"] == tid
                                 and r["state"] == "active"], timeout=20)
        assert rows, held(url)
        (r,) = rows
        assert r["celery_version"].startswith("5.2")
        assert r["runtime_seconds"] is not None
        assert 0 <= r["runtime_seconds"] <= time.time() - t0 + 1
        # 5.2's tasks carry no time_limit attribute: the worker's conf says "none"
        assert r["time_limits_known"] is True and r["time_limit"] is None
    finally:
        w.stop(timeout=5)


@pytest.mark.rabbitmq
def test_rabbitmq_active_task_held_unknown(labdir, rabbit, vhost):
    url = f"amqp://guest:guest@127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    w = s.start_worker(labdir / "tasks-mq", url, "tkq@%h", queues="celery", pool="threads",
                       concurrency=1)
    try:
        tid = str(uuid.uuid4())
        publish(url, f"sleep.apply_async((60,), task_id={tid!r}, queue='celery')\n"
                "add.delay(1, 2)")
        api = ("--rabbitmq-api", rabbit["api"])
        rows = wait_for(lambda: [r for r in held(url, *api)["tasks"] or [] if r["id"] == tid
                                 and r["state"] == "active"], timeout=20)
        assert rows, held(url, *api)
        doc = held(url, *api)
        assert doc["complete"] is True
        (active,) = [r for r in doc["tasks"] if r["state"] == "active"]
        assert active["runtime_seconds"] is not None and active["held_seconds"] is None
        assert active["redelivered"] is False and active["queue"] == "celery"
        assert any("held times unknown on RabbitMQ" in n for n in doc["notes"])
        assert [r["state"] for r in doc["tasks"]].count("reserved") == 1
    finally:
        w.stop(timeout=5)


def test_worker_clock_behind_gives_no_runtime(labdir, redis_server, tmp_path):
    """Issue 14 #2: a real worker whose clock is 2 h behind this machine's (time.time shifted
    in its process): its 3 s old task would look 2 h old, past its 50 min hard limit — the
    runtime is unknown ("worker clock skew"), `--older-than 3600` leaves it out, and doctor's
    TSK001 does not fire on it."""
    import redis

    url = redis_server["url"].rsplit("/", 1)[0] + "/13"
    redis.Redis.from_url(url).flushdb()
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import time\n_t = time.time\ntime.time = lambda: _t() - 7200\n")
    w = s.start_worker(labdir / "tasks-skew", url, "tkskew@%h", queues="celery",
                       pool="prefork", concurrency=1,
                       env={"PYTHONPATH": str(shim), "CELERYCTL_LAB_TIME_LIMITS": "1"})
    try:
        tid = str(uuid.uuid4())
        publish(url, f"sleep.apply_async((60,), task_id={tid!r}, queue='celery')")
        rows = wait_for(lambda: [r for r in held(url)["tasks"] or [] if r["id"] == tid
                                 and r["state"] == "active"], timeout=20)
        assert rows, held(url)
        (r,) = rows
        assert r["time_limit"] == 3000 and r["runtime_seconds"] is None, r
        assert any("worker clock skew" in n for n in r["notes"]), r["notes"]
        assert held(url, "--older-than", "3600")["tasks"] == []
        code, out, err, _ = run_cli("tasks", "--broker", url, env={"COLUMNS": "80"})
        assert "note (" in out and "worker clock skew" in out, out
        assert "1 task: 1 active — 1 on tkskew@" in out, out
        code, doc, err, _ = run_json("doctor", "--broker", url, "--select", "TSK001")
        assert doc["findings"] == [], doc["findings"]
    finally:
        w.stop(timeout=5)
