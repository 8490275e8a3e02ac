"""Slow and hostile servers: every read command, through a real TCP fault-injection proxy
(celeryctl.lab.faultproxy) in front of the real Redis and RabbitMQ, ends within
--timeout + 1 s with exit 3 and the honest reason — never a hang, never a traceback.

Modes: `trickle` (the server's reply one byte every 0.5 s: a per-recv socket timeout never
fires), `blackhole` (accepted, never answered), `reset` (RST in the middle of a reply).
`late` variants let the first reply of each connection pass (the handshake), then fault.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from celeryctl.lab.faultproxy import FaultProxy
from tests.conftest import ROOT, _cli_env

TIMEOUT = 1.0
# measured from the command's own start (`run_cli`): after the interpreter started and
# imported what every command imports before it collects (the CLI, its option parsing,
# targets, checks, rendering: ~0.3 s, more on a loaded machine), so process start-up does not
# count; everything else — parsing, importing the client libraries, collecting, rendering,
# exiting — does
BOUND = TIMEOUT + 1.0
START_UP = ("celeryctl.cli", "celeryctl.cli.read", "celeryctl.cli.doctor", "celeryctl.cli.act",
            "celeryctl.cli.watch", "celeryctl.cli.control", "celeryctl.cli.snapshot",
            "celeryctl.targets", "celeryctl.collect", "celeryctl.collect.doctor",
            "celeryctl.checks", "celeryctl.render.report", "celeryctl.render.console",
            "rich.console", "pydantic")
# the CLI, with the time (CLOCK_MONOTONIC, shared by every process) it starts, on stderr
WRAP = ("import importlib, sys, time\n"
        f"for m in {START_UP!r}: importlib.import_module(m)\n"
        "sys.stderr.write(f'T0 {time.monotonic()}\\n'); sys.stderr.flush()\n"
        "import celeryctl.cli\n"
        "celeryctl.cli.main(sys.argv[1:])\n")
HONEST = ("timed out", "no answer", "connection reset", "reset by peer", "connection lost",
          "connection closed", "stream lost")

COMMANDS = {
    "workers": ["workers"],
    "workers-inspect": ["workers", "inspect", "stats"],
    "queues": ["queues"],
    "queues-all": ["queues", "--all"],
    "connections": ["connections"],
    "doctor": ["doctor"],
    "snapshot": ["snapshot", "-o", "{tmp}/snap.json"],
    "control-dry-run": ["control", "pool-grow", "1", "--dry-run"],
    "purge-dry-run": ["purge", "celery"],
    "restore-dry-run": ["restore", "{tmp}/backup.jsonl"],
}
MODES = ("trickle", "blackhole", "reset")
# exit 3 (could not observe) everywhere, but doctor: a broker that does not answer is a
# critical finding (SRC001: 2), docs/exit-codes.md
EXIT = {"doctor": (2, 3)}


def _proxy(port: int, mode: str, **kw) -> FaultProxy:
    return FaultProxy("127.0.0.1", port, mode, trickle=0.5, **kw).start()


@pytest.fixture
def redis_proxy(redis_server):
    p = _proxy(redis_server["port"], "pass")
    yield p
    p.stop()


def _redis_handshake(proxy: FaultProxy) -> int:
    """`after_bytes` for "the next connection's handshake passes, then everything is
    faulty": the bytes Redis sends while celeryctl connects (HELLO, PING), measured through
    the proxy in `pass` with celeryctl's own client, past what it forwarded so far."""
    from celeryctl.collect.redis import connect_first
    from celeryctl.urls import parse_broker

    before = proxy.bytes_down
    client, _ = connect_first(tuple(parse_broker(f"redis://127.0.0.1:{proxy.port}/0")), 5.0)
    n = proxy.bytes_down - before
    client.close()
    assert n >= len(b"+PONG\r\n")
    return proxy.bytes_down + n


@pytest.fixture
def rabbit_proxies(rabbit):
    amqp = _proxy(rabbit["amqp_port"], "pass")
    api = _proxy(rabbit["management_port"], "pass")
    yield amqp, api
    amqp.stop()
    api.stop()


