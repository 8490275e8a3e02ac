"""RabbitMQ 3.10 .. 4.2: the management-API readers and the doctor checks over the response
shapes of each version (tests/fixtures/rabbitmq/<version>/*.json; README.md there says where
each shape comes from: captured from the lab's real 3.10.8, or written from rabbitmq-server's
source for the others).

The readers take the API object they GET through; `FixtureAPI` stands in for it and answers
from a fixture file (no HTTP is involved, and none is mocked)."""

from __future__ import annotations

import copy
import datetime
import json
import time
from pathlib import Path

import pytest

from celeryctl.checks import Limits, run_checks
from celeryctl.collect import Gathered
from celeryctl.collect.doctor import _growth_parts
from celeryctl.collect.rabbitmq import (
    ManagementError,
    collect_peek,
    collect_pidbox_nodes,
    collect_rabbit_connections,
    collect_rabbit_queues,
    collect_rabbit_server,
    parse_rabbit_time,
    queue_from_api,
)
from celeryctl.knowledge import queue_consumer_timeout_ms, quorum_delivery_limit, rabbit_version
from celeryctl.snapshot import Observed, Snapshot, WorkerNode, WorkersView
from celeryctl.views import attribute_connections

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "rabbitmq"
SCENARIOS = sorted((p.parent.name, p.stem) for p in FIX.glob("*/*.json") if p.stem != "errors")
STATS_OFF = "statistics disabled on the server"


