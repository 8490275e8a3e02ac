"""The broker identity that matches a state file to a broker, whatever the URL's spelling."""

from celeryctl.actions.events import broker_identity
from celeryctl.events.agg import Aggregator


def test_spellings_of_one_redis_broker_are_one_identity():
    ids = {broker_identity(u) for u in ("redis://localhost:6379/0", "redis://127.0.0.1:6379",
                                        "redis://127.0.0.1/", "redis://LOCALHOST:6379/0")}
    assert ids == {"redis://127.0.0.1:6379/0"}
    assert broker_identity("redis://127.0.0.1:6379/1") != broker_identity("redis://127.0.0.1")
    assert broker_identity("redis://127.0.0.1:6380/0") != broker_identity("redis://127.0.0.1")


def test_amqp_vhost_and_default_port():
    assert broker_identity("amqp://u:***@localhost//") == broker_identity("amqp://127.0.0.1:5672/")
    assert broker_identity("amqp://127.0.0.1/a", "a") != broker_identity("amqp://127.0.0.1/b")


def test_silence_replaces_no_event_lost():
    agg = Aggregator(window_start=100.0)
    agg.expect_heartbeats = True
    for t in (101.0, 103.0, 105.0, 115.0):
        agg.feed({"type": "worker-heartbeat", "hostname": "w@h", "freq": 2.0,
                  "clock": int(t), "timestamp": t}, t)
    s = agg.summary(116.0)
    assert s["events"]["silent_seconds"] == 10.0
    assert any(n.startswith("no events for 10.0 s") for n in s["notes"])
    assert not any(n.startswith("no event lost") for n in s["notes"])
