"""`celeryctl task ID...` against real Redis / RabbitMQ and real workers: a task traced in
each state (queued deep in a 10,000-message queue, in flight, active, reserved, scheduled,
succeeded, failed, revoked, unknown)."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid

import pytest

from celeryctl.lab import servers as s
from tests.conftest import run_cli, run_json, wait_for


def _db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


def _app(broker: str, backend: str | None = None):
    from celery import Celery

    app = Celery("t", broker=broker, backend=backend, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    return app


def _fill(app, queue: str, before: int, target_id: str, after: int) -> None:
    """`before` messages, the target, then `after` more, published as a producer would (the
    first published is the first consumed)."""
    import redis

    app.send_task("celeryctl.lab.demoapp.add", (0, 0), queue=queue, task_id="probe-" + queue)
    client = redis.Redis.from_url(app.conf.broker_url)
    raw = client.lpop(queue)  # a real envelope, taken back: the template of the fillers
    env = json.loads(raw)

    def push(n: int) -> None:
        pipe = client.pipeline(transaction=False)
        for _ in range(n):
            e = dict(env)
            e["headers"] = dict(env["headers"], id=str(uuid.uuid4()))
            pipe.lpush(queue, json.dumps(e))
        pipe.execute()

    push(before)
    app.send_task("celeryctl.lab.demoapp.add", (1, 1), queue=queue, task_id=target_id)
    push(after)


DBS = (6, 7, 8, 9, 10, 11, 12, 13)  # this module's databases on the session's Redis


@pytest.fixture(scope="module", autouse=True)
def _leave_no_backlog(redis_server):
    """The 10,000- and 300,000-message queues are flushed when the module ends: later
    modules share this Redis."""
    yield
    import redis

    for db in DBS:
        redis.Redis.from_url(_db(redis_server["url"], db)).flushdb()


def _every_state(app) -> dict[str, str]:
    """Task ids by the state each is put in on the worker (threads, concurrency 1, prefetch
    4): succeeded, failed, revoked, active (a 120 s sleep), reserved behind it, scheduled
    (countdown 600). "queued" is the caller's to send; "unknown" is never sent."""
    ids = {k: f"{k}-{uuid.uuid4()}" for k in ("queued", "active", "reserved", "scheduled",
                                               "succeeded", "failed", "revoked", "unknown")}
    app.send_task("celeryctl.lab.demoapp.add", (2, 2), task_id=ids["succeeded"]).get(20)
    with pytest.raises(Exception, match="demo failure"):
        app.send_task("celeryctl.lab.demoapp.fail", task_id=ids["failed"]).get(20)
    app.control.revoke(ids["revoked"])
    app.send_task("celeryctl.lab.demoapp.sleep", (120,), queue="celery", task_id=ids["active"])
    app.send_task("celeryctl.lab.demoapp.add", (3, 3), task_id=ids["reserved"])
    app.send_task("celeryctl.lab.demoapp.add", (4, 4), task_id=ids["scheduled"],
                  countdown=600)
    return ids


@pytest.fixture(scope="module")
def traced(labdir, redis_server):
    """One worker (threads, concurrency 1, acks_late, prefetch 4) on db 7, results on db 8;
    tasks put in every state."""
    broker, backend = _db(redis_server["url"], 7), _db(redis_server["url"], 8)
    import redis

    redis.Redis.from_url(broker).flushdb()
    redis.Redis.from_url(backend).flushdb()
    w = s.start_worker(labdir, broker, "tk1@%h", queues="celery", pool="threads",
                       concurrency=1, backend=backend,
                       env={"CELERYCTL_LAB_ACKS_LATE": "1", "CELERYCTL_LAB_PREFETCH": "4"})
    app = _app(broker, backend)
    try:
        ids = _every_state(app)
        _fill(app, "deep", 4811, ids["queued"], 10_000 - 4812)
        time.sleep(1.5)  # the worker picks up the sleep, prefetches the rest
        yield {"broker": broker, "backend": backend, "ids": ids, "worker": w}
    finally:
        w.stop()


def _task(traced, *ids: str, extra=()):
    code, doc, err, _ = run_json("task", *ids, "--broker", traced["broker"], "--result-backend",
                              traced["backend"], "--timeout", "5", *extra)
    return code, doc, err