class FixtureAPI:
    """Answers `get(path)` from a fixture: {path: body}. A body {"status": N, "body": ...} is
    an HTTP error, raised as ManagementError(status=N) the way ManagementAPI.get does; a
    path the fixture does not have is a 404."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.calls: list[tuple[str, dict | None]] = []

    def get(self, path: str, params=None):
        self.calls.append((path, params))
        if path not in self.doc:
            raise ManagementError(f"{path} not found (404)", 404)
        body = self.doc[path]
        if isinstance(body, dict) and set(body) == {"status", "body"}:
            raise ManagementError(f"HTTP {body['status']} on {path}", body["status"])
        return copy.deepcopy(body)

    def post(self, path: str, body: dict):
        return self.get(path)


def load(version: str, scenario: str) -> dict:
    return json.loads((FIX / version / f"{scenario}.json").read_text())


def read_all(doc: dict, now: float = 1714557600.0):
    """Every reader over one fixture: (server, queues, connections | ManagementError,
    pidbox nodes | ManagementError)."""
    api = FixtureAPI(doc)
    server = collect_rabbit_server(api)
    try:
        queues, notes = collect_rabbit_queues(api, "/")
        assert notes == []
    except ManagementError as exc:
        queues = exc
    try:
        conns = collect_rabbit_connections(api, "/", now=now)
    except ManagementError as exc:
        conns = exc
    try:
        pidbox = collect_pidbox_nodes(api, "/")
    except ManagementError as exc:
        pidbox = exc
    return server, queues, conns, pidbox


def worker(scheduled=(), queues=("celery", "celery.quorum")) -> WorkerNode:
    return WorkerNode("w1@h", {"ping": {"ok": "pong"},
                               "active_queues": [{"name": q} for q in queues],
                               "scheduled": list(scheduled), "conf": {}, "stats": {}})


def snapshot(doc: dict, nodes=(), broker="amqp://127.0.0.1:5672//") -> Snapshot:
    """What doctor builds: the readers' output, connections attributed to the workers, and
    the growth part from rates (collect/doctor.py:_growth_parts, one sample)."""
    server, queues, conns, pidbox = read_all(doc)
    view = WorkersView(nodes=tuple(nodes or (worker(),)), methods=("ping", "active_queues"),
                       expected=None if isinstance(pidbox, Exception) else tuple(pidbox))
    g = Gathered(target=None, queues=Observed(queues), rabbit_server=Observed(server))
    parts = {
        "broker": Observed(True), "workers": Observed(view), "queues": Observed(queues),
        "rabbit_server": Observed(server), "app": Observed(error="no app"),
        "connections": Observed(error=str(conns), kind=getattr(conns, "kind", None))
        if isinstance(conns, Exception) else
        Observed(attribute_connections(conns, view, {}, {})),
        "redis_server": Observed(error="x"), "redis_unacked": Observed(error="x"),
        "backend": Observed(error="x"),
    }
    parts.update(_growth_parts(g, None, 0.0))
    return Snapshot(broker_kind="amqp", target={"broker": broker, "vhost": "/"}, parts=parts,
                    broker_hosts=("127.0.0.1",), taken_at=time.time())


def skipped(report) -> dict[str, str]:
    return {s.code: s.reason for s in report.skipped}


def codes(report) -> list[tuple[str, str, str]]:
    return [(f.code, f.severity.label, f.subject) for f in report.findings]


# --- every reader, every fixture: no crash, None for what the server did not send -----------

FIELDS = {"messages_ready": "ready", "messages_unacknowledged": "unacked",
          "consumers": "consumers", "message_bytes": "messages_bytes",
          "idle_since": "idle_since", "effective_policy_definition": "effective_policy"}


@pytest.mark.parametrize(("version", "scenario"), SCENARIOS)
def test_readers_keep_missing_fields_unknown(version, scenario):
    doc = load(version, scenario)
    server, queues, conns, pidbox = read_all(doc)
    if scenario == "vhost-denied":  # 4.2.9+: 404 for a virtual host the user cannot use
        assert isinstance(queues, ManagementError) and queues.status == 404
        assert isinstance(pidbox, ManagementError) and isinstance(conns, ManagementError)
        return
    raw = doc.get("/queues/%2F")
    items = {q["name"]: q for q in raw["items"]} if isinstance(raw, dict) and "items" in raw \
        else {}
    assert {q.name for q in queues} == set(items)
    for q in queues:
        item = items[q.name]
        for key, attr in FIELDS.items():
            if key not in item:
                assert getattr(q, attr) is None, (q.name, attr)
            else:
                assert getattr(q, attr) == item[key], (q.name, attr)
        if "message_stats" not in item:
            assert (q.publish_rate, q.deliver_rate, q.ack_rate) == (None, None, None)
        else:
            assert q.publish_rate == item["message_stats"]["publish_details"]["rate"]
        assert q.consumers_source == ("broker" if "consumers" in item else None)
    # node resources: only what /api/nodes sent; never 0-of-0 sockets
    for n in server.nodes:
        assert n.get("sockets_total") != 0
    if not isinstance(conns, Exception):
        assert all(c.idle_seconds is None for c in conns) or \
            isinstance(doc.get("/vhosts/%2F/channels"), list)
    assert isinstance(pidbox, (list, ManagementError))


def test_real_3_10_8_monitoring_user():
    """Captured from the lab's rabbitmq-server 3.10.8 (tests/fixtures/rabbitmq/capture.py)."""
    server, queues, conns, pidbox = read_all(load("3.10.8", "monitoring"))
    assert server.version == "3.10.8" and server.overview["disable_stats"] is False
    assert server.overview["api_user_is_monitor"] is True and server.overview["unread"] == {}
    assert [x["protocol"] for x in server.listeners] == ["amqp", "clustering", "http"]
    node = server.nodes[0]
    assert node["sockets_total"] > 0 and node["mem_alarm"] is False  # 3.x keeps sockets
    q = {x.name: x for x in queues}
    assert (q["celery"].ready, q["celery"].unacked, q["celery"].consumers) == (3, 2, 1)
    assert q["celery"].effective_policy == {} and q["celery"].publish_rate == 0.0
    # 3.10: a quorum queue's `leader` is also rendered as `node`; no deliveries yet, so its
    # message_stats has only publish_details: the other rates are 0, not unknown
    qq = q["celery.quorum"]
    assert (qq.ready, qq.consumers, qq.node, qq.ack_rate) == (1, 0, "rabbit@lab", 0.0)
    assert qq.members == ("rabbit@lab",) == qq.online
    # no publish ever reached the pidbox queue: no message_stats, so rates unknown
    assert q["w1@h.celery.pidbox"].publish_rate is None
    assert parse_rabbit_time(q["celery"].idle_since) is not None
    (c,) = conns
    assert c.consumers == 2 and c.worker == "w1@h" and c.worker_match == "exact"
    assert c.idle_seconds is not None and "consumer_timeouts_ms" not in c.raw  # 3.12+ only
    assert pidbox == ["w1@h"]


