"""Listening to Celery's events for a bounded window, and finding other event monitors.

Redis: events are published over pub/sub (kombu's fanout: `PUBLISH <P>/<db>.celeryev/<rk>`,
rk = the type with dots: `task.succeeded`; docs/celery-internals §1.5). celeryctl SUBSCRIBEs to
exactly those channels with redis-py — no `_kombu.binding.celeryev` entry is written (kombu's
own receiver SADDs one, and leaves it behind if killed), nothing is stored server-side, and a
dead celeryctl leaves nothing to pile up. The legacy topic without routing key (`/<db>.celeryev`,
kombu < 5.4, and `sentinel_fanout_compat`) is subscribed too: the aggregator drops an event
seen twice (same sender, same logical clock).

RabbitMQ: a queue `celeryev.celeryctl.<uuid>` bound to the `celeryev` topic exchange with
routing key `#`: exclusive and auto-delete (gone when the connection closes), with a message
TTL and `x-expires`, so even a connection RabbitMQ has not yet noticed dead holds at most a few
seconds of events, and the queue itself disappears a minute after. The exchange is declared
passively (no configure permission on it needed).

The listener runs in a daemon thread and hands each decoded event, with its local receive
time, to `on_event`. `stop()` asks it to end; `close()` waits at most a second and then
shuts its sockets down (collect/bounded.py): the window ends on time even if the broker stalls.
A lost connection is retried once a second until the window ends; the time without a
connection is reported (`disconnected_seconds`).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from celeryctl.collect.bounded import SocketGuard, describe_error

EVENT_TYPES = ("task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
               "task-retried", "task-rejected", "task-revoked", "worker-online",
               "worker-heartbeat", "worker-offline")
QUEUE_PREFIX = "celeryev.celeryctl."
QUEUE_TTL = 10.0       # seconds a message may wait in our queue (RabbitMQ)
QUEUE_EXPIRES = 60.0   # seconds the queue outlives its last consumer (RabbitMQ)
POLL = 0.2


def fanout_prefix(options: dict[str, Any], db: int) -> str:
    """kombu's `keyprefix_fanout` for a transport's options (its `fanout_prefix`)."""
    fp = options.get("fanout_prefix", True)
    if isinstance(fp, str):
        return fp
    return f"/{db}." if fp else ""


def redis_channels(options: dict[str, Any], db: int, exchange: str = "celeryev") -> list[str]:
    """The pub/sub channels Celery's event dispatcher publishes to on this Redis database."""
    base = str(options.get("global_keyprefix") or "") + fanout_prefix(options, db) + exchange
    return [f"{base}/{t.replace('-', '.')}" for t in EVENT_TYPES] + [f"{base}/task.multi",
                                                                    base]


