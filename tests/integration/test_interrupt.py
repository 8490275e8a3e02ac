"""A purge of 100,000 messages interrupted at random instants, on real Redis and RabbitMQ:
SIGINT, SIGTERM, SIGHUP, a closed terminal (the pty goes away) and kill -9. The invariant,
checked by message id: every published message is in the queue or in the backup (or, after
a kill -9 on Redis, set aside until `restore --set-aside`), never lost, never in two places
— and after recovery a restore of the backup brings each back exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.conftest import CELERYCTL, ROOT, run_cli

N = 100_000
QUEUE = "bulk"
pytestmark = [pytest.mark.timeout(900)]


# --- message ids on each side -----------------------------------------------------------

def _backup_ids(path) -> tuple[Counter, list[str], dict]:
    """ids in the backup's message lines, the ids after the last "acked" marker (RabbitMQ:
    written, commit not recorded), and the end line (or {})."""
    ids: Counter = Counter()
    tail: list[str] = []
    end: dict = {}
    if not path.exists():
        return ids, tail, end
    lines = path.read_bytes().splitlines()[1:]
    for line in lines:
        rec = json.loads(line)
        if "end" in rec:
            end = rec
        elif rec.get("celeryctl_marker") == "acked":
            tail = []
        elif "celeryctl_marker" not in rec:
            i = (rec.get("headers") or {}).get("id") or rec.get("properties", {}).get(
                "message_id")
            ids[i] += 1
            tail.append(i)
    return ids, tail, end


def _env(i: int, queue: str) -> bytes:
    return json.dumps({
        "body": "W1sxLCAyXSwge30sIHt9XQ==", "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": "t.add", "id": f"m{i}"},
        "properties": {"correlation_id": f"m{i}", "delivery_mode": 2, "priority": i % 10,
                       "delivery_info": {"exchange": "", "routing_key": queue},
                       "body_encoding": "base64", "delivery_tag": f"t{i}"}}).encode()


def _redis_fill(r, n=N):
    r.flushdb()
    pipe = r.pipeline(transaction=False)
    steps = {0: QUEUE, 3: f"{QUEUE}\x06\x163", 6: f"{QUEUE}\x06\x166", 9: f"{QUEUE}\x06\x169"}
    for i in range(n):
        step = max(s for s in steps if s <= i % 10)
        pipe.lpush(steps[step], _env(i, QUEUE))
        if i % 10000 == 9999:
            pipe.execute()
    pipe.execute()
    r.sadd("_kombu.binding.celery", f"{QUEUE}\x06\x16\x06\x16{QUEUE}")


def _redis_ids(r, pattern=None) -> Counter:
    keys = [QUEUE, f"{QUEUE}\x06\x163", f"{QUEUE}\x06\x166", f"{QUEUE}\x06\x169"] \
        if pattern is None else list(r.scan_iter(match=pattern))
    out: Counter = Counter()
    for k in keys:
        if r.type(k) != b"list":
            continue
        for raw in r.lrange(k, 0, -1):
            out[json.loads(raw)["headers"]["id"]] += 1
    return out


# --- running and interrupting purge -------------------------------------------------------

def _start(args, pty_=False):
    cmd = [*CELERYCTL, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    if not pty_:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=env, cwd=ROOT), None
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.chdir(ROOT)
        os.execve(sys.executable, cmd, env)
    return pid, fd


def _interrupt(args, how: str, delay: float) -> int:
    """Run purge, deliver `how` after `delay` seconds; its exit status."""
    if how == "pty-close":
        pid, fd = _start(args, pty_=True)
        time.sleep(delay)
        os.close(fd)  # the terminal goes away: the kernel sends SIGHUP
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    proc, _ = _start(args)
    time.sleep(delay)
    proc.send_signal(getattr(signal, how))
    proc.communicate(timeout=120)
    return proc.returncode


def _audit_last(path) -> dict:
    return json.loads(path.read_text().splitlines()[-1])


# --- Redis ------------------------------------------------------------------------------------

TRIALS = [("SIGINT", 0.8), ("SIGINT", None), ("SIGTERM", None), ("SIGHUP", None),
          ("pty-close", None), ("SIGKILL", None), ("SIGKILL", None)]


@pytest.mark.redis
def test_redis_purge_interrupted_anywhere(redis_server, tmp_path):
    import redis

    url = redis_server["url"].rsplit("/", 1)[0] + "/11"
    r = redis.Redis.from_url(url)
    rng = random.Random(int(os.environ.get("CELERYCTL_SEED", "12")))
    everything = Counter({f"m{i}": 1 for i in range(N)})
    outcomes = []
    for n, (how, delay) in enumerate(TRIALS):
        _redis_fill(r)
        delay = delay if delay is not None else rng.uniform(0.6, 5.0)
        backup, audit = tmp_path / f"b{n}.jsonl", tmp_path / f"a{n}.log"
        code = _interrupt(["purge", QUEUE, "--broker", url, "--backup", str(backup),
                           "--confirm", "--yes", "--audit-log", str(audit)], how, delay)
        queued, (backed, _tail, end), aside = (_redis_ids(r), _backup_ids(backup),
                                               _redis_ids(r, "_celeryctl.purge.*.*"))
        where = f"{how} after {delay:.2f}s: exit {code}, queued {sum(queued.values())}, " \
                f"backed up {sum(backed.values())}, aside {sum(aside.values())}"
        outcomes.append(where)
        if aside:  # killed while set aside: the backup's lines for them are not valid yet
            assert how == "SIGKILL" and queued + aside == everything, where
            assert not (set(backed) - set(aside)), where
        else:
            assert queued + backed == everything, where  # nothing lost, nothing twice
        if how != "SIGKILL":
            assert code in (0, 130), where
            assert not aside and not r.smembers("_celeryctl.purge.pending"), where
            # the file is exactly what was deleted (none: stopped before it was opened)
            assert end.get("end") is True or not backed and queued == everything, where
            result = _audit_last(audit)["result"]
            assert result == "ok" if code == 0 else result.startswith("interrupted"), where
            assert not (set(queued) & set(backed)), where
            continue
        # kill -9: doctor and queues find what was left; restore --set-aside puts it back
        if aside:
            code, out, err, _ = run_cli("queues", "--broker", url)
            assert "restore --set-aside" in err, err
            code, out, err, _ = run_cli("doctor", "--broker", url, "--select", "QUE014")
            assert "QUE014" in out and "set aside" in out, out
            code, out, err, _ = run_cli("restore", "--set-aside", "--broker", url,
                                        "--confirm", "--yes", "--audit-log", str(audit))
            assert code == 0, err
            assert not _redis_ids(r, "_celeryctl.purge.*.*")
        # then the backup restores exactly what is missing
        if backup.exists():
            code, out, err, _ = run_cli("restore", str(backup), "--broker", url, "--confirm",
                                        "--yes", "--audit-log", str(audit))
            assert code in (0, 2), err
        assert _redis_ids(r) == everything, where
    print("\n".join(outcomes))


@pytest.mark.redis
def test_redis_set_aside_found_and_put_back_without_a_purge_process(redis_server, tmp_path):
    """What a kill -9 leaves, made deterministic: the set-aside step alone."""
    import redis

    from celeryctl.actions.purge import set_aside
    from celeryctl.collect.redis import RedisLayout

    url = redis_server["url"].rsplit("/", 1)[0] + "/11"
    r = redis.Redis.from_url(url)
    _redis_fill(r, 1000)
    r.lpush(QUEUE, _env(5000, QUEUE))
    sa = set_aside(r, RedisLayout(), QUEUE, limits={0: 300, 3: 300, 6: 300, 9: 100},
                   info={"pid": 999999})
    assert sa.total == 1000  # the newest message, beyond the plan, went straight back
    assert _redis_ids(r) == Counter({"m5000": 1})
    r.lpush(QUEUE, _env(5001, QUEUE))  # published after the kill
    code, doc, err, _ = _json("queues", "--all", "--broker", url)
    row = next(q for q in doc["queues"] if q["name"].startswith("_celeryctl.purge."))
    assert row["ready"] == 1000 and row["arguments"]["purge_of"] == QUEUE
    code, out, err, _ = run_cli("restore", "--set-aside", "--broker", url)
    assert code == 0 and "dry run" in err and QUEUE in out
    code, out, err, _ = run_cli("restore", "--set-aside", "--broker", url, "--confirm", "--yes",
                                "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    assert _redis_ids(r) == Counter({f"m{i}": 1 for i in [*range(1000), 5000, 5001]})
    # the older messages are consumed first, as before the purge
    assert json.loads(r.lindex(QUEUE, -1))["headers"]["id"] == "m0"
    assert json.loads(r.lindex(QUEUE, 0))["headers"]["id"] == "m5001"
    code, out, err, _ = run_cli("restore", "--set-aside", "--broker", url)
    assert code == 0 and "nothing is set aside" in err


def _json(*args):
    code, out, err, secs = run_cli(*args, "--format", "json")
    return code, json.loads(out) if out.strip() else None, err, secs


# --- RabbitMQ ---------------------------------------------------------------------------------

def _amqp(rabbit, vhost):
    import pika

    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", rabbit["amqp_port"], virtual_host=vhost))


def _rabbit_fill(rabbit, vhost, n=N):
    import pika

    conn = _amqp(rabbit, vhost)
    ch = conn.channel()
    ch.queue_delete(QUEUE)
    ch.queue_declare(QUEUE, durable=True)
    body = b'[[1, 2], {}, {"callbacks": null}]'
    for i in range(n):
        ch.basic_publish("", QUEUE, body, pika.BasicProperties(
            content_type="application/json", content_encoding="utf-8", delivery_mode=2,
            message_id=f"m{i}", headers={"task": "t.add", "id": f"m{i}"}))
    ch.queue_declare(QUEUE, passive=True)  # a round trip: every publish has arrived
    conn.close()


def _rabbit_ids(rabbit, vhost) -> Counter:
    """Drain the queue (test side) and count ids."""
    conn = _amqp(rabbit, vhost)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2000)
    out: Counter = Counter()
    for method, props, _body in ch.consume(QUEUE, inactivity_timeout=1.0):
        if method is None:
            break
        out[props.message_id] += 1
        ch.basic_ack(method.delivery_tag)
    conn.close()
    return out


def _rabbit_depth(rabbit, vhost) -> int:
    conn = _amqp(rabbit, vhost)
    n = conn.channel().queue_declare(QUEUE, passive=True).method.message_count
    conn.close()
    return n


RABBIT_TRIALS = [("SIGINT", None), ("SIGTERM", None), ("SIGHUP", None), ("SIGKILL", None),
                 ("SIGKILL", None)]


@pytest.mark.rabbitmq
def test_rabbit_purge_interrupted_anywhere(rabbit, vhost, tmp_path):
    rng = random.Random(int(os.environ.get("CELERYCTL_SEED", "12")))
    everything = Counter({f"m{i}": 1 for i in range(N)})
    broker = f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    outcomes = []
    for n, (how, delay) in enumerate(RABBIT_TRIALS):
        _rabbit_fill(rabbit, vhost)
        delay = delay if delay is not None else rng.uniform(0.8, 5.0)
        backup, audit = tmp_path / f"b{n}.jsonl", tmp_path / f"a{n}.log"
        code = _interrupt(["purge", QUEUE, "--broker", broker, "--backup", str(backup),
                           "--confirm", "--yes", "--audit-log", str(audit)], how, delay)
        time.sleep(0.5)  # a killed connection's unacked messages are requeued by the broker
        backed, tail, end = _backup_ids(backup)
        where = f"{how} after {delay:.2f}s: exit {code}, backed up {sum(backed.values())}"
        outcomes.append(where)
        if how != "SIGKILL":
            assert code in (0, 130), where
            assert end.get("end") is True or not backed, where
            result = _audit_last(audit)["result"]
            assert result == "ok" if code == 0 else result.startswith("interrupted"), where
            queued = _rabbit_ids(rabbit, vhost)
            assert queued + backed == everything, where
            continue
        # kill -9: a batch written but not known to be committed may be in both places;
        # restore skips those still queued (by message id), so the end state is exact
        depth = _rabbit_depth(rabbit, vhost)
        assert depth + sum(backed.values()) - len(tail) <= N <= depth + sum(backed.values()), \
            where
        if backup.exists():
            code, out, err, _ = run_cli("restore", str(backup), "--broker", broker,
                                        "--confirm", "--yes", "--audit-log", str(audit))
            assert code in (0, 2), err
        assert _rabbit_ids(rabbit, vhost) == everything, where
    print("\n".join(outcomes))


@pytest.mark.rabbitmq
@pytest.mark.parametrize("committed", [False, True])
def test_rabbit_unconfirmed_batch_is_never_restored_twice(rabbit, vhost, tmp_path, committed):
    """The one window kill -9 can hit on RabbitMQ, made deterministic: a batch written and
    fsynced whose commit the file does not record. Not committed: the broker requeued it, so
    restore finds it in the queue and skips it; committed: restore brings it back."""
    import pika

    broker = f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    _rabbit_fill(rabbit, vhost, 50)
    full = tmp_path / "full.jsonl"
    code, out, err, _ = run_cli("purge", QUEUE, "--broker", broker, "--backup", str(full),
                                "--confirm", "--yes", "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    lines = full.read_bytes().splitlines(keepends=True)
    cut = [x for x in lines if b'"acked"' not in x and b'"queue_done"' not in x
           and not x.startswith(b'{"end"')]
    killed = tmp_path / "killed.jsonl"
    killed.write_bytes(b"".join(cut))
    if not committed:  # what the broker does with an uncommitted batch: back in the queue
        conn = _amqp(rabbit, vhost)
        ch = conn.channel()
        for i in range(50):
            ch.basic_publish("", QUEUE, b"[[1, 2], {}, {}]", pika.BasicProperties(
                message_id=f"m{i}", headers={"task": "t.add", "id": f"m{i}"}))
        conn.close()
    code, out, err, _ = run_cli("restore", str(killed), "--broker", broker)
    assert code == 0 and "dry run" in err and "killed before it recorded" in err, err
    code, out, err, _ = run_cli("restore", str(killed), "--broker", broker, "--confirm",
                                "--yes", "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    assert ("50 of them are in the queue already" in err) is not committed, err
    assert _rabbit_ids(rabbit, vhost) == Counter({f"m{i}": 1 for i in range(50)})


@pytest.mark.redis
def test_redis_restore_interrupted_resumes_exactly(redis_server, tmp_path):
    """A restore of 100,000 messages stopped by kill -9, then by SIGINT: each time the next
    restore refuses to start over (it would duplicate) and `--after-line N` finishes it —
    exactly once each, because every chunk and its progress are one MULTI/EXEC."""
    import redis

    url = redis_server["url"].rsplit("/", 1)[0] + "/11"
    r = redis.Redis.from_url(url)
    everything = Counter({f"m{i}": 1 for i in range(N)})
    _redis_fill(r)
    backup = tmp_path / "b.jsonl"
    code, out, err, _ = run_cli("purge", QUEUE, "--broker", url, "--backup", str(backup),
                                "--confirm", "--yes", "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    r.flushdb()
    restore = ["restore", str(backup), "--broker", url, "--confirm", "--yes", "--audit-log",
               str(tmp_path / "a"), "--timeout", "1"]
    t0 = time.monotonic()
    code, out, err, _ = run_cli(*restore[:3])  # the dry run: how long planning takes
    plan = time.monotonic() - t0
    resume: list[str] = []
    outcomes = []
    for how, delay in (("SIGKILL", plan + 3.0), ("SIGINT", plan + 1.6)):
        code = _interrupt([*restore, *resume], how, delay)
        got = _redis_ids(r)
        outcomes.append(f"{how} after {delay:.1f}s: exit {code}, {sum(got.values())} restored")
        assert not [i for i, n in got.items() if n > 1] and set(got) <= set(everything)
        if got == everything:
            break
        if got:  # started: starting over is refused, and says where to resume
            code, out, err, _ = run_cli(*restore)
            assert code == 64 and "--after-line" in err, (out, err)
            line = int(err.split("--after-line ")[1].split(".")[0].split()[0])
            resume = ["--after-line", str(line)]
    else:
        code, out, err, _ = run_cli(*restore, *resume)
        assert code == 0, err
    print("\n".join(outcomes))
    assert _redis_ids(r) == everything


@pytest.mark.rabbitmq
def test_rabbit_restore_interrupted_resumes_exactly(rabbit, vhost, tmp_path):
    """As on Redis: each chunk and its progress record are one AMQP transaction (the
    progress message goes to celeryctl.restore.<id>, x-max-length 1)."""
    broker = f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    everything = Counter({f"m{i}": 1 for i in range(N)})
    _rabbit_fill(rabbit, vhost)
    backup = tmp_path / "b.jsonl"
    code, out, err, _ = run_cli("purge", QUEUE, "--broker", broker, "--backup", str(backup),
                                "--confirm", "--yes", "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    restore = ["restore", str(backup), "--broker", broker, "--confirm", "--yes",
               "--audit-log", str(tmp_path / "a"), "--timeout", "1"]
    t0 = time.monotonic()
    run_cli(*restore[:3])  # the dry run: how long planning takes
    plan = time.monotonic() - t0
    resume: list[str] = []
    outcomes = []
    for how, delay in (("SIGKILL", plan + 3.0), ("SIGINT", plan + 1.5)):
        code = _interrupt([*restore, *resume], how, delay)
        depth = _rabbit_depth(rabbit, vhost)
        outcomes.append(f"{how} after {delay:.1f}s: exit {code}, {depth} restored")
        if depth == N:
            break
        if depth:
            code, out, err, _ = run_cli(*restore)
            assert code == 64 and "--after-line" in err, (out, err)
            line = int(err.split("--after-line ")[1].split(".")[0].split()[0])
            resume = ["--after-line", str(line)]
    else:
        code, out, err, _ = run_cli(*restore, *resume)
        assert code == 0, err
    print("\n".join(outcomes))
    assert _rabbit_ids(rabbit, vhost) == everything
    code, doc, err, _ = _json("queues", "--broker", broker, "--timeout", "2")
    assert all(not q["name"].startswith("celeryctl.") for q in doc["queues"])  # internal