def test_real_3_10_8_statistics_disabled():
    """`?disable_stats=true` on the real 3.10.8: the code path of management.disable_stats."""
    doc = load("3.10.8", "stats-disabled")
    server, queues, conns, _ = read_all(doc)
    assert server.overview["disable_stats"] is True and server.listeners == []
    assert server.overview["unread"]["listeners"].startswith(STATS_OFF)
    assert server.nodes == [{"name": "rabbit@lab", "running": True, "type": "disc"}]
    q = {x.name: x for x in queues}["celery"]
    # queue totals (enable_queue_totals=true): counts, but no consumers, rates, policy
    assert (q.ready, q.unacked, q.consumers, q.publish_rate) == (3, 2, None, None)
    assert q.effective_policy is None and q.idle_since is None
    (c,) = conns  # management.disable_stats keeps the connection list (the collector runs)
    assert c.idle_seconds is None and c.consumers is None
    assert c.raw["channels_error"].startswith(STATS_OFF)

    s = snapshot(doc)
    r = run_checks(s, Limits())
    why = skipped(r)
    assert why["QUE002"] == f"consumer counts unknown: {STATS_OFF} (management.disable_stats" \
        " or management_agent.disable_metrics_collector)"
    assert why["QUE008"].startswith(f"growth not observed (not-asked): unknown: {STATS_OFF}")
    assert why["BRK003"].startswith(f"memory and disk alarms unknown: {STATS_OFF}")
    assert why["BRK007"].startswith(f"network partitions unknown: {STATS_OFF}")
    assert why["POOL003"].startswith(f"node resource use unknown: {STATS_OFF}")
    assert why["CON001"].startswith(f"connection idle time unknown: {STATS_OFF}")
    assert why["CON002"].startswith("which connection belongs to which worker unknown")
    assert why["QUE006"].startswith("the policies of 2 task queues unknown")
    assert why["SEC003"].startswith("whether the AMQP listener is open beyond loopback is "
                                    f"unknown: {STATS_OFF}")
    assert "QUE001" in r.ran and "QUE012" in r.ran


def test_real_3_10_8_management_tag_user():
    """A `management`-tag user: /api/nodes refused (401 "Not monitor user"), no listeners,
    and only its own connections (here none: the client connected as guest)."""
    doc = load("3.10.8", "management-user")
    server, queues, conns, pidbox = read_all(doc)
    assert server.nodes == [] and server.overview["api_user_is_monitor"] is False
    assert server.overview["unread"]["nodes"] == \
        "GET /api/nodes refused: the API user lacks the monitoring tag"
    assert "monitoring tag" in server.overview["unread"]["listeners"]
    assert conns == [] and pidbox == ["w1@h"] and len(queues) == 3
    why = skipped(run_checks(snapshot(doc), Limits()))
    for code in ("BRK003", "BRK007", "POOL003"):
        assert why[code].endswith("GET /api/nodes refused: the API user lacks the monitoring tag")
    for code in ("CON001", "CON002"):
        assert why[code] == ("the management API user lacks the monitoring tag, so RabbitMQ "
                             "lists only its own connections")
    assert why["POOL006"].startswith("connections per user unknown")
    assert "monitoring tag" in why["SEC003"]


@pytest.mark.parametrize("version", ["3.10.8", "3.11", "3.12", "3.13", "4.0", "4.1", "4.2"])
def test_doctor_runs_every_check_over_each_version(version):
    s = snapshot(load(version, "monitoring"))
    r = run_checks(s, Limits())  # a crash in any check fails here
    assert "QUE001" in r.ran and "QUE002" in r.ran and "CON001" in r.ran
    assert "BRK003" in r.ran and "POOL003" in r.ran and "SEC003" in r.ran


def test_written_versions_read_the_same_core_fields():
    for version in ("3.11", "3.12", "3.13", "4.0", "4.1", "4.2"):
        server, queues, conns, pidbox = read_all(load(version, "monitoring"))
        q = {x.name: x for x in queues}
        assert (q["celery"].ready, q["celery"].consumers, q["celery"].publish_rate) == \
            (1490, 1, 5.0), version
        assert q["celery.quorum"].node == "rabbit@prod-1", version
        assert pidbox == ["w1@h"], version
        w = next(c for c in conns if c.worker)
        assert w.worker == "w1@h" and w.consumers == 3 and w.heartbeat_seconds == 60
        assert ("consumer_timeouts_ms" in w.raw) == (rabbit_version(server.version) >= (3, 12))
        sockets = "sockets_total" in server.nodes[0]
        assert sockets == (rabbit_version(server.version) < (4, 0)), version


