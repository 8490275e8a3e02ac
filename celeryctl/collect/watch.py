"""What `celeryctl queues watch` reads, refresh after refresh.

Two paths, so a refresh stays cheap at a thousand queues:

- the slow path (`discover`, every `--rediscover` seconds (30), after a failure every 2 s,
  in a background thread): the same
  `gather(queues=True)` as `celeryctl queues` — queue names from the bindings, consumers per
  queue from the workers' active_queues, per-queue in-flight attribution, workers online;
- the fast path (`sample`, every refresh): Redis — one pipelined round trip of `LLEN` on every
  known queue's priority sub-lists, `LRANGE key -1 -1` (the last element, as `LINDEX key -1`
  gives it, with the monitor ACL's `+lrange`) on those sub-lists of the queues with
  consumers that held messages at the previous refresh (the consuming end: kombu publishes
  with LPUSH and consumes with BRPOP, lowest priority step first; a list empty last time
  can only have had arrivals, which tell nothing about a stall), plus `HLEN unacked`; RabbitMQ — one
  `GET /api/queues/{vhost}?columns=...` (no paging: one call per vhost, only the columns
  needed; counts, consumers, consumer capacity and the management API's own rates).

The head of a Redis queue is kept only as a digest of the raw bytes of each sub-list's last
element (never decoded, never kept): trend.WatchState compares successive ones to tell a queue
whose consumers take nothing (stalled) from one that moves.

Both are bounded by the target's timeout for the whole operation, not per recv (a server
trickling one byte every half second never trips a socket timeout): discovery is `gather`,
and each sample runs through `collect.bounded.run`, which gives up at the deadline and shuts
the sample's sockets down (the connection is dropped; the next refresh opens a new one). An
error is returned as Observed(error), never as an empty list, and the next refresh simply
tries again.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from celeryctl.snapshot import Observed
from celeryctl.targets import Target

WATCH_BATCH = 10_000
RABBIT_COLUMNS = ",".join((
    "name", "vhost", "messages_ready", "messages_unacknowledged", "consumers",
    "message_stats.publish", "message_stats.ack", "message_stats.deliver_get",
    "message_stats.publish_details.rate", "message_stats.deliver_get_details.rate",
    "message_stats.ack_details.rate", "consumer_capacity", "consumer_utilisation"))


UNREAD = b""  # a sub-list whose head was not read (it was empty at the previous refresh)


def head_digest(raw: Any) -> bytes | None:
    """A short digest of one list element's raw bytes (None: the list is empty)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    return hashlib.blake2b(raw, digest_size=16).digest()


def capacity_of(raw: dict[str, Any]) -> float | None:
    """The management API's consumer capacity (0..1), None where the server does not report
    it. `consumer_capacity` since 3.8.x (rabbitmq-server#2843, which keeps
    `consumer_utilisation` as the old name of the same value); absent while not computed yet
    (rabbitmq-server#14551), with statistics off, or from a server before it existed."""
    for key in ("consumer_capacity", "consumer_utilisation"):
        v = raw.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1.0001:
            return float(min(v, 1.0))
    return None


@dataclass(frozen=True)
class QueueReading:
    """One queue in one sample."""

    name: str
    ready: int | None
    unacked: int | None = None
    consumers: int | None = None
    internal: bool = False
    rate_in: float | None = None  # the management API's rates (RabbitMQ only)
    rate_out: float | None = None
    published_total: int | None = None  # the management API's counters (RabbitMQ only)
    out_total: int | None = None  # acks, or deliveries when nothing acks
    # Redis: per priority sub-list (consuming order), a digest of the element a worker takes
    # next (None: empty list; UNREAD: not read, it was empty at the previous refresh); None as
    # a whole when not read (no consumer) or not readable
    head: tuple[bytes | None, ...] | None = None
    capacity: float | None = None  # RabbitMQ: consumer capacity 0..1, None if not reported


@dataclass(frozen=True)
class Sample:
    time: float
    queues: list[QueueReading]
    unacked_total: int | None = None
    elapsed_seconds: float = 0.0


