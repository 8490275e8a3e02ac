"""The pure parts of `celeryctl events`: the sketch's accuracy and bounded size, the
aggregator's counts, waits, clock gaps, duplicates and bounded in-progress set, the
state-file outcomes, the envelope decoding and the OpenMetrics text."""

from __future__ import annotations

import base64
import json
import random

from celeryctl.actions.events import disable_outcome, enable_outcome
from celeryctl.collect.events import decode_envelope, redis_channels
from celeryctl.events import agg as A
from celeryctl.events.sketch import Buckets, Sketch
from celeryctl.render.events import prometheus


def test_sketch_quantiles_within_one_percent_and_bounded():
    rnd = random.Random(7)
    values = [rnd.lognormvariate(-2, 1.5) for _ in range(50_000)]
    s = Sketch()
    for v in values:
        s.add(v)
    values.sort()
    for q in (0.5, 0.95, 0.99):
        exact = values[int(q * (len(values) - 1))]
        assert abs(s.quantile(q) - exact) / exact < 0.02
    assert s.quantile(1) == values[-1] and len(s.bins) < 2048
    small = Sketch(max_bins=10)
    for v in values:
        small.add(v)
    assert len(small.bins) <= 10 and small.count == len(values)


def test_buckets_cumulative():
    b = Buckets((1.0, 10.0))
    for v in (0.5, 1.0, 3, 100):
        b.add(v)
    assert b.cumulative() == [(1.0, 2), (10.0, 3), (float("inf"), 4)]


def _ev(t, host="w1", clock=None, ts=100.0, **kw):
    e = {"type": t, "hostname": host, "timestamp": ts, "utcoffset": 0, "pid": 1, **kw}
    if clock is not None:
        e["clock"] = clock
    return e


def test_counts_waits_exceptions_and_clock():
    a = A.Aggregator(window_start=0.0)
    c = iter(range(1, 1000))
    a.feed(_ev("task-received", clock=next(c), uuid="a", name="t.x", ts=10.0), 10.0)
    a.feed(_ev("task-started", clock=next(c), uuid="a", ts=10.5), 10.5)
    a.feed(_ev("task-succeeded", clock=next(c), uuid="a", runtime=0.25, ts=10.8), 10.8)
    a.feed(_ev("task-received", clock=next(c), uuid="b", name="t.x", ts=11.0), 11.0)
    a.feed(_ev("task-started", clock=next(c), uuid="b", ts=11.0), 11.0)
    a.feed(_ev("task-failed", clock=next(c), uuid="b", exception="KeyError('k')"), 11.2)
    a.feed(_ev("task-failed", clock=6, uuid="b", exception="KeyError('k')"), 11.2)  # dup
    a.feed(_ev("task-started", clock=10, uuid="c", ts=11.3), 11.3)  # gap 7..9, unknown name
    a.feed(_ev("task-received", clock=8, uuid="d", name="t.y", ts=11.4), 11.4)  # late
    a.feed(_ev("task-started", clock=11, uuid="d", ts=11.5), 11.5)
    s = a.summary(20.0)
    t = {r["name"]: r for r in s["tasks"]}
    assert (t["t.x"]["succeeded"], t["t.x"]["failed"], t["t.x"]["failure_ratio"]) == (1, 1, 0.5)
    assert t["t.x"]["exceptions"] == [{"type": "KeyError", "count": 1, "example": "KeyError('k')"}]
    assert abs(t["t.x"]["runtime"]["max"] - 0.25) < 1e-9
    assert abs(t["t.x"]["wait"]["max"] - 0.5) < 1e-9
    assert t["t.y"]["unfinished_count"] == 1 and t["t.y"]["unfinished"][0]["id"] == "d"
    assert t[A.UNKNOWN_NAME]["started"] == 1
    w = s["workers"][0]
    assert (w["duplicates"], w["out_of_order"], w["clock_gaps"]) == (1, 1, 2)
    assert s["events"]["duplicates"] == 1
    json.dumps(s, allow_nan=False)


def test_in_progress_is_bounded(monkeypatch):
    monkeypatch.setattr(A, "MAX_IN_PROGRESS", 100)
    a = A.Aggregator(window_start=0.0)
    for i in range(1000):
        a.feed(_ev("task-received", uuid=str(i), name="t"), 1.0)
    assert len(a.in_progress) == 100 and a.in_progress_dropped == 900