def test_4_0_drops_zero_sockets_and_warns_on_quorum_delivery_limit():
    server, queues, _, _ = read_all(load("4.0", "monitoring"))
    assert "sockets_used" not in server.nodes[0] and server.nodes[0]["fd_total"] == 1048576
    assert server.overview["default_queue_type"] == "classic"
    r = run_checks(snapshot(load("4.0", "monitoring")), Limits())
    f = [x for x in r.findings if x.code == "QUE006"]
    assert [(x.severity.label, x.subject) for x in f] == [
        ("warning", "dead-lettering (quorum queues)"), ("info", "dead-lettering")]
    assert f[0].evidence["delivery_limit"] == {"celery.quorum": 20}
    # the same queues on 3.13: no default delivery limit, so no warning
    r = run_checks(snapshot(load("3.13", "monitoring")), Limits())
    assert [x.subject for x in r.findings if x.code == "QUE006"] == ["dead-lettering"]


def test_3_13_quorum_minority_and_idle_since_offset():
    s = snapshot(load("3.13", "monitoring"))
    r = run_checks(s, Limits())
    assert ("QUE012", "critical", "queue celery.quorum") in codes(r)
    pidbox = {q.name: q for q in s.queues}["w1@h.celery.pidbox"]
    assert parse_rabbit_time(pidbox.idle_since) == datetime.datetime(
        2024, 5, 1, 10, 0, 0, 123000, tzinfo=datetime.timezone.utc).timestamp()
    # the ha-mode policy is still in the policy definition: read as a policy, nothing else
    assert {q.name: q for q in s.queues}["celery"].effective_policy["ha-mode"] == "all"


def test_real_3_10_8_metrics_collector_disabled_lists_no_connections():
    """Captured on the real 3.10.8 with disable_metrics_collector set while a client held a
    connection open: /connections answered [] and /channels 400."""
    doc = load("3.10.8", "metrics-collector-disabled")
    assert doc["/vhosts/%2F/connections"] == [] and doc["/vhosts/%2F/channels"]["status"] == 400
    server, queues, conns, pidbox = read_all(doc)
    assert isinstance(conns, ManagementError)
    assert str(conns).startswith(f"connections cannot be listed: {STATS_OFF}")
    assert server.overview["disable_stats"] is True and pidbox == ["w1@h"]
    assert [(q.name, q.ready, q.consumers) for q in queues][:2] == [
        ("celery", 3, None), ("celery.quorum", 1, None)]


def test_4_1_metrics_collector_disabled_is_not_an_empty_broker():
    """management_agent.disable_metrics_collector: /connections is [] whoever is connected
    and /channels answers 400: the reader says so instead of returning no connections."""
    doc = load("4.1", "metrics-collector-disabled")
    server, queues, conns, pidbox = read_all(doc)
    assert isinstance(conns, ManagementError) and conns.status == 400
    assert str(conns).startswith(f"connections cannot be listed: {STATS_OFF}")
    assert {q.name: q.consumers for q in queues} == dict.fromkeys(
        ["celery", "celery.quorum", "e5c92d88-5caa-33d4-a25d-c26f80dfa699",
         "w1@h.celery.pidbox"])
    assert {q.name: q.ready for q in queues}["celery"] == 1490
    assert pidbox == ["w1@h"]
    r = run_checks(snapshot(doc), Limits())
    why = skipped(r)
    assert why["CON001"].startswith(
        "connections not observed (not-checked): connections cannot be listed")
    assert why["RES004"].startswith(f"consumer counts unknown: {STATS_OFF}")
    assert why["QUE006"].startswith("the policies of 2 task queues unknown")
    assert why["QUE005"].startswith(f"consumer counts unknown: {STATS_OFF}")
    assert not any(f.code in ("QUE004", "QUE005", "QUE010") for f in r.findings)
    (f,) = [f for f in r.findings if f.code == "QUE001"]
    assert f.message == "1490 messages ready, consumers unknown"


def test_4_2_statistics_disabled_keeps_policies_and_connections():
    doc = load("4.2", "stats-disabled")
    server, queues, conns, _ = read_all(doc)
    assert all(q.effective_policy == {} for q in queues)  # 4.2.5+: policy fields come back
    assert len(conns) == 2 and all(c.idle_seconds is None for c in conns)
    r = run_checks(snapshot(doc), Limits())
    assert "QUE006" in r.ran and skipped(r)["CON001"].startswith(
        f"connection idle time unknown: {STATS_OFF}")


