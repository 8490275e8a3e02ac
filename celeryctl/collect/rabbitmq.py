"""RabbitMQ collector: management HTTP API, with an AMQP (pika) fallback for queue depth.

Endpoints (RabbitMQ 3.10 .. 4.x, see celery-internals.md §6): /api/overview, /api/nodes,
/api/queues/{vhost}?page=N&page_size=500 (the per-vhost form keeps full fields on 3.13+, where
/api/queues is reduced), /api/vhosts/{vhost}/connections, /api/vhosts/{vhost}/channels,
/api/consumers/{vhost}, /api/exchanges/{vhost}/{x}/bindings/source. Only GETs.

The fallback is `queue.declare(passive=True)` per known queue: it reads ready count and
consumers and changes nothing (a missing queue closes the channel with 404; a new channel is
opened for the next). It cannot see unacknowledged messages or rates: those are reported as
unknown (None), never as 0.
"""

from __future__ import annotations

import datetime
import time
from typing import Any
from urllib.parse import quote

from celeryctl.collect.tls_errors import describe_tls_error
from celeryctl.knowledge import classify_queue
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
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ManagementAPI:
    """A requests Session bound to one API base URL, with (connect, read) timeouts on every
    call and no retries."""

    def __init__(self, ep: Endpoint, timeout: float) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.ep = ep
        self.timeout = (timeout, timeout)
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies from the environment: talk to the host
        adapter = HTTPAdapter(max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Like RabbitMQ's own clients, no user name means the default guest/guest.
        self.session.auth = (ep.username or "guest",
                             ep.password if ep.password is not None else "guest")
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

        try:
            resp = self.session.get(self.base + path, params=params, timeout=self.timeout)
        except requests.exceptions.ConnectTimeout:
            raise ManagementError("connect timed out") from None
        except requests.exceptions.ReadTimeout:
            raise ManagementError("no answer (read timed out)"
                                  ) from None
        except requests.exceptions.SSLError as exc:
            raise ManagementError(api_tls_error(exc)) from None
        except requests.exceptions.ConnectionError as exc:
            text = str(exc).lower()
            why = "connection refused" if "refused" in text else "cannot connect"
            tls = describe_tls_error(exc, fix=API_TLS_FIX)
            raise ManagementError(tls or f"{why}") from None
        except requests.exceptions.RequestException as exc:
            raise ManagementError(f"{type(exc).__name__}"
                                  ) from None
        if resp.status_code == 401:
            raise ManagementError(
                "authentication failed (HTTP 401: wrong "
                "user name or password)", 401)
        if resp.status_code == 403:
            raise ManagementError("forbidden (HTTP 403: the "
                                  "user lacks the monitoring/management tag)", 403)
        if resp.status_code == 404:
            raise ManagementError(f"{path} not found (404)", 404)
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
        if resp.status_code >= 400:
            raise ManagementError(f"HTTP {resp.status_code} on DELETE {path}", resp.status_code)

    def close(self) -> None:
        self.session.close()


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
    """`/api/overview` + `/api/nodes` -> versions, cluster name, node resources."""
    overview = api.get("/overview")
    nodes = api.get("/nodes")
    try:
        limits = {x.get("vhost"): x.get("value") or {} for x in api.get("/vhost-limits") or []}
    except ManagementError:
        limits = {}  # older servers / users without the policymaker tag
    try:
        user_limits = {x.get("user"): x.get("value") or {}
                       for x in api.get("/user-limits") or []}
    except ManagementError:
        user_limits = {}  # before 3.8.10, or a user without the administrator tag
    keep = ("name", "running", "type", "uptime", "mem_used", "mem_limit", "mem_alarm",
            "disk_free", "disk_free_limit", "disk_free_alarm", "fd_used", "fd_total",
            "sockets_used", "sockets_total", "proc_used", "proc_total", "partitions",
            "run_queue", "processors")
    return RabbitServer(
        version=overview.get("rabbitmq_version"),
        cluster_name=overview.get("cluster_name"),
        management_version=overview.get("management_version"),
        overview={k: overview.get(k) for k in ("rabbitmq_version", "erlang_version",
                                               "cluster_name", "node", "rates_mode",
                                               "object_totals", "queue_totals",
                                               "management_version")},
        listeners=[{k: x.get(k) for k in ("node", "protocol", "ip_address", "port")}
                   for x in overview.get("listeners") or [] if isinstance(x, dict)],
        nodes=[{k: n.get(k) for k in keep if k in n} for n in nodes or []],
        vhost_limits=limits,
        user_limits=user_limits,
    )


def collect_rabbit_queues(api: ManagementAPI, vhost: str) -> tuple[list[QueueDepth], list[str]]:
    """`GET /api/queues/{vhost}?page=N&page_size=500` until the last page."""
    items: list[dict[str, Any]] = []
    notes: list[str] = []
    page = 1
    while True:
        # sorted by name, so pages neither overlap nor skip while queues come and go
        data = api.get(f"/queues/{vq(vhost)}", params={"page": page, "page_size": PAGE_SIZE,
                                                       "columns": QUEUE_COLUMNS,
                                                       "sort": "name"})
        if isinstance(data, list):  # server without pagination support
            items.extend(data)
            break
        items.extend(data.get("items") or [])
        page_count = int(data.get("page_count") or 1)
        if page >= page_count:
            break
        if page >= MAX_PAGES:
            notes.append(f"queue listing cut after {MAX_PAGES * PAGE_SIZE} queues")
            break
        page += 1
    seen: set[str] = set()
    unique = []
    for q in items:  # a queue created between two pages can shift the next one: dedupe
        if q.get("name") not in seen:
            seen.add(q.get("name"))
            unique.append(q)
    return [queue_from_api(q) for q in unique], notes


def queue_from_api(q: dict[str, Any]) -> QueueDepth:
    stats = q.get("message_stats") or {}

    def rate(key: str) -> float | None:
        d = stats.get(f"{key}_details")
        return float(d["rate"]) if isinstance(d, dict) and "rate" in d else (
            0.0 if q.get("message_stats") is not None else None)

    name = q.get("name", "")
    return QueueDepth(
        name=name, broker="rabbitmq", vhost=q.get("vhost"),
        ready=_int(q.get("messages_ready")), unacked=_int(q.get("messages_unacknowledged")),
        consumers=_int(q.get("consumers")), consumers_source="broker",
        publish_rate=rate("publish"), deliver_rate=rate("deliver_get"), ack_rate=rate("ack"),
        internal=classify_queue(name) != "task", source="management-api",
        discovered_by=("broker",), type=q.get("type"), state=q.get("state"),
        node=q.get("leader") or q.get("node"),
        members=tuple(str(m) for m in q.get("members") or ()),
        online=tuple(str(m) for m in q.get("online") or ()),
        arguments=q.get("arguments") or {},
        effective_policy=q.get("effective_policy_definition") or {},
        messages_bytes=_int(q.get("message_bytes")),
        idle_since=q.get("idle_since"),
    )


def collect_pidbox_nodes(api: ManagementAPI, vhost: str, control_exchange: str = "celery"
                         ) -> list[str]:
    """Worker node names from the bindings of the `celery.pidbox` fanout exchange
    (destinations `<node>.celery.pidbox`). A missing exchange means no worker ever started."""
    exchange = f"{control_exchange}.pidbox"
    try:
        bindings = api.get(f"/exchanges/{vq(vhost)}/{quote(exchange, safe='')}/bindings/source")
    except ManagementError as exc:
        if exc.status == 404:
            return []
        raise
    suffix = f".{exchange}"
    return sorted({b["destination"][: -len(suffix)] for b in bindings
                   if str(b.get("destination", "")).endswith(suffix)})


def collect_rabbit_connections(api: ManagementAPI, vhost: str, now: float | None = None
                               ) -> list[Connection]:
    """`/api/vhosts/{vhost}/connections` + `/channels` (idle from channels' `idle_since`) +
    `/api/consumers/{vhost}` (a worker's pidbox consumer names its connection exactly)."""
    now = time.time() if now is None else now
    conns = api.get(f"/vhosts/{vq(vhost)}/connections") or []
    channels = api.get(f"/vhosts/{vq(vhost)}/channels") or []
    try:
        consumers = api.get(f"/consumers/{vq(vhost)}") or []
        consumers_known = True
    except ManagementError:
        consumers, consumers_known = [], False
    idle: dict[str, list[float | None]] = {}
    for ch in channels:
        cname = (ch.get("connection_details") or {}).get("name")
        since = parse_rabbit_time(ch.get("idle_since"))
        idle.setdefault(cname, []).append(None if since is None else max(0.0, now - since))
    owner: dict[str, str] = {}
    per_conn: dict[str, int] = {}
    for c in consumers:
        qname = (c.get("queue") or {}).get("name", "")
        cname = (c.get("channel_details") or {}).get("connection_name")
        if cname:
            per_conn[cname] = per_conn.get(cname, 0) + 1
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
        props = c.get("client_properties") or {}
        out.append(Connection(
            broker="rabbitmq",
            address=f"{c.get('peer_host')}:{c.get('peer_port')}",
            name=props.get("connection_name") or None, id=name,
            age_seconds=max(0.0, now - connected_at / 1000.0) if connected_at else None,
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
                                       "frame_max", "channel_max", "ssl")}
            | {"product": props.get("product"), "product_version": props.get("product_version")},
        ))
    return out