def test_filters():
    a = A.Aggregator(window_start=0.0, task_patterns=("t.a*",), workers=("w1",))
    a.feed(_ev("task-received", uuid="1", name="t.b"), 1.0)
    a.feed(_ev("task-received", uuid="2", name="t.a1"), 1.0)
    a.feed(_ev("task-received", host="w2", uuid="3", name="t.a1"), 1.0)
    s = a.summary(2.0)
    assert [r["name"] for r in s["tasks"]] == ["t.a1"] and s["tasks"][0]["received"] == 1
    assert [w["name"] for w in s["workers"]] == ["w1"]


def test_exception_type_parsing():
    assert A.exception_type("RuntimeError('demo failure')") == ("RuntimeError", "'demo failure'")
    assert A.exception_type("mod.Err()") == ("mod.Err", "")
    assert A.exception_type("<weird>")[0] == "(unparsed)"


def test_enable_and_disable_outcomes():
    mine, already, problems = enable_outcome(
        {"a": [{"ok": "task events enabled"}], "b": [{"ok": "task events already enabled"}],
         "c": [{"error": "event dispatcher unavailable"}]}, ["a", "b", "c", "d"])
    assert (mine, already) == (["a"], ["b"]) and set(problems) == {"c", "d"}
    done, problems = disable_outcome({"a": [{"ok": "task events disabled"}]}, ["a", "x"])
    assert done == ["a"] and list(problems) == ["x"]


def test_envelope_and_channels():
    body = base64.b64encode(json.dumps([{"type": "task-started"}]).encode()).decode()
    env = json.dumps({"body": body, "content-type": "application/json",
                      "properties": {"body_encoding": "base64"}})
    assert decode_envelope(env) == [{"type": "task-started"}]
    pickled = json.dumps({"body": "gAN9cQAu", "content-type": "application/x-python-serialize",
                          "properties": {"body_encoding": "base64"}})
    assert decode_envelope(pickled) is None
    ch = redis_channels({"global_keyprefix": "p:"}, 3)
    assert "p:/3.celeryev/task.multi" in ch and "p:/3.celeryev/worker.heartbeat" in ch
    assert redis_channels({"fanout_prefix": False}, 3)[-1] == "celeryev"


def test_openmetrics_text():
    a = A.Aggregator(window_start=0.0)
    a.feed(_ev("task-received", uuid="a", name='t"q', ts=1.0), 1.0)
    a.feed(_ev("task-started", uuid="a", ts=2.0), 2.0)
    a.feed(_ev("task-succeeded", uuid="a", runtime=0.3), 2.3)
    text = prometheus(a.summary(10.0, histograms=True))
    assert text.endswith("# EOF\n")
    assert 'celeryctl_task_events_total{task="t\\"q",kind="succeeded"} 1' in text
    assert 'celeryctl_task_wait_seconds_bucket{task="t\\"q",le="1800"} 1' in text
    assert 'celeryctl_task_runtime_seconds_bucket{task="t\\"q",le="0.5"} 1' in text


def test_retry_received_again_before_the_retried_event():
    """Worker batches interleave: the retried run's task-received (w2) may arrive before
    w1's task-retried; the run on w2 must keep its name."""
    a = A.Aggregator(window_start=0.0)
    a.feed(_ev("task-received", host="w1", uuid="r", name="t.f"), 1.0)
    a.feed(_ev("task-started", host="w1", uuid="r"), 1.0)
    a.feed(_ev("task-received", host="w2", uuid="r", name="t.f"), 1.1)
    a.feed(_ev("task-retried", host="w1", uuid="r", exception="ValueError()"), 1.2)
    a.feed(_ev("task-started", host="w2", uuid="r"), 1.3)
    a.feed(_ev("task-succeeded", host="w2", uuid="r", runtime=0.1), 1.4)
    t = {r["name"]: r for r in a.summary(2.0)["tasks"]}
    assert list(t) == ["t.f"]
    assert (t["t.f"]["received"], t["t.f"]["retried"], t["t.f"]["succeeded"]) == (2, 1, 1)
    assert len(a.in_progress) == 0


def test_late_retried_after_the_retry_finished_elsewhere():
    a = A.Aggregator(window_start=0.0)
    a.feed(_ev("task-received", host="w1", uuid="r", name="t.f"), 1.0)
    a.feed(_ev("task-received", host="w2", uuid="r", name="t.f"), 1.1)
    a.feed(_ev("task-succeeded", host="w2", uuid="r", runtime=0.1), 1.4)
    a.feed(_ev("task-retried", host="w1", uuid="r", exception="ValueError()"), 1.5)
    t = {r["name"]: r for r in a.summary(2.0)["tasks"]}
    assert list(t) == ["t.f"] and t["t.f"]["retried"] == 1


