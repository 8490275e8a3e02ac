"""`celeryctl control` against real workers: commands reach exactly the named destinations,
disruptive ones need the guard, unknown destinations are refused, shutdown is verified by ping,
and every command sent or refused is audited."""

from __future__ import annotations

import json
import socket
import time

import pytest

from celeryctl.lab import servers as s
from tests.conftest import run_cli, run_json, run_tty, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.workers]
H = socket.gethostname()


@pytest.fixture(scope="module")
def cluster(labdir, redis_server):
    """Three workers of their own on db 8: two prefork (pool commands), one threads worker
    that consumes a single queue (cancel-consumer of a last queue)."""
    url = redis_server["url"].rsplit("/", 1)[0] + "/8"
    import redis

    redis.Redis.from_url(url).flushdb()
    specs = [("cw1@%h", "celery,ctl_a", "prefork"), ("cw2@%h", "celery", "prefork"),
             ("cw3@%h", "ctl_only", "threads")]
    procs = []
    try:
        for name, queues, pool in specs:
            procs.append(s.start_worker(labdir, url, name, queues=queues, pool=pool,
                                        concurrency=2))
        yield {"url": url, "procs": procs}
    finally:
        for p in procs:
            p.stop()


def _inspect(url, kind, *dest):
    args = ["workers", "inspect", kind, "--broker", url]
    for d in dest:
        args += ["-d", d]
    code, doc, err, _ = run_json(*args)
    return {r["name"]: r["reply"] for r in doc["replies"] or []}


def _queues(url):
    return {n: sorted(q["name"] for q in reply) for n, reply in _inspect(url, "queues").items()}


def _pool(url):
    return {n: len(r["pool"]["processes"]) for n, r in _inspect(url, "stats").items()
            if "processes" in r["pool"]}