def test_4_2_user_limits_need_administrator_and_vhost_denial_is_404():
    server, _, _, _ = read_all(load("4.2", "monitoring"))
    refused = "GET /api/user-limits refused: on 4.2.9+ it needs the administrator tag"
    assert server.user_limits == {} and server.overview["unread"]["user_limits"] == refused
    why = skipped(run_checks(snapshot(load("4.2", "monitoring")), Limits()))
    assert why["POOL006"] == f"user limits unknown: {refused}"
    api = FixtureAPI(load("4.2", "vhost-denied"))
    with pytest.raises(ManagementError, match="not readable by the API user"):
        collect_pidbox_nodes(api, "/")
    assert [p for p, _ in api.calls] == ["/exchanges/%2F/celery.pidbox/bindings/source",
                                         "/exchanges/%2F/amq.direct"]
    # a missing pidbox exchange in a readable vhost is still "no worker ever started"
    doc = load("4.2", "monitoring")
    del doc["/exchanges/%2F/celery.pidbox/bindings/source"]
    doc["/exchanges/%2F/amq.direct"] = {"name": "amq.direct", "type": "direct"}
    assert collect_pidbox_nodes(FixtureAPI(doc), "/") == []


def test_errors_fixtures_name_authentication_and_authorisation_apart():
    """Wrong password: error "not_authorized" (with a z); a valid user lacking a tag:
    "not_authorised" (with an s). Both are HTTP 401 on every version; never 403."""
    for version in ("3.10.8", "3.11", "4.2"):
        errors = load(version, "errors")
        assert errors["wrong password"]["body"]["error"] == "not_authorized"
        assert errors["no management tag"]["body"] == {"error": "not_authorised",
                                                       "reason": "Not management user"}
        assert errors["management tag on /nodes"]["body"]["reason"] == "Not monitor user"
        assert {e["status"] for e in errors.values() if e["path"] != "/exchanges/%2F/nope"
                "/bindings/source"} <= {401, 404}
    assert load("3.10.8", "errors")["wrong password"]["body"]["reason"] == "Login failed"
    assert load("4.2", "errors")["wrong password"]["body"]["reason"] == "Not_Authorized"


# --- QUE011: the consumer timeout from the best source the server offers --------------------

def _eta(hours: float) -> str:
    return (datetime.datetime.now(datetime.timezone.utc)
            + datetime.timedelta(hours=hours)).isoformat()


def _scheduled(queue: str, hours: float, task_id: str) -> dict:
    return {"eta": _eta(hours), "request": {"id": task_id, "name": "t", "delivery_info": {
        "exchange": "", "routing_key": queue}}}


def test_consumer_timeout_from_broker_argument_or_assumed():
    tasks = [_scheduled("celery", 1.5, "a"), _scheduled("celery.long", 3, "b")]
    w = worker(tasks, queues=("celery", "celery.long"))
    # 3.12: `celery` reports consumer_timeout 3600000 (a policy), `celery.long` has
    # x-consumer-timeout 4 h: only the task on `celery` is beyond its timeout
    r = run_checks(snapshot(load("3.12", "monitoring"), nodes=[w]), Limits())
    (f,) = [x for x in r.findings if x.code == "QUE011"]
    assert [(t["id"], t["consumer_timeout"], t["source"]) for t in f.evidence["tasks"]] == [
        ("a", 3600.0, "broker")]
    assert "3600 s:" in f.message
    # the same arguments on 3.11 are ignored by the server: 1800 s assumed for both
    doc = load("3.12", "monitoring")
    doc["/overview"]["rabbitmq_version"] = "3.11.28"
    for c in doc["/consumers/%2F"]:
        del c["consumer_timeout"]
    r = run_checks(snapshot(doc, nodes=[w]), Limits())
    (f,) = [x for x in r.findings if x.code == "QUE011"]
    assert {t["id"]: t["source"] for t in f.evidence["tasks"]} == {
        "a": "assumed (--consumer-timeout)", "b": "assumed (--consumer-timeout)"}
    assert "(assumed)" in f.message
    # 3.12 without the consumers listing: the queue's own argument still counts
    doc = load("3.12", "monitoring")
    for c in doc["/consumers/%2F"]:
        del c["consumer_timeout"]
    r = run_checks(snapshot(doc, nodes=[w]), Limits())
    (f,) = [x for x in r.findings if x.code == "QUE011"]
    assert {t["id"]: (t["consumer_timeout"], t["source"]) for t in f.evidence["tasks"]} == {
        "a": (3600.0, "queue argument or policy")}
    # a node without consumer timeout reports "undefined": nothing to exceed
    doc = load("3.12", "monitoring")
    for c in doc["/consumers/%2F"]:
        c["consumer_timeout"] = "undefined"
    doc["/queues/%2F"]["items"] = [q for q in doc["/queues/%2F"]["items"]
                                   if q["name"] != "celery.long"]
    w2 = worker([_scheduled("celery", 5, "c")], queues=("celery",))
    r = run_checks(snapshot(doc, nodes=[w2]), Limits())
    assert not [x for x in r.findings if x.code == "QUE011"]


