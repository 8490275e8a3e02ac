"""The pure half of `connections kill`: what the filters select, and what is always kept."""

from __future__ import annotations

from celeryctl.actions.kill import KillFilters, plan_kill, still_selected
from celeryctl.snapshot import Connection


def _r(id_, addr, role, idle, name=None):
    return Connection("redis", addr, name=name, id=id_, idle_seconds=idle, role=role)


CONNS = [
    _r("1", "10.0.0.5:4001", "consumer", 900.0),
    _r("2", "10.0.0.5:4002", "pubsub", 900.0),
    _r("3", "10.0.0.5:4003", "client", 900.0, name="pool-a"),
    _r("4", "10.0.0.6:4004", "client", 10.0),
    _r("5", "10.0.0.7:4005", "celeryctl", 900.0),
    _r("6", "10.0.0.8:4006", "replication", 900.0),
]


def test_no_filter_is_refused():
    assert plan_kill(CONNS, KillFilters()).refusals


def test_idle_over_never_selects_consumers_or_own_connection():
    plan = plan_kill(CONNS, KillFilters(idle_over=300))
    assert [c.id for c in plan.selected] == ["3"]
    assert sorted(c.id for c, _ in plan.protected) == ["1", "2", "5", "6"]


def test_host_address_and_glob_name_do_not_unprotect():
    plan = plan_kill(CONNS, KillFilters(addresses=("10.0.0.5",)))
    assert [c.id for c in plan.selected] == ["3"]
    assert [c.id for c in plan_kill(CONNS, KillFilters(names=("*",))).selected] == ["3"]
    assert [c.id for c in plan_kill(CONNS, KillFilters(names=("pool-*",))).selected] == ["3"]


def test_exact_address_names_a_consumer_explicitly():
    plan = plan_kill(CONNS, KillFilters(addresses=("10.0.0.5:4001",)))
    assert [c.id for c in plan.selected] == ["1"]
    own = plan_kill(CONNS, KillFilters(addresses=("10.0.0.7:4005",)))
    assert own.selected == []  # never this celeryctl's own connection


def test_rabbitmq_consumers_known_and_unknown():
    def rc(id_, consumers, idle=100.0):
        return Connection("rabbitmq", f"h:{id_}", id=id_, idle_seconds=idle,
                          consumers=consumers)

    plan = plan_kill([rc("a", 0), rc("b", 2), rc("c", None), rc("d", 0, idle=None)],
                     KillFilters(idle_over=50))
    assert [c.id for c in plan.selected] == ["a"]
    assert sorted(c.id for c, _ in plan.protected) == ["b", "c"]  # d: idle unknown


def test_plan_rechecked_before_acting():
    plan = plan_kill(CONNS, KillFilters(idle_over=300))
    now = [_r("3", "10.0.0.5:4003", "consumer", 0.0)]  # became a consumer
    go, left = still_selected(plan, now, KillFilters(idle_over=300))
    assert go == [] and "changed" in left[0][1]
    go, left = still_selected(plan, [], KillFilters(idle_over=300))
    assert go == [] and left[0][1] == "already closed"


def test_kill_rows_judge_from_the_listing_after():
    from celeryctl.actions.kill import kill_rows, still_open

    a = Connection("rabbitmq", "h:1", id="a")
    b = Connection("rabbitmq", "h:2", id="b")
    c = Connection("rabbitmq", "h:3", id="c")
    d = Connection("rabbitmq", "h:4", id="d")
    after = [Connection("rabbitmq", "h:2", id="b", state="closing"),
             Connection("rabbitmq", "h:3", id="c", state="running")]
    assert still_open([a, b, c], after) and not still_open([a, b], after)
    rows = kill_rows([a, b, c, d], [(Connection("redis", "h:9", id="z"), "already closed")],
                     {"d": "HTTP 404 on DELETE"}, after)
    assert [r["result"] for r in rows] == [
        "left open: already closed", "closed",
        "closed (closing: the client has not acknowledged)",
        "error: still listed after closing", "error: HTTP 404 on DELETE"]
