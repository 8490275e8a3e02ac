"""`celeryctl queues watch` on real servers: rates and drain time follow a real producer and
real workers, the broker stopped and restarted mid-watch leaves stale values then recovers,
and the live screen is driven in tmux."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from celeryctl.lab import servers as s
from tests.conftest import CELERYCTL, ROOT, _cli_env

pytestmark = [pytest.mark.redis, pytest.mark.workers]


def _publish(url, queue, n, rate=None, stop=None):
    from celery import Celery

    app = Celery(broker=url, set_as_current=False)
    try:
        with app.producer_or_acquire() as producer:
            i = 0
            while i < n and not (stop is not None and stop.is_set()):
                app.send_task("celeryctl.lab.demoapp.add", (i, i), queue=queue,
                              producer=producer)
                i += 1
                if rate:
                    time.sleep(1.0 / rate)
    finally:
        app.close()


def _watch(*args, timeout=120):
    """Run `queues watch` (not a TTY: JSON lines) and return the parsed lines and exit code."""
    p = subprocess.run([*CELERYCTL, "queues", "watch", *args], capture_output=True, text=True,
                       env=_cli_env(None), cwd=str(ROOT), timeout=timeout)
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.strip()]
    return p.returncode, lines, p.stderr


def _watch_popen(*args):
    return subprocess.Popen([*CELERYCTL, "queues", "watch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_cli_env(None),
                            cwd=str(ROOT))


def _row(line, name):
    return next((q for q in line["queues"] if q["name"] == name), None)


@pytest.fixture
def own_redis(labdir):
    proc = s.start_redis(labdir, name=f"redis-watch-{time.monotonic_ns()}")
    yield proc
    proc.stop()


def test_rates_and_drain_follow_a_real_producer_and_workers(labdir, own_redis):
    url = own_redis.info["url"]
    # the queue exists (a worker bound it), but nobody consumes it yet
    w = s.start_worker(labdir, url, "ww1@%h", queues="wq", pool="threads")
    w.stop()
    stop = threading.Event()
    producer = threading.Thread(target=_publish, args=(url, "wq", 10_000, 20, stop))
    producer.start()
    try:
        code, lines, err = _watch("--broker", url, "--interval", "0.5", "--count", "8",
                                  "--rediscover", "1")
    finally:
        stop.set()
        producer.join()
    assert code == 0, err
    rows = [_row(x, "wq") for x in lines]
    assert all(r is not None for r in rows), lines[-1]
    last = rows[-1]
    assert last["consumers"] == 0
    assert 8 <= last["net_rate"] <= 30, rows  # ~20 messages/s arriving, nothing leaving
    assert last["rate_in"] == last["net_rate"] and last["rate_out"] == 0.0
    assert last["drain_seconds"] is None  # growing: "never"
    assert rows[-1]["ready"] > rows[0]["ready"]

    # a worker starts on a backlog while we watch: the net rate turns negative, the drain
    # time is finite, and the depth falls
    _publish(url, "wq", 3000)
    watch = _watch_popen("--broker", url, "--interval", "0.5", "--count", "30",
                         "--rediscover", "1")
    worker = None
    try:
        time.sleep(2)
        worker = s.start_worker(labdir, url, "ww2@%h", queues="wq", pool="threads",
                                concurrency=1)
        out, err = watch.communicate(timeout=90)
    finally:
        if watch.poll() is None:
            watch.kill()
        if worker is not None:
            worker.stop()
    assert watch.returncode == 0, err
    rows = [_row(json.loads(x), "wq") for x in out.splitlines()]
    assert rows[0]["consumers"] == 0 and any(r["consumers"] == 1 for r in rows)
    draining = [r for r in rows if r["net_rate"] is not None and r["net_rate"] < 0
                and r["ready"]]
    assert draining and all(r["drain_seconds"] > 0 for r in draining), rows
    assert rows[-1]["ready"] < rows[0]["ready"]
    if rows[-1]["ready"] == 0:
        assert rows[-1]["drain_seconds"] == 0.0


def test_rabbitmq_rates_from_the_management_api(labdir, rabbit, vhost):
    url = f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    api = f"http://guest:guest@127.0.0.1:{rabbit['management_port']}"
    w = s.start_worker(labdir, url, "wr1@%h", queues="rq", pool="threads")
    w.stop()  # the queue is declared and durable; nobody consumes it now
    stop = threading.Event()
    producer = threading.Thread(target=_publish, args=(url, "rq", 10_000, 20, stop))
    producer.start()
    try:
        # the API refreshes its counters every 5 s: two refreshes seen need up to 15 s
        code, lines, err = _watch("--broker", url, "--rabbitmq-api", api, "--interval", "0.5",
                                  "--count", "32")
    finally:
        stop.set()
        producer.join()
    assert code == 0, err
    last = _row(lines[-1], "rq")
    assert last["consumers"] == 0 and last["ready"] > 0
    assert 5 <= last["rate_in"] <= 40, last
    assert last["rate_out"] == 0.0 and last["drain_seconds"] is None


def test_broker_stopped_and_restarted_mid_watch(labdir, own_redis):
    url, port = own_redis.info["url"], own_redis.info["port"]
    w = s.start_worker(labdir, url, "ws1@%h", queues="sq", pool="threads")
    w.stop()
    _publish(url, "sq", 40)
    proc = _watch_popen("--broker", url, "--interval", "0.5", "--count", "24", "--timeout", "1")
    restarted = None
    try:
        time.sleep(3)
        own_redis.stop()
        time.sleep(4)
        restarted = s.start_redis(labdir, port=port, name=f"redis-watch-again-{port}")
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        if restarted is not None:
            restarted.stop()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 24
    states = [x["stale"] for x in lines]
    assert states[0] is False and True in states and states[-1] is False
    first_stale = next(x for x in lines if x["stale"])
    broker = first_stale["sources"][0]
    assert broker["ok"] is False and broker["error"] and "Traceback" not in broker["error"]
    # the last values stay while stale
    assert _row(first_stale, "sq")["ready"] == 40
    assert any(x["sources"][0]["stale_seconds"] for x in lines if x["stale"])
    # back: the restarted server has no data (no persistence in the lab): once rediscovered,
    # the queue is gone from the view, not shown with its old depth
    assert lines[-1]["sources"][0]["ok"] is True
    assert _row(lines[-1], "sq") is None or _row(lines[-1], "sq")["ready"] == 0


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by make test")
def test_live_screen_in_tmux(labdir, own_redis, tmp_path):
    url = own_redis.info["url"]
    w = s.start_worker(labdir, url, "wt1@%h", queues="tq,other", pool="threads")
    try:
        w.stop()
        _publish(url, "tq", 150)
        session = f"celeryctl-watch-{os.getpid()}"
        exit_file = tmp_path / "exit"
        env = " ".join(f"{k}={v}" for k, v in (("NO_COLOR", "1"), ("CELERYCTL_CONFIG",
                                                                    "/nonexistent")))
        cmd = (f"cd {ROOT} && env {env} {' '.join(CELERYCTL)} queues watch --broker {url} "
               f"--interval 0.5 --timeout 1; echo $? > {exit_file}")
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "30",
                        cmd], check=True)
        try:
            screen = _wait_screen(session, "tq")
            assert "workers online" in screen and "last good sample" in screen
            line = next(x for x in screen.splitlines() if x.strip().startswith("tq "))
            assert "150" in line and "never" in line  # no consumer: it will never drain
            own_redis.stop()
            screen = _wait_screen(session, "STALE")
            assert "150" in next(x for x in screen.splitlines() if x.strip().startswith("tq "))
            subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
            deadline = time.monotonic() + 10
            while not exit_file.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert exit_file.read_text().strip() == "130"
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    finally:
        w.stop()


def _wait_screen(session, text, timeout=20.0):
    end = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < end:
        screen = subprocess.run(["tmux", "capture-pane", "-t", session, "-p"],
                                capture_output=True, text=True).stdout
        if text in screen:
            return screen
        time.sleep(0.3)
    raise AssertionError(f"{text!r} never appeared on screen:\n{screen}")


def test_rabbitmq_hung_mid_watch_goes_stale_then_recovers(labdir, tmp_path):
    """The node is frozen (SIGSTOP: the API accepts nothing, answers nothing) for 5 s: every
    refresh still comes within its time budget, stale, and the view recovers on SIGCONT."""
    import signal

    node = s.start_rabbitmq(tmp_path / "rb", name="rabbit-watch")
    try:
        info = node.info
        import pika

        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1",
                                                                 info["amqp_port"]))
        ch = conn.channel()
        ch.queue_declare("hq")
        for _ in range(12):
            ch.basic_publish("", "hq", b"{}")
        conn.close()
        time.sleep(6)  # the API's statistics interval
        api = f"http://guest:guest@127.0.0.1:{info['management_port']}"
        proc = _watch_popen("--broker", info["url"], "--rabbitmq-api", api, "--interval", "0.5",
                            "--count", "30", "--timeout", "1")
        pgid = os.getpgid(node.pid)
        try:
            time.sleep(3)
            os.killpg(pgid, signal.SIGSTOP)
            time.sleep(5)
        finally:
            os.killpg(pgid, signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        lines = [json.loads(x) for x in out.splitlines()]
        assert len(lines) == 30 and "Traceback" not in err
        stale = [x for x in lines if x["stale"]]
        assert stale
        why = stale[0]["sources"][0]["error"].lower()
        assert "timed out" in why or "timeout" in why, why
        assert _row(stale[-1], "hq")["ready"] == 12  # the last values stay
        assert lines[-1]["stale"] is False and _row(lines[-1], "hq")["ready"] == 12
    finally:
        node.stop(timeout=20)


def _send(url, queue, name, args, n=1, priority=None):
    from celery import Celery

    app = Celery(broker=url, set_as_current=False)
    try:
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                app.send_task(f"celeryctl.lab.demoapp.{name}", args, queue=queue,
                              producer=producer, priority=priority)
    finally:
        app.close()


def _busy_and_moving(labdir, url, busy_ready):
    """Two real workers: `busy` (prefetch 1, acks_late, one pool process) runs a long task
    and holds nothing else, so the head of `stuckq` stays; `mover` drains `movingq` (a backlog
    of 0.2 s tasks) normally. `busy_ready()` -> how many wait in stuckq."""
    busy = s.start_worker(labdir, url, f"busy{time.monotonic_ns()}@%h", queues="stuckq",
                          concurrency=1, env={"CELERYCTL_LAB_PREFETCH": "1",
                                              "CELERYCTL_LAB_ACKS_LATE": "1"})
    procs = [busy]
    try:
        _send(url, "stuckq", "sleep", (90,))
        from tests.conftest import wait_for

        wait_for(lambda: busy_ready() == 0, timeout=20)  # taken: it runs now
        # on Redis in two priority sub-lists (stuckq, stuckq\x06\x166): the head is the
        # bare list's consuming end, and the sub-list's tail must not look like progress
        _send(url, "stuckq", "add", (1, 2), n=3)
        _send(url, "stuckq", "add", (1, 2), n=2, priority=6)
        _send(url, "movingq", "sleep", (0.2,), n=400)
        procs.append(s.start_worker(labdir, url, f"mover{time.monotonic_ns()}@%h",
                                    queues="movingq", concurrency=2))
    except BaseException:
        for p in procs:
            p.stop(timeout=3)
        raise
    return procs


def _assert_stall_seen(lines, stalled_after):
    stuck = [_row(x, "stuckq") for x in lines]
    moving = [_row(x, "movingq") for x in lines]
    assert all(r is not None for r in stuck), stuck
    last = stuck[-1]
    assert last["ready"] == 5, stuck
    assert last["consumers"] == 1 and last["stalled"] is True, stuck
    assert last["stalled_seconds"] >= stalled_after
    busy = [r for r in moving if r is not None and r["ready"]]
    assert busy and all(r["consumers"] == 1 for r in busy[-3:]), moving
    # the queue consumed normally is never marked, while it has a backlog
    assert not any(r["stalled"] for r in busy), moving
    assert busy[-1]["ready"] < busy[0]["ready"]


def test_redis_stalled_queue_is_marked_and_a_moving_one_is_not(labdir, own_redis):
    import redis

    url = own_redis.info["url"]
    r = redis.Redis(port=own_redis.info["port"])
    from celeryctl.permissions import ACCOUNTS

    # also through the documented least-privilege account that can see consumers (inspect):
    # the heads are read with LRANGE, which its rules allow
    inspect = ACCOUNTS["inspect"]
    r.execute_command(*inspect.redis_setuser("pw-inspect"))
    acl_url = url.replace("redis://", f"redis://{inspect.user}:pw-inspect@", 1)
    procs = _busy_and_moving(labdir, url, lambda: r.llen("stuckq"))
    watches = []
    try:
        for u in (url, acl_url):
            watches.append(_watch_popen("--broker", u, "--interval", "1", "--count", "10",
                                        "--rediscover", "1", "--stalled-after", "5"))
        outs = [w.communicate(timeout=120) for w in watches]
    finally:
        for w in watches:
            if w.poll() is None:
                w.kill()
        for p in procs:
            p.stop(timeout=3)
    for w, (out, err) in zip(watches, outs, strict=True):
        assert w.returncode == 0, err
        _assert_stall_seen([json.loads(x) for x in out.splitlines()], 5)
    # the heads are read, never consumed: the five are still there, and the long task holds
    assert r.llen("stuckq") == 3 and r.llen("stuckq\x06\x166") == 2


def test_rabbitmq_stall_from_consumer_capacity(labdir, rabbit, vhost):
    import requests

    url = f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    api = f"http://guest:guest@127.0.0.1:{rabbit['management_port']}"

    def ready():
        q = requests.get(f"http://127.0.0.1:{rabbit['management_port']}/api/queues/{vhost}/"
                         "stuckq", auth=("guest", "guest"), timeout=5)
        return q.json().get("messages_ready", 1) if q.ok else 1

    procs = _busy_and_moving(labdir, url, ready)
    try:
        # the API refreshes counts, capacity and counters every 5 s; 3.10.8 keeps capacity
        # at ~0.6 here (recomputed only on queue events): the unmoving ack counter tells
        code, lines, err = _watch("--broker", url, "--rabbitmq-api", api, "--interval", "1",
                                  "--count", "24", "--stalled-after", "8")
    finally:
        for p in procs:
            p.stop(timeout=3)
    assert code == 0, err
    _assert_stall_seen(lines, 8)
