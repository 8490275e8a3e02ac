"""Incident snapshots on real servers: `doctor --from` gives the live findings, nothing secret
leaves celeryctl in any output, `snapshot diff` shows a real change, and the Prometheus
output parses with the official parser."""

from __future__ import annotations

import gzip
import json
import socket
import time

import pytest

from celeryctl.lab import lab
from celeryctl.lab import servers as s
from tests.conftest import run_cli, run_json

pytestmark = [pytest.mark.redis, pytest.mark.workers]
H = socket.gethostname()
PASSWORD = "PLANTED-pw-4711xq"
ARG = "PLANTED-ARG-9731zz"


@pytest.mark.parametrize("scenario", ["config-drift", "backlog-rabbitmq", "rabbitmq-node-down"])
def test_doctor_from_snapshot_equals_the_live_run(scenario, tmp_path):
    from celeryctl.lab.scenarios import SCENARIOS

    sc = SCENARIOS[scenario]
    st = lab.up(tmp_path / "lab", scenario=scenario,
                rabbitmq=sc.broker == "rabbitmq" or sc.needs_rabbitmq, progress=lambda *_: None)
    try:
        args = ["--broker", st.broker_url, "--timeout", "3", *st.doctor_argv()]
        if st.broker == "rabbitmq" and "--rabbitmq-api" not in st.doctor_args:
            args += ["--rabbitmq-api", st.api_url]
        snap = tmp_path / "snap.json.gz"
        code, live, err, _ = run_json("doctor", *args, "--save", str(snap),
                                      env={"PYTHONPATH": st.dir}, prefix=st.run_prefix)
        assert live["findings"], err
        assert set(sc.expects) <= {f["code"] for f in live["findings"]}
        code2, offline, err2, _ = run_json("doctor", "--from", str(snap))
        assert code2 == code, err2
        assert offline["findings"] == live["findings"]
        assert offline["skipped"] == live["skipped"]
        doc = json.loads(gzip.decompress(snap.read_bytes()))
        assert doc["schema"] == "celeryctl-snapshot/1" and doc["tool_version"]
        assert all("elapsed_seconds" in x for x in doc["sources"])
        assert doc["collection_seconds"] > 0
    finally:
        lab.down(tmp_path / "lab", progress=lambda *_: None)


@pytest.fixture
def planted(labdir, tmp_path):
    """A password-protected Redis (broker and result backend), a worker with a custom setting
    holding a URL with that password and a secret-named setting, and a task waiting on its
    ETA with a known argument."""
    server = s.start_redis(labdir, name=f"redis-planted-{time.monotonic_ns()}",
                           password=PASSWORD)
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.info['port']}/0"
    backend = f"redis://:{PASSWORD}@127.0.0.1:{server.info['port']}/1"
    settings = {"reporting_dsn": f"redis://reporter:{PASSWORD}@10.9.9.9:6379/0",
                "partner_api_token": PASSWORD}
    worker = s.start_worker(labdir, url, "pw1@%h", queues="celery,plant", pool="threads",
                            backend=backend,
                            env={"CELERYCTL_LAB_SETTINGS": json.dumps(settings)})
    try:
        from celery import Celery

        app = Celery(broker=url, backend=backend, set_as_current=False)
        app.send_task("celeryctl.lab.demoapp.add", (ARG, "x"), kwargs={}, queue="plant",
                      countdown=600)
        app.send_task("celeryctl.lab.demoapp.add", (ARG, "y"), queue="nobody-consumes")
        app.close()
        time.sleep(1.5)
        yield {"url": url, "backend": backend, "dir": tmp_path}
    finally:
        worker.stop()
        server.stop()