def test_each_state_on_redis(traced):
    ids = traced["ids"]
    code, doc, err = _task(traced, *ids.values())
    by_id = {t["id"]: t for t in doc["tasks"]}
    states = {k: by_id[v]["state"] for k, v in ids.items()}
    assert states == {"queued": "queued", "active": "active", "reserved": "reserved",
                      "scheduled": "scheduled", "succeeded": "succeeded", "failed": "failed",
                      "revoked": "revoked", "unknown": "unknown"}, (states, err)
    assert by_id[ids["queued"]]["verdict"] == "waiting in `deep`, position 4,812 of 10,000"
    assert by_id[ids["failed"]]["verdict"].startswith("failed ")
    assert "RuntimeError: demo failure" in by_id[ids["failed"]]["verdict"]
    assert by_id[ids["active"]]["verdict"].startswith("running ")
    assert "pid " in by_id[ids["active"]]["verdict"]
    assert "no hard time limit" in by_id[ids["active"]]["verdict"]
    # acks_late: the running task's message is in unacked, with its visibility timeout
    kinds = [loc["kind"] for loc in by_id[ids["active"]]["locations"]]
    assert "unacked" in kinds and "worker" in kinds
    assert "redelivered in" in by_id[ids["active"]]["verdict"]
    assert by_id[ids["unknown"]]["verdict"] == \
        "not found anywhere: never sent, already expired, or lost"
    assert code == 1  # every place read, one task not found anywhere
    assert "searched" in doc["searched"]


def test_located_exit_0_and_table(traced):
    ids = traced["ids"]
    code, out, err, _ = run_cli("task", ids["queued"], ids["succeeded"], "--broker",
                                traced["broker"], "--result-backend", traced["backend"],
                                "--timeout", "5")
    assert code == 0, err
    assert "waiting in `deep`, position 4,812 of 10,000" in out
    assert "succeeded" in out
    assert "searched " in out


def test_bad_ids_are_usage_errors(traced):
    code, out, err, _ = run_cli("task", "", "--broker", traced["broker"])
    assert code == 64 and "empty" in err and "Traceback" not in err
    code, out, err, _ = run_cli("task", "--broker", traced["broker"])
    assert code == 64


def test_in_flight_after_worker_died(labdir, redis_server):
    """acks_late task whose worker was killed: its message stays in `unacked` until the
    visibility timeout; no worker holds it."""
    broker = _db(redis_server["url"], 9)
    import redis

    redis.Redis.from_url(broker).flushdb()
    w = s.start_worker(labdir, broker, "tk2@%h", queues="celery", pool="threads",
                       concurrency=1, env={"CELERYCTL_LAB_ACKS_LATE": "1"})
    app = _app(broker)
    tid = f"inflight-{uuid.uuid4()}"
    try:
        app.send_task("celeryctl.lab.demoapp.sleep", (120,), task_id=tid)
        client = redis.Redis.from_url(broker)
        wait_for(lambda: client.hlen("unacked") == 1)
        time.sleep(0.5)
        os.kill(w.pid, signal.SIGKILL)
        time.sleep(0.5)
        code, doc, err, _ = run_json("task", tid, "--broker", broker, "--timeout", "2")
        t = doc["tasks"][0]
        assert t["state"] == "in_flight", (t, err)
        assert "delivered " in t["verdict"] and "redelivered in" in t["verdict"]
        assert "from `celery`" in t["verdict"]
    finally:
        w.stop()


def test_a_deadline_says_how_far_it_searched(labdir, redis_server):
    """A queue too long for --timeout: the answer comes within it and says where it
    stopped; the task is then not 'not found anywhere' but 'not found in what could be
    read' (exit 3)."""
    broker = _db(redis_server["url"], 10)
    import redis

    redis.Redis.from_url(broker).flushdb()
    app = _app(broker)
    _fill(app, "big", 300_000, "needle", 0)
    t0 = time.monotonic()
    code, doc, err, _ = run_json("task", str(uuid.uuid4()), "--broker", broker,
                              "--timeout", "0.5")
    took = time.monotonic() - t0
    assert doc["searched"].startswith("stopped after "), doc["searched"]
    assert "--timeout" in doc["searched"]
    assert doc["tasks"][0]["state"] == "unknown"
    assert doc["tasks"][0]["verdict"].startswith("not found in what could be read")
    assert code == 3
    assert took < 5, took