@dataclass
class Discovery:
    """What the slow path learnt: names, consumers, in-flight per queue, workers online."""

    time: float = 0.0
    queues: dict[str, Any] = field(default_factory=dict)  # name -> QueueDepth
    workers: int | None = None
    worker_error: str | None = None
    worker_state: str | None = None  # permission-denied, unreachable, ... (collect/errors.py)
    options: dict[str, Any] | None = None  # Redis transport options (detected key prefix)
    error: str | None = None
    state: str | None = None
    partial: str | None = None  # queues discovered only in part (no SCAN, no management API)
    notes: list[str] = field(default_factory=list)


class Watcher:
    """Keeps the slow path running in the background; `sample()` is the fast path."""

    def __init__(self, target: Target, rediscover_seconds: float = 30.0) -> None:
        self.target = target
        self.rediscover_seconds = rediscover_seconds
        self.discovery = Discovery()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._client = None
        self._api = None
        self._lens: dict[str, tuple] = {}  # Redis: per queue, its sub-lists' LLEN last time

    # --- slow path -------------------------------------------------------------------
    def discover(self) -> Discovery:
        from celeryctl.collect import gather

        g = gather(self.target, queues=True)
        d = Discovery(time=time.time())
        if g.queues.ok:
            d.queues = {q.name: q for q in g.queues.value}
            d.notes = list(g.queues.notes or [])
            d.partial = g.queues.partial
        else:
            d.error = g.queues.error or next((s.error for s in g.sources if not s.ok), None)
            d.state = g.queues.state
        if g.workers.ok:
            d.workers = len({n.name for n in g.workers.value.nodes})
        else:
            d.worker_error = g.workers.error
            d.worker_state = g.workers.state
        d.options = g.worker_options
        with self._lock:
            if d.error is None or not self.discovery.queues:
                self.discovery = d
            else:  # keep the names we knew; remember why rediscovery failed
                self.discovery.error = d.error
        return d

    def maybe_rediscover(self) -> None:
        """Start a background rediscovery when the last one is old enough and none runs."""
        if self._thread is not None and self._thread.is_alive():
            return
        # after a failed discovery, try again soon: the broker may be back
        due = self.rediscover_seconds if self.discovery.error is None else min(
            2.0, self.rediscover_seconds)
        if time.time() - self.discovery.time < due:
            return
        self._thread = threading.Thread(target=self._quiet_discover, daemon=True)
        self._thread.start()

    def _quiet_discover(self) -> None:
        try:
            self.discover()
        except Exception as exc:  # noqa: BLE001 - a failed rediscovery is shown, not raised
            from celeryctl.collect.bounded import describe_error

            with self._lock:
                self.discovery.error = describe_error(exc)

    # --- fast path -------------------------------------------------------------------
    def sample(self) -> Observed:
        """One sample within the timeout (the whole read, connecting included); on a miss
        the connection is shut down and dropped, and the error says so."""
        from celeryctl.collect.bounded import run, shutdown_redis

        started = time.monotonic()
        if self.target.broker_kind == "redis":
            # the client is the watcher's only once a sample succeeded with it: an abandoned
            # thread never hands a half-dead connection to the next refresh
            opened: list = [] if self._client is None else [self._client]
            obs, abandoned = run(
                "sample", lambda: self._sample_redis(opened),
                f"broker {self.target.broker_redacted}", self.target.timeout,
                cancel=lambda: [shutdown_redis(c) for c in opened])
            self._client = obs.value[1] if obs.ok else None
        else:
            api = self._api
            if api is None and self.target.rabbitmq_api is not None:
                from celeryctl.collect.rabbitmq import ManagementAPI

                api = ManagementAPI(self.target.rabbitmq_api, self.target.timeout)
            obs, abandoned = run(
                "sample", lambda: (self._sample_rabbit(api), api),
                f"broker {self.target.broker_redacted}", self.target.timeout,
                cancel=api.abort if api is not None else None)
            self._api = None if abandoned else api  # its sockets are shut: open new ones
        if not obs.ok:
            return obs
        return Observed(obs.value[0], source="broker",
                        elapsed_seconds=time.monotonic() - started)

    def _sample_redis(self, opened: list) -> tuple[Sample, Any]:
        """(the sample, the client it used). `opened`: the clients this call uses or makes
        (the caller's to shut down if it gives up on the call)."""
        from celeryctl.collect.redis import RedisLayout, connect_first, pipelined

        with self._lock:
            d = self.discovery
        if opened:
            client = opened[0]
        else:
            client, _ = connect_first(self.target.broker, self.target.timeout,
                                      self.target.transport_options, opened=opened)
        layout = RedisLayout.from_options(d.options or self.target.transport_options)
        names = sorted(d.queues)
        # the heads only where a stall can be told: queues with consumers
        consumed = [q for q in names if (d.queues[q].consumers or 0) > 0
                    and not d.queues[q].internal]
        # one round trip up to 2,500 queues (1,250 when all are consumed: LRANGE too);
        # bounded batches beyond. A key this account may not read (or not a list) costs
        # that queue only: unknown
        calls = [("llen", (layout.key(q, step),)) for q in names
                 for step in layout.priority_steps]
        steps = len(layout.priority_steps)
        last = self._lens
        wanted = [(q, k) for q in consumed for k in range(steps)
                  if (last.get(q) or (1,) * steps)[k] != 0]  # not known empty last time
        # LRANGE -1 -1 = LINDEX -1 as a list of one: within the monitor ACL (+lrange)
        calls += [("lrange", (layout.key(q, layout.priority_steps[k]), -1, -1))
                  for q, k in wanted]
        out = pipelined(client, [*calls, ("hlen", (f"{layout.prefix}unacked",))],
                        batch=WATCH_BATCH, raise_on_error=False)
        if out and all(isinstance(v, Exception) for v in out):
            raise out[0]  # nothing readable: the sample failed, with its reason
        now = time.time()
        read: dict[str, list] = {q: [UNREAD] * steps for q in consumed}
        base = len(names) * steps
        for j, (q, k) in enumerate(wanted):
            v = out[base + j]
            read[q][k] = v if isinstance(v, Exception) else head_digest(v[0] if v else None)
        heads = {q: None if any(isinstance(v, Exception) for v in h) else tuple(h)
                 for q, h in read.items()}
        readings = []
        seen_lens: dict[str, tuple] = {}
        for i, q in enumerate(names):
            known = d.queues[q]
            lens = out[i * steps:(i + 1) * steps]
            ready = None if any(isinstance(v, Exception) for v in lens) else \
                sum(int(v or 0) for v in lens)
            if ready is not None:
                seen_lens[q] = tuple(int(v or 0) for v in lens)
            readings.append(QueueReading(
                q, ready, unacked=known.unacked, consumers=known.consumers,
                internal=known.internal, head=heads.get(q)))
        self._lens = seen_lens
        total = out[-1]
        return Sample(now, readings,
                      unacked_total=None if isinstance(total, Exception) else int(total or 0)
                      ), client

    def _sample_rabbit(self, api) -> Sample:
        from celeryctl.collect.rabbitmq import queue_from_api, vq

        if api is None:
            raise ConnectionError("no management API URL: pass --rabbitmq-api")
        data = api.get(f"/queues/{vq(self.target.effective_vhost)}",
                             params={"columns": RABBIT_COLUMNS})
        now = time.time()
        readings = []
        for raw in data or []:
            q = queue_from_api(raw)
            totals = raw.get("message_stats") or {}
            # out: acks when the consumers ack, else deliveries (no-ack consumers, get)
            out_rate = q.ack_rate if q.ack_rate else q.deliver_rate
            out_total = totals.get("ack") or totals.get("deliver_get") or (
                0 if raw.get("message_stats") is not None else None)
            readings.append(QueueReading(
                q.name, q.ready, unacked=q.unacked, consumers=q.consumers,
                internal=q.internal, rate_in=q.publish_rate, rate_out=out_rate,
                published_total=totals.get("publish", 0 if raw.get("message_stats") is not None
                                           else None),
                out_total=out_total, capacity=capacity_of(raw)))
        return Sample(now, readings)

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
