"""A cluster of workers of four Celery releases (5.2.7, 5.3.6, 5.5.3, 5.7.0, each with the kombu
it shipped with, from the lab's virtualenvs) on Redis and on RabbitMQ: `workers` shows each
one's versions and pool, doctor reports the mix (WRK008) without calling version-only settings
drift, and purge and control work against the old workers.

One set of workers per broker is shared by the module's tests (a module-scoped fixture): the
virtualenvs are built once (`celeryctl lab venvs`, which `make test` runs first) and every
start costs seconds."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from celeryctl.lab import servers as s
from tests.conftest import run_cli, run_json, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq, pytest.mark.workers]
H = socket.gethostname()

# version -> (celery, kombu, the pool its worker runs): the 5.2 worker is prefork (pool-grow,
# and a Celery whose stats name no pool implementation), the 5.3 one solo
WORKERS = {"5.2": ("5.2.7", "5.2.4", "prefork"), "5.3": ("5.3.6", "5.3.7", "solo"),
           "5.5": ("5.5.3", "5.5.4", "threads"), "5.7": ("5.7.0", "5.7.0", "threads")}


def node(version: str) -> str:
    return f"c{version.replace('.', '')}@{H}"


def _start(labdir: Path, url: str, tag: str) -> list[s.Proc]:
    """All four at once (each imports its Celery in parallel), then wait for every one."""
    procs: list[s.Proc] = []
    try:
        for v, (_c, _k, pool) in WORKERS.items():
            procs.append(s.start_worker(labdir / tag, url, f"c{v.replace('.', '')}@%h",
                                        queues="celery", pool=pool, concurrency=1,
                                        celery_version=v, wait=False))
        for p in procs:
            log = Path(p.log)

            def ready(p=p, log=log) -> bool:
                if not p.alive():
                    raise s.LabError(f"worker {p.name} exited during start-up; see {log}")
                return log.exists() and " ready." in log.read_text(errors="replace")

            s._wait_or_stop(p, ready, 60, f"worker {p.name}", log)
    except BaseException:
        _stop(procs)
        raise
    return procs


def _stop(procs: list[s.Proc]) -> None:
    """Every worker's warm shutdown at once, not one after the other."""
    import threading

    threads = [threading.Thread(target=p.stop, kwargs={"timeout": 10}) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def mixed(request, labdir, redis_server, rabbit):
    """One worker per Celery version, on a Redis db or a RabbitMQ vhost of their own."""
    import requests

    if request.param == "redis":
        import redis

        url = redis_server["url"].rsplit("/", 1)[0] + "/9"
        redis.Redis.from_url(url).flushdb()
        args = ["--broker", url]
    else:
        api = f"http://127.0.0.1:{rabbit['management_port']}"
        auth = ("guest", "guest")
        requests.put(f"{api}/api/vhosts/mixed", auth=auth, timeout=5).raise_for_status()
        requests.put(f"{api}/api/permissions/mixed/guest", auth=auth, timeout=5,
                     json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
        url = f"amqp://127.0.0.1:{rabbit['amqp_port']}/mixed"
        args = ["--broker", url, "--rabbitmq-api", api]
    procs = _start(labdir, url, f"mixed-{request.param}")
    try:
        yield {"broker": request.param, "url": url, "args": args, "procs": procs}
    finally:
        _stop(procs)
        if request.param == "rabbitmq":
            requests.delete(f"{api}/api/vhosts/mixed", auth=auth, timeout=5)


def test_workers_show_each_version_and_a_pool(mixed):
    code, doc, err, _ = run_json("workers", *mixed["args"])
    assert code == 0, err
    rows = {r["name"]: r for r in doc["workers"]}
    assert set(rows) == {node(v) for v in WORKERS}
    for v, (celery, kombu, pool) in WORKERS.items():
        r = rows[node(v)]
        assert (r["celery_version"], r["kombu_version"], r["pool"]) == (celery, kombu, pool), r
        assert r["python_version"].startswith("3.") and r["missing_replies"] == []
    assert rows[node("5.2")]["pool_source"] == "inferred from stats.pool (Celery <= 5.2)"
    assert rows[node("5.7")]["pool_source"] == "stats.pool.implementation"
    # the table keeps to 80 columns and shows the versions
    code, out, err, _ = run_cli("workers", *mixed["args"], env={"COLUMNS": "80"})
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80
    assert all(c in out for c, _k, _p in WORKERS.values())


def test_doctor_reports_the_mix_and_no_version_drift(mixed):
    code, doc, err, secs = run_json("doctor", *mixed["args"], "--timeout", "3")
    found = {(f["code"], f["subject"]): f for f in doc["findings"]}
    assert found[("WRK008", "kombu json")]["severity"] == "warning"
    assert found[("WRK008", "kombu json")]["evidence"]["kombu_before_5_3"] == [node("5.2")]
    info = found[("WRK008", "celery versions")]
    assert set(info["evidence"]["celery"]) == {c for c, _k, _p in WORKERS.values()}
    # settings that exist in some releases only, and defaults rendered per release, are no
    # drift; the workers run the same code
    assert not [f for f in doc["findings"] if f["code"] in ("WRK003", "SER003", "WRK006")], \
        doc["findings"]
    assert code == 1 and secs < 5.5


def _publish(url: str, queue: str, n: int) -> None:
    from celery import Celery

    app = Celery(broker=url, set_as_current=False)
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task("celeryctl.lab.demoapp.add", (i, i), queue=queue, producer=producer)
    app.close()


def test_purge_a_queue_the_workers_do_not_consume(mixed, tmp_path):
    queue = f"orphan_{uuid.uuid4().hex[:6]}"
    _publish(mixed["url"], queue, 5)

    def ready() -> int | None:
        code, doc, err, _ = run_json("queues", *mixed["args"], "--queue", queue)
        return next((q["ready"] for q in doc["queues"] or [] if q["name"] == queue), None)

    wait_for(lambda: ready() == 5, timeout=20)  # the management API's statistics lag
    code, out, err, _ = run_cli("purge", queue, *mixed["args"])
    assert code == 0 and "dry run" in err and "5 ready messages" in out
    assert ready() == 5
    code, out, err, _ = run_cli("purge", queue, *mixed["args"], "--confirm", "--yes",
                                "--audit-log", str(tmp_path / "audit.log"))
    assert code == 0, err
    assert "purged 5, remaining 0" in out


def _queues(mixed) -> dict[str, list[str]]:
    code, doc, err, _ = run_json("workers", "inspect", "queues", *mixed["args"])
    return {r["name"]: sorted(q["name"] for q in r["reply"]) for r in doc["replies"]}


def test_control_reaches_the_old_workers(mixed, tmp_path):
    audit = str(tmp_path / "audit.log")
    # pool-grow on the Celery 5.2 prefork worker: its stats show the new process
    code, doc, err, _ = run_json("control", "pool-grow", "1", "-d", node("5.2"),
                                 *mixed["args"], "--audit-log", audit)
    assert code == 0, err
    assert doc["workers"][0]["answered"] and doc["workers"][0]["after"] == "pool 1 -> 2"
    run_json("control", "pool-shrink", "1", "-d", node("5.2"), *mixed["args"], "--wait", "0",
             "--audit-log", audit)
    # add-consumer / cancel-consumer on 5.2 and 5.3, checked in their active_queues
    extra = f"extra_{uuid.uuid4().hex[:6]}"
    olds = ["-d", node("5.2"), "-d", node("5.3")]
    code, doc, err, _ = run_json("control", "add-consumer", extra, *olds, *mixed["args"],
                                 "--audit-log", audit)
    assert code == 0, err
    assert all(r["answered"] and r["ok"] and r["took_effect"] for r in doc["workers"])
    qs = _queues(mixed)
    assert extra in qs[node("5.2")] and extra in qs[node("5.3")] and extra not in qs[node("5.7")]
    code, doc, err, _ = run_json("control", "cancel-consumer", extra, *olds, *mixed["args"],
                                 "--audit-log", audit)
    assert code == 0, err
    assert all(extra not in q for q in _queues(mixed).values())
    # revoke reaches every release, and each one lists the id as revoked
    task_id = str(uuid.uuid4())
    code, doc, err, _ = run_json("control", "revoke", task_id, *mixed["args"], "--confirm",
                                 "--yes", "--audit-log", audit)
    assert code == 0, err
    assert sorted(r["worker"] for r in doc["workers"] if r["answered"] and r["ok"]) == \
        sorted(node(v) for v in WORKERS)
    code, doc, err, _ = run_json("workers", "inspect", "revoked", *mixed["args"])
    assert all(task_id in r["reply"] for r in doc["replies"]) and len(doc["replies"]) == 4


def test_kombu_52_worker_reads_json_markers_as_dicts(mixed):
    """What WRK008's warning claims, on the real workers: a datetime sent by kombu 5.7 reaches
    the kombu 5.2.4 worker as a {"__type__": ...} dict, the kombu >= 5.3 ones as a datetime."""
    import datetime

    from celery import Celery

    app = Celery(broker=mixed["url"], set_as_current=False)
    queues = {}
    for v in ("5.2", "5.7"):
        queues[v] = f"only_{v.replace('.', '')}_{uuid.uuid4().hex[:4]}"
        app.control.add_consumer(queues[v], destination=[node(v)], reply=True, timeout=2)
    when = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
    ids = {v: app.send_task("celeryctl.lab.demoapp.arg_type", (when,), queue=q).id
           for v, q in queues.items()}
    app.close()
    logs = {p.name: Path(p.log) for p in mixed["procs"]}

    def result(v: str) -> str | None:
        for line in logs[node(v)].read_text(errors="replace").splitlines():
            if ids[v] in line and "succeeded" in line:
                return line
        return None

    wait_for(lambda: result("5.2") and result("5.7"), timeout=20)
    old, new = result("5.2"), result("5.7")
    assert "['dict', " in old and "__type__" in old and "datetime" in old, old
    assert "['datetime', 'datetime.datetime(2024, 5, 1, 12, 0" in new, new
