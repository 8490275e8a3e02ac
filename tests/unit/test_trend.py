"""The pure half of `queues watch`: rates, drain time, trend, order, colour and staleness."""

from __future__ import annotations

from celeryctl.collect.watch import QueueReading, Sample
from celeryctl.trend import WatchState, counter_rate, drain_seconds, sparkline


def _feed(state, t, **ready):
    state.update(Sample(t, [QueueReading(n, r, consumers=1 if n != "orphan" else 0)
                            for n, r in ready.items()]))


def test_net_rate_drain_and_trend_from_successive_samples():
    st = WatchState(window=2)
    for i, t in enumerate((0.0, 1.0, 2.0, 3.0)):
        _feed(st, t, busy=100 - 10 * i, orphan=5 * i)
    busy, orphan = st.row("busy"), st.row("orphan")
    assert busy["net_rate"] == -10.0 and busy["drain_seconds"] == 7.0
    assert busy["rate_in"] is None and busy["rate_out"] is None  # consumed Redis queue
    assert orphan["net_rate"] == 5.0 and orphan["drain_seconds"] is None  # growing: never
    assert orphan["rate_in"] == 5.0 and orphan["rate_out"] == 0.0  # nobody consumes it
    assert busy["trend"][0] == "█" and busy["trend"][-1] == "▁" and len(busy["trend"]) == 4
    assert orphan["level"] == "critical" and busy["level"] == "ok"


def test_sort_patterns_internal():
    st = WatchState(queue_warn=10, queue_crit=50)
    st.update(Sample(0.0, [QueueReading("a", 5, consumers=1), QueueReading("b", 60, consumers=1),
                           QueueReading("c", 20, consumers=1),
                           QueueReading("x.reply.celery.pidbox", 3, internal=True)]))
    assert [r["name"] for r in st.rows()] == ["b", "c", "a"]
    assert [r["name"] for r in st.rows(sort="name")] == ["a", "b", "c"]
    assert [r["name"] for r in st.rows(patterns=("a", "c*"))] == ["c", "a"]
    assert len(st.rows(include_internal=True)) == 4
    assert [r["level"] for r in st.rows()] == ["critical", "warning", "ok"]


def test_stale_keeps_the_last_values():
    st = WatchState()
    _feed(st, 10.0, q=7)
    st.update(None, "broker redis://h:6379/0: connection refused")
    assert st.stale and st.error.endswith("connection refused")
    assert st.rows()[0]["ready"] == 7 and st.last_good == 10.0
    _feed(st, 20.0, q=8)
    assert not st.stale and st.rows()[0]["ready"] == 8


def test_deleted_queue_leaves_the_view():
    st = WatchState()
    _feed(st, 0.0, a=1, b=2)
    _feed(st, 1.0, a=1)
    assert [r["name"] for r in st.rows()] == ["a"]


def test_counter_rate_from_changes_not_refreshes():
    # a counter the server refreshes every 5 s, read every 0.5 s: 20 messages/s
    pts = [(i * 0.5, 100 * (int(i * 0.5 // 5))) for i in range(31)]
    assert counter_rate(pts) == 20.0
    assert counter_rate(pts[:12]) is None  # one change seen: not enough
    stopped = pts + [(15.0 + i, 300) for i in range(1, 16)]
    assert counter_rate(stopped) == 0.0
    reset = [(0.0, 500), (1.0, 600), (2.0, 3), (7.0, 103), (12.0, 203)]
    assert counter_rate(reset) == 20.0


def test_rabbitmq_rates_from_counters():
    st = WatchState(history=40)
    for i in range(31):
        t = i * 0.5
        step = int(t // 5)
        st.update(Sample(t, [QueueReading("q", 10, consumers=1, rate_in=0.0, rate_out=0.0,
                                          published_total=100 * step,
                                          out_total=50 * step)]))
    r = st.row("q")
    assert r["rate_in"] == 20.0 and r["rate_out"] == 10.0 and r["net_rate"] == 10.0


def test_drain_and_sparkline_edges():
    assert drain_seconds(0, None) == 0.0 and drain_seconds(5, 0.0) is None
    assert drain_seconds(None, -1.0) is None and drain_seconds(10, -2.0) == 5.0
    assert sparkline([]) == "" and sparkline([0, 0]) == "▁▁" and sparkline([0, 7]) == "▁█"
