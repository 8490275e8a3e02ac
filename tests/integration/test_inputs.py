"""Input handling (issue 12: 6, 7, 9) through the real command line: URLs never leak, actions
never act on a guessed broker, profiles and snapshot files are validated."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from tests.conftest import closed_port, private_network, run_cli

SECRET_BITS = ("xq7z", "kw9", "jq3", "vw8", "SECRETZ9", "vv3", "xx6")


def _bare_env(tmp_path: Path) -> dict[str, str]:
    """Nothing configured: a fresh HOME, no profile file, no CELERY_* variables (run_cli
    already drops those)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "CELERYCTL_CONFIG": str(home / "no-such-config.toml")}


class _Watch:
    """Listen on the default broker's port (when free) and record whether anyone connects."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.connected = threading.Event()
        try:
            self.sock.bind(("127.0.0.1", 6379))
        except OSError:  # in use: the exit status, message and speed still show the refusal
            self.sock.close()
            self.sock = None
            return
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connected.set()
            conn.close()

    def close(self) -> None:
        if self.sock is not None:
            self.stop.set()
            self.thread.join(2)
            self.sock.close()


ACTIONS = [
    ("purge", "celery", "--confirm", "--yes"),
    ("purge", "celery"),  # even a dry run: it would read (and show) the default broker
    ("restore", "no-such-backup.jsonl", "--confirm", "--yes"),
    ("control", "shutdown", "--confirm", "--yes"),
    ("control", "pool-grow", "1"),
    ("control", "enable-events", "-d", "w1@h"),
    ("control", "rate-limit", "t.add", "1/s", "-d", "w1@h"),
    ("control", "revoke", "0b1c", "--terminate", "--confirm", "--yes"),
    ("connections", "kill", "--idle-over", "0", "--confirm", "--yes"),
]


@pytest.mark.parametrize("args", ACTIONS, ids=lambda a: " ".join(a[:2]))
def test_actions_refuse_without_a_named_broker(tmp_path, args):
    watch = _Watch()
    try:
        code, out, err, secs = run_cli(*args, env=_bare_env(tmp_path), timeout=30)
    finally:
        watch.close()
    assert code == 64, (code, out, err)
    assert "refused: no broker given" in err and "never acts on the default broker" in err
    assert "--broker" in err and "CELERY_BROKER_URL" in err
    assert "Traceback" not in err and out == ""
    assert secs < 10, secs  # refused before any connection (no timeout spent)
    assert not watch.connected.is_set(), "the default broker's port was contacted"


def test_actions_go_ahead_when_a_broker_is_named(tmp_path):
    """Named by flag or environment, even the default URL is acted on (here: unreachable)."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    for args, env in ((("purge", "celery", "--broker", url, "--timeout", "0.5"), {}),
                      (("purge", "celery", "--timeout", "0.5"), {"CELERY_BROKER_URL": url})):
        code, out, err, _ = run_cli(*args, env={**_bare_env(tmp_path), **env})
        assert code == 3, (code, out, err)
        assert "no broker given" not in err


@pytest.mark.parametrize("args", [
    ("workers",), ("queues",), ("connections",), ("doctor",), ("doctor", "--format", "json"),
    ("queues", "--format", "json"), ("queues", "watch", "--count", "1", "--format", "json"),
])
def test_read_commands_announce_the_default_broker(tmp_path, args):
    # in a network of its own: the default localhost:6379 is nothing the machine runs
    code, out, err, _ = run_cli(*args, "--timeout", "0.5", env=_bare_env(tmp_path),
                                prefix=private_network())
    assert "no broker given" in err and "default redis://localhost:6379/0" in err, (code, err)
    assert err.count("default redis://localhost:6379/0") == 1, err  # said once, not twice


def test_snapshot_announces_the_default_broker(tmp_path):
    code, out, err, _ = run_cli("snapshot", "-o", str(tmp_path / "s.json"), "--timeout", "0.5",
                                env=_bare_env(tmp_path), prefix=private_network())
    assert "default redis://localhost:6379/0" in err, err


