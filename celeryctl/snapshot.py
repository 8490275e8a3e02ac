"""Plain, JSON-serialisable records of what was observed.

Collectors produce them, checks and renderers read them. Nothing here does I/O. Every
observation is an `Observed`: a value, or the precise reason it could not be seen — an
unreachable source is never an empty list.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

SCHEMA = 1


@dataclass(frozen=True)
class Observed(Generic[T]):
    value: T | None = None
    error: str | None = None  # "redis 127.0.0.1:6379: connection refused (2.0 s)"
    source: str = ""  # which source answered: "redis", "management-api", "amqp", "workers"
    elapsed_seconds: float = 0.0
    notes: tuple[str, ...] = ()
    # what kind of failure `error` is (celeryctl/collect/errors.py): permission-denied,
    # auth-failed, unreachable, not-configured, failed; None when ok
    kind: str | None = None
    # observed, but not all of it: why (e.g. queue discovery without SCAN) — checks that
    # read this part are reported as partial with this reason
    partial: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def state(self) -> str:
        if self.error is None:
            return "observed"
        return self.kind or "failed"


@dataclass(frozen=True)
class SourceStatus:
    """One line of the `sources` list in every JSON output."""

    name: str  # "broker", "workers", "management-api", "result-backend", "amqp"
    url: str | None  # redacted
    ok: bool | None  # None: not checked (celeryctl cannot probe this kind of source)
    error: str | None = None
    elapsed_seconds: float = 0.0
    detail: str | None = None
    # observed, permission-denied, auth-failed, unreachable, not-configured, not-checked,
    # failed (celeryctl/collect/errors.py); derived from `ok` when not given
    kind: str | None = None
    # reads of this source that were not observed although it answered ("CLIENT LIST:
    # permission denied ..."): what is missing from an otherwise observed source
    partial: tuple[str, ...] = ()

    @property
    def state(self) -> str:
        if self.ok:
            return "observed"
        if self.ok is None:
            return self.kind if self.kind in ("not-configured", "not-checked") \
                else "not-checked"
        return self.kind or "unreachable"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "ok": self.ok, "state": self.state,
                "error": self.error, "elapsed_seconds": round(self.elapsed_seconds, 3),
                "detail": self.detail, "partial": list(self.partial)}


# --- workers -----------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerNode:
    """One worker as it answered remote control. Two workers with the same node name are two
    WorkerNodes: they are never merged."""

    name: str
    replies: dict[str, Any] = field(default_factory=dict)  # method -> raw reply
    undecodable: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkersView:
    nodes: tuple[WorkerNode, ...] = ()
    methods: tuple[str, ...] = ()
    expected: tuple[str, ...] | None = None  # node names from pidbox bindings; None = unknown
    expected_source: str | None = None  # "redis binding", "management-api binding"
    expected_error: str | None = None
    waited_seconds: float = 0.0
    returned_early: bool = False
    foreign_replies: int = 0  # replies that could not be decoded (e.g. pickle)
    foreign_content_types: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @property
    def missing(self) -> list[str]:
        if self.expected is None:
            return []
        seen = set(self.names)
        return [e for e in self.expected if e not in seen]


# --- queues ------------------------------------------------------------------------------

@dataclass(frozen=True)
class QueueDepth:
    name: str
    broker: str  # "redis" | "rabbitmq"
    vhost: str | None = None
    ready: int | None = None
    buckets: dict[str, int] | None = None  # Redis: priority step -> LLEN ("0", "3", ...)
    unacked: int | None = None
    oldest_unacked_seconds: float | None = None
    consumers: int | None = None
    consumers_source: str | None = None  # "broker" | "workers"
    consumer_workers: tuple[str, ...] = ()
    publish_rate: float | None = None  # messages/s (management API)
    deliver_rate: float | None = None
    ack_rate: float | None = None
    internal: bool = False  # pidbox replies, celeryev, result queues
    exists: bool = True
    source: str = ""  # "redis" | "management-api" | "amqp"
    discovered_by: tuple[str, ...] = ()  # binding, worker, app, flag, broker
    # RabbitMQ: classic | quorum | stream. Redis: None, or the TYPE of a queue key that is not
    # a list (hash, string, ...: `error` says which key and why)
    type: str | None = None
    state: str | None = None
    node: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    effective_policy: dict[str, Any] = field(default_factory=dict)  # RabbitMQ policy definition
    messages_bytes: int | None = None
    idle_since: str | None = None
    ttl_seconds: int | None = None  # Redis: TTL of the list (-1 = never expires); internal only
    error: str | None = None  # this queue alone could not be read
    members: tuple[str, ...] = ()  # RabbitMQ quorum queue: its member nodes (leader: `node`)
    online: tuple[str, ...] = ()  # ... and those of them online


def unread_task_queues(queues: list[QueueDepth]) -> list[QueueDepth]:
    """Task queues that were listed but whose depth could not be read (an LLEN refused by
    an ACL, a key that is not a list, a passive declare refused): doctor's verdict and the
    `queues` exit status both treat them as not observed."""
    return [q for q in queues if q.error and not q.internal]


@dataclass(frozen=True)
class RedisUnacked:
    """kombu's ack emulation: the global `unacked` hash and `unacked_index` zset."""

    total: int | None  # None: `unacked` is not a hash (the reason is in `problems`)
    oldest_seconds: float | None
    per_queue: dict[str, int] | None  # None when too many to attribute cheaply (or no hash)
    oldest_per_queue: dict[str, float] | None
    unattributed: int = 0
    mutex_ttl_ms: int | None = None
    malformed: int = 0  # entries that are not kombu's JSON [message, exchange, routing_key]
    # garbage in the bookkeeping, each with the numbers it makes unknown: a key of the wrong
    # type, scores that are no receive time (-inf/+inf/negative), malformed entries
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class InFlightMessage:
    """One entry of kombu's Redis `unacked` hash, reduced to what locates a task: never its
    body or arguments. `delivered_at` is its `unacked_index` score: the epoch time (by the
    consuming worker's clock) at which a consumer received it."""

    delivery_tag: str
    id: str | None = None  # headers.id (the task id)
    task: str | None = None  # headers.task
    exchange: str | None = None
    routing_key: str | None = None
    delivered_at: float | None = None  # None: no index entry, or a score that is no time
    # kombu's restore (visibility timeout sweep, worker shutdown, reject(requeue)) sets
    # headers.redelivered / delivery_info.redelivered on the message it puts back
    restored: bool | None = None
    eta: str | None = None  # headers.eta


