"""Every lab scenario on real servers: doctor reports exactly what the scenario expects
(at least its codes; `healthy` nothing at all)."""

from __future__ import annotations

import json

import pytest

from celeryctl.lab import lab
from celeryctl.lab.scenarios import SCENARIOS
from tests.conftest import run_json

pytestmark = [pytest.mark.redis, pytest.mark.workers]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name, tmp_path):
    sc = SCENARIOS[name]
    st = lab.up(tmp_path / "lab", scenario=name,
                rabbitmq=sc.broker == "rabbitmq" or sc.needs_rabbitmq,
                progress=lambda *_: None)
    try:
        args = ["doctor", "--broker", st.broker_url, "--timeout", "3"]
        if st.broker == "rabbitmq" and "--rabbitmq-api" not in st.doctor_args:
            args += ["--rabbitmq-api", st.api_url]
        args += st.doctor_argv()
        # doctor --events (EVT scenarios) writes its state file and audit log: under tmp_path
        code, doc, err, secs = run_json(*args, env={"PYTHONPATH": st.dir,
                                                    "XDG_STATE_HOME": str(tmp_path / "state"),
                                                    **st.api_tls_env()},
                                        prefix=st.run_prefix)
        found = {f["code"] for f in doc["findings"]}
        detail = json.dumps({"findings": doc["findings"], "skipped": doc.get("skipped"),
                             "partial": doc.get("partial"), "sources": doc.get("sources"),
                             "summary": doc.get("summary")}, indent=1)
        if not sc.expects:
            assert doc["findings"] == [], detail
        else:
            assert set(sc.expects) <= found, f"{name}: expected {sc.expects}, got {detail}"
        worst = {f["severity"] for f in doc["findings"]}
        expected = sc.exit_status if sc.exit_status is not None else (
            2 if "critical" in worst else 1 if "warning" in worst else 0)
        assert code == expected, detail
        skipped = {s["code"]: s["reason"] for s in doc["skipped"]}
        for item in sc.skipped:
            check, _, needle = item.partition(":")
            assert check in skipped and needle in skipped[check], f"{item}: {detail}"
        assert set(sc.partial) <= {p["code"] for p in doc["partial"]}, detail
        states = {s["name"]: s["state"] for s in doc["sources"]}
        for item in sc.sources:
            source, _, state = item.partition("=")
            assert states.get(source) == state, f"{item}: {detail}"
        if code == 3:  # an incomplete report never says all clear
            assert doc["summary"]["verdict"].startswith("INCOMPLETE"), detail
        window = float(args[args.index("--events") + 1]) if "--events" in args else 0.0
        assert secs < 5.5 + window
        if window:  # the window left the workers as it found them
            assert not list((tmp_path / "state").glob("celeryctl/events/*.json")), detail
        lines = (json.dumps(doc) + err).lower()
        assert "lab-secret-password" not in lines and "guest:guest" not in lines
    finally:
        for w in st.workers:  # scenario tasks may be long: do not wait them out
            from celeryctl.lab.servers import from_dict

            from_dict(w).stop(timeout=2)
        lab.down(tmp_path / "lab", progress=lambda *_: None)


def test_pidbox_reply_bloat_reports_lists_that_never_expire(tmp_path):
    st = lab.up(tmp_path / "lab", scenario="pidbox-reply-bloat", rabbitmq=False,
                progress=lambda *_: None)
    try:
        code, doc, err, _ = run_json("doctor", "--broker", st.broker_url, "--select", "QUE004")
        f = doc["findings"][0]
        assert f["code"] == "QUE004" and "never expire" in f["message"]
        assert len(f["evidence"]["never_expire"]) == 1
        code, doc, err, _ = run_json("queues", "--broker", st.broker_url, "--all")
        reply = next(q for q in doc["queues"] if q["kind"] == "pidbox-reply")
        assert reply["ready"] == 150 and reply["ttl_seconds"] == -1
    finally:
        lab.down(tmp_path / "lab", progress=lambda *_: None)