def parse_rabbit_time(value: Any) -> float | None:
    """`idle_since`: RFC 3339 with ms and offset on 3.10+ ('2024-05-01T10:00:00.123+00:00');
    older releases 'YYYY-MM-DD HH:MM:SS' (taken as UTC)."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        dt = datetime.datetime.fromisoformat(text)
    except ValueError:
        try:
            dt = datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
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

    from celeryctl.collect.bounded import describe_error

    errors = []
    for ep in endpoints:
        try:
            return pika.BlockingConnection(pika_parameters(ep, timeout, vhost, name)), ep
        except Exception as exc:  # noqa: BLE001
            why = describe_amqp_error(exc) or describe_error(exc)
            errors.append(f"{ep.address}: {why}" if len(endpoints) > 1 else why)
    raise ConnectionError("; ".join(errors))


def describe_amqp_error(exc: BaseException) -> str | None:
    import pika.exceptions as pe

    tls = describe_tls_error(exc)
    if tls is not None:
        return tls
    if isinstance(exc, (pe.ProbableAuthenticationError, pe.AuthenticationError)):
        return "authentication failed (ACCESS_REFUSED: wrong user name or password)"
    if isinstance(exc, pe.ProbableAccessDeniedError):
        return "access denied to the virtual host (wrong vhost or no permission)"
    if isinstance(exc, pe.AMQPConnectionError):
        inner = exc.args[0] if exc.args else None
        if inner is not None and isinstance(inner, BaseException):
            why = describe_amqp_error(inner)
            if why:
                return why
        # pika wraps socket errors in its connector's own exceptions: read the text
        text = repr(exc).lower()
        if "refused" in text:
            return "connection refused"
        if "timeout" in text or "timed out" in text:
            return "timed out (the broker did not complete the AMQP handshake)"
        return "cannot connect"
    return None


def collect_amqp_queues(endpoints: tuple[Endpoint, ...], timeout: float, vhost: str,
                        names: list[str]) -> list[QueueDepth]:
    """Passive declare of each known queue: ready (message_count) and consumers."""
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


def collect_peek(api: ManagementAPI, vhost: str, queues: list[str], per_queue: int
                 ) -> dict[str, list]:
    """`POST /api/queues/{vhost}/{name}/get` with `ackmode=ack_requeue_true`: the messages go
    back to the queue, but RabbitMQ marks them redelivered (and on quorum queues counts a
    delivery). Only used with `doctor --peek`. Payloads are never decoded: content type and
    headers come from the properties."""
    from celeryctl.snapshot import MessageSample

    out: dict[str, list] = {}
    for name in queues:
        resp = api.post(f"/queues/{vq(vhost)}/{quote(name, safe='')}/get",
                        {"count": per_queue, "ackmode": "ack_requeue_true",
                         "encoding": "base64", "truncate": 1024})
        for m in resp or []:
            props = m.get("properties") or {}
            headers = props.get("headers") or {}
            out.setdefault(name, []).append(MessageSample(
                queue=name, priority_step=props.get("priority"),
                content_type=props.get("content_type"),
                content_encoding=props.get("content_encoding"),
                task=headers.get("task") if isinstance(headers.get("task"), str) else None,
                id=headers.get("id") if isinstance(headers.get("id"), str) else None,
                eta=headers.get("eta") if isinstance(headers.get("eta"), str) else None,
                redelivered=bool(m.get("redelivered")), size_bytes=int(m.get("payload_bytes") or 0)))
    return out
