"""RabbitMQ collector: management HTTP API, with an AMQP (pika) fallback for queue depth.

Endpoints (RabbitMQ 3.10 .. 4.2; version by version in docs/compatibility.md): /api/overview,
/api/nodes, /api/vhost-limits, /api/user-limits, /api/queues/{vhost}?page=N&page_size=500&columns=
(with `columns` 3.13+ serve the detailed statistics, not the reduced set),
/api/vhosts/{vhost}/connections, /api/vhosts/{vhost}/channels, /api/consumers/{vhost},
/api/exchanges/{vhost}/{x}/bindings/source. Only GETs. Whatever a server version, a
statistics setting or the API user's tags leave out is None (unknown), never 0.

The fallback is `queue.declare(passive=True)` per known queue: it reads ready count and
consumers and changes nothing (a missing queue closes the channel with 404; a new channel is
opened for the next). It cannot see unacknowledged messages or rates: those are reported as
unknown (None), never as 0.
"""

from __future__ import annotations

import datetime
import re
import time
from typing import Any
from urllib.parse import quote

from celeryctl.collect.tls_errors import describe_tls_error
from celeryctl.knowledge import RABBIT_RATES_OFF, RABBIT_STATS_DISABLED, classify_queue
from celeryctl.snapshot import Connection, QueueDepth, RabbitServer
from celeryctl.urls import Endpoint

PAGE_SIZE = 500
# only what queue_from_api reads: a 3,000-queue listing stays small (no backing-queue status,
# no garbage-collection details, no per-channel consumer details)
QUEUE_COLUMNS = ",".join((
    "name", "vhost", "messages_ready", "messages_unacknowledged", "consumers", "type",
    "state", "node", "leader", "members", "online", "arguments",
    "effective_policy_definition", "message_bytes", "idle_since",
    "message_stats.publish_details.rate", "message_stats.deliver_get_details.rate",
    "message_stats.ack_details.rate"))
MAX_PAGES = 200  # 100,000 queues; beyond that the listing says it was cut


class ManagementError(Exception):
    def __init__(self, message: str, status: int | None = None, kind: str | None = None
                 ) -> None:
        super().__init__(message)
        self.status = status
        if kind is not None:
            self.kind = kind  # celeryctl.collect.errors states; classify() reads it


# The management API's 401/403 reasons (rabbit_mgmt_util): a wrong password and a missing
# tag or vhost permission are different problems with different fixes.
# The management API's 401 reasons (rabbit_web_dispatch_access_control) -> what would allow
# the request; matched in order. A wrong password and a missing tag or vhost permission are
# different problems with different fixes.
_REFUSALS = (
    (("only log in via localhost",), "this user may log in from localhost only "
     "(loopback_users); use another user"),
    (("access object", "access to object"), "RabbitMQ lets only administrators act on other "
     "users' objects (rabbitmqctl set_user_tags USER monitoring administrator, or rabbitmqctl "
     "close_connection on the node)"),
    (("not management user",), "the user needs the monitoring tag (rabbitmqctl set_user_tags "
     "USER monitoring)"),
    (("not monitor user",), "the user has the management tag only; needs the monitoring tag "
     "(rabbitmqctl set_user_tags USER monitoring)"),
    (("virtual host", "vhost", "access refused"), "the user has no permissions on this virtual "
     "host (rabbitmqctl set_permissions -p VHOST USER '^$' '^$' '^$' grants access without "
     "any)"),
)


def refusal(status: int, body: str, path: str, method: str = "GET") -> ManagementError:
    from celeryctl.collect.errors import AUTH_FAILED, DENIED

    reason = error = ""
    try:
        import json

        doc = json.loads(body)
        if isinstance(doc, dict):
            reason = str(doc.get("reason") or doc.get("error") or "")
            error = str(doc.get("error") or "")
    except ValueError:
        reason = body[:120]
    low = reason.lower()
    denied = f"permission denied: {method} {path} refused (HTTP {status} \"{reason}\")"
    for needles, fix in _REFUSALS:
        if any(n in low for n in needles):
            return ManagementError(f"{denied}: {fix}", status, DENIED)
    # RabbitMQ 3.10-4.2 spell the two failures differently: "not_authorized" (z) is a failed
    # login, "not_authorised" (s) a known user lacking a right
    if "not administrator" in low or "not policymaker" in low or status == 403 or \
            error == "not_authorised":
        return ManagementError(denied, status, DENIED)
    return ManagementError(f"authentication failed (HTTP {status}"
                           f"{': ' + chr(34) + reason + chr(34) if reason else ''}: wrong user "
                           f"name or password)", status, AUTH_FAILED)


