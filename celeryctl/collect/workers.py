"""Workers collector: Celery remote control (inspect) over the broker.

Celery's `inspect` sends one method at a time and always waits its full timeout unless given
a `limit` — which would also silently drop a second worker with a duplicate node name. Here
every method is published at once, each with its own ticket, to the `celery.pidbox` fanout
exchange, and the replies (all routed to one reply queue `<oid>.reply.celery.pidbox`) are
collected in one loop that returns as soon as every *expected* worker has answered every
method. The expected set comes from the workers' pidbox bindings (Redis
`_kombu.binding.celery.pidbox`; RabbitMQ bindings of the `celery.pidbox` exchange). Without it,
the loop waits the whole timeout, as Celery does.

Requests are published without kombu's `retry=True` (unbounded retries on a dead broker).
Replies are decoded only if JSON/YAML/msgpack: a worker replying in pickle is counted as
"foreign" and never unpickled.

`report` replies (the worker's bug-report text, which lists its settings) are reduced here,
on arrival, to the versions they name (`report_versions`): the text itself is never kept.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from celeryctl.snapshot import Observed, WorkerNode, WorkersView
from celeryctl.urls import Endpoint

INSPECT_METHODS = {
    "ping": {},
    "stats": {},
    "active": {},
    "reserved": {},
    "scheduled": {},
    # the task attributes the task view reads (celeryctl.tasks.TASK_INFO_ITEMS)
    "registered": {"taskinfoitems": ["time_limit", "soft_time_limit", "acks_late", "rate_limit"]},
    "conf": {"with_defaults": True},
    "active_queues": {},
    "revoked": {},
    "report": {},
}
SAFE_CONTENT = ("application/json", "application/x-yaml", "application/x-msgpack")
DUPLICATE_GRACE = 0.03  # after every expected reply, wait this long for duplicate node names
POLL = 0.05


def kombu_connection(ep: Endpoint, timeout: float, transport_options: dict[str, Any]):
    """A kombu Connection that fails fast: connect timeout, socket timeouts, no retries."""
    from kombu import Connection

    opts = {k: v for k, v in transport_options.items()
            if k in ("global_keyprefix", "sep", "priority_steps", "fanout_prefix",
                     "fanout_patterns", "visibility_timeout", "queue_order_strategy")}
    opts.update(max_retries=0, interval_start=0, interval_step=0, interval_max=0)
    if ep.kind == "redis":
        # BRPOP blocks up to 1 s server-side: the read timeout must exceed it.
        # ack_emulation=False: kombu's poller otherwise runs `restore_visible`, which requeues
        # other consumers' overdue unacked messages — a write no read command may make.
        opts.update(socket_connect_timeout=timeout, socket_timeout=max(timeout, 2.0),
                    health_check_interval=0, ack_emulation=False)
    else:
        opts.update(read_timeout=max(timeout, 2.0), write_timeout=timeout,
                    # named, so `connections` shows it as celeryctl's and `kill` never picks it
                    client_properties={"connection_name": "celeryctl remote control"})
    url = ep.raw.replace("pyamqp://", "amqp://", 1) if ep.scheme == "pyamqp" else ep.raw
    url, ssl = _url_and_ssl(ep, url)
    return Connection(url, connect_timeout=timeout, heartbeat=0, transport_options=opts,
                      ssl=ssl)


def _url_and_ssl(ep: Endpoint, url: str) -> tuple[str, dict[str, Any] | None]:
    """kombu's `ssl=` from `ep.tls`, in the names its transport hands on: redis-py's for Redis
    (`ssl_ca_certs`, ...), py-amqp's for AMQP (`ca_certs`, `server_hostname`, ...). The URL's
    own `ssl_*` parameters are taken out: kombu would use them *instead of* `ssl=`, and
    py-amqp rejects those names (TypeError)."""
    if ep.tls is None:
        return url, None
    from celeryctl.tls import amqp_sslopts, redis_ssl_kwargs, strip_tls_query

    url = strip_tls_query(url)
    if ep.kind == "redis":
        return url, redis_ssl_kwargs(ep.tls)
    # an amqp:// URL without a port and with TLS on: kombu picks 5671 itself, as targets does
    return url, amqp_sslopts(ep.tls, ep.host)


def connect(endpoints: tuple[Endpoint, ...], timeout: float, transport_options: dict[str, Any]):
    """Connect to the first failover URL that answers; errors name every attempt and keep the
    kind of failure (celeryctl.collect.errors) of the last one. On Redis, a command kombu
    needs to connect (PING) refused by an ACL is a refusal of remote control."""
    from celeryctl.collect.errors import classify

    if endpoints and endpoints[0].kind == "redis":
        # sentinel:// resolved here, bounded, rather than by kombu's sentinel transport
        from celeryctl.collect.redis import resolve_endpoints

        endpoints = resolve_endpoints(endpoints, timeout, transport_options)
    errors = []
    kind = None
    for ep in endpoints:
        conn = kombu_connection(ep, timeout, transport_options)
        try:
            conn.ensure_connection(max_retries=0, timeout=timeout)
            return conn, ep
        except Exception as exc:  # noqa: BLE001
            if ep.kind == "redis":
                denied = _remote_control_denied(exc, ep)
                if denied is not None:
                    _quiet_release(conn)
                    raise denied from None
            kind, text = classify(exc)
            errors.append(f"{ep.address}: {text}" if len(endpoints) > 1 else text)
            _quiet_release(conn)
    err = ConnectionError("; ".join(errors))
    err.kind = kind or "failed"  # type: ignore[attr-defined]
    raise err


def collect_workers(endpoints: tuple[Endpoint, ...], transport_options: dict[str, Any],
                    methods: tuple[str, ...], timeout: float, deadline: float,
                    expected: Callable[[], Observed | None] | None = None,
                    destination: list[str] | None = None,
                    control_exchange: str = "celery",
                    arguments: dict[str, dict[str, Any]] | None = None,
                    reply: bool = True) -> Observed:
    """Broadcast `methods` and collect per-worker raw replies until every expected node answered
    or `timeout` passed. `expected()` returns an Observed list of node names when known (polled:
    it may be computed concurrently), or None while still unknown.

    The control commands (`celeryctl control`) go through here too: `arguments` per method
    (Celery's argument names: `{"pool_grow": {"n": 2}}`), and `reply=False` for `shutdown`,
    which a worker never answers (it is published without a ticket, as Celery does, and the
    function returns at once with no nodes)."""
    from celery import Celery
    from kombu import Consumer, Producer
    from kombu.common import maybe_declare
    from kombu.exceptions import ContentDisallowed, DecodeError
    from kombu.serialization import loads

    started = time.monotonic()
    app = Celery("celeryctl", set_as_current=False)
    app.conf.control_exchange = control_exchange
    conn, ep = connect(endpoints, timeout, transport_options)
    try:
        mailbox = app.control.mailbox(conn)
        chan = conn.default_channel
        if ep.kind == "amqp" and not _pidbox_exchange_exists(chan, mailbox.exchange.name):
            view = WorkersView(nodes=(), methods=tuple(methods), expected=(),
                               expected_source=f"exchange {mailbox.exchange.name!r} does "
                               "not exist", waited_seconds=time.monotonic() - started,
                               returned_early=True)
            return Observed(value=view, source=f"workers via {ep.kind} {ep.address}",
                            elapsed_seconds=time.monotonic() - started,
                            notes=(f"no worker has ever started on this virtual host: the "
                                   f"{mailbox.exchange.name!r} exchange does not exist",))
        reply_queue = mailbox.reply_queue(chan)
        if reply and ep.kind == "redis":
            _can_read_replies(chan, reply_queue.name)
        if reply:
            maybe_declare(reply_queue)
        tickets: dict[str, str] = {}
        with Producer(chan) as producer:
            for method in methods:
                body: dict[str, Any] = {
                    "method": method,
                    "arguments": (arguments or {}).get(method, INSPECT_METHODS.get(method, {})),
                    "destination": destination, "pattern": None, "matcher": None}
                if reply:
                    ticket = str(uuid.uuid4())
                    tickets[ticket] = method
                    body.update(ticket=ticket,
                                reply_to={"exchange": mailbox.reply_exchange.name,
                                          "routing_key": mailbox.oid})
                # AMQP: the exchange exists (checked passively above): declaring it again
                # would need configure permission on it. Redis: the declare only tells
                # kombu's virtual transport it is a fanout (no server call).
                producer.publish(
                    body, exchange=mailbox.exchange.name,
                    declare=[] if ep.kind == "amqp" else [mailbox.exchange],
                    headers={"clock": mailbox.clock.forward(), "expires": time.time() + timeout},
                    serializer="json", retry=False,
                )
        if not reply:
            view = WorkersView(nodes=(), methods=tuple(methods), expected=None,
                               expected_source=None, expected_error=None,
                               waited_seconds=time.monotonic() - started, returned_early=True,
                               foreign_replies=0, foreign_content_types=())
            return Observed(value=view, source=f"workers via {ep.kind} {ep.address}",
                            elapsed_seconds=time.monotonic() - started)

        # replies[(method)] -> list of (node, reply); order of arrival kept
        replies: dict[str, list[tuple[str, Any]]] = {m: [] for m in methods}
        foreign: list[str] = []

        def on_message(message) -> None:
            method = tickets.get(message.headers.get("ticket"))
            if method is None:
                return  # a late reply to an earlier request of this oid
            try:
                body = loads(message.body, message.content_type, message.content_encoding,
                             accept=SAFE_CONTENT)
            except (ContentDisallowed, DecodeError, Exception):  # noqa: BLE001
                foreign.append(message.content_type or "unknown")
                return
            if isinstance(body, dict):
                for node, reply in body.items():
                    if method == "report":
                        reply = report_versions(reply)
                    replies[method].append((str(node), reply))

        end = min(deadline, started + timeout)
        wanted: set[str] | None = set(destination) if destination else None
        expected_obs: Observed | None = None
        returned_early = False
        complete_at: float | None = None
        consumer = Consumer(chan, [reply_queue], no_ack=True, on_message=on_message,
                            accept=list(SAFE_CONTENT))
        with consumer:
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                if wanted is None and expected is not None and expected_obs is None:
                    expected_obs = expected()
                    if expected_obs is not None and expected_obs.ok and expected_obs.value:
                        wanted = set(expected_obs.value)
                if wanted and all(wanted <= {n for n, _ in replies[m]} for m in methods):
                    if complete_at is None:
                        complete_at = now
                    if now - complete_at >= DUPLICATE_GRACE:
                        returned_early = True
                        break
                limit = end - now
                if complete_at is not None:
                    limit = min(limit, complete_at + DUPLICATE_GRACE - now)
                try:
                    conn.drain_events(timeout=max(0.001, min(POLL, limit)))
                except TimeoutError:
                    continue
                except OSError as exc:
                    import socket

                    if isinstance(exc, socket.timeout):
                        continue
                    raise
        after = getattr(chan, "after_reply_message_received", None)
        if after is not None:
            try:
                after(reply_queue.name)
            except Exception:  # noqa: BLE001 - cleanup only
                pass
        if expected is not None and expected_obs is None:
            expected_obs = expected()
    except Exception as exc:  # noqa: BLE001 - a refusal is re-raised as one, naming the fix
        denied = _remote_control_denied(exc, ep)
        if denied is None:
            raise
        raise denied from None
    finally:
        # Closing a kombu Redis connection waits out a BRPOP still in flight (up to 1 s):
        # release in the background; the process exiting closes the socket anyway.
        import threading

        threading.Thread(target=_quiet_release, args=(conn,), daemon=True).start()

    nodes = _assemble(methods, replies)
    expected_names = expected_obs.value if expected_obs and expected_obs.ok else None
    if expected_names is not None and destination:
        # asked of some workers only: the others are not "silent"
        expected_names = [n for n in expected_names if n in set(destination)]
    view = WorkersView(
        nodes=tuple(nodes), methods=tuple(methods),
        expected=tuple(sorted(expected_names)) if expected_names is not None else None,
        expected_source=expected_obs.source if expected_obs and expected_obs.ok else None,
        expected_error=expected_obs.error if expected_obs else None,
        waited_seconds=time.monotonic() - started, returned_early=returned_early,
        foreign_replies=len(foreign), foreign_content_types=tuple(sorted(set(foreign))),
    )
    return Observed(value=view, source=f"workers via {ep.kind} {ep.address}",
                    elapsed_seconds=time.monotonic() - started)


REDIS_RC_ACL = ("the remote-control ACL rules of docs/permissions.md#redis (+ping +publish "
                "+sadd +brpop +multi +exec +evalsha +zadd +time on the pidbox keys)")
AMQP_RC_PERMS = ("the remote-control permissions of docs/permissions.md#rabbitmq (configure "
                 "and read on reply.celery.pidbox and *.reply.celery.pidbox, write on "
                 "celery.pidbox)")


class RemoteControlDenied(Exception):
    """Remote control refused after the broker accepted the connection: the broker itself
    was reached (and is reported observed); the workers could not be asked."""

    kind = "permission-denied"  # celeryctl.collect.errors.DENIED


def _remote_control_denied(exc: BaseException, ep: Endpoint) -> Exception | None:
    """`exc` as a RemoteControlDenied naming the rules that allow remote control, or None
    when it is not a refusal (Redis: an ACL, a renamed command; AMQP: 403 and friends)."""
    from celeryctl.collect.errors import DENIED, Denied, classify, redis_denial
    from celeryctl.urls import SECRETS

    if isinstance(exc, Denied):
        return RemoteControlDenied(str(exc))
    if ep.kind == "redis":
        why = redis_denial(exc)
    else:
        why = "" if classify(exc)[0] == DENIED else None
    if why is None:
        return None
    raw = SECRETS.scrub(" ".join(str(exc).split()))[:200]
    rules = REDIS_RC_ACL if ep.kind == "redis" else AMQP_RC_PERMS
    return RemoteControlDenied(str(Denied("remote control", rules,
                                          f"{why}: {raw}" if why else raw)))


def _can_read_replies(chan, key: str) -> None:
    """Redis: try the reply read (`BRPOP key 0.01`) before publishing anything. An account
    that may publish but not BRPOP would otherwise leave every worker's reply in a list
    nobody reads and that never expires — celeryctl's own litter, run after run. A refusal
    raises here, before any write; Redis < 6 (integer timeouts only) skips the probe."""
    try:
        with chan.conn_or_acquire() as client:
            client.brpop([key], timeout=0.01)
    except Exception as exc:  # noqa: BLE001 - only an old server's syntax error is ignored
        if "not an integer" in str(exc).lower() or "not a float" in str(exc).lower():
            return
        raise


def _pidbox_exchange_exists(chan, name: str) -> bool:
    """`exchange.declare(passive=True)`: needs no permission; a missing exchange (404) means
    no worker ever started on this vhost (the channel is closed by it: the caller stops)."""
    try:
        chan.exchange_declare(exchange=name, type="fanout", passive=True)
        return True
    except Exception as exc:  # noqa: BLE001 - only "not found" means absent
        if getattr(exc, "reply_code", None) == 404 or getattr(exc, "code", None) == 404 \
                or "not_found" in str(exc).lower():
            return False
        raise


# `inspect report` -> {"ok": celery.app.utils.bugreport()}, the same text in Celery 5.2.7,
# 5.3.6, 5.5.3 and 5.7.0 (seen on real workers):
#   software -> celery:5.2.7 (dawn-chorus) kombu:5.2.4 py:3.11.7
#               billiard:3.6.4.0 redis:4.3.4          (py-amqp:5.1.1 on RabbitMQ)
#   platform -> system:Linux arch:64bit, ELF
#               kernel version:6.1.0 imp:CPython
#   loader   -> celery.loaders.app.AppLoader
#   settings -> transport:redis results:disabled
#   <every setting, censored by Celery>
_REPORT_FIELDS = {
    "celery": re.compile(r"\bcelery:(\S+)"),
    "codename": re.compile(r"\bcelery:\S+ \(([^)\n]*)\)"),
    "kombu": re.compile(r"\bkombu:(\S+)"),
    "python": re.compile(r"\bpy:(\S+)"),
    "billiard": re.compile(r"\bbilliard:(\S+)"),
    "driver": re.compile(r"\bbilliard:\S+[ \t]+(\S+:\S+)"),
    "implementation": re.compile(r"\bimp:(\S+)"),
}


def report_versions(reply: Any) -> dict[str, str]:
    """`report` reply -> the versions its text names: {"celery": "5.2.7", "codename":
    "dawn-chorus", "kombu": "5.2.4", "python": "3.11.7", "billiard": "3.6.4.0", "driver":
    "redis:4.3.4", "implementation": "CPython"} (fields not found are left out). Only the
    header before `settings ->` is read: the settings are never parsed or kept."""
    text = reply.get("ok") if isinstance(reply, dict) else reply
    if not isinstance(text, str):
        return {}
    head = text.split("settings ->", 1)[0]
    out = {}
    for key, rx in _REPORT_FIELDS.items():
        m = rx.search(head)
        if m:
            out[key] = m.group(1)
    return out


def _assemble(methods: tuple[str, ...], replies: dict[str, list[tuple[str, Any]]]) -> list[WorkerNode]:
    """Group replies into nodes. The k-th reply of node N to each method belongs to the k-th
    worker named N, so duplicate node names stay separate workers."""
    order: list[str] = []
    counts: dict[str, int] = {}
    for m in methods:
        seen: dict[str, int] = {}
        for node, _ in replies[m]:
            seen[node] = seen.get(node, 0) + 1
            if seen[node] > counts.get(node, 0):
                counts[node] = seen[node]
                order.append(node)
    slots: dict[tuple[str, int], dict[str, Any]] = {}
    for m in methods:
        seen = {}
        for node, reply in replies[m]:
            k = seen.get(node, 0)
            seen[node] = k + 1
            slots.setdefault((node, k), {})[m] = reply
    out = []
    emitted: dict[str, int] = {}
    for node in order:
        k = emitted.get(node, 0)
        emitted[node] = k + 1
        out.append(WorkerNode(name=node, replies=slots.get((node, k), {})))
    return out


def _quiet_release(conn) -> None:
    try:
        conn.release()
    except Exception:  # noqa: BLE001 - closing a dead connection may raise anything
        pass
