"""Least privilege on real servers: the accounts of docs/permissions.md (created exactly as
the lab creates them) run every read command and doctor; each gets every answer it is
entitled to and says plainly what needs more privilege. Redis with renamed commands (managed
Redis), and two apps sharing one Redis."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid

import pytest

from celeryctl.lab import accounts as acc
from celeryctl.lab import servers as s
from tests.conftest import run_cli, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.workers]


# This module counts connections and findings on its Redis: it gets a Redis and workers of
# its own, so what other modules leave on the session Redis (idle clients, purge records in
# other dbs) cannot change its answers.
@pytest.fixture(scope="module")
def redis_server(labdir):
    proc = s.start_redis(labdir, name=f"redis-perm-{uuid.uuid4().hex[:6]}")
    yield proc.info
    proc.stop()


@pytest.fixture(scope="module")
def redis_workers(labdir, redis_server):
    from tests.conftest import redis_worker_pair

    yield from redis_worker_pair(labdir, redis_server)

READ_COMMANDS = (("workers",), ("workers", "inspect", "ping"), ("queues",),
                 ("queues", "watch", "--count", "1"), ("connections",), ("doctor",))


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity: JSON output must be strict JSON."""
    def bad(name):
        raise AssertionError(f"non-JSON constant {name} in output")
    return json.loads(text, parse_constant=bad)


def run_doc(*args, **kw):
    code, out, err, secs = run_cli(*args, "--format", "json", **kw)
    if args[:2] == ("queues", "watch"):
        out = out.strip().splitlines()[-1] if out.strip() else ""
    try:
        return code, strict_json(out), err, secs
    except ValueError:
        raise AssertionError(f"not JSON (exit {code}):\n{out}\n--- stderr:\n{err}") from None


def states(doc) -> dict[str, str]:
    return {x["name"]: x["state"] for x in doc.get("sources") or []}


def _publish(url: str, queue: str, n: int) -> None:
    from celery import Celery

    app = Celery(broker=url, set_as_current=False)
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            app.send_task("celeryctl.lab.demoapp.add", (1, 2), queue=queue, producer=producer)
    app.close()


# --- Redis ACL accounts -------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_accounts(labdir, redis_server, redis_workers):
    """The three ACL users on the session Redis (db 0, two workers), and a queue nobody
    consumes."""
    accts = acc.create_redis_accounts(labdir / "perm-redis", redis_server["url"])
    urls = {tier: acc.account_url(redis_server["url"], a) for tier, a in accts.items()}
    queue = f"unconsumed-{uuid.uuid4().hex[:6]}"
    _publish(redis_server["url"], queue, 5)
    return {"urls": urls, "queue": queue, "workers": redis_workers["names"]}


def test_redis_monitor_gets_every_read_it_is_entitled_to(redis_accounts):
    url = redis_accounts["urls"]["monitor"]
    for cmd in READ_COMMANDS:
        code, doc, err, _ = run_doc(*cmd, "--broker", url, "--timeout", "2")
        assert states(doc).get("broker") == "observed", (cmd, doc["sources"])
        assert "unreachable" not in err.lower().replace("unreachable:", ""), (cmd, err)
        if cmd[0] == "workers":
            # remote control writes: refused, said so, with the rules that allow it
            assert code == 3 and states(doc)["workers"] == "permission-denied", (cmd, err)
            why = next(x["error"] for x in doc["sources"] if x["name"] == "workers")
            assert "permission denied" in why and "docs/permissions.md" in why, why
        elif cmd[0] == "queues":
            assert code == 0, (cmd, err)
            rows = doc.get("queues")
            assert rows is not None
            q = next(r for r in rows if r["name"] == redis_accounts["queue"])
            assert q["ready"] == 5
            assert q["consumers"] is None  # Redis: only the workers know: unknown, not 0
        elif cmd[0] == "connections":
            assert code == 0, err
            assert any(r["role"] == "celeryctl" for r in doc["connections"])
        elif cmd[0] == "doctor":
            # nothing worse found; workers not observed: INCOMPLETE, never "All clear"
            assert code == 3, json.dumps(doc["summary"])
            assert doc["summary"]["verdict"].startswith("INCOMPLETE")
            assert doc["summary"]["not_observed"][0]["state"] == "permission-denied"
            skipped = {x["code"]: x["reason"] for x in doc["skipped"]}
            assert "workers were not observed" in skipped["QUE002"]
            # every broker read it may do was done
            assert "QUE003" not in skipped and "BRK002" not in skipped, skipped