def decode_envelope(raw: bytes | str) -> list[dict[str, Any]] | None:
    """A kombu Redis message (JSON envelope, body base64) -> its events; None when it is
    not JSON (a pickle-serialised event is never unpickled)."""
    try:
        env = json.loads(raw)
        if not isinstance(env, dict):
            return None
        body = env.get("body")
        if (env.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        if env.get("content-type") not in (None, "application/json"):
            return None
        return as_events(json.loads(body))
    except (ValueError, TypeError):
        return None


def as_events(body: Any) -> list[dict[str, Any]] | None:
    """One event (a dict), or a batch: a worker with an event loop buffers its task events and
    publishes them as a list on `task.multi` (celery/events/dispatcher.py flush)."""
    if isinstance(body, dict):
        return [body]
    if isinstance(body, list) and all(isinstance(e, dict) for e in body):
        return body
    return None


class Listener:
    def __init__(self, target, on_event: Callable[[dict[str, Any], float], None],
                 on_undecodable: Callable[[], None]) -> None:
        self.target = target
        self.on_event = on_event
        self.on_undecodable = on_undecodable
        self.kind = target.broker_kind
        self.ready = threading.Event()
        self.error: str | None = None          # the first connection failed: nothing heard
        self.errors: list[str] = []            # later losses (reconnected or not)
        self.disconnected_seconds = 0.0
        self.queue_name: str | None = None
        self._stop = threading.Event()
        self._guard = SocketGuard()
        self._conn = None
        self._thread = threading.Thread(target=self._run, name="events-listener", daemon=True)

    def start(self, timeout: float) -> str | None:
        """Connect and subscribe; None once listening, else why not (nothing was changed)."""
        self._thread.start()
        if not self.ready.wait(timeout + 1.0):
            self._stop.set()
            self._cancel()
            return self.error or f"no answer from the broker within {timeout + 1.0:.1f} s"
        return self.error

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        if self._thread.is_alive():
            self._cancel()

    def _cancel(self) -> None:
        self._guard.shut()
        conn = self._conn
        if conn is not None:
            threading.Thread(target=_quiet, args=(conn.release,), daemon=True).start()

    def _run(self) -> None:
        first = True
        lost_at = None
        while not self._stop.is_set():
            try:
                if self.kind == "redis":
                    self._listen_redis(first)
                else:
                    self._listen_amqp(first)
                return
            except Exception as exc:  # noqa: BLE001 - said, and retried until the window ends
                text = describe_error(exc)
                if first and not self.ready.is_set():
                    self.error = text
                    self.ready.set()
                    return
                if not self._stop.is_set():
                    self.errors.append(text)
                lost_at = lost_at or time.monotonic()
            first = False
            if self._stop.wait(1.0):
                break
            if lost_at is not None:
                self.disconnected_seconds += time.monotonic() - lost_at
                lost_at = None

    # --- Redis ---------------------------------------------------------------------------

    def _listen_redis(self, first: bool) -> None:
        from celeryctl.collect.redis import redis_client, resolve_endpoints

        t = self.target
        eps = resolve_endpoints(t.broker, t.timeout, t.transport_options)
        ep = eps[0]
        client = redis_client(ep, t.timeout)
        self._guard = getattr(client, "celeryctl_guard", None) or self._guard
        exchange = str((t.app.settings.get("event_exchange") if t.app else None) or "celeryev")
        channels = redis_channels(t.transport_options, ep.redis_db or 0, exchange)
        ps = client.pubsub(ignore_subscribe_messages=False)
        try:
            ps.subscribe(*channels)
            # listening once every channel's subscription is confirmed
            end = time.monotonic() + t.timeout
            confirmed = 0
            while confirmed < len(channels):
                if time.monotonic() > end:
                    raise TimeoutError("SUBSCRIBE was not confirmed in time")
                msg = ps.get_message(timeout=0.2)
                if msg and msg.get("type") == "subscribe":
                    confirmed += 1
            self.ready.set()
            while not self._stop.is_set():
                msg = ps.get_message(timeout=POLL)
                if not msg or msg.get("type") != "message":
                    continue
                now = time.time()
                batch = decode_envelope(msg["data"])
                if batch is None:
                    self.on_undecodable()
                for event in batch or ():
                    self.on_event(event, now)
        finally:
            threading.Thread(target=_quiet, args=(ps.close,), daemon=True).start()

    # --- RabbitMQ ------------------------------------------------------------------------

    def _listen_amqp(self, first: bool) -> None:

        from kombu import Consumer, Exchange, Queue

        from celeryctl.collect.workers import connect

        t = self.target
        conn, _ep = connect(t.broker, t.timeout, t.transport_options)
        self._conn = conn
        try:
            sock = getattr(conn.connection, "sock", None)
            if sock is not None:
                self._guard.opened(sock)
            exchange_name = str((t.app.settings.get("event_exchange") if t.app else None)
                                or "celeryev")
            chan = conn.channel()
            ex = Exchange(exchange_name, type="topic", passive=True)
            try:
                ex(chan).declare(passive=True)
            except Exception as exc:  # noqa: BLE001
                raise ConnectionError(f"the {exchange_name!r} exchange does not exist on this "
                                      f"virtual host: no worker has sent an event here "
                                      f"({describe_error(exc)})") from None
            chan = conn.channel()
            self.queue_name = QUEUE_PREFIX + uuid.uuid4().hex
            q = Queue(self.queue_name, exchange=Exchange(exchange_name, type="topic",
                                                         passive=True),
                      routing_key="#", exclusive=True, auto_delete=True, durable=False,
                      message_ttl=QUEUE_TTL, expires=QUEUE_EXPIRES)

            def on_message(body, message) -> None:
                now = time.time()
                batch = as_events(body)
                if batch is None:
                    self.on_undecodable()
                for event in batch or ():
                    self.on_event(event, now)

            def on_decode_error(message, exc) -> None:
                self.on_undecodable()

            consumer = Consumer(chan, [q], no_ack=True, callbacks=[on_message],
                                accept=["application/json"], on_decode_error=on_decode_error)
            with consumer:
                self.ready.set()
                while not self._stop.is_set():
                    try:
                        conn.drain_events(timeout=POLL)
                    except TimeoutError:
                        continue
        finally:
            threading.Thread(target=_quiet, args=(conn.release,), daemon=True).start()


def _quiet(fn) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001, S110 - cleanup only
        pass


# --- other monitors --------------------------------------------------------------------

def other_monitors(target, workers: int, own_queue: str | None = None,
                   listening: bool = False) -> tuple[list[str], str | None]:
    """(what else listens to events, or why that is unknown): `event_listeners` with its
    estimates counted as found — a warning while celeryctl listens may be one."""
    seen = event_listeners(target, workers, own_queue, listening)
    return seen["consumers"] + seen["maybe"], seen["unknown"]


def event_listeners(target, workers: int, own_queue: str | None = None,
                    listening: bool = False) -> dict[str, Any]:
    """{"consumers": what certainly consumes events, "maybe": what may (an estimate that
    cannot be attributed), "unknown": why it could not be read, or None}.
    Redis: SUBSCRIBE-ers of the event channels (PUBSUB NUMSUB: another celeryctl) are
    consumers; pattern subscribers on the database beyond one per worker (CLIENT LIST psub=:
    Flower, `celery events`, a worker with gossip — or any client PSUBSCRIBEd to something
    else, e.g. `*pidbox*`: Redis does not say which pattern a client holds) only "maybe".
    RabbitMQ: consumers of `celeryev.*` queues (management API)."""
    from celeryctl.collect.bounded import call, shutdown_redis

    if target.broker_kind == "redis":
        from celeryctl.collect.redis import redis_client, resolve_endpoints

        t = target
        ep = resolve_endpoints(t.broker, t.timeout, t.transport_options)[0]
        client = redis_client(ep, t.timeout)
        db = ep.redis_db or 0
        exchange = str((t.app.settings.get("event_exchange") if t.app else None) or "celeryev")
        channels = redis_channels(t.transport_options, db, exchange)

        def read():
            found: list[str] = []
            maybe: list[str] = []
            errors = []
            try:
                numsub = client.pubsub_numsub(*channels)
                subs = max((int(n) for _c, n in numsub), default=0)
                if listening:  # celeryctl's own SUBSCRIBE connection
                    subs -= 1
                if subs > 0:
                    found.append(f"{subs} other subscriber(s) of the event channels (another "
                                 "celeryctl events)")
            except Exception as exc:  # noqa: BLE001
                errors.append(f"PUBSUB NUMSUB: {describe_error(exc)}")
            try:
                clients = client.client_list()
                psub = [c for c in clients if int(c.get("psub", 0) or 0) > 0
                        and str(c.get("db")) == str(db)]
                extra = len(psub) - workers
                if extra > 0:
                    maybe.append(f"{extra} pattern subscriber(s) on db {db} beyond one per "
                                 f"worker ({workers}): likely an event monitor (Flower, "
                                 "celery events) or workers with gossip")
            except Exception as exc:  # noqa: BLE001
                errors.append(f"CLIENT LIST: {describe_error(exc)}")
            return found, maybe, ("; ".join(errors) or None)

        try:
            found, maybe, err = call("monitors", read, "Redis monitors", t.timeout,
                                     cancel=lambda: shutdown_redis(client))
        except Exception as exc:  # noqa: BLE001
            return {"consumers": [], "maybe": [], "unknown": describe_error(exc)}
        return {"consumers": found, "maybe": maybe,
                "unknown": f"unknown whether another monitor listens ({err})" if err else None}
    if target.rabbitmq_api is None:
        return {"consumers": [], "maybe": [],
                "unknown": "unknown whether another monitor listens (no management API)"}
    from celeryctl.collect.rabbitmq import ManagementAPI, vq

    api = ManagementAPI(target.rabbitmq_api, target.timeout)
    try:
        qs = call("monitors", lambda: api.get(f"/queues/{vq(target.effective_vhost)}",
                                               {"columns": "name,consumers"}),
                  "management API", target.timeout, cancel=api.abort)
    except Exception as exc:  # noqa: BLE001
        return {"consumers": [], "maybe": [],
                "unknown": f"unknown whether another monitor listens ({describe_error(exc)})"}
    finally:
        api.close()
    found = []
    for q in qs or []:
        name = str(q.get("name") or "")
        if name.startswith("celeryev.") and name != own_queue and (q.get("consumers") or 0):
            who = ("another celeryctl events" if name.startswith(QUEUE_PREFIX)
                   else "Flower, celery events, or a worker's gossip")
            found.append(f"queue {name} has {q.get('consumers')} consumer(s) ({who})")
    return {"consumers": found, "maybe": [], "unknown": None}