class ManagementAPI:
    """A requests Session bound to one API base URL, with (connect, read) timeouts on every
    call and no retries. The read timeout is per recv (a trickling server never trips it):
    the whole-operation deadline is the caller's (collect/bounded.py), and `abort()` is its
    cancel — it shuts down every socket the session opened, in use or not."""

    def __init__(self, ep: Endpoint, timeout: float) -> None:
        import weakref

        import requests
        from requests.adapters import HTTPAdapter

        self.ep = ep
        self.timeout = (timeout, timeout)
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies from the environment: talk to the host
        adapter = HTTPAdapter(max_retries=0)
        self._conns: weakref.WeakSet = weakref.WeakSet()
        self._aborted = False
        adapter.poolmanager.pool_classes_by_scheme = _tracking_pools(self._conns)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Like RabbitMQ's own clients, no user name means the default guest/guest. As UTF-8
        # bytes: RabbitMQ decodes Basic credentials as UTF-8, requests encodes str as latin-1
        self.session.auth = ((ep.username or "guest").encode("utf-8"),
                             (ep.password if ep.password is not None else "guest").encode("utf-8"))
        # https: the CA from --rabbitmq-api-ca (else the system's), never verify=False
        from celeryctl.tls import requests_kwargs

        tls = requests_kwargs(ep.tls)
        self.session.verify = tls["verify"]
        if "cert" in tls:
            self.session.cert = tls["cert"]
        host = f"[{ep.host}]" if ":" in ep.host else ep.host
        prefix = "/" + ep.path.strip("/") if ep.path.strip("/") else ""
        if prefix.endswith("/api"):
            prefix = prefix[:-4]
        self.base = f"{ep.scheme}://{host}:{ep.port}{prefix}/api"

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        import requests

        from celeryctl.collect.errors import UNREACHABLE

        if self._aborted:
            raise ManagementError("abandoned at its deadline", kind=UNREACHABLE)
        try:
            resp = self.session.get(self.base + path, params=params, timeout=self.timeout)
        except requests.exceptions.ConnectTimeout:
            raise ManagementError("connect timed out", kind=UNREACHABLE) from None
        except requests.exceptions.ReadTimeout:
            raise ManagementError("no answer (read timed out)", kind=UNREACHABLE) from None
        except requests.exceptions.SSLError as exc:
            raise ManagementError(api_tls_error(exc), kind=UNREACHABLE) from None
        except requests.exceptions.ConnectionError as exc:
            tls = describe_tls_error(exc, fix=API_TLS_FIX)
            raise ManagementError(tls or _lost(exc) or "cannot connect",
                                  kind=UNREACHABLE) from None
        except requests.exceptions.RequestException as exc:
            raise ManagementError(_lost(exc) or f"{type(exc).__name__}",
                                  kind=UNREACHABLE) from None
        if resp.status_code in (401, 403):
            raise refusal(resp.status_code, resp.text, path)
        if resp.status_code == 404:
            raise ManagementError(f"GET /api{path}: not found (404) — no such virtual host or "
                                  f"queue, or not a RabbitMQ management API", 404, UNREACHABLE)
        if resp.status_code >= 400:
            raise ManagementError(f"HTTP {resp.status_code} "
                                  f"on {path}", resp.status_code)
        try:
            return resp.json()
        except ValueError:
            raise ManagementError(f"{path} did not return "
                                  f"JSON (is this the management port?)") from None

    def post(self, path: str, body: dict[str, Any]) -> Any:
        import requests

        try:
            resp = self.session.post(self.base + path, json=body, timeout=self.timeout)
        except requests.exceptions.SSLError as exc:
            raise ManagementError(f"{api_tls_error(exc)} on POST {path}") from None
        except requests.exceptions.RequestException as exc:
            raise ManagementError(f"{type(exc).__name__} on POST {path}") from None
        if resp.status_code in (401, 403):
            raise refusal(resp.status_code, resp.text, path, "POST")
        if resp.status_code >= 400:
            raise ManagementError(f"HTTP {resp.status_code} on POST {path}", resp.status_code)
        return resp.json()

    def delete(self, path: str, headers: dict[str, str] | None = None) -> None:
        """DELETE (purge a queue's contents, close a connection): the only writes celeryctl
        makes through the API, and only from the guarded commands."""
        import requests

        try:
            resp = self.session.delete(self.base + path, timeout=self.timeout,
                                       headers=headers or {})
        except requests.exceptions.SSLError as exc:
            raise ManagementError(f"{api_tls_error(exc)} on DELETE {path}") from None
        except requests.exceptions.RequestException as exc:
            raise ManagementError(f"{type(exc).__name__} on DELETE {path}") from None
        if resp.status_code in (401, 403):
            raise refusal(resp.status_code, resp.text, path, "DELETE")
        if resp.status_code >= 400:
            raise ManagementError(f"HTTP {resp.status_code} on DELETE {path}", resp.status_code)

    def close(self) -> None:
        self.session.close()

    def abort(self) -> None:
        """Cancel an abandoned call (collect/bounded.py): shut every socket of this session
        down — a thread blocked reading from it wakes with an error — then close it. Later
        calls fail at once (the abandoned thread's next read must not open a new one)."""
        import socket

        self._aborted = True
        for conn in list(self._conns):
            sock = getattr(conn, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.close()


def _lost(exc: BaseException) -> str | None:
    """What a requests connection error was, in words: refused, or reset/closed by the
    server before or in the middle of its reply (connected, then lost — not "cannot
    connect")."""
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "reset by peer" in text:
        return ("connection reset by the server in the middle of its reply"
                if "broken" in text else "connection reset by the server")
    if "remote end closed" in text or "connection broken" in text or "aborted" in text:
        return "connection closed by the server before its reply was complete"
    return None


def _tracking_pools(conns) -> dict[str, type]:
    """urllib3 pool classes that remember every connection they open (weakly), so
    `ManagementAPI.abort` can reach the socket of a request still in flight."""
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class _HTTP(HTTPConnectionPool):
        def _new_conn(self):
            conn = super()._new_conn()
            conns.add(conn)
            return conn

    class _HTTPS(HTTPSConnectionPool):
        def _new_conn(self):
            conn = super()._new_conn()
            conns.add(conn)
            return conn

    return {"http": _HTTP, "https": _HTTPS}


API_TLS_FIX = {
    "verify": "give the CA that signed the management API's certificate with "
              "--rabbitmq-api-ca FILE (env CELERYCTL_RABBITMQ_API_CA, profile rabbitmq_api_ca)",
    "client": "the management API requires a client certificate: set rabbitmq_api_cert and "
              "rabbitmq_api_key (profile) or CELERYCTL_RABBITMQ_API_CERT/_KEY",
}


def api_tls_error(exc: BaseException) -> str:
    return describe_tls_error(exc, fix=API_TLS_FIX) or "TLS handshake failed"


def vq(vhost: str) -> str:
    return quote(vhost, safe="")


def collect_rabbit_server(api: ManagementAPI) -> RabbitServer:
    """`/api/overview` + `/api/nodes` + `/api/vhost-limits` + `/api/user-limits` -> versions,
    cluster name, node resources, limits. Only /api/overview is required: the other reads may
    be refused to the API user, and each refusal is kept in `overview["unread"]` (read -> why)
    so that the checks needing it are skipped with that reason instead of seeing "no nodes".

    Shapes (rabbitmq-server, deps/rabbitmq_management/src/rabbit_mgmt_wm_overview.erl,
    identical 3.10.8 .. 4.2.9 apart from added keys): `listeners` and `node` only for users
    tagged monitoring/administrator, and only while statistics are on; `disable_stats` and
    `enable_queue_totals` always (3.10+). With statistics disabled there is no
    `message_stats`, `queue_totals` or `listeners`. /api/nodes needs the monitoring tag
    (401 "Not monitor user" otherwise) and, with statistics disabled, lists only name, type
    and running (rabbit_mgmt_wm_nodes.erl:all_nodes_raw). 4.0+ report `sockets_used` and
    `sockets_total` as 0 ("unused since RabbitMQ 4.0", rabbit_mgmt_external_stats.erl): dropped.
    """
    from celeryctl.collect.errors import AUTH_FAILED, UNREACHABLE

    overview = api.get("/overview")
    if not isinstance(overview, dict):
        raise ManagementError("/overview did not return an object")
    unread: dict[str, str] = {}

    def gone(exc: ManagementError) -> None:
        if getattr(exc, "kind", None) in (UNREACHABLE, AUTH_FAILED):
            raise exc  # the API went away mid-way: the whole source failed

    try:
        whoami = api.get("/whoami")  # the account's name and tags (3.x and 4.x alike)
    except ManagementError as exc:
        gone(exc)
        whoami = None
    nodes_refused = False
    try:
        nodes = api.get("/nodes")
    except ManagementError as exc:
        gone(exc)
        # /api/overview just accepted the same credentials: a 401 here is the missing tag
        nodes, nodes_refused = [], exc.status == 401
        unread["nodes"] = ("GET /api/nodes refused: the API user lacks the monitoring tag"
                           if nodes_refused else f"GET /api/nodes: {exc}")
    try:
        limits = {x.get("vhost"): _obj(x.get("value"))
                  for x in _list(api.get("/vhost-limits")) if isinstance(x, dict)}
    except ManagementError as exc:
        gone(exc)
        limits = {}
        unread["vhost_limits"] = f"GET /api/vhost-limits: {exc}"
    try:
        user_limits = {x.get("user"): _obj(x.get("value"))
                       for x in _list(api.get("/user-limits")) if isinstance(x, dict)}
    except ManagementError as exc:
        gone(exc)
        user_limits = {}  # before 3.8.10; on 4.2.9+ a user without the administrator tag
        unread["user_limits"] = ("GET /api/user-limits refused: on 4.2.9+ it needs the "
                                 "administrator tag" if exc.status == 401
                                 else f"GET /api/user-limits: {exc}")
    stats_off = overview.get("disable_stats") is True
    if "listeners" not in overview:
        unread["listeners"] = (RABBIT_STATS_DISABLED if stats_off else
                               "the API user lacks the monitoring tag (/api/overview lists "
                               "listeners to monitoring and administrator users only)")
    tags = whoami.get("tags") if isinstance(whoami, dict) else None
    if isinstance(tags, str):  # before 3.9: "monitoring,management"
        tags = [t for t in tags.split(",") if t]
    if tags is not None:  # the account's own tags say it; else infer from what was served
        monitor: bool | None = bool({"monitoring", "administrator"} & set(tags))
    elif "listeners" in overview or nodes:
        monitor = True
    elif nodes_refused or overview.get("disable_stats") is False:
        monitor = False
    else:
        monitor = None  # cannot tell
    keep = ("name", "running", "type", "uptime", "mem_used", "mem_limit", "mem_alarm",
            "disk_free", "disk_free_limit", "disk_free_alarm", "fd_used", "fd_total",
            "sockets_used", "sockets_total", "proc_used", "proc_total", "partitions",
            "run_queue", "processors")
    kept = []
    for n in _list(nodes):
        if not isinstance(n, dict):
            continue
        row = {k: n.get(k) for k in keep if k in n}
        if row.get("sockets_total") == 0:  # 4.0+: no socket limit any more, not "0 of 0"
            row.pop("sockets_total")
            row.pop("sockets_used", None)
        kept.append(row)
    return RabbitServer(
        version=overview.get("rabbitmq_version"),
        cluster_name=overview.get("cluster_name"),
        management_version=overview.get("management_version"),
        overview={k: overview.get(k) for k in ("rabbitmq_version", "erlang_version",
                                               "cluster_name", "node", "rates_mode",
                                               "object_totals", "queue_totals",
                                               "management_version", "disable_stats",
                                               "enable_queue_totals", "default_queue_type")}
        | {"unread": unread, "api_user_is_monitor": monitor},
        listeners=[{k: x.get(k) for k in ("node", "protocol", "ip_address", "port")}
                   for x in _list(overview.get("listeners")) if isinstance(x, dict)],
        nodes=kept,
        vhost_limits=limits,
        user_limits=user_limits,
        user={"name": whoami.get("name"), "tags": list(tags or [])}
        if isinstance(whoami, dict) else None,
    )


def collect_rabbit_queues(api: ManagementAPI, vhost: str) -> tuple[list[QueueDepth], list[str]]:
    """`GET /api/queues/{vhost}?page=N&page_size=500&columns=...` until the last page.

    `columns` also keeps 3.13+ on the detailed statistics: without it, once the
    `detailed_queues_endpoint` feature flag is on, this endpoint serves the reduced "basic"
    set, which drops `idle_since` (rabbit_mgmt_wm_queues.erl:augment/1,
    rabbit_mgmt_format.erl:format_queue_basic_stats). `enable_queue_totals=true` is ignored
    while statistics are on; with them disabled it adds `messages`, `messages_ready` and
    `messages_unacknowledged` (no `consumers`, no rates) where the listing would otherwise
    have no counts at all (rabbit_mgmt_wm_queues.erl:basic/1, 3.10.8 .. 4.2.9)."""
    items: list[dict[str, Any]] = []
    notes: list[str] = []
    page = 1
    while True:
        # sorted by name, so pages neither overlap nor skip while queues come and go
        data = api.get(f"/queues/{vq(vhost)}", params={"page": page, "page_size": PAGE_SIZE,
                                                       "columns": QUEUE_COLUMNS,
                                                       "sort": "name",
                                                       "enable_queue_totals": "true"})
        if isinstance(data, list):  # server without pagination support
            items.extend(data)
            break
        items.extend(_list(_obj(data).get("items")))
        page_count = _int(_obj(data).get("page_count")) or 1
        if page >= page_count:
            break
        if page >= MAX_PAGES:
            notes.append(f"queue listing cut after {MAX_PAGES * PAGE_SIZE} queues")
            break
        page += 1
    seen: set[str] = set()
    unique = []
    for q in items:  # a queue created between two pages can shift the next one: dedupe
        if isinstance(q, dict) and q.get("name") not in seen:
            seen.add(q.get("name"))
            unique.append(q)
    return [queue_from_api(q) for q in unique], notes


def queue_from_api(q: dict[str, Any]) -> QueueDepth:
    """One item of /api/queues/{vhost}. A field the server did not send is None (unknown),
    never 0: with statistics disabled there are no rates and no consumers, and without
    queue totals no counts; `effective_policy_definition` is absent there before 4.2.5
    (rabbitmq-server commit 049eb675e4) and `[]` or `""` for "no policy" in some paths
    before 4.2.6 (commit 3b6301942c): both mean {}. Inside a present `message_stats`, a
    missing `<key>_details` is 0: "only fields for which some activity has taken place will
    appear" (http-api-reference.md)."""
    raw_stats = q.get("message_stats")
    stats = raw_stats if isinstance(raw_stats, dict) else {}  # [] when columns filtered all

    def rate(key: str) -> float | None:
        d = stats.get(f"{key}_details")
        if isinstance(d, dict) and isinstance(d.get("rate"), (int, float)):
            return float(d["rate"])
        return 0.0 if isinstance(raw_stats, (dict, list)) else None

    policy = q.get("effective_policy_definition")
    name = str(q.get("name", ""))
    consumers = _int(q.get("consumers"))
    members = q.get("members") if isinstance(q.get("members"), list) else []
    online = q.get("online")
    if not isinstance(online, list):  # members without `online`: cannot tell who is offline
        members, online = [], []
    return QueueDepth(
        name=name, broker="rabbitmq", vhost=q.get("vhost"),
        ready=_int(q.get("messages_ready")), unacked=_int(q.get("messages_unacknowledged")),
        consumers=consumers, consumers_source="broker" if consumers is not None else None,
        publish_rate=rate("publish"), deliver_rate=rate("deliver_get"), ack_rate=rate("ack"),
        internal=classify_queue(name) != "task", source="management-api",
        discovered_by=("broker",), type=_str(q.get("type")), state=_str(q.get("state")),
        node=_str(q.get("leader")) or _str(q.get("node")),
        members=tuple(str(m) for m in members),
        online=tuple(str(m) for m in online),
        arguments=_obj(q.get("arguments")),
        effective_policy=(policy if isinstance(policy, dict) else
                          {} if policy in ([], "") else None),  # type: ignore[arg-type]
        messages_bytes=_int(q.get("message_bytes")),
        idle_since=_str(q.get("idle_since")),
    )


def rates_unknown_reason(server: RabbitServer | None) -> str | None:
    """Why the queue listing has no message rates, when the server says so."""
    overview = server.overview if server is not None else {}
    if overview.get("disable_stats") is True:
        return RABBIT_STATS_DISABLED
    if overview.get("rates_mode") == "none":
        return RABBIT_RATES_OFF
    return None


def collect_pidbox_nodes(api: ManagementAPI, vhost: str, control_exchange: str = "celery"
                         ) -> list[str]:
    """Worker node names from the bindings of the `celery.pidbox` fanout exchange
    (destinations `<node>.celery.pidbox`). A missing exchange means no worker ever started.

    A 404 is confirmed against `amq.direct`, which every virtual host has: 4.2.9+ answer 404
    "Not Found" (not 401) to a user without permissions on the virtual host
    (rabbit_web_dispatch_access_control.erl:user_matches_vhost), and that must not read as
    "no worker"."""
    exchange = f"{control_exchange}.pidbox"
    try:
        bindings = api.get(f"/exchanges/{vq(vhost)}/{quote(exchange, safe='')}/bindings/source")
    except ManagementError as exc:
        if exc.status == 404:
            try:
                api.get(f"/exchanges/{vq(vhost)}/amq.direct")
            except ManagementError as exc2:
                raise ManagementError(f"virtual host {vhost!r} not readable by the API user "
                                      f"(or missing): {exc2}", exc2.status,
                                      getattr(exc2, "kind", None)) from None
            return []
        raise
    suffix = f".{exchange}"
    return sorted({b["destination"][: -len(suffix)] for b in _list(bindings)
                   if isinstance(b, dict) and str(b.get("destination", "")).endswith(suffix)})


def collect_rabbit_connections(api: ManagementAPI, vhost: str, now: float | None = None
                               ) -> list[Connection]:
    """`/api/vhosts/{vhost}/connections` + `/channels` (idle from channels' `idle_since`) +
    `/api/consumers/{vhost}` (a worker's pidbox consumer names its connection exactly).

    With statistics disabled, /channels and /consumers answer 400 ("Stats in management UI
    are disabled on this node", rabbit_mgmt_wm_channels_vhost.erl, rabbit_mgmt_wm_consumers.erl)
    and /connections comes from the statistics database: complete under
    management.disable_stats, but empty under management_agent.disable_metrics_collector,
    whose nodes never join the database's process group (rabbit_mgmt_agent_sup.erl,
    rabbit_mgmt_db.erl:delegate_invoke). So no channels and no connections is an error, not
    "nobody is connected"; connections without channels get idle None and
    `raw["channels_error"]`. Users without the monitoring tag see only their own
    connections, channels and consumers (rabbit_mgmt_util.erl:filter_user). On 3.12+ each
    consumer carries the effective `consumer_timeout` (ms, queue argument/policy else the
    node's setting; "undefined" when disabled, rabbit_mgmt_data.erl:augment_consumer): kept
    per queue in `raw["consumer_timeouts_ms"]`."""
    now = time.time() if now is None else now
    conns = [c for c in _list(api.get(f"/vhosts/{vq(vhost)}/connections")) if isinstance(c, dict)]
    try:
        channels = [ch for ch in _list(api.get(f"/vhosts/{vq(vhost)}/channels"))
                    if isinstance(ch, dict)]
        channels_error = None
    except ManagementError as exc:
        channels = []
        channels_error = RABBIT_STATS_DISABLED if exc.status == 400 else \
            f"GET /api/vhosts/{{vhost}}/channels: {exc}"
        if not conns:
            raise ManagementError(f"connections cannot be listed: {channels_error} (the "
                                  f"connection list is then empty whoever is connected)",
                                  exc.status, getattr(exc, "kind", None) or "not-checked"
                                  ) from None
    try:
        consumers = [c for c in _list(api.get(f"/consumers/{vq(vhost)}")) if isinstance(c, dict)]
        consumers_known = True
    except ManagementError:
        consumers, consumers_known = [], False
    idle: dict[str, list[float | None]] = {}
    for ch in channels:
        cname = _obj(ch.get("connection_details")).get("name")
        since = parse_rabbit_time(ch.get("idle_since"))
        idle.setdefault(cname, []).append(None if since is None else max(0.0, now - since))
    owner: dict[str, str] = {}
    per_conn: dict[str, int] = {}
    timeouts: dict[str, dict[str, int | None]] = {}
    for c in consumers:
        qname = str(_obj(c.get("queue")).get("name", ""))
        cname = _obj(c.get("channel_details")).get("connection_name")
        if cname:
            per_conn[cname] = per_conn.get(cname, 0) + 1
            if "consumer_timeout" in c:  # 3.12+
                timeouts.setdefault(cname, {})[qname] = _int(c["consumer_timeout"])
        if cname and qname.endswith(".celery.pidbox") and not qname.endswith(".reply.celery.pidbox"):
            owner[cname] = qname[: -len(".celery.pidbox")]
    out = []
    for c in conns:
        name = c.get("name", "")
        chan_idle = idle.get(name)
        if chan_idle:
            conn_idle = None if any(i is None for i in chan_idle) else min(chan_idle)
            conn_idle = 0.0 if conn_idle is None else conn_idle
        else:
            conn_idle = None
        connected_at = c.get("connected_at")
        props = _obj(c.get("client_properties"))
        extra: dict[str, Any] = {"product": props.get("product"),
                                 "product_version": props.get("product_version")}
        if channels_error:
            extra["channels_error"] = channels_error
        if name in timeouts:
            extra["consumer_timeouts_ms"] = timeouts[name]
        out.append(Connection(
            broker="rabbitmq",
            address=f"{c.get('peer_host')}:{c.get('peer_port')}",
            name=props.get("connection_name") or None, id=name,
            age_seconds=max(0.0, now - connected_at / 1000.0)
            if isinstance(connected_at, (int, float)) and connected_at else None,
            idle_seconds=conn_idle, command=c.get("state"), state=c.get("state"),
            user=c.get("user"), vhost=c.get("vhost"), channels=_int(c.get("channels")),
            heartbeat_seconds=_int(c.get("timeout")),
            role="worker" if name in owner else (
                "celeryctl" if str(props.get("connection_name") or "").startswith("celeryctl")
                else None),
            consumers=per_conn.get(name, 0) if consumers_known else None,
            worker=owner.get(name), worker_match="exact" if name in owner else None,
            raw={k: c.get(k) for k in ("name", "node", "protocol", "auth_mechanism",
                                       "recv_oct", "send_oct", "recv_cnt", "send_cnt",
                                       "frame_max", "channel_max", "ssl")} | extra,
        ))
    return out


_OLD_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d{1,2}:\d\d:\d\d)(?::\d{3})?$")