def _args(name: str, tmp_path) -> list[str]:
    backup = tmp_path / "backup.jsonl"
    if not backup.exists():
        backup.write_text(
            '{"celeryctl_backup":1,"created":"2026-01-01T00:00:00Z","broker":"x",'
            '"broker_kind":"redis","queues":["celery"],"planned":1}\n'
            '{"queue":"celery","bucket":0,"body":"e30=","body_encoding":"base64",'
            '"content_type":"application/json","content_encoding":"utf-8","headers":{},'
            '"properties":{},"priority":0,"exchange":"","routing_key":"celery"}\n'
            '{"end":true,"count":1}\n')
    return [a.format(tmp=tmp_path) for a in COMMANDS[name]]


def run_cli(*args: str, timeout: float = 20.0):
    """Run the CLI; (code, stdout, stderr, seconds from the command's own start to its
    exit)."""
    p = subprocess.run([sys.executable, "-c", WRAP, *args], capture_output=True, text=True,
                       env=_cli_env(None), timeout=timeout, cwd=str(ROOT))
    end = time.monotonic()
    first, _, err = p.stderr.partition("\n")
    assert first.startswith("T0 "), p.stderr
    return p.returncode, p.stdout, err, end - float(first.split()[1])


def _check(name, code, out, err, secs, proxies):
    text = (out + err).lower()
    assert "traceback" not in text, err
    assert code in EXIT.get(name, (3,)), (code, out, err)
    assert any(h in text for h in HONEST), (out, err)
    assert secs <= BOUND, (secs, out, err)
    assert any(p.connections for p in proxies), "the command never went through the proxy"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(COMMANDS))
def test_redis_faults(name, mode, redis_proxy, tmp_path):
    redis_proxy.mode = mode
    url = f"redis://127.0.0.1:{redis_proxy.port}/0"
    code, out, err, secs = run_cli(*_args(name, tmp_path), "--broker", url,
                                   "--timeout", str(TIMEOUT), timeout=20)
    _check(name, code, out, err, secs, [redis_proxy])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["workers", "queues", "connections", "doctor",
                                  "purge-dry-run"])
def test_redis_faults_after_the_handshake(name, mode, redis_proxy, tmp_path):
    """The connection's handshake (HELLO, PING) is answered in time; the next replies
    trickle, never come or are cut by a reset."""
    redis_proxy.after_bytes = _redis_handshake(redis_proxy)
    redis_proxy.mode = mode
    url = f"redis://127.0.0.1:{redis_proxy.port}/0"
    code, out, err, secs = run_cli(*_args(name, tmp_path), "--broker", url,
                                   "--timeout", str(TIMEOUT), timeout=20)
    _check(name, code, out, err, secs, [redis_proxy])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(COMMANDS))
def test_rabbit_faults(name, mode, rabbit_proxies, tmp_path):
    """AMQP and the management API both behind the faulty proxy."""
    amqp, api = rabbit_proxies
    amqp.mode = api.mode = mode
    code, out, err, secs = run_cli(
        *_args(name, tmp_path), "--broker", f"amqp://127.0.0.1:{amqp.port}//",
        "--rabbitmq-api", f"http://127.0.0.1:{api.port}", "--timeout", str(TIMEOUT), timeout=20)
    _check(name, code, out, err, secs, [amqp, api])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["queues", "connections", "doctor"])
def test_rabbit_management_api_faults(name, mode, rabbit, rabbit_proxies, tmp_path):
    """Only the management API misbehaves (AMQP direct): the commands that read it still end
    in time and say why the API is missing."""
    amqp, api = rabbit_proxies
    api.mode = mode
    code, out, err, secs = run_cli(
        *_args(name, tmp_path), "--broker", rabbit["url"],
        "--rabbitmq-api", f"http://127.0.0.1:{api.port}", "--timeout", str(TIMEOUT), timeout=20)
    text = (out + err).lower()
    assert "traceback" not in text, err
    assert code in (1, 2, 3), (code, out, err)
    assert any(h in text for h in HONEST), (out, err)
    assert secs <= BOUND, (secs, out, err)
    assert api.connections