def test_rabbitmq_queued_needs_peek_and_active(labdir, rabbit, vhost):
    """RabbitMQ: a queued task is "not visible without --peek", and found with it; a
    running task is found on its worker."""
    url = f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    w = s.start_worker(labdir, url, "tkr@%h", queues="celery", pool="threads", concurrency=1)
    app = _app(url)
    queued, active = f"rq-{uuid.uuid4()}", f"ra-{uuid.uuid4()}"
    try:
        app.send_task("celeryctl.lab.demoapp.sleep", (60,), task_id=active)
        for _ in range(3):
            app.send_task("celeryctl.lab.demoapp.add", (1, 1), queue="parked")
        app.send_task("celeryctl.lab.demoapp.add", (1, 1), queue="parked", task_id=queued)
        time.sleep(2)
        api = f"http://guest:guest@127.0.0.1:{rabbit['management_port']}"
        base = ("--broker", url, "--rabbitmq-api", api, "--vhost", vhost, "--timeout", "5")
        code, doc, err, _ = run_json("task", queued, active, *base)
        by_id = {t["id"]: t for t in doc["tasks"]}
        assert by_id[active]["state"] == "active", err
        assert by_id[queued]["state"] == "unknown"
        assert "not visible without --peek" in by_id[queued]["verdict"]
        assert code == 3
        code, doc, err, _ = run_json("task", queued, *base, "-Q", "parked", "--peek")
        t = doc["tasks"][0]
        assert t["state"] == "queued", (t, err)
        assert t["verdict"].startswith("waiting in `parked`, position 4"), t
        assert code == 0
    finally:
        w.stop()


def test_each_state_on_rabbitmq(labdir, rabbit, vhost, redis_server):
    """RabbitMQ broker, Redis result backend: a task traced in each state a third party can
    see there — queued (with --peek), active, reserved, scheduled, succeeded, failed,
    revoked, unknown (in flight is Redis's bookkeeping: on RabbitMQ a delivered message is
    the worker's, reserved or active)."""
    import redis

    url = f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    backend = _db(redis_server["url"], 6)
    redis.Redis.from_url(backend).flushdb()
    w = s.start_worker(labdir, url, "tkq@%h", queues="celery", pool="threads", concurrency=1,
                       backend=backend, env={"CELERYCTL_LAB_PREFETCH": "4"})
    app = _app(url, backend)
    try:
        ids = _every_state(app)
        for _ in range(3):
            app.send_task("celeryctl.lab.demoapp.add", (1, 1), queue="parked")
        app.send_task("celeryctl.lab.demoapp.add", (1, 1), queue="parked",
                      task_id=ids["queued"])
        time.sleep(2)
        api = f"http://guest:guest@127.0.0.1:{rabbit['management_port']}"
        code, doc, err, _ = run_json("task", *ids.values(), "--broker", url, "--rabbitmq-api",
                                     api, "--vhost", vhost, "--result-backend", backend,
                                     "--timeout", "5", "-Q", "parked", "--peek")
        by_id = {t["id"]: t for t in doc["tasks"]}
        states = {k: by_id[v]["state"] for k, v in ids.items()}
        assert states == {"queued": "queued", "active": "active", "reserved": "reserved",
                          "scheduled": "scheduled", "succeeded": "succeeded",
                          "failed": "failed", "revoked": "revoked",
                          "unknown": "unknown"}, (states, err)
        assert by_id[ids["queued"]]["verdict"].startswith("waiting in `parked`, position 4")
        assert "RuntimeError: demo failure" in by_id[ids["failed"]]["verdict"]
        assert by_id[ids["active"]]["verdict"].startswith("running ")
        assert code == 1, err  # one task (unknown) found nowhere, every place read
    finally:
        w.stop()


def test_scheduled_says_how_far_away_on_redis(traced):
    """Defect 13 (Redis): the ETA and how far away it is."""
    code, doc, err = _task(traced, traced["ids"]["scheduled"])
    v = doc["tasks"][0]["verdict"]
    assert re.search(r"^scheduled on tk1@\S+, ETA \S+ \(in (9|10) min\)", v), (v, err)