def parse_rabbit_time(value: Any) -> float | None:
    """`idle_since`: 3.10+ `calendar:system_time_to_rfc3339(ms, [{unit, millisecond}])`, i.e.
    RFC 3339 with ms and the node's local offset ('2024-05-01T12:00:00.123+02:00');
    3.9 and older 'YYYY-MM-DD H:MM:SS' (hour not zero-padded, taken as UTC; `now_to_str_ms`
    appends ':mmm'). Anything else (absent, "undefined") is None."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        dt = datetime.datetime.fromisoformat(text)
    except ValueError:
        m = _OLD_TIME.match(text)
        if not m:
            return None
        try:
            dt = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp()


# --- AMQP fallback -----------------------------------------------------------------------

def pika_parameters(ep: Endpoint, timeout: float, vhost: str | None = None,
                    name: str = "celeryctl (read-only)"):
    import pika

    params = pika.ConnectionParameters(
        host=ep.host, port=ep.port, virtual_host=vhost if vhost is not None else ep.vhost,
        credentials=pika.PlainCredentials(ep.username or "guest",
                                          ep.password if ep.password is not None else "guest"),
        connection_attempts=1, retry_delay=0, socket_timeout=timeout,
        stack_timeout=timeout, blocked_connection_timeout=timeout, heartbeat=0,
        client_properties={"connection_name": name},
    )
    if ep.tls is not None:  # the same trust as remote control's py-amqp (celeryctl/tls.py)
        from celeryctl.tls import amqp_server_hostname, ssl_context

        params.ssl_options = pika.SSLOptions(ssl_context(ep.tls, ep.host),
                                             amqp_server_hostname(ep.tls, ep.host))
    elif ep.scheme == "amqps":  # an Endpoint not resolved by targets: verified, system CAs
        import ssl

        params.ssl_options = pika.SSLOptions(ssl.create_default_context(), ep.host)
    return params


def amqp_connect(endpoints: tuple[Endpoint, ...], timeout: float, vhost: str | None,
                 name: str = "celeryctl (read-only)"):
    import pika

    from celeryctl.collect.errors import classify

    errors = []
    kind = None
    for ep in endpoints:
        try:
            return pika.BlockingConnection(pika_parameters(ep, timeout, vhost, name)), ep
        except Exception as exc:  # noqa: BLE001
            described = describe_amqp_error(exc)
            kind, why = described if described else classify(exc)
            errors.append(f"{ep.address}: {why}" if len(endpoints) > 1 else why)
    err = ConnectionError("; ".join(errors))
    err.kind = kind or "failed"  # type: ignore[attr-defined]
    raise err


def describe_amqp_error(exc: BaseException) -> tuple[str, str] | None:
    """(state, text) for pika's connection errors, which wrap the real cause."""
    import pika.exceptions as pe

    from celeryctl.collect.errors import AUTH_FAILED, DENIED, UNREACHABLE

    tls = describe_tls_error(exc)
    if tls is not None:
        return UNREACHABLE, tls
    if isinstance(exc, (pe.ProbableAuthenticationError, pe.AuthenticationError)):
        return AUTH_FAILED, "authentication failed (ACCESS_REFUSED: wrong user name or password)"
    if isinstance(exc, pe.ProbableAccessDeniedError):
        return DENIED, ("permission denied: access to the virtual host refused (no permissions "
                        "on it for this user, or no such vhost); needs `rabbitmqctl "
                        "set_permissions -p VHOST USER ...`")
    if isinstance(exc, pe.AMQPConnectionError):
        inner = exc.args[0] if exc.args else None
        if inner is not None and isinstance(inner, BaseException):
            why = describe_amqp_error(inner)
            if why:
                return why
        # pika wraps socket errors in its connector's own exceptions: read the text
        text = repr(exc).lower()
        if "refused" in text:
            return UNREACHABLE, "connection refused"
        if "timeout" in text or "timed out" in text:
            return UNREACHABLE, "timed out (the broker did not complete the AMQP handshake)"
        if "reset" in text:
            return UNREACHABLE, "connection reset during the AMQP handshake"
        if "stream connection lost" in text or "unexpected eof" in text:
            return UNREACHABLE, "connection lost during the AMQP handshake"
        return UNREACHABLE, "cannot connect"
    return None


