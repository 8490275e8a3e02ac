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


def _head(t, st, name="q", head=(b"a", None), ready=5, consumers=1, **kw):
    st.update(Sample(t, [QueueReading(name, ready, consumers=consumers, head=head, **kw)]))
    return st.row(name)


def test_redis_stall_from_an_unchanged_head():
    st = WatchState(stalled_after=10.0)
    r = _head(0.0, st)
    assert r["stalled_seconds"] == 0.0 and r["stalled"] is False  # first sight: a lower bound
    r = _head(6.0, st, ready=9)  # more arrived, nothing left: still the same head
    assert r["stalled_seconds"] == 6.0 and r["stalled"] is False and r["level"] == "ok"
    # a message arriving in an empty (higher-priority) sub-list is an arrival, not progress
    r = _head(12.0, st, head=(b"a", b"p9"), ready=10)
    assert r["stalled_seconds"] == 12.0 and r["stalled"] is True and r["level"] == "warning"
    r = _head(14.0, st, head=(b"b", b"p9"))  # one taken: moving again
    assert r["stalled_seconds"] == 0.0 and r["stalled"] is False
    r = _head(16.0, st, head=(b"b", None))
    assert r["stalled_seconds"] == 0.0


def test_redis_stall_unknown_or_not_applicable():
    st = WatchState(stalled_after=1.0)
    assert _head(0.0, st, consumers=None)["stalled_seconds"] is None  # consumers unknown
    assert _head(1.0, st, head=None)["stalled_seconds"] is None  # head not readable
    _head(2.0, st)
    assert _head(5.0, st, consumers=0)["stalled_seconds"] == 0.0  # QUE002's case
    assert _head(6.0, st, ready=0, head=(None, None))["stalled_seconds"] == 0.0
    st.update(None, "down")  # stale: the last values stay
    assert st.row("q")["stalled_seconds"] == 0.0


def test_rabbitmq_stall_from_capacity_and_the_out_counter():
    st = WatchState(stalled_after=5.0)

    def feed(t, cap, out, ready=3):
        return _head(t, st, head=None, capacity=cap, out_total=out, ready=ready)

    assert feed(0.0, None, 10)["stalled_seconds"] is None  # the server reports no capacity
    assert feed(1.0, 1.0, 10)["stalled_seconds"] == 0.0
    feed(2.0, 0.0, 10)
    r = feed(9.0, 0.61, 10)  # capacity frozen mid-way (3.10.8): the counter tells
    assert r["stalled_seconds"] == 7.0 and r["stalled"] is True
    assert feed(10.0, 0.0, 11)["stalled_seconds"] == 0.0  # an ack: it moves, slowly
    assert feed(11.0, 0.0, 11, ready=0)["stalled_seconds"] == 0.0


def test_redis_sub_list_not_read_tells_nothing():
    from celeryctl.collect.watch import UNREAD

    st = WatchState(stalled_after=1.0)
    _head(0.0, st, head=(b"a", None))
    # the second sub-list was empty last time, so its head was not read: still stalled
    r = _head(3.0, st, head=(b"a", UNREAD), ready=7)
    assert r["stalled_seconds"] == 3.0 and r["stalled"] is True
    assert _head(4.0, st, head=(None, b"z"))["stalled_seconds"] == 0.0  # "a" was taken