@dataclass(frozen=True)
class RedisInFlight:
    """The `unacked` hash read entry by entry (for the task view). `complete`: every entry
    was read (the hash held at most the read limit); otherwise `read` of `total`."""

    messages: tuple[InFlightMessage, ...] = ()
    total: int | None = None
    read: int = 0
    complete: bool = True
    malformed: int = 0
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class MessageSample:
    """One queued message as seen without consuming it: envelope and headers only — the body
    is never decoded (and never unpickled)."""

    queue: str
    priority_step: int | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    task: str | None = None
    id: str | None = None
    eta: str | None = None
    retries: int | None = None
    redelivered: bool | None = None
    compression: str | None = None
    size_bytes: int = 0
    error: str | None = None  # the envelope itself could not be read (garbage, not JSON)


@dataclass(frozen=True)
class QueueGrowth:
    """Net change of a queue's ready count per second, from two samples or broker rates."""

    queue: str
    ready: int
    rate_per_second: float  # > 0 growing, < 0 draining
    source: str  # "samples" | "management-api rates"
    interval_seconds: float | None = None

    @property
    def seconds_to_drain(self) -> float | None:
        """None while growing or flat with a backlog (never drains at this rate)."""
        if self.ready == 0:
            return 0.0
        if self.rate_per_second >= 0:
            return None
        return self.ready / -self.rate_per_second