def test_redis_monitor_snapshot_is_as_honest_offline(redis_accounts, tmp_path):
    url = redis_accounts["urls"]["monitor"]
    snap = tmp_path / "s.json"
    code, out, err, _ = run_cli("snapshot", "-o", str(snap), "--broker", url)
    assert code == 0 and snap.exists(), err
    assert url.split(":")[2].split("@")[0] not in snap.read_text()  # the password
    code, doc, err, _ = run_doc("doctor", "--from", str(snap))
    assert code == 3 and doc["summary"]["verdict"].startswith("INCOMPLETE"), doc["summary"]
    assert states(doc)["workers"] == "permission-denied"


def test_redis_inspect_sees_the_workers_and_the_unconsumed_queue(redis_accounts):
    url = redis_accounts["urls"]["inspect"]
    code, doc, err, _ = run_doc("workers", "--broker", url, "--timeout", "3")
    assert code == 0, err
    assert sorted(r["name"] for r in doc["workers"]) == sorted(redis_accounts["workers"])
    code, doc, err, _ = run_doc("doctor", "--broker", url, "--timeout", "3",
                                "--select", "QUE002")
    assert code == 2, err
    assert any(f["subject"] == f"queue {redis_accounts['queue']}" for f in doc["findings"])
    assert doc["summary"]["complete"] is True


def test_redis_guarded_actions_need_the_operator(redis_accounts, tmp_path):
    queue = redis_accounts["queue"]
    audit = tmp_path / "audit.log"
    # inspect: purge refused by the ACL, said so, nothing deleted
    code, out, err, _ = run_cli("purge", queue, "--confirm", "--yes", "--broker",
                                redis_accounts["urls"]["inspect"], "--audit-log", str(audit))
    assert code != 0 and "permission denied" in err and "operator" in err, err
    code, doc, err, _ = run_doc("queues", "-Q", queue, "--broker",
                                redis_accounts["urls"]["monitor"])
    assert doc["queues"][0]["ready"] == 5
    # operator: purge with backup, then restore
    backup = tmp_path / "b.jsonl"
    code, out, err, _ = run_cli("purge", queue, "--backup", str(backup), "--confirm", "--yes",
                                "--broker", redis_accounts["urls"]["operator"],
                                "--audit-log", str(audit))
    assert code == 0, err
    code, out, err, _ = run_cli("restore", str(backup), "--confirm", "--yes", "--broker",
                                redis_accounts["urls"]["operator"], "--audit-log", str(audit))
    assert code == 0, err
    code, doc, err, _ = run_doc("queues", "-Q", queue, "--broker",
                                redis_accounts["urls"]["monitor"])
    assert doc["queues"][0]["ready"] == 5
    # control with the inspect account (remote control is all it needs)
    node = redis_accounts["workers"][0]
    code, out, err, _ = run_cli("control", "add-consumer", queue, "-d", node, "--broker",
                                redis_accounts["urls"]["inspect"], "--audit-log", str(audit))
    assert code == 0, out + err
    code, out, err, _ = run_cli("control", "cancel-consumer", queue, "-d", node, "--confirm",
                                "--yes", "--broker", redis_accounts["urls"]["inspect"],
                                "--audit-log", str(audit))
    assert code == 0, out + err
    # connections kill: monitor may plan it, its CLIENT KILL is refused only if it acts
    code, out, err, _ = run_cli("connections", "kill", "--idle-over", "100000", "--broker",
                                redis_accounts["urls"]["operator"])
    assert code == 0, err
    assert "password" not in (out + err).lower() or "***" in out + err


# --- Redis with renamed commands (managed Redis) ------------------------------------------

