"""Issue 13 item 4, the pure parts: the one priority-bucket notation, a refused plan renders
nothing but its refusal, the `queues --all` note, and which broker a snapshot came from."""

from __future__ import annotations

import io

import pytest

from celeryctl.render.text import buckets
from celeryctl.snapshot import QueueDepth, Snapshot


@pytest.mark.parametrize("d,shown", [
    ({"0": 9, "3": 8, "6": 6, "9": 2}, "p0=9 p3=8 p6=6 p9=2"),
    ({"9": 2, "0": 9}, "p0=9 p9=2"),                    # lowest step first, whatever the order
    ({"0": 0, "3": 5, "6": 0, "9": 0}, "p3=5"),         # empty steps left out
    ({str(i): 1 for i in (10, 2, 7)}, "p2=1 p7=1 p10=1"),  # custom priority_steps, numeric order
    ({"0": 0, "3": 0}, "-"), ({}, "-"), (None, "-"),
])
def test_buckets_one_notation(d, shown):
    assert buckets(d) == shown


class _C:
    """What the renderers use of a command context: fmt, out and err consoles."""

    def __init__(self, fmt="table"):
        from celeryctl.render.console import make_console

        self.fmt, self._o, self._e = fmt, io.StringIO(), io.StringIO()
        self.out, self.err = make_console(file=self._o), make_console(file=self._e)

    @property
    def text(self):
        return self._o.getvalue(), self._e.getvalue()


def _plan(requested, depths):
    from celeryctl.actions.purge import plan_purge

    return plan_purge(requested, depths, broker="redis://127.0.0.1:6379/0",
                      broker_kind="redis", vhost=None)


def test_purge_plan_renders_with_the_bucket_notation():
    from celeryctl.render.actions import render_plan

    c = _C()
    render_plan(c, _plan(["q"], [QueueDepth("q", "redis", ready=3, buckets={"0": 1, "9": 2},
                                            consumers=0)]),
                backup=None, sampled=True, sample_note=None)
    out, _ = c.text
    assert "p0=1 p9=2" in out and "3 ready messages in 1 queue(s) would be deleted" in out


def test_refused_purge_renders_no_plan():
    from celeryctl.render.actions import render_plan, render_refusals

    plan = _plan(["nope", "q"], [QueueDepth("q", "redis", ready=3, consumers=0)])
    assert plan.refusals and [i.queue for i in plan.items] == ["q"]
    c = _C()
    render_plan(c, plan, backup=None, sampled=True, sample_note=None)
    assert c.text == ("", "")
    render_refusals(c, plan.refusals, nothing="nothing changed",
                    others=[i.queue for i in plan.items])
    assert c.text[1].splitlines() == [
        "refused: no queue named 'nope' on this broker (celeryctl queues --all lists them)",
        "nothing changed, not even q: a refusal stops the whole command."]
    c = _C()
    render_refusals(c, ["x"], nothing="nothing sent", others=[f"q{i}" for i in range(7)])
    assert c.text[1].splitlines()[-1] == ("nothing sent, not even q0, q1, q2, q3, q4 and 2 "
                                          "more: a refusal stops the whole command.")


def test_refused_kill_and_control_render_no_plan():
    from celeryctl.actions.control import plan_control
    from celeryctl.actions.kill import KillFilters, plan_kill
    from celeryctl.render.actions import render_control_plan, render_kill_plan

    c = _C()
    kill = plan_kill([], KillFilters(None, (), ()))
    assert kill.refusals
    render_kill_plan(c, kill)
    control = plan_control("rate-limit", {"task_name": "t", "rate_limit": "5/s"}, None, {},
                           None)
    assert control.refusals
    render_control_plan(c, control)
    assert c.text == ("", "")