def test_consumer_timeout_and_delivery_limit_rules():
    v311, v312, v40 = (3, 11), (3, 12), (4, 0)
    args, pol = {"x-consumer-timeout": 7200000}, {"consumer-timeout": 3600000}
    assert queue_consumer_timeout_ms(args, pol, v312) == 3600000  # the smaller
    assert queue_consumer_timeout_ms(args, None, v312) == 7200000
    assert queue_consumer_timeout_ms(args, pol, v311) is None  # ignored before 3.12
    assert queue_consumer_timeout_ms({}, {}, None) is None
    assert quorum_delivery_limit({}, {}, v40) == 20
    assert quorum_delivery_limit({}, {}, (3, 13)) is None
    assert quorum_delivery_limit({"x-delivery-limit": 5}, {"delivery-limit": 10}, v40) == 5
    assert quorum_delivery_limit({"x-delivery-limit": -1}, {}, v40) is None
    assert quorum_delivery_limit({"x-delivery-limit": -1}, {"delivery-limit": 10}, v40) == 10
    assert rabbit_version("4.1.0-rc.1") == (4, 1) and rabbit_version(None) is None


# --- small shapes -----------------------------------------------------------------------

def test_parse_rabbit_time_formats():
    utc = datetime.datetime(2024, 5, 1, 10, 0, 0, tzinfo=datetime.timezone.utc).timestamp()
    assert parse_rabbit_time("2024-05-01T10:00:00.000+00:00") == utc
    assert parse_rabbit_time("2024-05-01T12:00:00.000+02:00") == utc
    assert parse_rabbit_time("2024-05-01T10:00:00.000Z") == utc
    assert parse_rabbit_time("2024-05-01 10:00:00") == utc  # 3.9 and older
    assert parse_rabbit_time("2024-05-01 9:05:03") == utc - 3297  # unpadded hour
    assert abs(parse_rabbit_time("2024-05-01 10:00:00:123") - utc) < 1  # now_to_str_ms
    for bad in (None, "", "undefined", 1714557600000, [], "yesterday"):
        assert parse_rabbit_time(bad) is None


def test_queue_from_api_odd_shapes():
    q = queue_from_api({"name": "x", "effective_policy_definition": [], "message_stats": [],
                        "members": ["a", "b"], "arguments": [], "consumers": "2"})
    assert q.effective_policy == {} and q.publish_rate == 0.0 and q.arguments == {}
    assert q.members == () and q.online == ()  # members without `online`: cannot judge
    assert q.consumers == 2 and q.ready is None
    assert queue_from_api({"name": "y", "effective_policy_definition": ""}).effective_policy == {}
    assert queue_from_api({"name": "z"}).effective_policy is None


def test_collect_peek_tolerates_odd_items():
    api = FixtureAPI({"/queues/%2F/celery/get": [
        {"payload_bytes": 12, "redelivered": True, "properties": {
            "content_type": "application/json", "priority": 3,
            "headers": {"task": "demo.t", "id": "1", "eta": None}}},
        {"payload_bytes": "x", "properties": []}, "garbage"]})
    (a, b) = collect_peek(api, "/", ["celery"], 2)["celery"]
    assert (a.task, a.id, a.eta, a.priority_step, a.size_bytes, a.redelivered) == (
        "demo.t", "1", None, 3, 12, True)
    assert (b.task, b.content_type, b.size_bytes, b.redelivered) == (None, None, 0, False)