@pytest.fixture(scope="module")
def managed_redis(labdir):
    """CONFIG, CLIENT, INFO, SCAN and KEYS renamed away, AOF off; one worker; a queue that
    worker consumes and one nobody consumes."""
    args = []
    for cmd in ("CONFIG", "CLIENT", "INFO", "SCAN", "KEYS"):
        args += ["--rename-command", cmd, ""]
    proc = s.start_redis(labdir, name="redis-managed", extra=args + ["--appendonly", "no"])
    url = proc.info["url"]
    worker = s.start_worker(labdir, url, "managed@%h", queues="celery", pool="threads")
    _publish(url, "orphans", 7)
    yield {"url": url, "worker": worker}
    worker.stop()
    proc.stop()


def test_renamed_client_connections_says_why(managed_redis):
    code, out, err, _ = run_cli("connections", "--broker", managed_redis["url"])
    assert code == 3 and out.strip() == ""
    assert "connections not observed" in err and "CLIENT LIST" in err
    assert "renamed or disabled" in err
    code, doc, err, _ = run_doc("connections", "--broker", managed_redis["url"])
    assert code == 3 and doc["connections"] is None
    broker = next(x for x in doc["sources"] if x["name"] == "broker")
    assert broker["state"] == "observed"
    assert any(p.startswith("CLIENT LIST") for p in broker["partial"]), broker


def test_renamed_reads_cost_only_their_checks(managed_redis):
    code, doc, err, _ = run_doc("doctor", "--broker", managed_redis["url"], "--timeout", "3")
    skipped = {x["code"]: x["reason"] for x in doc["skipped"]}
    for check, needle in (("BRK002", "INFO"), ("BRK005", "INFO"), ("BRK006", "CONFIG"),
                          ("BRK004", "persistence unknown"), ("CON001", "CLIENT LIST"),
                          ("POOL001", "INFO")):
        assert check in skipped and needle in skipped[check], (check, skipped.get(check))
    assert "renamed or disabled" in skipped["CON001"]
    # unrelated reads survived: the unacked bookkeeping, the workers, queue depth
    ran = {x["code"] for x in doc["findings"]} | set(skipped)
    assert "QUE003" not in skipped
    assert states(doc)["workers"] == "observed"
    # SCAN renamed: `orphans` (nobody consumes it) cannot be discovered — said, and the
    # report is incomplete rather than all clear
    partial = {x["code"]: x["reason"] for x in doc["partial"]}
    assert "queue discovery was partial" in partial["QUE002"]
    assert code == 3 and doc["summary"]["verdict"].startswith("INCOMPLETE"), doc["summary"]
    assert "QUE002" not in {f["code"] for f in doc["findings"]}
    del ran
    # named with -Q, the queue nobody consumes is found
    code, doc, err, _ = run_doc("doctor", "--broker", managed_redis["url"], "-Q", "orphans",
                                "--timeout", "3")
    assert code == 2, doc["summary"]
    found = {(f["code"], f["subject"]) for f in doc["findings"]}
    assert ("QUE002", "queue orphans") in found
    # `queues` says discovery was partial and how to see more
    code, out, err, _ = run_cli("queues", "--broker", managed_redis["url"])
    assert code == 3 and "pass -Q NAME or -A APP" in err, err
    code, out, err, _ = run_cli("queues", "--broker", managed_redis["url"], "-Q", "orphans")
    assert code == 0 and "orphans" in out, err


# --- two apps on one Redis ----------------------------------------------------------------