def test_queues_all_note():
    from celeryctl.views import no_internal_queues_note, queue_row

    task = queue_row(QueueDepth("celery", "redis", ready=1))
    reply = queue_row(QueueDepth("x.reply.celery.pidbox", "redis", ready=0, internal=True))
    note = no_internal_queues_note([task], "redis", include_internal=True)
    assert note.startswith("--all: no internal queues (pidbox replies, celeryev, result "
                           "queues) found; on Redis")
    assert no_internal_queues_note([task], "amqp", include_internal=True) == (
        "--all: no internal queues (pidbox replies, celeryev, result queues) found")
    assert no_internal_queues_note([], "amqp", include_internal=True) is not None
    assert no_internal_queues_note([task, reply], "redis", include_internal=True) is None
    assert no_internal_queues_note([task], "redis", include_internal=False) is None
    assert no_internal_queues_note([task], "redis", include_internal=True,
                                   names=("celery",)) is None  # -Q chose what to show
    assert no_internal_queues_note(None, "redis", include_internal=True) is None


def _snap(broker, kind="redis", **target):
    return Snapshot(broker_kind=kind, target={"broker": broker, "broker_kind": kind, **target})


@pytest.mark.parametrize("a,b,same", [
    (_snap("redis://:***@127.0.0.1:6379/0", redis_db=0),
     _snap("redis://127.0.0.1:6379/0", redis_db=0), True),  # user/password are not identity
    (_snap("redis://LOCALHOST/0", redis_db=0), _snap("redis://localhost:6379/0", redis_db=0),
     True),
    (_snap("redis://127.0.0.1:6379/0", redis_db=0), _snap("redis://127.0.0.1:6379/1",
                                                          redis_db=1), False),
    (_snap("redis://127.0.0.1:6379/0", redis_db=0), _snap("redis://127.0.0.1:6380/0",
                                                          redis_db=0), False),
    (_snap("amqp://u:***@rmq:5672//", "amqp", vhost="/"),
     _snap("amqp://rmq:5672/prod", "amqp", vhost="prod"), False),
    (_snap("redis://127.0.0.1:6379/0", redis_db=0), _snap("amqp://127.0.0.1:5672//", "amqp",
                                                          vhost="/"), False),
    (_snap("redis://127.0.0.1:6379/0", redis_db=0), Snapshot(broker_kind="redis", target={}),
     None),  # an older snapshot without the record: unknown, no warning
])
def test_same_broker(a, b, same):
    from celeryctl.snapdiff import same_broker

    assert same_broker(a, b)["same"] is same


def test_different_brokers_are_named_without_secrets():
    from celeryctl.render.snapdiff import render_diff
    from celeryctl.snapdiff import same_broker

    a = _snap("amqp://ops:***@rmq-a.example:5672//", "amqp", vhost="/")
    b = _snap("amqp://ops:hunter2@rmq-b.example:5672/prod", "amqp", vhost="prod")
    d = same_broker(a, b)
    assert d == {"same": False, "before": "amqp://rmq-a.example:5672 vhost /",
                 "after": "amqp://rmq-b.example:5672 vhost prod", "by": "url",
                 "why": "told by the URLs only: the snapshots do not both record the server's "
                        "identity, Redis run_id or RabbitMQ cluster name"}
    c = _C()
    empty = {"seconds_between": 60.0, "brokers": d, "queues": [], "workers_gone": [],
             "workers_new": [], "settings_changed": [], "findings_new": [],
             "findings_resolved": [], "findings_changed": []}
    render_diff(c.out, empty)
    out = c.text[0]
    assert out.splitlines()[:3] == [
        "warning: the snapshots come from different brokers: A amqp://rmq-a.example:5672 "
        "vhost /, B amqp://rmq-b.example:5672 vhost prod (told by the URLs only: the snapshots "
        "do not both record the server's identity, Redis run_id or RabbitMQ cluster name); the "
        "diff below compares two deployments, not one over time",
        "60.0 s between the snapshots", "no change"]
    assert "hunter2" not in out and "ops" not in out


def _with_server(snap, run_id=None, cluster=None, nodes=()):
    from celeryctl.snapshot import Observed, RabbitServer, RedisServer

    if run_id is not None:
        snap.parts["redis_server"] = Observed(RedisServer("7.2.4", {"run_id": run_id}, None,
                                                          None, "", "default"))
    if cluster is not None:
        snap.parts["rabbit_server"] = Observed(RabbitServer(
            "3.13.7", cluster, "3.13.7", {}, [{"name": n} for n in nodes]))
    return snap