def test_result_backend_location_keys_are_null_when_unknown(traced):
    """Defect 6: every documented key of a result_backend location, null where not known."""
    code, doc, err = _task(traced, traced["ids"]["succeeded"])
    loc = [x for x in doc["tasks"][0]["locations"] if x["kind"] == "result_backend"][0]
    for key in ("status", "date_done", "date_done_epoch", "exception_type",
                "exception_message", "traceback_line", "children", "retries", "worker"):
        assert key in loc, (key, loc)
    assert loc["status"] == "SUCCESS" and loc["exception_type"] is None
    assert loc["traceback_line"] is None


@pytest.fixture(scope="module")
def quick(labdir, redis_server):
    """A free worker (threads, concurrency 2) on db 11, results on db 12."""
    broker, backend = _db(redis_server["url"], 11), _db(redis_server["url"], 12)
    import redis

    redis.Redis.from_url(broker).flushdb()
    redis.Redis.from_url(backend).flushdb()
    w = s.start_worker(labdir, broker, "tkq2@%h", queues="celery", pool="threads",
                       concurrency=2, backend=backend)
    try:
        yield {"broker": broker, "backend": backend, "app": _app(broker, backend)}
    finally:
        w.stop()


def _qtask(quick, *ids: str):
    return run_json("task", *ids, "--broker", quick["broker"], "--result-backend",
                    quick["backend"], "--timeout", "5")[:3]


def test_revoked_while_running_then_succeeded(quick):
    """Defect 3: a revoke (without terminate) that reached the worker while the task ran:
    the task succeeds all the same, and that is the verdict."""
    app = quick["app"]
    tid = f"late-{uuid.uuid4()}"
    r = app.send_task("celeryctl.lab.demoapp.sleep", (2,), task_id=tid)
    wait_for(lambda: any(tid in (v or {}) for v in (
        app.control.inspect(timeout=0.5).query_task([tid]) or {}).values()))
    app.control.revoke(tid)
    r.get(20)
    code, doc, err = _qtask(quick, tid)
    t = doc["tasks"][0]
    assert t["state"] == "succeeded", (t, err)
    assert "the revoke came too late" in t["verdict"] and t["verdict"].startswith("succeeded")
    assert code == 0


def test_contradictions_on_a_real_backend(quick):
    """Defect 7: a message queued again for a task whose backend says SUCCESS (it will run
    again); a record that is not JSON is a record, not 'not found'; a RETRY record does not
    list the task as its own child."""
    import pickle

    import redis

    app = quick["app"]
    done = f"done-{uuid.uuid4()}"
    app.send_task("celeryctl.lab.demoapp.add", (1, 2), task_id=done).get(20)
    # the same id published again to a queue nobody consumes (a duplicate message)
    app.send_task("celeryctl.lab.demoapp.add", (1, 2), task_id=done, queue="again")
    pickled = f"pickled-{uuid.uuid4()}"
    redis.Redis.from_url(quick["backend"]).set(
        f"celery-task-meta-{pickled}", pickle.dumps({"status": "SUCCESS", "result": 3}))
    flaky = f"flaky-{uuid.uuid4()}"
    # each attempt sleeps 6 s: the RETRY record stays while celeryctl starts and reads it
    app.send_task("celeryctl.lab.demoapp.flaky", kwargs={"retries": 1, "seconds": 6},
                  task_id=flaky)
    wait_for(lambda: app.AsyncResult(flaky).state == "RETRY", timeout=30, interval=0.1)
    code, doc, err = _qtask(quick, done, pickled, flaky)
    by_id = {t["id"]: t for t in doc["tasks"]}
    assert by_id[done]["state"] == "queued", (by_id[done], err)
    assert by_id[done]["verdict"].startswith("waiting in `again`, position 1 of 1; but the "
                                             "result backend already says SUCCESS")
    assert "it will run again" in by_id[done]["verdict"]
    assert by_id[pickled]["state"] == "unknown"
    assert by_id[pickled]["verdict"].startswith("the result backend has a record of it, not "
                                                "in JSON")
    rb = [x for x in by_id[flaky]["locations"] if x["kind"] == "result_backend"][0]
    assert rb["status"] == "RETRY", rb
    assert rb["children"] == [], rb  # Celery records the retry (same id) as a child