def test_own_enable_events_is_not_a_lost_event():
    """The flaky `test_window_counts_exactly_and_restores[rabbitmq]`: a worker's pidbox
    forwards its Lamport clock on every control message (celery/worker/pidbox.py), so a
    heartbeat heard *before* celeryctl's own enable_events broadcast and the next one differ
    by 2 with nothing lost. That step is absorbed (once per broadcast and worker); a gap later
    in the window, or a second one, is still counted."""
    a = A.Aggregator(window_start=0.0)
    a.feed(_ev("worker-heartbeat", "w1", clock=2, freq=2.0), 10.0)  # heard before enable
    a.feed(_ev("worker-heartbeat", "w2", clock=40, freq=2.0), 10.1)
    a.note_control_sent(10.3)  # enable_events: every worker's clock +1
    a.feed(_ev("worker-heartbeat", "w1", clock=4, freq=2.0), 12.0)  # 3 was the control msg
    a.feed(_ev("worker-heartbeat", "w2", clock=41, freq=2.0), 12.1)  # stepped before 40
    a.feed(_ev("worker-heartbeat", "w3", clock=7, freq=2.0), 12.2)  # first seen after
    a.feed(_ev("worker-heartbeat", "w3", clock=9, freq=2.0), 14.2)  # a real gap
    a.feed(_ev("worker-heartbeat", "w1", clock=6, freq=2.0), 14.0)  # a real gap, later
    w = {r["name"]: r for r in a.summary(15.0)["workers"]}
    assert (w["w1"]["clock_gaps"], w["w2"]["clock_gaps"], w["w3"]["clock_gaps"]) == (1, 0, 1)
    b = A.Aggregator(window_start=0.0)  # without the note: the same step is a gap
    b.feed(_ev("worker-heartbeat", "w1", clock=2, freq=2.0), 10.0)
    b.feed(_ev("worker-heartbeat", "w1", clock=4, freq=2.0), 12.0)
    assert b.summary(15.0)["workers"][0]["clock_gaps"] == 1


def test_exception_examples_and_args_have_secrets_masked():
    """Issue 15 review: a task raising Boom("url=redis://user:hunter2@... password=hunter2")
    showed both in the JSON example and the table; `key=value` secrets are masked too."""
    a = A.Aggregator(window_start=0.0, include_args=True)
    a.feed(_ev("task-received", uuid="a", name="t.x", args="('redis://:argpw@h:6379/0',)",
               kwargs="{'api_token': 'tok123'}"), 1.0)
    a.feed(_ev("task-failed", uuid="a", exception="Boom('url=redis://user:hunter2@db.example"
               ".com:6379/0 password=hunter2')"), 2.0)
    [e] = a.summary(3.0)["tasks"][0]["exceptions"]
    text = json.dumps(e)
    for secret in ("hunter2", "argpw", "tok123"):
        assert secret not in text, text
    assert e["example"].startswith("Boom('url=redis://user:") and "@db.example.com" in text
    cases = {
        "E(\"{'password': 'a b', 'token': \\\"xyz\\\"}\")": ("a b", "xyz"),
        "E('Authorization: Bearer abc.def')": ("abc.def",),
        "E('X-Api-Key: k3y db_password=pw1 secret: s3')": ("k3y", "pw1", "s3"),
    }
    for raw, secrets in cases.items():
        out = A.redact_text(raw)
        assert not any(s in out for s in secrets), out
    # what is not a secret stays readable
    for raw in ("KeyError('missing')", "E('passed: 3 of 4, tokens=5')",
                "E('amqp://guest@host//')", "E('password=')"):
        assert A.redact_text(raw) == raw


def test_openmetrics_label_values_carry_no_terminal_escape():
    a = A.Aggregator(window_start=0.0)
    name = "evil[b]\x1b[31mRED\x1b]0;pwned\x07\r\\x"
    a.feed(_ev("task-received", uuid="a", name=name, ts=1.0), 1.0)
    text = prometheus(a.summary(10.0, histograms=True))
    assert not any(ch in text for ch in "\x1b\x07\r"), repr(text)
    # visible text first (\x1b), then the format's escaping of the backslash
    assert ('celeryctl_task_events_total{task="evil[b]\\\\x1b[31mRED\\\\x1b]0;pwned\\\\x07'
            '\\\\r\\\\x",kind="received"} 1') in text
    from prometheus_client.parser import text_string_to_metric_families

    labels = {s.labels["task"] for f in text_string_to_metric_families(text.replace(
        "# EOF\n", "")) for s in f.samples if "task" in s.labels}
    assert labels == {"evil[b]\\x1b[31mRED\\x1b]0;pwned\\x07\\r\\x"}