# --- URLs never leak ----------------------------------------------------------------------

BAD_URLS = ["redis://:xq7z/kw9@127.0.0.1:6379/0", "redis://u:jq3?vw8@127.0.0.1/0",
            "fooq://SECRETZ9@127.0.0.1", "redis://:vv3;xx6@127.0.0.1/0",
            "redis://127.0.0.1/0;redis://:xq7z/kw9@127.0.0.1:6379/0",
            "amqp://u:jq3#vw8@127.0.0.1//"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_malformed_urls_never_leak_from_flag_env_or_profile(tmp_path, url):
    env = _bare_env(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[clusters.p]\nbroker = {json.dumps(url)}\n")
    runs = [run_cli("queues", "--broker", url, env=env),
            run_cli("queues", env={**env, "CELERY_BROKER_URL": url}),
            run_cli("queues", "--profile", "p", env={**env, "CELERYCTL_CONFIG": str(cfg)}),
            run_cli("queues", "--broker", "redis://127.0.0.1:1/0", "--result-backend", url,
                    "--timeout", "0.5", env=env)]
    for code, _out, err, _ in runs[:3]:
        assert code == 64, (code, err)
        assert "Traceback" not in err
    for _code, out, err, _ in runs:
        assert not any(s in out + err for s in SECRET_BITS), out + err


@pytest.mark.parametrize("url", ["redis://127.0.0.1:0/0", "redis://127.0.0.1:0",
                                 "redis://127.0.0.1:65536/0", "redis://127.0.0.1:abc/0"])
def test_bad_ports_are_usage_errors(tmp_path, url):
    code, out, err, secs = run_cli("queues", "--broker", url, env=_bare_env(tmp_path))
    assert code == 64 and "port must be a number from 1 to 65535" in err, (code, err)


# --- profiles ----------------------------------------------------------------------------

@pytest.mark.parametrize("line,key", [("broker = 5", "broker"), ('queues = "abc"', "queues"),
                                      ('timeout = "3"', "timeout"),
                                      ('rabbitmq_api = ["http://u:SECRETZ9@h"]',
                                       "rabbitmq_api")])
def test_profile_types_through_the_cli(tmp_path, line, key):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[clusters.prod]\nbroker = "redis://127.0.0.1:1/0"\n{line}\n'
                   if not line.startswith("broker") else f"[clusters.prod]\n{line}\n")
    code, out, err, _ = run_cli("queues", "--profile", "prod",
                                env={**_bare_env(tmp_path), "CELERYCTL_CONFIG": str(cfg)})
    assert code == 64, (code, err)
    assert str(cfg) in err and "'prod'" in err and f"{key}:" in err, err
    assert "SECRETZ9" not in err and "Traceback" not in err


# --- snapshot files ------------------------------------------------------------------------

def _bad_snapshot(tmp_path: Path) -> Path:
    doc = {"schema": "celeryctl-snapshot/1", "broker_kind": "redis", "parts": {
        "broker": {"value": True, "error": None},
        "queues": {"value": [{"name": f"q{i}", "broker": "redis", "ready": i}
                             for i in range(3)] + [{"name": "q3", "broker": "redis",
                                                    "ready": "abc"}], "error": None}}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    return path


def test_doctor_from_a_file_with_wrong_types_is_a_usage_error(tmp_path):
    path = _bad_snapshot(tmp_path)
    for fmt in ("table", "json"):
        code, out, err, _ = run_cli("doctor", "--from", str(path), "--format", fmt,
                                    env=_bare_env(tmp_path))
        assert code == 64, (code, out, err)
        assert 'snapshot.parts.queues.value[3].ready: expected an integer or null, got "abc"' \
            in err, err
        assert str(path) in err and "Traceback" not in err


def test_snapshot_diff_validates_both_files(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"schema": "celeryctl-snapshot/1", "parts": {}}))
    bad = _bad_snapshot(tmp_path)
    for a, b in ((good, bad), (bad, good)):
        code, out, err, _ = run_cli("snapshot", "diff", str(a), str(b), env=_bare_env(tmp_path))
        assert code == 64 and "queues.value[3].ready" in err and str(bad) in err, (code, err)