def _audit(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_commands_reach_exactly_the_named_destinations(cluster, tmp_path):
    url, audit = cluster["url"], tmp_path / "audit.log"
    pools = _pool(url)
    code, doc, err, _ = run_json("control", "pool-grow", "1", "-d", f"cw1@{H}", "--broker", url,
                                 "--audit-log", str(audit))
    assert code == 0, err
    assert [r["worker"] for r in doc["workers"]] == [f"cw1@{H}"]
    assert doc["workers"][0]["answered"] and doc["workers"][0]["after"] == \
        f"pool {pools[f'cw1@{H}']} -> {pools[f'cw1@{H}'] + 1}"
    after = _pool(url)
    assert after[f"cw1@{H}"] == pools[f"cw1@{H}"] + 1
    assert after[f"cw2@{H}"] == pools[f"cw2@{H}"]  # not named: untouched

    code, doc, err, _ = run_json("control", "add-consumer", "ctl_new", "-d", f"cw1@{H}",
                                 "-d", f"cw3@{H}", "--broker", url, "--audit-log", str(audit))
    assert code == 0, err
    assert sorted(r["worker"] for r in doc["workers"]) == [f"cw1@{H}", f"cw3@{H}"]
    assert all(r["answered"] and r["ok"] and r["took_effect"] for r in doc["workers"])
    qs = _queues(url)
    assert "ctl_new" in qs[f"cw1@{H}"] and "ctl_new" in qs[f"cw3@{H}"]
    assert "ctl_new" not in qs[f"cw2@{H}"]
    # not their last queue: no guard; cw3 goes back to consuming its one queue
    code, doc, err, _ = run_json("control", "cancel-consumer", "ctl_new", "-d", f"cw1@{H}",
                                 "-d", f"cw3@{H}", "--broker", url, "--audit-log", str(audit))
    assert code == 0 and not doc["disruptive"], err
    assert _queues(url)[f"cw3@{H}"] == ["ctl_only"]

    # a worker's error reply is shown as such, and the exit status says so
    code, doc, err, _ = run_json("control", "rate-limit", "no.such.task", "5/s", "-d",
                                 f"cw2@{H}", "--broker", url, "--audit-log", str(audit))
    assert code == 2 and doc["workers"][0]["result"] == "error: unknown task"
    lines = _audit(audit)
    assert [a["command"] for a in lines] == ["control pool-grow 1",
                                             "control add-consumer ctl_new",
                                             "control cancel-consumer ctl_new",
                                             "control rate-limit no.such.task 5/s"]
    assert lines[1]["subjects"] == [f"cw1@{H}", f"cw3@{H}"] and lines[1]["result"] == "ok"
    assert lines[3]["result"].startswith("failed")


def test_unknown_destination_is_refused_and_nothing_is_sent(cluster, tmp_path):
    url, audit = cluster["url"], tmp_path / "audit.log"
    before = _queues(url)
    code, out, err, _ = run_cli("control", "add-consumer", "typo_q", "-d", f"cw1@{H}",
                                "-d", f"cw11@{H}", "--broker", url, "--audit-log", str(audit))
    assert code == 64
    assert f"no worker named 'cw11@{H}'" in err and "did you mean" in err and f"cw1@{H}" in err
    assert "nothing sent" in err
    time.sleep(0.5)
    assert _queues(url) == before  # cw1 was named correctly, but nothing went out at all
    assert _audit(audit)[0]["result"] == "refused"


def test_disruptive_commands_need_the_guard(cluster, tmp_path):
    url, audit = cluster["url"], tmp_path / "audit.log"
    # cancel-consumer of cw3's only queue: a dry run without --confirm
    code, out, err, _ = run_cli("control", "cancel-consumer", "ctl_only", "-d", f"cw3@{H}",
                                "--broker", url, "--audit-log", str(audit))
    assert code == 0 and "only queue it consumes" in out and "dry run" in err
    # --confirm without a terminal and without --yes: refused
    code, out, err, _ = run_cli("control", "cancel-consumer", "ctl_only", "-d", f"cw3@{H}",
                                "--broker", url, "--confirm", "--audit-log", str(audit))
    assert code == 64 and "refused" in err
    # no --destination reaches every worker: guarded even for a harmless command
    code, out, err, _ = run_cli("control", "enable-events", "--broker", url,
                                "--audit-log", str(audit))
    assert code == 0 and "reaches every worker" in out and "dry run" in err
    # a typed confirmation on stdin that does not match: nothing sent
    code, out, err = run_tty("control", "shutdown", "-d", f"cw3@{H}", "--broker", url,
                             "--confirm", "--audit-log", str(audit), answer=f"cw4@{H}")
    assert code == 64 and f"Type the worker name (cw3@{H})" in err and "not confirmed" in err
    assert "ctl_only" in _queues(url)[f"cw3@{H}"]  # nothing was cancelled or stopped
    assert not audit.exists() or all(a["result"] != "ok" for a in _audit(audit))
    # with --confirm --yes it goes out, and the worker consumes nothing
    code, doc, err, _ = run_json("control", "cancel-consumer", "ctl_only", "-d", f"cw3@{H}",
                                 "--broker", url, "--confirm", "--yes",
                                 "--audit-log", str(audit))
    assert code == 0, err
    assert doc["workers"][0]["took_effect"] and "ctl_only" not in _queues(url)[f"cw3@{H}"]
    run_cli("control", "add-consumer", "ctl_only", "-d", f"cw3@{H}", "--broker", url,
            "--audit-log", str(audit))


def test_revoke_terminate_kills_only_the_running_task(cluster, tmp_path):
    from celery import Celery

    url = cluster["url"]
    app = Celery(broker=url, set_as_current=False)
    res = app.send_task("celeryctl.lab.demoapp.sleep", (60,), queue="ctl_a")
    app.close()
    wait_for(lambda: any(t["id"] == res.id for t in _inspect(url, "active", f"cw1@{H}")
                         .get(f"cw1@{H}", [])))
    code, doc, err, _ = run_json("control", "revoke", res.id, "--terminate", "--signal", "KILL",
                                 "-d", f"cw1@{H}", "--broker", url, "--confirm", "--yes",
                                 "--audit-log", str(tmp_path / "a.log"))
    assert code == 0, err
    assert doc["arguments"]["signal"] == "SIGKILL"
    assert any("running on: " + f"cw1@{H}" in n for n in doc["notes"])
    assert "terminate: " + res.id in doc["workers"][0]["result"]
    wait_for(lambda: not _inspect(url, "active", f"cw1@{H}").get(f"cw1@{H}"))


def test_shutdown_is_verified_by_ping(cluster, tmp_path):
    url = cluster["url"]
    proc = cluster["procs"][2]
    code, doc, err, _ = run_json("control", "shutdown", "-d", f"cw3@{H}", "--broker", url,
                                 "--confirm", "--yes", "--audit-log", str(tmp_path / "a.log"))
    assert code == 0, err
    assert doc["workers"] == [{"worker": f"cw3@{H}", "targeted": True, "answered": None,
                               "ok": True, "reply": None,
                               "result": "stopped (no longer answers ping)"}]
    wait_for(lambda: not proc.alive())
    assert set(_inspect(url, "ping")) == {f"cw1@{H}", f"cw2@{H}"}  # the others still run


def test_rabbitmq_destinations(labdir, rabbit, vhost, tmp_path):
    url = f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    procs = []
    try:
        for name in ("rc1@%h", "rc2@%h"):
            procs.append(s.start_worker(labdir, url, name, queues="celery", pool="threads"))
        code, doc, err, _ = run_json("control", "add-consumer", "mq_new", "-d", f"rc2@{H}",
                                     "--broker", url, "--audit-log", str(tmp_path / "a.log"))
        assert code == 0, err
        assert [(r["worker"], r["answered"], r["took_effect"]) for r in doc["workers"]] == \
            [(f"rc2@{H}", True, True)]
        qs = _queues(url)
        assert "mq_new" in qs[f"rc2@{H}"] and "mq_new" not in qs[f"rc1@{H}"]
        code, doc, err, _ = run_json("control", "disable-events", "--broker", url,
                                     "--confirm", "--yes", "--audit-log", str(tmp_path / "a.log"))
        assert code == 0, err
        assert sorted(r["worker"] for r in doc["workers"] if r["answered"]) == \
            [f"rc1@{H}", f"rc2@{H}"]
    finally:
        for p in procs:
            p.stop()