def growth_from_samples(before: list[QueueDepth], after: list[QueueDepth],
                        interval: float) -> dict[str, QueueGrowth]:
    prev = {q.name: q.ready for q in before if q.ready is not None and not q.internal}
    out = {}
    for q in after:
        if q.internal or q.ready is None or q.name not in prev or interval <= 0:
            continue
        out[q.name] = QueueGrowth(q.name, q.ready, (q.ready - prev[q.name]) / interval,
                                  "samples", interval)
    return out


def growth_from_rates(queues: list[QueueDepth]) -> dict[str, QueueGrowth]:
    """RabbitMQ: net rate = publish rate - ack rate (deliver rate when no acks are counted)."""
    out = {}
    for q in queues:
        if q.internal or q.ready is None or q.publish_rate is None:
            continue
        drain = q.ack_rate if q.ack_rate else (q.deliver_rate or 0.0)
        out[q.name] = QueueGrowth(q.name, q.ready, q.publish_rate - drain,
                                  "management-api rates")
    return out


def rss_growth(before: WorkersView, after: WorkersView) -> dict[str, tuple[int, int, bool]]:
    """node -> (peak RSS KiB in the first sample, in the second, whether the pool recycles its
    processes: max-tasks-per-child set), for nodes seen in both `stats` replies."""
    def peaks(view: WorkersView) -> dict[str, tuple[int, bool]]:
        out: dict[str, tuple[int, bool]] = {}
        for n in view.nodes:
            st = n.replies.get("stats") or {}
            maxrss = (st.get("rusage") or {}).get("maxrss")
            if isinstance(maxrss, int):
                recycles = bool((st.get("pool") or {}).get("max-tasks-per-child"))
                out.setdefault(n.name, (maxrss, recycles))
        return out

    a, b = peaks(before), peaks(after)
    return {n: (a[n][0], b[n][0], b[n][1]) for n in a if n in b}


# --- connections -------------------------------------------------------------------------

@dataclass(frozen=True)
class Connection:
    """A Redis client (CLIENT LIST) or a RabbitMQ connection (/api/connections), normalised."""

    broker: str  # "redis" | "rabbitmq"
    address: str
    name: str | None = None
    id: str | None = None
    age_seconds: float | None = None
    idle_seconds: float | None = None
    command: str | None = None  # Redis cmd=; RabbitMQ: state
    state: str | None = None
    flags: str | None = None
    db: int | None = None
    user: str | None = None
    vhost: str | None = None
    channels: int | None = None
    heartbeat_seconds: int | None = None
    role: str | None = None  # consumer-brpop | pubsub | pool | celeryctl | ...
    consumers: int | None = None  # RabbitMQ: consumers on its channels (None: not known)
    worker: str | None = None  # attributed worker node name(s)
    worker_match: str | None = None  # "exact" (pidbox consumer / name) | "host"
    raw: dict[str, Any] = field(default_factory=dict)


# --- servers -----------------------------------------------------------------------------

@dataclass(frozen=True)
class RedisServer:
    version: str | None
    info: dict[str, Any]
    config: dict[str, str] | None
    config_error: str | None
    keyprefix: str
    keyprefix_source: str
    other_keyprefixes: tuple[str, ...] = ()
    # kombu's binding tables holding what kombu never writes: a `_kombu.binding.*` key that
    # is not a set, members that do not split in three, members that are not UTF-8
    binding_garbage: tuple[str, ...] = ()