RUN_A, RUN_B = "a" * 40, "b" * 40


@pytest.mark.parametrize("a,b,same,by", [
    # one Redis reached as localhost and as 127.0.0.1: the same run_id, the same broker
    (_with_server(_snap("redis://localhost:6379/0", redis_db=0), RUN_A),
     _with_server(_snap("redis://127.0.0.1:6379", redis_db=0), RUN_A), True, "Redis run_id"),
    # a fresh Redis on the same port: the same URL, a new run_id
    (_with_server(_snap("redis://127.0.0.1:6379/0", redis_db=0), RUN_A),
     _with_server(_snap("redis://127.0.0.1:6379/0", redis_db=0), RUN_B), False, "Redis run_id"),
    # the same server, another db: still two brokers' worth of queues
    (_with_server(_snap("redis://127.0.0.1:6379/0", redis_db=0), RUN_A),
     _with_server(_snap("redis://127.0.0.1:6379/1", redis_db=1), RUN_A), False, "Redis run_id"),
    # identity known on one side only: the URL decides
    (_with_server(_snap("redis://127.0.0.1:6379/0", redis_db=0), RUN_A),
     _snap("redis://localhost:6379/0", redis_db=0), False, "url"),
    (_with_server(_snap("amqp://rmq-a:5672//", "amqp", vhost="/"), cluster="prod",
                  nodes=("rabbit@a", "rabbit@b")),
     _with_server(_snap("amqp://rmq-b:5672//", "amqp", vhost="/"), cluster="prod",
                  nodes=("rabbit@b", "rabbit@c")), True, "RabbitMQ cluster name"),
    (_with_server(_snap("amqp://rmq:5672//", "amqp", vhost="/"), cluster="prod"),
     _with_server(_snap("amqp://rmq:5672//", "amqp", vhost="/"), cluster="staging"), False,
     "RabbitMQ cluster name"),
])
def test_same_broker_by_server_identity(a, b, same, by):
    """Issue 13 follow-up, item 7: the server's own identity decides when both snapshots hold
    it; the URL only when it is unknown; `by` says which."""
    from celeryctl.snapdiff import same_broker

    d = same_broker(a, b)
    assert (d["same"], d["by"]) == (same, by), d


def test_diff_says_why_the_brokers_differ_or_that_urls_differ_for_one_server():
    from celeryctl.render.snapdiff import render_diff
    from celeryctl.snapdiff import same_broker

    base = {"seconds_between": 60.0, "queues": [], "workers_gone": [], "workers_new": [],
            "settings_changed": [], "findings_new": [], "findings_resolved": [],
            "findings_changed": []}
    fresh = same_broker(_with_server(_snap("redis://127.0.0.1:6379/0", redis_db=0), RUN_A),
                        _with_server(_snap("redis://127.0.0.1:6379/0", redis_db=0), RUN_B))
    c = _C()
    render_diff(c.out, {**base, "brokers": fresh})
    assert c.text[0].splitlines()[0] == (
        "warning: the snapshots come from different brokers: A redis://127.0.0.1:6379 db 0, "
        "B redis://127.0.0.1:6379 db 0 (Redis run_id aaaaaaaaaaaa vs bbbbbbbbbbbb: restarted "
        "(its data possibly lost) or another server); the diff below compares two "
        "deployments, not one over time")
    one = same_broker(_with_server(_snap("redis://localhost:6379/0", redis_db=0), RUN_A),
                      _with_server(_snap("redis://127.0.0.1:6379", redis_db=0), RUN_A))
    c = _C()
    render_diff(c.out, {**base, "brokers": one})
    first = c.text[0].splitlines()[0]
    assert "warning" not in c.text[0] and first == (
        "note: A redis://localhost:6379 db 0 and B redis://127.0.0.1:6379 db 0: one server "
        "(Redis run_id aaaaaaaaaaaa) reached by different URLs")
