"""`celeryctl connections kill` on real servers: stale clients are closed, a live consumer
never is (unless named by its exact address), the dry run closes nothing, and every kill is
audited. Each broker here has only this test's clients on it (CLIENT LIST is server-wide)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from celeryctl.lab import servers as s
from tests.conftest import run_cli, run_json, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.workers]
H = socket.gethostname()


@pytest.fixture(scope="module")
def redis_with_worker(labdir):
    server = s.start_redis(labdir, name="redis-kill")
    worker = None
    try:
        worker = s.start_worker(labdir, server.info["url"], "kw1@%h", queues="celery",
                                pool="threads")
        yield server.info["url"], server.info["port"]
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def _clients(url):
    code, doc, err, _ = run_json("connections", "--broker", url)
    assert code == 0, err
    return doc["connections"]


def _ping(url, node):
    code, doc, err, _ = run_json("workers", "--broker", url)
    return any(r["name"] == node for r in doc["workers"] or [])


def test_redis_kill_closes_stale_clients_never_live_consumers(redis_with_worker, tmp_path):
    import redis

    url, port = redis_with_worker
    audit = tmp_path / "audit.log"
    leaked = [redis.Redis(port=port) for _ in range(3)]
    for c in leaked:
        c.ping()
    leaked[0].client_setname("leaky-pool")
    leaked_ids = {str(c.client_id()) for c in leaked}
    time.sleep(2.5)
    before = _clients(url)
    live = {c["id"] for c in before if c["role"] in ("consumer", "pubsub")}
    assert {c["role"] for c in before if c["id"] in live} == {"consumer", "pubsub"}

    # nothing selected: refused; the dry run closes nothing and says what it would keep
    code, out, err, _ = run_cli("connections", "kill", "--broker", url)
    assert code == 64 and "--idle-over" in err
    code, doc, err, _ = run_json("connections", "kill", "--idle-over", "2", "--broker", url,
                                 "--audit-log", str(audit))
    assert code == 0 and "dry run" in err
    assert leaked_ids <= {c["id"] for c in doc["close"]}
    assert not live & {c["id"] for c in doc["close"]}
    assert {c["id"] for c in _clients(url)} >= leaked_ids | live

    # a host-only address still keeps the consumers
    code, doc, err, _ = run_json("connections", "kill", "--address", "127.0.0.1",
                                 "--broker", url)
    assert not live & {c["id"] for c in doc["close"]}
    assert any("name it with --address" in c["reason"] for c in doc["protected"])

    code, doc, err, _ = run_json("connections", "kill", "--idle-over", "2", "--broker", url,
                                 "--confirm", "--yes", "--audit-log", str(audit))
    assert code == 0, err
    closed = {r["id"] for r in doc["connections"] if r["result"] == "closed"}
    assert leaked_ids <= closed and not live & closed
    now = {c["id"] for c in _clients(url)}
    assert not leaked_ids & now and live <= now  # every consumer survived
    assert _ping(url, f"kw1@{H}")
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["command"] == "connections kill --idle-over 2"
    assert lines[0]["counts"]["closed"] == len(closed) and lines[0]["result"] == "ok"


def test_redis_consumer_closed_only_when_named_exactly(redis_with_worker):
    url, _ = redis_with_worker
    consumer = next(c for c in _clients(url) if c["role"] == "consumer")
    code, doc, err, _ = run_json("connections", "kill", "--address", consumer["address"],
                                 "--broker", url)
    assert code == 0 and [c["id"] for c in doc["close"]] == [consumer["id"]]


def test_rabbitmq_kill_keeps_connections_with_consumers(labdir, rabbit, vhost, tmp_path):
    import pika

    url = f"amqp://127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    api = f"http://guest:guest@127.0.0.1:{rabbit['management_port']}"
    args = ("--broker", url, "--rabbitmq-api", api)
    worker = s.start_worker(labdir, url, "kr1@%h", queues="celery", pool="threads")
    leaked = None
    try:
        params = pika.ConnectionParameters("127.0.0.1", rabbit["amqp_port"], vhost,
                                           client_properties={"connection_name": "leaky"})
        leaked = pika.BlockingConnection(params)
        leaked.channel()

        def listed():
            conns = _clients_rabbit(args)
            ok = any(c["name"] == "leaky" and (c["idle_seconds"] or 0) >= 1 for c in conns) \
                and any(c["consumers"] and c["role"] == "worker" for c in conns)
            return conns if ok else None

        # the worker answers first: its start-up connections (mingle's reply consumer) are
        # gone by then. The listing lags: a connection that already closed can still be
        # listed for a few seconds, so "the worker's connections" below is a superset.
        assert wait_for(lambda: _ping(url, f"kr1@{H}"), timeout=30)
        conns = wait_for(listed, timeout=30)
        live = {c["id"] for c in conns if c["consumers"] and c["role"] == "worker"}
        leaky = next(c["id"] for c in conns if c["name"] == "leaky")
        code, doc, err, _ = run_json("connections", "kill", "--idle-over", "1", *args,
                                     "--confirm", "--yes",
                                     "--audit-log", str(tmp_path / "a.log"))
        assert code == 0, (err, doc["connections"])
        closed = {r["id"] for r in doc["connections"] if r["result"].startswith("closed")}
        assert leaky in closed and not live & closed
        # the worker kept its consumer connection: it still answers, and the connection it
        # consumes on now is one it had before the kill (a closed one would be replaced by a
        # new connection, not in `live`)
        assert _ping(url, f"kr1@{H}")
        now = {c["id"]: c for c in _clients_rabbit(args)}
        assert now.get(leaky, {}).get("state") in (None, "closing", "closed")
        kept = {i for i, c in now.items()
                if c["consumers"] and c["role"] == "worker" and c["state"] == "running"}
        assert kept and kept <= live, (kept, live)
    finally:
        if leaked is not None:
            try:
                leaked.close()
            except Exception:  # noqa: BLE001 - closed by the test, as intended
                pass
        worker.stop()


def _clients_rabbit(args):
    code, doc, err, _ = run_json("connections", *args)
    assert code == 0, err
    return doc["connections"]