def test_other_databases_clients_are_not_this_clusters(redis_server, redis_workers, labdir):
    cli = shutil.which("redis-cli") or "redis-cli"
    port = str(redis_server["port"])
    monitor = subprocess.Popen([cli, "-p", port, "-n", "7", "psubscribe", "/7.celeryev/*"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        code, doc, err, _ = run_doc("connections", "--broker", redis_server["url"])
        assert code == 0, err
        other = [r for r in doc["connections"] if r["db"] == 7]
        assert other and all(r["other_db"] and r["worker"] is None for r in other), other
        code, out, err, _ = run_cli("connections", "--broker", redis_server["url"])
        assert "other db (another app)" in out
        code, doc, err, _ = run_doc("doctor", "--broker", redis_server["url"], "--select",
                                    "CON", "--timeout", "3")
        assert doc["findings"] == [], doc["findings"]
        # seen from db 7, the subscriber is that cluster's stray (no worker there)
        code, doc, err, _ = run_doc("doctor", "--broker",
                                    redis_server["url"].rsplit("/", 1)[0] + "/7",
                                    "--select", "CON003", "--timeout", "2")
        assert [f["code"] for f in doc["findings"]] == ["CON003"], doc
    finally:
        monitor.terminate()
        monitor.wait(5)


# --- RabbitMQ accounts --------------------------------------------------------------------

@pytest.fixture(scope="module")
def rabbit_accounts(labdir, rabbit, rabbit_workers):
    accts = acc.create_rabbit_accounts(labdir / "perm-rabbit", rabbit["api"])
    urls = {tier: (acc.account_url(rabbit["url"], a), acc.account_url(rabbit["api"], a))
            for tier, a in accts.items()}
    queue = f"unconsumed-{uuid.uuid4().hex[:6]}"
    _publish(rabbit["url"], queue, 4)
    import requests

    api = f"http://127.0.0.1:{rabbit['management_port']}/api"
    wait_for(lambda: (requests.get(f"{api}/queues/%2F/{queue}", auth=("guest", "guest"),
                                   timeout=5).json().get("messages_ready") == 4))
    return {"urls": urls, "queue": queue, "workers": rabbit_workers["names"], "api": api}


def test_rabbitmq_monitor_gets_every_read_it_is_entitled_to(rabbit_accounts):
    broker, api = rabbit_accounts["urls"]["monitor"]
    for cmd in READ_COMMANDS:
        code, doc, err, _ = run_doc(*cmd, "--broker", broker, "--rabbitmq-api", api,
                                    "--timeout", "3")
        st = states(doc)
        if cmd[0] == "workers":
            assert code == 3 and st["workers"] == "permission-denied", (cmd, err)
            assert st["broker"] == "observed", st  # the broker let it in: not "unreachable"
            why = next(x["error"] for x in doc["sources"] if x["name"] == "workers")
            assert "ACCESS_REFUSED" in why and "docs/permissions.md" in why, why
        elif cmd[0] == "queues":
            assert code == 0, err
            q = next(r for r in doc["queues"] if r["name"] == rabbit_accounts["queue"])
            assert q["ready"] == 4 and q["consumers"] == 0
        elif cmd[0] == "connections":
            assert code == 0, err
            assert {r["worker"] for r in doc["connections"]} >= set(rabbit_accounts["workers"])
        elif cmd[0] == "doctor":
            # the API's consumer counts show the queue nobody consumes, remote control or not
            assert code == 2, doc["summary"]
            assert any(f["code"] == "QUE002" and rabbit_accounts["queue"] in f["subject"]
                       for f in doc["findings"])
            assert "Incomplete: workers not observed" in doc["summary"]["verdict"]
            assert st["management-api"] == "observed" and st["broker"] == "observed"


def test_rabbitmq_inspect_and_operator(rabbit_accounts, tmp_path):
    broker, api = rabbit_accounts["urls"]["inspect"]
    code, doc, err, _ = run_doc("workers", "--broker", broker, "--rabbitmq-api", api,
                                "--timeout", "3")
    assert code == 0, err
    assert sorted(r["name"] for r in doc["workers"]) == sorted(rabbit_accounts["workers"])
    queue = rabbit_accounts["queue"]
    audit = str(tmp_path / "audit.log")
    code, out, err, _ = run_cli("purge", queue, "--confirm", "--yes", "--broker", broker,
                                "--rabbitmq-api", api, "--audit-log", audit)
    assert code != 0 and "permission denied" in err.lower(), (code, out, err)
    obroker, oapi = rabbit_accounts["urls"]["operator"]
    backup = tmp_path / "b.jsonl"
    code, out, err, _ = run_cli("purge", queue, "--backup", str(backup), "--confirm", "--yes",
                                "--broker", obroker, "--rabbitmq-api", oapi, "--audit-log",
                                audit)
    assert code == 0, out + err
    code, out, err, _ = run_cli("restore", str(backup), "--confirm", "--yes", "--broker",
                                obroker, "--rabbitmq-api", oapi, "--audit-log", audit)
    assert code == 0, out + err


def test_rabbitmq_management_tag_only_user(rabbit, rabbit_accounts):
    """management tag (not monitoring): /api/nodes refused, only its own connections."""
    import requests

    from celeryctl.permissions import RC_CONFIGURE, RC_READ, RC_WRITE

    api = rabbit_accounts["api"]
    requests.put(f"{api}/users/perm-mgmt", auth=("guest", "guest"), timeout=5,
                 json={"password": "perm-mgmt-pw", "tags": "management"}).raise_for_status()
    requests.put(f"{api}/permissions/%2F/perm-mgmt", auth=("guest", "guest"), timeout=5,
                 json={"configure": RC_CONFIGURE, "write": RC_WRITE, "read": RC_READ}
                 ).raise_for_status()
    broker = f"amqp://perm-mgmt:perm-mgmt-pw@127.0.0.1:{rabbit['amqp_port']}//"
    mapi = f"http://perm-mgmt:perm-mgmt-pw@127.0.0.1:{rabbit['management_port']}"
    code, out, err, _ = run_cli("connections", "--broker", broker, "--rabbitmq-api", mapi)
    assert code == 3 and "only the user's own connections" in err and "monitoring" in err
    code, doc, err, _ = run_doc("doctor", "--broker", broker, "--rabbitmq-api", mapi,
                                "--timeout", "3")
    skipped = {x["code"]: x["reason"] for x in doc["skipped"]}
    assert "monitoring tag" in skipped["BRK003"], skipped
    assert states(doc)["management-api"] == "observed"
    assert "perm-mgmt-pw" not in json.dumps(doc) + err
    # a wrong password is authentication failed, not permission denied
    bad = mapi.replace("perm-mgmt-pw", "wrong")
    code, doc, err, _ = run_doc("queues", "--broker", broker, "--rabbitmq-api", bad)
    assert states(doc)["management-api"] == "auth-failed", doc["sources"]


# --- the hostile review's cases: never an all-clear for what was not seen -------------------

def _acl_user(redis_url: str, name: str, *rules: str) -> str:
    """An ACL user on the session Redis with exactly `rules`; returns its URL (db 0)."""
    import redis

    r = redis.Redis.from_url(redis_url)
    r.execute_command("ACL", "SETUSER", name, "reset", "on", ">pw-" + name, "-@all", *rules)
    r.close()
    return redis_url.replace("redis://", f"redis://{name}:pw-{name}@", 1)


def test_a_queue_whose_llen_is_refused_is_never_all_clear(redis_server, redis_accounts):
    from celeryctl.permissions import REDIS_MONITOR, REDIS_REMOTE_CONTROL

    hidden = redis_accounts["queue"]
    rules = [r for r in REDIS_MONITOR + REDIS_REMOTE_CONTROL if r != "%R~*"]
    url = _acl_user(redis_server["url"], "kp-hidden", *rules, "%R~_kombu.*", "%R~unacked*",
                    "%R~celery*", "%R~hipri*")
    code, doc, err, _ = run_doc("doctor", "--broker", url, "--timeout", "3")
    assert code == 3, doc["summary"]
    assert doc["summary"]["verdict"].startswith("INCOMPLETE")
    assert hidden in json.dumps(doc["summary"]["not_observed"])
    broker = next(x for x in doc["sources"] if x["name"] == "broker")
    assert any(p.startswith("LLEN of") for p in broker["partial"]), broker
    code, out, err, _ = run_cli("queues", "--broker", url)
    assert code == 3 and f"not read: queue {hidden}" in err, err


def test_no_reply_is_not_all_clear_even_when_src004_is_deselected(redis_server):
    empty_db = redis_server["url"].rsplit("/", 1)[0] + "/2"  # no other test uses db 2
    code, doc, err, _ = run_doc("doctor", "--broker", empty_db, "--select", "QUE",
                                "--timeout", "1")
    assert code == 3 and doc["summary"]["verdict"].startswith("INCOMPLETE"), doc["summary"]
    assert doc["summary"]["not_observed"][0]["state"] == "no-reply"


def test_scan_refused_and_no_workers_lists_nothing_as_unknown(redis_server):
    from celeryctl.permissions import REDIS_MONITOR

    url = _acl_user(redis_server["url"], "no-scan", *[r for r in REDIS_MONITOR
                                                      if r != "+scan"])
    code, doc, err, _ = run_doc("queues", "--broker", url, "--timeout", "1")
    assert code == 3 and doc["queues"] is None, doc
    code, doc, err, _ = run_doc("queues", "--broker", url, "-Q", "celery", "--timeout", "1")
    assert code == 0 and [q["name"] for q in doc["queues"]] == ["celery"]
    assert doc["queues"][0]["exists"] is True  # unknown without the bindings: not "missing"


def test_select_refused_and_missing_password_are_named(redis_server, redis_auth):
    from celeryctl.permissions import REDIS_MONITOR

    url = _acl_user(redis_server["url"], "no-select", *[r for r in REDIS_MONITOR
                                                        if r != "+select"])
    code, doc, err, _ = run_doc("queues", "--broker", url.rsplit("/", 1)[0] + "/1")
    broker = next(x for x in doc["sources"] if x["name"] == "broker")
    assert code == 3 and broker["state"] == "permission-denied", broker
    assert "SELECT" in broker["error"] and "+select" in broker["error"]
    # a password-protected Redis reached without one: authentication, not "unreachable"
    code, doc, err, _ = run_doc("doctor", "--broker", redis_auth["url"], "--timeout", "1")
    broker = next(x for x in doc["sources"] if x["name"] == "broker")
    assert broker["state"] == "auth-failed" and code == 3, broker
    assert "SRC001" not in {f["code"] for f in doc["findings"]}


def test_brpop_refused_leaves_no_reply_behind(redis_server, redis_workers):
    import redis

    from celeryctl.permissions import REDIS_MONITOR, REDIS_REMOTE_CONTROL

    url = _acl_user(redis_server["url"], "no-brpop",
                    *[r for r in REDIS_MONITOR + REDIS_REMOTE_CONTROL if r != "+brpop"])
    r = redis.Redis.from_url(redis_server["url"])
    before = set(r.scan_iter(match="*.reply.celery.pidbox*"))
    for _ in range(2):
        code, doc, err, _ = run_doc("workers", "--broker", url, "--timeout", "2")
        assert code == 3 and states(doc)["workers"] == "permission-denied", doc["sources"]
    time.sleep(1.5)  # replies of a request that went out would have landed by now
    assert set(r.scan_iter(match="*.reply.celery.pidbox*")) == before


def test_vhost_flag_reaches_remote_control(rabbit, rabbit_workers):
    import requests

    api = f"http://127.0.0.1:{rabbit['management_port']}/api"
    requests.put(f"{api}/vhosts/empty-staging", auth=("guest", "guest"), timeout=5)
    requests.put(f"{api}/permissions/empty-staging/guest", auth=("guest", "guest"), timeout=5,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    try:
        broker = rabbit["url"]  # the URL names vhost "/", where the workers are
        code, doc, err, _ = run_doc("doctor", "--broker", broker, "--vhost", "empty-staging",
                                    "--rabbitmq-api", rabbit["api"], "--timeout", "2")
        assert "All clear" not in doc["summary"]["verdict"], doc["summary"]
        assert code in (2, 3) and doc["target"]["vhost"] == "empty-staging"
        code, out, err, _ = run_cli("control", "pool-grow", "1", "-d", rabbit_workers["names"][0],
                                    "--broker", broker, "--vhost", "empty-staging",
                                    "--timeout", "2")
        assert code == 64, out + err  # no worker answers in that vhost: refused, nothing sent
    finally:
        requests.delete(f"{api}/vhosts/empty-staging", auth=("guest", "guest"), timeout=5)