def collect_amqp_queues(endpoints: tuple[Endpoint, ...], timeout: float, vhost: str,
                        names: list[str]) -> list[QueueDepth]:
    """Passive declare of each known queue: ready (message_count) and consumers — within
    `timeout` for the whole read (pika bounds the handshake, `stack_timeout`, but waits for a
    declare's reply forever), else `bounded.NoAnswer`."""
    from celeryctl.collect.bounded import call

    return call("amqp-declare", lambda: _amqp_queues(endpoints, timeout, vhost, names),
                f"AMQP {endpoints[0].address}", timeout)


def _amqp_queues(endpoints: tuple[Endpoint, ...], timeout: float, vhost: str,
                 names: list[str]) -> list[QueueDepth]:
    import pika.exceptions as pe

    conn, _ep = amqp_connect(endpoints, timeout, vhost)
    out = []
    try:
        channel = conn.channel()
        for name in names:
            try:
                ok = channel.queue_declare(queue=name, passive=True)
                out.append(QueueDepth(
                    name=name, broker="rabbitmq", vhost=vhost,
                    ready=ok.method.message_count, unacked=None,
                    consumers=ok.method.consumer_count, consumers_source="broker",
                    internal=classify_queue(name) != "task", source="amqp",
                ))
            except pe.ChannelClosedByBroker as exc:
                missing = exc.reply_code == 404
                out.append(QueueDepth(
                    name=name, broker="rabbitmq", vhost=vhost, exists=not missing,
                    ready=0 if missing else None, consumers=0 if missing else None,
                    internal=classify_queue(name) != "task", source="amqp",
                    error=None if missing else f"passive declare refused: {exc.reply_text}",
                ))
                channel = conn.channel()
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
    return out


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _obj(v: Any) -> dict[str, Any]:
    """A JSON object, or {}: Erlang renders an empty proplist as `[]` (e.g. a consumer's
    `channel_details` while its connection is being registered, rabbit_mgmt_data.erl)."""
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def collect_peek(api: ManagementAPI, vhost: str, queues: list[str], per_queue: int
                 ) -> dict[str, list]:
    """`POST /api/queues/{vhost}/{name}/get` with `ackmode=ack_requeue_true`: the messages go
    back to the queue, but RabbitMQ marks them redelivered, and on quorum queues 4.0 .. 4.2
    each return counts toward the delivery limit (default 20 since 4.0: then the message is
    dead-lettered or dropped); 3.12.7+ return them with an explicit `basic.nack` requeue
    (rabbit_mgmt_wm_queue_get.erl). Only used with `doctor --peek`. Payloads are never
    decoded: content type and headers come from the properties. Reply items have the same
    keys 3.10.8 .. 4.2.9 (`payload_bytes, redelivered, exchange, routing_key, message_count,
    properties, payload, payload_encoding`)."""
    from celeryctl.snapshot import MessageSample

    out: dict[str, list] = {}
    for name in queues:
        resp = api.post(f"/queues/{vq(vhost)}/{quote(name, safe='')}/get",
                        {"count": per_queue, "ackmode": "ack_requeue_true",
                         "encoding": "base64", "truncate": 1024})
        for m in _list(resp):
            if not isinstance(m, dict):
                continue
            props = _obj(m.get("properties"))
            headers = _obj(props.get("headers"))
            out.setdefault(name, []).append(MessageSample(
                queue=name, priority_step=_int(props.get("priority")),
                content_type=_str(props.get("content_type")),
                content_encoding=_str(props.get("content_encoding")),
                task=_str(headers.get("task")), id=_str(headers.get("id")),
                eta=_str(headers.get("eta")),
                redelivered=bool(m.get("redelivered")),
                size_bytes=_int(m.get("payload_bytes")) or 0))
    return out
