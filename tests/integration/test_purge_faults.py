"""purge and restore when things go wrong underneath them, on real servers: a Redis that
starts trickling its replies in the middle of a purge (a real TCP fault proxy between
celeryctl and the real server), and a disk that fills up in the middle of a backup (a real
file-size limit, RLIMIT_FSIZE, on the celeryctl process). The invariant holds: every
message is in its queue or in the backup, never both, never neither."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from collections import Counter

import pytest

from celeryctl.lab.faultproxy import FaultProxy
from tests.conftest import CELERYCTL, ROOT, run_cli
from tests.integration.test_interrupt import (
    QUEUE,
    _backup_ids,
    _rabbit_depth,
    _rabbit_fill,
    _rabbit_ids,
    _redis_fill,
    _redis_ids,
)

N = 20_000
pytestmark = [pytest.mark.timeout(300)]


def _small_disk(limit: int):
    """A child whose files cannot grow past `limit` bytes: writes fail with EFBIG, as on a
    full disk (SIGXFSZ ignored, so the write returns the error instead of killing it)."""

    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


def _run(args, preexec=None, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    t0 = time.monotonic()
    p = subprocess.run([*CELERYCTL, *args], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=timeout, preexec_fn=preexec)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


@pytest.mark.redis
def test_redis_purge_bounded_when_the_server_starts_trickling(redis_server, tmp_path):
    """The reply stream slows to a byte every half second once the purge is under way:
    the purge ends within its time budget and every message is back in its queue (or,
    if even the put-back gets no answer, set aside and said so — then recovered)."""
    import redis

    url = redis_server["url"].rsplit("/", 1)[0] + "/10"
    r = redis.Redis.from_url(url)
    _redis_fill(r, N)
    proxy = FaultProxy("127.0.0.1", redis_server["port"])
    proxy.trickle = 0.5
    proxy.start()
    try:
        backup = tmp_path / "b.jsonl"
        args = ["purge", QUEUE, "--broker", f"redis://127.0.0.1:{proxy.port}/10", "--backup",
                str(backup), "--confirm", "--yes", "--timeout", "1", "--audit-log",
                str(tmp_path / "a")]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = subprocess.Popen([*CELERYCTL, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        # let the plan and the set-aside pass, then trickle everything (the backup reads)
        deadline = time.monotonic() + 30
        while not r.smembers("_celeryctl.purge.pending") and time.monotonic() < deadline:
            time.sleep(0.01)
        proxy.mode = "trickle"
        t0 = time.monotonic()
        out, err = p.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        proxy.stop()
    assert p.returncode == 2, (out, err)
    assert took < 10, took  # a few bounded commands, never for ever
    assert "Traceback" not in err
    aside = _redis_ids(r, "_celeryctl.purge.*.*")
    if aside:  # the put-back got no answer either: said, and recoverable
        assert "restore --set-aside" in err, err
        code, out, err2, _ = run_cli("restore", "--set-aside", "--broker", url, "--confirm",
                                     "--yes", "--audit-log", str(tmp_path / "a"))
        assert code == 0, err2
    assert _redis_ids(r) == Counter({f"m{i}": 1 for i in range(N)})
    backed, _, _ = _backup_ids(backup)
    assert not backed or aside  # a put-back queue's lines were dropped from the backup
    audited = [json.loads(x) for x in (tmp_path / "a").read_text().splitlines()]
    assert next(x for x in audited if x["command"].startswith("purge"))["result"].startswith(
        "failed")


@pytest.mark.redis
def test_redis_purge_disk_full_keeps_every_message_once(redis_server, tmp_path):
    import redis

    url = redis_server["url"].rsplit("/", 1)[0] + "/10"
    r = redis.Redis.from_url(url)
    _redis_fill(r, N)  # about 15 MB of backup: the limit cuts it in the middle
    backup = tmp_path / "b.jsonl"
    code, out, err, _ = _run(["purge", QUEUE, "--broker", url, "--backup", str(backup),
                              "--confirm", "--yes", "--audit-log", str(tmp_path / "a")],
                             preexec=_small_disk(2 * 2**20))
    assert code == 2 and "Traceback" not in err, err
    backed, _, end = _backup_ids(backup)
    assert _redis_ids(r) == Counter({f"m{i}": 1 for i in range(N)})  # all put back
    assert not backed  # and none of them left in the backup
    assert end.get("complete") is False


@pytest.mark.rabbitmq
def test_rabbit_purge_disk_full_keeps_every_message_once(rabbit, vhost, tmp_path):
    broker = f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    _rabbit_fill(rabbit, vhost, N)
    backup = tmp_path / "b.jsonl"
    code, out, err, _ = _run(["purge", QUEUE, "--broker", broker, "--backup", str(backup),
                              "--confirm", "--yes", "--audit-log", str(tmp_path / "a")],
                             preexec=_small_disk(2 * 2**20))
    assert code == 2 and "Traceback" not in err, err
    backed, tail, end = _backup_ids(backup)
    assert not tail  # no batch written without its commit recorded
    time.sleep(0.5)
    assert _rabbit_depth(rabbit, vhost) + sum(backed.values()) == N
    queued = _rabbit_ids(rabbit, vhost)
    assert queued + backed == Counter({f"m{i}": 1 for i in range(N)})  # none in both
    assert end.get("end") is True and end.get("partly_purged") == [QUEUE]


@pytest.mark.redis
def test_no_broker_refusal_is_audited(tmp_path):
    audit = tmp_path / "a.log"
    env = {"HOME": str(tmp_path), "CELERY_BROKER_URL": "", "XDG_CONFIG_HOME": str(tmp_path)}
    code, out, err, _ = run_cli("purge", "q", "--confirm", "--yes", "--audit-log", str(audit),
                                env=env)
    assert code == 64 and "no broker given" in err, err
    line = json.loads(audit.read_text().splitlines()[-1])
    assert line["result"].startswith("refused") and line["command"].startswith("purge")