@dataclass(frozen=True)
class RabbitServer:
    version: str | None
    cluster_name: str | None
    management_version: str | None
    overview: dict[str, Any]
    # /api/nodes; [] with overview["unread"]["nodes"] when refused (see checks/rabbit.py)
    nodes: list[dict[str, Any]]
    vhost_limits: dict[str, dict[str, int]] = field(default_factory=dict)  # vhost -> limits
    listeners: list[dict[str, Any]] = field(default_factory=list)  # node, protocol, ip, port
    user_limits: dict[str, dict[str, int]] = field(default_factory=dict)  # user -> limits
    user: dict[str, Any] | None = None  # /api/whoami: the account celeryctl uses, its tags

    @property
    def unread(self) -> dict[str, str]:
        """Whole reads the API refused or does not serve (read -> why)."""
        return dict((self.overview or {}).get("unread") or {})

    @property
    def sees_all_connections(self) -> bool | None:
        """The API lists every user's connections only to monitoring/administrator users; a
        management-tag user sees its own. None: cannot tell (collect_rabbit_server decides
        from the account's tags, else from what the API served)."""
        return (self.overview or {}).get("api_user_is_monitor")


@dataclass(frozen=True)
class BackendStatus:
    url: str | None  # redacted
    kind: str  # redis | rpc | amqp | database | cache | other | none
    reachable: bool | None  # None = not checked (kind celeryctl cannot probe)
    error: str | None = None
    same_instance_as_broker: bool | None = None
    same_db_as_broker: bool | None = None
    detail: str | None = None
    result_keys_sampled: int | None = None  # Redis: celery-task-meta-* keys whose TTL was read
    result_keys_without_ttl: int | None = None


def to_jsonable(obj: Any) -> Any:
    """Dataclasses (incl. Observed) to plain dicts/lists, recursively."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, Observed):
            out["ok"] = obj.ok
        return out
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


# --- doctor ------------------------------------------------------------------------------

@dataclass
class Snapshot:
    """Everything doctor observed, in one place: checks read only this.

    `parts` maps a name (broker, workers, queues, connections, redis_server, redis_unacked,
    rabbit_server, backend, app) to an Observed. A part that is missing or failed makes the
    checks that need it *skipped*, with the reason."""

    broker_kind: str  # redis | amqp
    target: dict[str, Any]
    parts: dict[str, Observed] = field(default_factory=dict)
    sources: list[SourceStatus] = field(default_factory=list)
    taken_at: float = 0.0
    broker_hosts: tuple[str, ...] = ()

    def part(self, name: str) -> Observed | None:
        """A part by name. Snapshots written before INFO and CONFIG were separate reads (and
        tests that build one RedisServer) carry both in `redis_server`: `redis_info` and
        `redis_config` are derived from it when absent."""
        got = self.parts.get(name)
        if got is not None or name not in ("redis_info", "redis_config"):
            return got
        srv = self.parts.get("redis_server")
        if srv is None:
            return None
        value = srv.value if srv.ok else None
        if value is None:
            return Observed(error=srv.error, kind=srv.kind)
        if name == "redis_info":
            return Observed(dict(value.info), source=srv.source) if value.info else Observed(
                error="INFO not recorded in this snapshot")
        if value.config is not None:
            return Observed(dict(value.config), source=srv.source)
        return Observed(error=value.config_error or "CONFIG GET not recorded",
                        kind="permission-denied" if value.config_error else None)

    def observed(self, name: str) -> bool:
        part = self.part(name)
        return part is not None and part.ok and part.value is not None

    def why_not(self, name: str) -> str:
        part = self.part(name)
        if part is None:
            return "not collected"
        return part.error or "no value"

    def get(self, name: str) -> Any:
        part = self.part(name)
        return part.value if part is not None and part.ok else None

    @property
    def workers(self) -> WorkersView | None:
        return self.get("workers")

    @property
    def queues(self) -> list[QueueDepth]:
        return self.get("queues") or []

    @property
    def app_settings(self) -> dict[str, Any] | None:
        return self.get("app")

    def worker_confs(self) -> dict[str, dict[str, Any]]:
        """node name -> `inspect conf(with_defaults=True)` reply (first of duplicate names)."""
        out: dict[str, dict[str, Any]] = {}
        view = self.workers
        for n in view.nodes if view else ():
            conf = n.replies.get("conf")
            if isinstance(conf, dict):
                out.setdefault(n.name, conf)
        return out
