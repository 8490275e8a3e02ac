"""`celeryctl task ID...` against real Redis / RabbitMQ and real workers: a task traced in
each state (queued deep in a 10,000-message queue, in flight, active, reserved, scheduled,
succeeded, failed, revoked, unknown)."""

from __future__ import annotations

import json
import os
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


DBS = (6, 7, 8, 9, 10)  # this module's databases on the session's Redis


@pytest.fixture(scope="module", autouse=True)
def _leave_no_backlog(redis_server):
    """The 10,000- and 300,000-message queues are flushed when the module ends: later
    modules share this Redis."""
    yield
    import redis

    for db in DBS:
        redis.Redis.from_url(_db(redis_server["url"], db)).flushdb()


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
    ids = {k: f"{k}-{uuid.uuid4()}" for k in ("queued", "active", "reserved", "scheduled",
                                               "succeeded", "failed", "revoked", "unknown")}
    try:
        app.send_task("celeryctl.lab.demoapp.add", (2, 2), task_id=ids["succeeded"]).get(20)
        with pytest.raises(Exception, match="demo failure"):
            app.send_task("celeryctl.lab.demoapp.fail", task_id=ids["failed"]).get(20)
        app.control.revoke(ids["revoked"])
        app.send_task("celeryctl.lab.demoapp.sleep", (120,), queue="celery",
                      task_id=ids["active"])
        app.send_task("celeryctl.lab.demoapp.add", (3, 3), task_id=ids["reserved"])
        app.send_task("celeryctl.lab.demoapp.add", (4, 4), task_id=ids["scheduled"],
                      countdown=600)
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
    ids = {k: f"{k}-{uuid.uuid4()}" for k in ("queued", "active", "reserved", "scheduled",
                                               "succeeded", "failed", "revoked", "unknown")}
    try:
        app.send_task("celeryctl.lab.demoapp.add", (2, 2), task_id=ids["succeeded"]).get(20)
        with pytest.raises(Exception, match="demo failure"):
            app.send_task("celeryctl.lab.demoapp.fail", task_id=ids["failed"]).get(20)
        app.control.revoke(ids["revoked"])
        app.send_task("celeryctl.lab.demoapp.sleep", (120,), task_id=ids["active"])
        app.send_task("celeryctl.lab.demoapp.add", (3, 3), task_id=ids["reserved"])
        app.send_task("celeryctl.lab.demoapp.add", (4, 4), task_id=ids["scheduled"],
                      countdown=600)
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