def test_no_password_or_argument_leaves_celeryctl(planted):
    url, backend, d = planted["url"], planted["backend"], planted["dir"]
    common = ["--broker", url]
    snap, snap2 = d / "a.json", d / "b.json.gz"
    runs = [
        ["workers", *common], ["workers", *common, "-f", "json"],
        ["workers", "inspect", "scheduled", *common], ["workers", "inspect", "scheduled",
                                                       *common, "-f", "json"],
        ["workers", "inspect", "conf", *common, "-f", "json"],
        ["workers", "inspect", "conf", *common],
        ["workers", "inspect", "stats", *common, "-f", "json"],
        ["queues", *common, "--all"], ["queues", *common, "-f", "json", "--all"],
        ["queues", "watch", *common, "--count", "1", "--all"],
        ["connections", *common], ["connections", *common, "-f", "json"],
        ["doctor", *common, "--result-backend", backend],
        ["doctor", *common, "--result-backend", backend, "-f", "json"],
        ["doctor", *common, "--result-backend", backend, "-f", "markdown"],
        ["doctor", *common, "--result-backend", backend, "-f", "prometheus"],
        ["doctor", *common, "--result-backend", backend, "--save", str(snap)],
        ["snapshot", *common, "--result-backend", backend, "-o", str(snap2)],
        ["doctor", "--from", str(snap)], ["doctor", "--from", str(snap2), "-f", "json"],
        ["snapshot", "diff", str(snap), str(snap2)],
        ["snapshot", "diff", str(snap), str(snap2), "-f", "json"],
        ["purge", "plant", *common], ["purge", "nobody-consumes", *common, "-f", "json"],
        ["control", "enable-events", *common], ["control", "enable-events", *common, "-f",
                                                "json"],
        ["connections", "kill", "--idle-over", "99999", *common],
        ["workers", "--broker", url.replace(PASSWORD, "wrong-" + PASSWORD)],  # refused
        ["doctor", "--broker", url.replace("127.0.0.1", "127.0.0.1:1")],
    ]
    seen = []
    for args in runs:
        code, out, err, _ = run_cli(*args, env={"CELERY_RESULT_BACKEND": backend})
        assert "Traceback" not in err, (args, err)
        for text in (out, err):
            assert PASSWORD not in text, (args, text)
            assert ARG not in text, (args, text)
        seen.append(out)
    assert any("scheduled" in x or "eta" in x for x in seen)  # the task was there to leak
    for f in (snap, snap2):
        raw = f.read_bytes()
        text = (gzip.decompress(raw) if f.suffix == ".gz" else raw).decode()
        assert PASSWORD not in text and ARG not in text
        assert "[redacted: pass --include-args" in text
        assert "********" in text
    # --include-args keeps the arguments (never the password)
    code, out, err, _ = run_cli("workers", "inspect", "scheduled", *common, "--include-args")
    assert ARG in out and PASSWORD not in out + err


def test_snapshot_diff_around_a_real_change(labdir, tmp_path):
    server = s.start_redis(labdir, name=f"redis-diff-{time.monotonic_ns()}")
    url = server.info["url"]
    w1 = s.start_worker(labdir, url, "dw1@%h", queues="celery,grow", pool="threads")
    w2 = s.start_worker(labdir, url, "dw2@%h", queues="celery", pool="threads")
    try:
        a, b = tmp_path / "a.json", tmp_path / "b.json"
        code, out, err, _ = run_cli("snapshot", "--broker", url, "-o", str(a))
        assert code == 0, err
        w1.stop()  # a worker goes away: its queue `grow` now has no consumer
        from celery import Celery

        app = Celery(broker=url, set_as_current=False)
        for i in range(150):
            app.send_task("celeryctl.lab.demoapp.add", (i, i), queue="grow")
        app.close()
        code, out, err, _ = run_cli("snapshot", "--broker", url, "-o", str(b))
        assert code == 0, err
        code, doc, err, _ = run_json("snapshot", "diff", str(a), str(b))
        assert code == 0, err
        grow = next(q for q in doc["queues"] if q["queue"] == "grow")
        assert grow["change"] == "grown" and grow["delta"] == 150
        assert doc["workers_gone"] == [f"dw1@{H}"] and doc["workers_new"] == []
        assert {"QUE001", "QUE002"} <= {f["code"] for f in doc["findings_new"]}
        code, out, err, _ = run_cli("snapshot", "diff", str(a), str(b))
        assert "grow" in out and f"dw1@{H}" in out and "QUE002" in out
    finally:
        w1.stop()
        w2.stop()
        server.stop()


def test_prometheus_output_parses(labdir, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    st = lab.up(tmp_path / "lab", scenario="backlog-no-consumer", rabbitmq=False,
                progress=lambda *_: None)
    try:
        code, out, err, _ = run_cli("doctor", "--broker", st.broker_url, "-f", "prometheus")
        assert "Traceback" not in err
        fams = {f.name: f for f in text_string_to_metric_families(out)}
        ready = {s.labels["queue"]: s.value for s in fams["celeryctl_queue_ready_messages"]
                 .samples}
        assert ready and max(ready.values()) > 0
        assert fams["celeryctl_workers_up"].samples[0].value >= 1
        findings = {(s.labels["code"], s.labels["severity"])
                    for s in fams["celeryctl_findings"].samples}
        assert ("QUE002", "critical") in findings
        assert all(f.type == "gauge" for f in fams.values())
        assert all(n.startswith("celeryctl_") for n in fams)
        # bad-input names survive the escaping: a queue named with quotes and a backslash
        import redis

        r = redis.Redis.from_url(st.broker_url)
        odd = 'we"ird\\queue'
        r.sadd(f"_kombu.binding.{odd}", f"{odd}\x06\x16\x06\x16{odd}")
        r.lpush(odd, b"{}")
        code, out, err, _ = run_cli("doctor", "--broker", st.broker_url, "-f", "prometheus")
        fams = {f.name: f for f in text_string_to_metric_families(out)}
        assert odd in {s.labels["queue"] for s in fams["celeryctl_queue_ready_messages"].samples}
    finally:
        lab.down(tmp_path / "lab", progress=lambda *_: None)
