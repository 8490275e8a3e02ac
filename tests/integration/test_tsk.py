"""Doctor's TSK checks on real workers: the acks_late task that outlives visibility_timeout is
reported before it is delivered a second time — and then it is delivered again."""

from __future__ import annotations

import json
import time

import pytest

from celeryctl.lab import lab
from celeryctl.lab.scenarios import ACKS_LATE_VT
from celeryctl.lab.servers import expand_node_name, from_dict
from tests.conftest import run_json

pytestmark = [pytest.mark.redis, pytest.mark.workers]


def _active_on(url: str) -> dict[str, list[str]]:
    from celery import Celery

    app = Celery(broker=url, set_as_current=False)
    replies = app.control.inspect(timeout=1).active() or {}
    return {w: [t["id"] for t in ts or []] for w, ts in replies.items()}


def test_acks_late_task_reported_before_its_second_delivery(tmp_path):
    st = lab.up(tmp_path / "lab", scenario="acks-late-past-visibility", rabbitmq=False,
                progress=lambda *_: None)
    try:
        code, doc, err, _ = run_json("doctor", "--broker", st.broker_url, "--timeout", "3",
                                     "--select", "TSK002")
        [f] = doc["findings"]
        detail = json.dumps(f, indent=1)
        tid = f["evidence"]["id"]
        # before: running once, unacknowledged for 80 % of the timeout, with when it recurs
        assert f["severity"] == "warning" and code == 1, detail
        assert "it will be delivered again and run twice: redelivered in" in f["message"]
        assert f"visibility_timeout {ACKS_LATE_VT} s (workers)" in f["message"], detail
        assert f["evidence"]["worker"] == expand_node_name("w1@%h") or \
            f["evidence"]["worker"] == expand_node_name("w2@%h")
        running = [w for w, ids in _active_on(st.broker_url).items() if tid in ids]
        assert len(running) == 1, running
        # then kombu's sweep puts it back and the other worker runs it too
        deadline = time.monotonic() + ACKS_LATE_VT + 15
        while time.monotonic() < deadline:
            running = [w for w, ids in _active_on(st.broker_url).items() if tid in ids]
            if len(running) == 2:
                break
            time.sleep(0.5)
        assert len(running) == 2, running
        code, doc, err, _ = run_json("doctor", "--broker", st.broker_url, "--timeout", "3",
                                     "--select", "TSK002")
        twice = [f for f in doc["findings"] if f["subject"] == f"task {tid}"]
        assert twice and twice[0]["severity"] == "critical" and code == 2, doc["findings"]
        assert "is running twice: on " in twice[0]["message"]
    finally:
        for w in st.workers:
            from_dict(w).stop(timeout=2)
        lab.down(tmp_path / "lab", progress=lambda *_: None)