@pytest.mark.parametrize("broker", ["redis", "rabbit"])
def test_pass_mode_is_transparent(broker, request):
    """The proxy itself does no harm: through `pass`, queues reads the broker."""
    if broker == "redis":
        p = request.getfixturevalue("redis_proxy")
        args = ["--broker", f"redis://127.0.0.1:{p.port}/0"]
        proxies = [p]
    else:
        amqp, api = request.getfixturevalue("rabbit_proxies")
        args = ["--broker", f"amqp://127.0.0.1:{amqp.port}//",
                "--rabbitmq-api", f"http://127.0.0.1:{api.port}"]
        proxies = [amqp, api]
    code, out, err, _ = run_cli("queues", "-Q", "celery", *args, "--timeout", "5")
    assert code in (0, 1), (code, out, err)
    assert proxies[-1].connections  # the management API (RabbitMQ) answers queues


# --- queues watch: every refresh bounded ------------------------------------------------

def _watch(url_args: list[str], switch, refreshes: int = 4, interval: float = 0.5):
    """Run `queues watch` (JSON lines), call `switch()` after the first line, and return the
    lines with the time each one arrived."""
    p = subprocess.Popen([sys.executable, "-m", "celeryctl", "queues", "watch", *url_args, "--timeout", str(TIMEOUT),
                          "--interval", str(interval), "--count", str(refreshes),
                          "--format", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=_cli_env(None), cwd=str(ROOT))
    lines, times = [], []
    start = time.monotonic()
    try:
        assert p.stdout is not None
        for raw in p.stdout:
            times.append(time.monotonic())
            lines.append(json.loads(raw))
            if len(lines) == 1:
                switch()
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = p.stderr.read() if p.stderr else ""
    return p.returncode, lines, times, start, err


def _broker_source(line):
    return next(s for s in line["sources"] if s["name"] == "broker")


def _check_watch(code, lines, times, start, err, refreshes, interval, modes_ok_first=True):
    assert "Traceback" not in err, err
    assert len(lines) == refreshes, (lines, err)
    # the first refresh includes discovery and process start-up
    assert times[0] - start <= BOUND + TIMEOUT, (times[0] - start, err)
    if modes_ok_first:
        assert _broker_source(lines[0])["ok"] is True, lines[0]
    for prev, now, line in zip(times, times[1:], lines[1:], strict=False):
        # each later refresh: the interval, then at most the timeout + 1 s
        assert now - prev <= interval + TIMEOUT + 1.0, (now - prev, line)
        src = _broker_source(line)
        assert src["ok"] is False, line
        assert any(h in (src["error"] or "").lower() for h in HONEST), src
        assert line["stale"] is True
    assert code == 3, (code, err)  # the last refresh could not read the broker


@pytest.mark.parametrize("mode", MODES)
def test_watch_redis_each_refresh_bounded(mode, redis_proxy):
    """First refresh reads the broker; then the proxy turns faulty: each later refresh ends
    within --timeout (+1 s) with the reason, and watch keeps going (stale values)."""
    url = f"redis://127.0.0.1:{redis_proxy.port}/0"

    def switch():
        redis_proxy.mode = mode

    refreshes, interval = 4, 0.5
    res = _watch(["--broker", url, "-Q", "celery"], switch, refreshes, interval)
    _check_watch(*res, refreshes, interval)


@pytest.mark.parametrize("mode", MODES)
def test_watch_rabbit_each_refresh_bounded(mode, rabbit_proxies):
    amqp, api = rabbit_proxies

    def switch():
        amqp.mode = api.mode = mode

    refreshes, interval = 4, 0.5
    res = _watch(["--broker", f"amqp://127.0.0.1:{amqp.port}//", "--rabbitmq-api",
                  f"http://127.0.0.1:{api.port}"], switch, refreshes, interval)
    _check_watch(*res, refreshes, interval)


@pytest.mark.parametrize("mode", MODES)
def test_watch_faulty_from_the_start(mode, redis_proxy):
    """The reported defect: `queues watch --timeout 1` against a server that answers one byte
    every half second never returned."""
    redis_proxy.mode = mode
    url = f"redis://127.0.0.1:{redis_proxy.port}/0"
    refreshes, interval = 3, 0.5
    res = _watch(["--broker", url], lambda: None, refreshes, interval)
    code, lines, times, start, err = res
    assert times and times[-1] - start <= refreshes * (interval + TIMEOUT + 1.0), times
    _check_watch(code, lines, times, start, err, refreshes, interval, modes_ok_first=False)


# --- nothing left running: an abandoned read's sockets are shut down ----------------------

def _target(tmp_path, **flags):
    from celeryctl.targets import Flags, resolve

    return resolve(Flags(timeout=TIMEOUT, **flags),
                   env={"CELERYCTL_CONFIG": str(tmp_path / "none.toml")})


def _alive(prefix: str) -> int:
    import threading

    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))


