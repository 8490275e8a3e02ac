"""Brokers that refuse, hang or reject: a clear error, exit 3, within --timeout + 1 s.
Bad input: exit 64, no traceback."""

from __future__ import annotations

import pytest

from tests.conftest import closed_port, private_network, run_cli, run_json

TIMEOUT = 1.0
# process start-up (interpreter + imports) is included in the measured wall time
BOUND = TIMEOUT + 1.0


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
@pytest.mark.parametrize("cmd", ["workers", "queues", "connections"])
def test_refused_broker(scheme, cmd):
    url = f"{scheme}://127.0.0.1:{closed_port()}/" + ("0" if scheme == "redis" else "")
    extra = ["--rabbitmq-api", f"http://127.0.0.1:{closed_port()}"] if scheme == "amqp" else []
    code, out, err, secs = run_cli(cmd, "--broker", url, "--timeout", str(TIMEOUT), *extra)
    assert code == 3, (out, err)
    assert "refused" in err.lower(), err
    assert "Traceback" not in err
    assert secs <= BOUND, secs


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
@pytest.mark.parametrize("cmd", ["workers", "queues", "connections"])
def test_hung_broker(scheme, cmd, silent_listener):
    """A TCP listener that accepts and never answers."""
    url = f"{scheme}://127.0.0.1:{silent_listener.port}/" + ("0" if scheme == "redis" else "")
    # the management API is the same silent socket: every source hangs
    extra = (["--rabbitmq-api", f"http://127.0.0.1:{silent_listener.port}"]
             if scheme == "amqp" else [])
    code, out, err, secs = run_cli(cmd, "--broker", url, "--timeout", str(TIMEOUT), *extra)
    assert code == 3, (out, err)
    assert "Traceback" not in err
    assert "no answer" in err or "timed out" in err.lower(), err
    assert secs <= BOUND, secs


def test_hung_broker_json_reports_unreachable_not_empty(silent_listener):
    url = f"redis://127.0.0.1:{silent_listener.port}/0"
    code, doc, err, secs = run_json("queues", "--broker", url, "--timeout", str(TIMEOUT))
    assert code == 3
    assert doc["queues"] is None  # unreachable is never an empty list
    broker = next(s for s in doc["sources"] if s["name"] == "broker")
    assert broker["ok"] is False and broker["error"]
    assert secs <= BOUND


def test_failover_list_uses_the_live_url(redis_server):
    dead = f"redis://127.0.0.1:{closed_port()}/0"
    code, doc, err, _ = run_json("queues", "--broker", f"{dead};{redis_server['url']}")
    assert code == 0, err


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:notaport/0",
    "redis://127.0.0.1:99999/0",
    "not a url",
    "redis://127.0.0.1:6379/notadb",
    "redis://h:1/0;amqp://h:2//",
])
def test_malformed_url_is_usage_error(url):
    code, out, err, _ = run_cli("queues", "--broker", url)
    assert code == 64, (out, err)
    assert "Traceback" not in err and "error" in err


@pytest.mark.parametrize("url", ["sqs://queue", "kafka://h:9092", "memory://"])
def test_unknown_scheme_is_usage_error(url):
    code, out, err, _ = run_cli("workers", "--broker", url)
    assert code == 64
    assert "unknown scheme" in err


def test_bad_flags_are_usage_errors():
    assert run_cli("queues", "--nope")[0] == 64
    assert run_cli("queues", "--timeout", "abc")[0] == 64
    assert run_cli("queues", "--format", "xml")[0] == 64
    assert run_cli("workers", "inspect", "bogus", "-b", "redis://127.0.0.1:1/0")[0] == 64
    code, out, err, _ = run_cli("queues", "--profile", "missing")
    assert code == 64 and "profile" in err


def test_password_never_printed_in_usage_errors():
    code, out, err, _ = run_cli("queues", "--broker", "redis://:hunter2-secret@127.0.0.1:bad/0")
    assert code == 64
    assert "hunter2-secret" not in out + err


def test_default_broker_is_announced():
    # in a network of its own: never the machine's own localhost:6379
    code, out, err, _ = run_cli("queues", "--timeout", "0.5", prefix=private_network())
    assert "default redis://localhost:6379/0" in err
    assert code == 3, (code, err)  # nothing answers there


def test_ctrl_c_exits_130_without_traceback(silent_listener):
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY")}
    env["CELERYCTL_CONFIG"] = "/nonexistent"
    p = subprocess.Popen([sys.executable, "-m", "celeryctl", "workers", "--broker",
                          f"redis://127.0.0.1:{silent_listener.port}/0", "--timeout", "20"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 130, (out, err)
    assert "Traceback" not in err


def test_lab_scenarios_rejects_an_unknown_format():
    code, out, err, _ = run_cli("lab", "scenarios", "--format", "xml")
    assert code == 64 and "--format" in err and "Traceback" not in err
    code, out, err, _ = run_cli("lab", "up", "--scenario", "no-such-scenario",
                                env={"CELERYCTL_LAB_DIR": "/tmp/celeryctl-test-lab-unused"})
    assert code == 64 and "no scenario" in err and "Traceback" not in err