def test_many_ids_are_matched_in_one_pass(labdir, redis_server):
    """Defect 5: 500 ids against 16,000 queued messages: every message is searched well
    within --timeout (each message's id is looked up in a set, not every id searched in
    every message)."""
    broker = _db(redis_server["url"], 13)
    import redis

    redis.Redis.from_url(broker).flushdb()
    _fill(_app(broker), "deep", 15_998, "needle-500", 1)
    ids = [str(uuid.uuid4()) for _ in range(499)] + ["needle-500"]
    code, doc, err, _ = run_json("task", *ids, "--broker", broker, "--timeout", "3")
    assert doc["searched"].startswith("searched 16,000 of 16,000 messages in 1 queue"), \
        (doc["searched"], err)
    took = float(re.search(r"in ([0-9.]+) s", doc["searched"]).group(1))
    assert took < 1.5, doc["searched"]  # was 3.4 s, one substring search per id and message
    by_id = {t["id"]: t for t in doc["tasks"]}
    assert by_id["needle-500"]["verdict"] == "waiting in `deep`, position 15,999 of 16,000"
    assert code == 1  # the 499 others: not found anywhere, every place read


def test_a_slow_broker_says_nothing_was_searched(labdir, redis_server):
    """Defect 14: through a proxy delaying every packet 0.2 s, the scan does not get to
    read the queue lengths: the answer says no message was searched (exit 3), not 'searched
    0 of 0 messages in 0 queues'."""
    from celeryctl.lab.faultproxy import FaultProxy

    with FaultProxy("127.0.0.1", redis_server["port"], "delay", delay=0.2) as p:
        broker = f"redis://127.0.0.1:{p.port}/13"
        code, doc, err, secs = run_json("task", str(uuid.uuid4()), "--broker", broker,
                                        "-Q", "deep", "--timeout", "4")
    assert code == 3, (doc, err)
    assert "0 of 0" not in doc["searched"], doc["searched"]
    assert "no message searched" in doc["searched"] or \
        doc["searched"].startswith("stopped after"), doc["searched"]
    assert doc["tasks"][0]["verdict"].startswith("not found in what could be read")
    assert secs < 8


def test_rabbitmq_peek_reads_every_queue_and_scheduled_eta(labdir, rabbit, vhost):
    """Defects 1 and 13 (RabbitMQ): --peek reads every task queue the management API lists
    (30 tasks in `deepr`, which no worker consumes, no -Q); a queue read only in part is
    never 'not found anywhere'; a scheduled task says its ETA and how far away."""
    url = f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    w = s.start_worker(labdir, url, "tkp@%h", queues="celery", pool="threads", concurrency=1)
    app = _app(url)
    ids = [f"deepr-{i}-{uuid.uuid4()}" for i in range(30)]
    sched = f"sched-{uuid.uuid4()}"
    try:
        for tid in ids:
            app.send_task("celeryctl.lab.demoapp.add", (1, 1), queue="deepr", task_id=tid)
        app.send_task("celeryctl.lab.demoapp.add", (4, 4), task_id=sched, countdown=720)
        api = f"http://guest:guest@127.0.0.1:{rabbit['management_port']}"
        base = ("--broker", url, "--rabbitmq-api", api, "--vhost", vhost, "--timeout", "5")
        wait_for(lambda: run_json("task", sched, *base)[1]["tasks"][0]["state"] == "scheduled")
        code, doc, err, _ = run_json("task", ids[16], sched, *base, "--peek")
        by_id = {t["id"]: t for t in doc["tasks"]}
        assert by_id[ids[16]]["state"] == "queued", (by_id[ids[16]], doc["searched"], err)
        assert by_id[ids[16]]["verdict"].startswith("waiting in `deepr`, position 17"), \
            by_id[ids[16]]
        v = by_id[sched]["verdict"]
        assert re.search(r"^scheduled on tkp@\S+, ETA \S+ \(in 1[12] min\)", v), (v, err)
        assert code == 0, (doc["searched"], err)
        # only the first 10 of each queue read: the 17th is not 'not found anywhere'
        code, doc, err, _ = run_json("task", ids[16], *base, "--peek", "--peek-count", "10")
        t = doc["tasks"][0]
        assert t["state"] == "unknown" and "not found anywhere" not in t["verdict"], t
        assert "beyond the first 10 not read in `deepr`" in t["verdict"], t
        assert code == 3
    finally:
        w.stop()