def test_doctor_from_a_file_without_parts_is_incomplete(tmp_path):
    path = tmp_path / "empty.json"
    for doc in ({"schema": "celeryctl-snapshot/1"},
                {"schema": "celeryctl-snapshot/1", "parts": {"broker": {"value": True}}}):
        path.write_text(json.dumps(doc))
        code, out, err, _ = run_cli("doctor", "--from", str(path), env=_bare_env(tmp_path))
        assert code == 3, (code, out, err)
        assert "INCOMPLETE" in out and "All clear" not in out, out
        assert "workers not observed" in out and "queues not observed" in out


# --- non-ASCII credentials on the real RabbitMQ ----------------------------------------------

UNI_USER = "ünïcode-ops"
UNI_PASSWORD = "pässwörd€/?#@;:%"  # UTF-8 beyond latin-1, and every URL delimiter


@pytest.fixture
def unicode_user(rabbit, vhost):
    from urllib.parse import quote

    import requests

    api = f"http://127.0.0.1:{rabbit['management_port']}/api"
    auth = ("guest", "guest")
    user = quote(UNI_USER, safe="")
    requests.put(f"{api}/users/{user}", auth=auth, timeout=5,
                 json={"password": UNI_PASSWORD, "tags": "monitoring"}).raise_for_status()
    requests.put(f"{api}/permissions/{vhost}/{user}", auth=auth, timeout=5,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    requests.put(f"{api}/queues/{vhost}/uniq", auth=auth, timeout=5,
                 json={"durable": True}).raise_for_status()
    yield
    requests.delete(f"{api}/users/{user}", auth=auth, timeout=5)


def _uni_urls(rabbit, vhost):
    from urllib.parse import quote

    cred = f"{quote(UNI_USER, safe='')}:{quote(UNI_PASSWORD, safe='')}"
    return (f"amqp://{cred}@127.0.0.1:{rabbit['amqp_port']}/{vhost}",
            f"http://{cred}@127.0.0.1:{rabbit['management_port']}")


def test_non_ascii_credentials_management_api(rabbit, vhost, unicode_user, tmp_path):
    broker, api = _uni_urls(rabbit, vhost)
    code, out, err, _ = run_cli("queues", "--broker", broker, "--rabbitmq-api", api,
                                "--format", "json", "--timeout", "5", env=_bare_env(tmp_path))
    assert code == 0, (code, out, err)
    doc = json.loads(out)
    assert "uniq" in [r["name"] for r in doc["queues"]], doc
    api_source = next(s for s in doc["sources"] if s["name"] == "management-api")
    assert api_source["ok"] is True, api_source
    assert UNI_PASSWORD not in out + err and "p%C3%A4ssw" not in out + err


def test_non_ascii_credentials_amqp_login(rabbit, vhost, unicode_user, tmp_path):
    """pika (AMQP fallback, purge, restore) and kombu/py-amqp (remote control) log in with the
    same UTF-8 credentials."""
    from celeryctl.collect.rabbitmq import amqp_connect
    from celeryctl.urls import parse_broker

    broker, api = _uni_urls(rabbit, vhost)
    eps = tuple(parse_broker(broker))
    assert eps[0].username == UNI_USER and eps[0].password == UNI_PASSWORD
    conn, _ = amqp_connect(eps, 5.0, vhost)
    try:
        assert conn.is_open
    finally:
        conn.close()
    # remote control over kombu: the broker answers (no worker in this vhost: exit 2), it does
    # not refuse the login (that would be 3, "authentication failed")
    code, out, err, _ = run_cli("workers", "--broker", broker, "--rabbitmq-api", api,
                                "--timeout", "1", env=_bare_env(tmp_path))
    assert code == 2, (code, out, err)
    assert "authentication failed" not in err.lower() and UNI_PASSWORD not in out + err
