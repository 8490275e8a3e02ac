"""Fixtures: real redis-server, rabbitmq-server (management plugin) and Celery workers on
loopback, started with the same code as `celeryctl lab`. They never skip: a missing server
binary fails the run (`make test` installs them)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from celeryctl.lab import servers as s

ROOT = Path(__file__).resolve().parent.parent
CELERYCTL = [sys.executable, "-m", "celeryctl"]
# The lab directory of every celeryctl the tests run (CELERYCTL_LAB_DIR, the lab location
# rule's first source, docs/lab.md): never the checkout's .lab, where `make demo` keeps a
# lab the developer may be using. Nothing is created there unless a test starts a lab.
TEST_LAB_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / f"celeryctl-test-lab-{os.getpid()}"


@pytest.fixture(scope="session")
def labdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="session")
def redis_server(labdir):
    proc = s.start_redis(labdir, name="redis-main")
    yield proc.info
    proc.stop()


@pytest.fixture(scope="session")
def redis_auth(labdir):
    proc = s.start_redis(labdir, name="redis-auth", password="s3cret-redis-pw")
    yield proc.info
    proc.stop()


@pytest.fixture(scope="session")
def rabbit(labdir):
    proc = s.start_rabbitmq(labdir, name="rabbit-main")
    yield proc.info
    proc.stop(timeout=20)


def _start_workers(labdir, url, names, queues):
    """Start workers; if one fails, stop those already started (never leave a process)."""
    procs = []
    try:
        for name in names:
            # the demo tasks with time limits, as in the lab (else doctor's TSK006 speaks)
            procs.append(s.start_worker(labdir, url, name, queues=queues, pool="threads",
                                        concurrency=2,
                                        env={"CELERYCTL_LAB_TIME_LIMITS": "1"}))
    except BaseException:
        for p in procs:
            p.stop()
        raise
    return procs


def redis_worker_pair(labdir, redis_server):
    """A fixture body: two real workers (threads pool) on db 0 of `redis_server`."""
    url = redis_server["url"]
    procs = _start_workers(labdir, url, ["rw1@%h", "rw2@%h"], "celery,hipri")
    yield {"url": url, "names": [f"rw{i}@{socket.gethostname()}" for i in (1, 2)],
           "procs": procs}
    for p in procs:
        p.stop()


@pytest.fixture(scope="session")
def redis_workers(labdir, redis_server):
    """Two real workers (threads pool) on db 0 of the session Redis."""
    yield from redis_worker_pair(labdir, redis_server)


@pytest.fixture(scope="session")
def rabbit_workers(labdir, rabbit):
    url = rabbit["url"]
    procs = _start_workers(labdir, url, ["mw1@%h", "mw2@%h"], "celery,mq_work")
    yield {"url": url, "api": rabbit["api"],
           "names": [f"mw{i}@{socket.gethostname()}" for i in (1, 2)], "procs": procs}
    for p in procs:
        p.stop()


def fresh_vhost(rabbit, prefix: str = "t"):
    """A generator fixture body: a fresh RabbitMQ vhost (guest may do anything in it),
    deleted afterwards. Module-scoped fixtures share one (`yield from fresh_vhost(...)`)."""
    import requests

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    api = f"http://127.0.0.1:{rabbit['management_port']}/api"
    auth = ("guest", "guest")
    requests.put(f"{api}/vhosts/{name}", auth=auth, timeout=5).raise_for_status()
    requests.put(f"{api}/permissions/{name}/guest", auth=auth, timeout=5,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    yield name
    requests.delete(f"{api}/vhosts/{name}", auth=auth, timeout=5)


@pytest.fixture
def vhost(rabbit):
    """A fresh RabbitMQ vhost (with guest permissions) for one test."""
    yield from fresh_vhost(rabbit)


def _cli_env(env: dict[str, str] | None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("CELERY_", "CELERYCTL_"))}
    e["CELERYCTL_CONFIG"] = "/nonexistent/celeryctl.toml"
    e["CELERYCTL_LAB_DIR"] = str(TEST_LAB_DIR)
    e["NO_COLOR"] = "1"
    e.update(env or {})
    return e


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0,
            input: str | None = None, prefix: list[str] | tuple[str, ...] = ()):
    """Run the installed package as a subprocess; returns (code, stdout, stderr, seconds).
    `prefix` runs it under another command (a lab's `nsenter ...` into its namespace)."""
    t0 = time.monotonic()
    p = subprocess.run([*prefix, *CELERYCTL, *args], capture_output=True, text=True,
                       env=_cli_env(env), timeout=timeout, cwd=str(ROOT), input=input)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def run_tty(*args: str, answer: str, env: dict[str, str] | None = None,
            timeout: float = 60.0):
    """Run with stdin on a pseudo-terminal (so the typed confirmation is asked) and type
    `answer`; returns (code, stdout, stderr)."""
    import pty

    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([*CELERYCTL, *args], stdin=slave, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_cli_env(env),
                             cwd=str(ROOT))
        os.close(slave)
        slave = -1
        os.write(master, (answer + "\n").encode())
        out, err = p.communicate(timeout=timeout)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return p.returncode, out, err


def run_json(*args: str, **kw):
    code, out, err, secs = run_cli(*args, "--format", "json", **kw)
    try:
        doc = json.loads(out)
    except ValueError:
        raise AssertionError(f"not JSON (exit {code}):\n{out}\n--- stderr:\n{err}") from None
    return code, doc, err, secs


def closed_port() -> int:
    return s.free_port()


def private_network() -> list[str]:
    """A run_cli prefix: the command runs in a network namespace of its own whose loopback
    is up and empty, so a default address (localhost:6379) reaches nothing, whatever the
    machine itself runs there."""
    code = ("import os, sys; from celeryctl.lab.servers import bring_loopback_up; "
            "bring_loopback_up(); os.execv(sys.argv[1], sys.argv[1:])")
    return [*s.unshare_prefix(), sys.executable, "-c", code]


class SilentListener:
    """A TCP server that accepts connections and never answers (a hung broker)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except OSError:
                continue

    def close(self) -> None:
        self._stop = True
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def silent_listener():
    ln = SilentListener()
    yield ln
    ln.close()


def wait_for(fn, timeout: float = 15.0, interval: float = 0.3):
    """Poll `fn` until it returns a truthy value (management API stats lag behind)."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    return last