def _stacks() -> str:
    import sys
    import threading
    import traceback

    frames = sys._current_frames()
    return "".join(f"\n== {t.name}\n" + "".join(traceback.format_stack(frames[t.ident])[-6:])
                   for t in threading.enumerate() if t.name.startswith("collect-"))


def _settles(prefix: str, within: float = 2.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not _alive(prefix):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("broker", ["redis", "rabbit"])
def test_watch_samples_leave_no_thread_behind(broker, request, tmp_path):
    """`queues watch` against a trickling server, refresh after refresh: each sample is
    abandoned at its deadline and its socket shut down, so its thread ends at once instead of
    reading a byte every half second for minutes (threads would pile up)."""
    from celeryctl.collect.watch import Watcher

    if broker == "redis":
        p = request.getfixturevalue("redis_proxy")
        proxies = [p]
        target = _target(tmp_path, broker=f"redis://127.0.0.1:{p.port}/0", queues=("celery",))
    else:
        amqp, api = request.getfixturevalue("rabbit_proxies")
        proxies = [amqp, api]
        target = _target(tmp_path, broker=f"amqp://127.0.0.1:{amqp.port}//",
                         rabbitmq_api=f"http://127.0.0.1:{api.port}")
    w = Watcher(target)
    w.discover()
    assert w.sample().ok  # through `pass`
    for p in proxies:
        p.mode = "trickle"
    for _ in range(3):
        t0 = time.monotonic()
        obs = w.sample()
        assert not obs.ok and "no answer" in obs.error, obs
        assert time.monotonic() - t0 <= TIMEOUT + 1.0
    assert _settles("collect-sample"), "abandoned samples still reading" + _stacks()
    for p in proxies:
        p.mode = "pass"
    assert w.sample().ok  # a fresh connection: the dead one was dropped
    w.close()


@pytest.mark.parametrize("broker", ["redis", "rabbit"])
def test_gather_leaves_no_reader_behind(broker, request, tmp_path):
    """The reads a gather gave up on (Redis commands, management API calls) are shut down
    when it returns — `queues watch` gathers again every few seconds while the broker is
    sick."""
    from celeryctl.collect import gather

    if broker == "redis":
        p = request.getfixturevalue("redis_proxy")
        p.after_bytes = _redis_handshake(p)
        target = _target(tmp_path, broker=f"redis://127.0.0.1:{p.port}/0")
        readers = ("collect-broker", "collect-discovery", "collect-redis-server",
                   "collect-depths")
        p.mode = "trickle"
    else:
        amqp, api = request.getfixturevalue("rabbit_proxies")
        target = _target(tmp_path, broker=f"amqp://127.0.0.1:{amqp.port}//",
                         rabbitmq_api=f"http://127.0.0.1:{api.port}")
        readers = ("collect-management-api", "collect-pidbox")
        api.mode = "trickle"
    g = gather(target, queues=True, server=True)
    assert g.rabbit_server.ok is False if broker == "rabbit" else g.queues.ok is False
    for name in readers:
        assert _settles(name), f"{name} still reading after the gather returned" + _stacks()


def test_lab_proxy_command(redis_server):
    """`celeryctl lab proxy`: the same proxy for drills, modes switched by typing them."""
    import signal

    from celeryctl.lab.servers import free_port

    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "celeryctl", "lab", "proxy", "--to",
                          f"127.0.0.1:{redis_server['port']}", "--port", str(port)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=_cli_env(None), cwd=str(ROOT))
    try:
        assert p.stdout is not None and p.stdin is not None
        assert p.stdout.readline().startswith(f"listening on 127.0.0.1:{port}")
        url = f"redis://127.0.0.1:{port}/0"
        code, out, err, _ = run_cli("queues", "-Q", "celery", "--broker", url, "--timeout", "5")
        assert code == 0, (out, err)
        p.stdin.write("blackhole\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "mode blackhole"
        code, out, err, secs = run_cli("queues", "--broker", url, "--timeout", str(TIMEOUT))
        assert code == 3 and "no answer" in err, (out, err)
        assert secs <= BOUND
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=10)
        assert p.returncode == 130 and "Traceback" not in err, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
