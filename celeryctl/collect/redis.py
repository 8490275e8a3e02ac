"""Redis broker collector: the only code that talks to a Redis broker.

Key layout is kombu's (celery/kombu `kombu/transport/redis.py`, see
shared/reference/celery-internals.md §1): queue `q` is the list `P+q` for priority step 0 and
`P+q+SEP+str(step)` for each other step; bindings are SETs `P_kombu.binding.<exchange>` whose
members are `routing_key SEP pattern SEP queue`; in-flight messages are the global HASH
`P+unacked` (tag -> `[envelope, exchange, routing_key]`) with the ZSET `P+unacked_index`
(tag -> epoch seconds when a consumer received it).

Read-only: SCAN, SMEMBERS, LLEN, HLEN, HSCAN, ZRANGE, PTTL, TYPE, INFO, CONFIG GET, CLIENT LIST,
CLIENT ID. Never KEYS, never a write. A key that does not hold what kombu writes there (a
queue that is not a list, garbage in `unacked`) costs only the numbers it feeds, with the
reason named ("WRONGTYPE: a hash, not a list"); no number read is ever non-finite.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from celeryctl.snapshot import Connection, MessageSample, QueueDepth, RedisServer, RedisUnacked
from celeryctl.urls import Endpoint, sentinel_master_name

DEFAULT_SEP = "\x06\x16"
DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
BINDING = "_kombu.binding."
SCAN_COUNT = 5000
# HSCAN of `unacked` moves every in-flight body over the wire; above this many entries only
# the total and the oldest age are read (per-queue attribution is then reported as unknown).
UNACKED_ATTRIBUTION_LIMIT = 5000
# unacked_index scores that are no receive time (-inf, +inf, negative) counted up to this many
BAD_SCORES_LISTED = 100
PIPELINE_BATCH = 2000  # commands per round trip: bounded client and server buffers
SAMPLE_QUEUES_LIMIT = 200  # queues sampled (the deepest first): doctor's reads stay bounded
CONFIG_KEYS = ("maxclients", "timeout", "tcp-keepalive", "maxmemory", "maxmemory-policy",
               "save", "appendonly", "client-output-buffer-limit", "bind", "protected-mode")
# never `requirepass` or `masterauth`: CONFIG GET would return the password itself


def redis_client(ep: Endpoint, timeout: float, *, db: int | None = None):
    """A redis-py client with connect and read timeouts and no retries (redis-py >= 6
    otherwise retries 3 times with backoff, which would break the time budget). TLS from
    `ep.tls` (URL parameters, profile, app: see celeryctl/tls.py)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    kwargs: dict[str, Any] = dict(
        host=ep.host, port=ep.port, db=ep.redis_db if db is None else db,
        username=ep.username or None, password=ep.password or None,
        socket_connect_timeout=timeout, socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0), health_check_interval=0,
        client_name=None, decode_responses=False,
    )
    if ep.tls is not None:
        from celeryctl.tls import redis_ssl_kwargs

        kwargs.update(ssl=True, **redis_ssl_kwargs(ep.tls))
    elif ep.scheme == "rediss":  # an Endpoint not resolved by targets: TLS, verified
        kwargs.update(ssl=True, ssl_cert_reqs="required")
    return guarded(redis.Redis(**kwargs))


def guarded(client):
    """Give a redis-py client a `SocketGuard` (collect/bounded.py): every socket its pool
    opens is registered, so a caller that abandons a read at its deadline can shut them down
    (`bounded.shutdown_redis`) — socket timeouts are per recv, a trickle never trips them."""
    from celeryctl.collect.bounded import SocketGuard

    guard = SocketGuard()
    pool = client.connection_pool
    base = pool.connection_class

    class GuardedConnection(base):  # type: ignore[misc, valid-type]
        def _connect(self):
            sock = super()._connect()
            guard.opened(sock)
            return sock

    GuardedConnection.__name__ = base.__name__
    pool.connection_class = GuardedConnection
    client.celeryctl_guard = guard
    return client


def _sentinel_client(ep: Endpoint, timeout: float, options: dict[str, Any] | None):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from celeryctl.tls import redis_ssl_kwargs, resolve_tls, settings_from_mapping

    skw = (options or {}).get("sentinel_kwargs") or {}
    # the sentinels' own TLS is kombu's `sentinel_kwargs` (ssl=True, ssl_ca_certs, ...);
    # broker_use_ssl is for the master, as in kombu's SentinelChannel
    ssl_opts = {k: v for k, v in skw.items() if k.startswith("ssl_")}
    layer = settings_from_mapping(ssl_opts or bool(skw.get("ssl")), "sentinel_kwargs")
    tls = resolve_tls("sentinel", [("sentinel_kwargs", layer)])
    ssl_kwargs = dict(ssl=True, **redis_ssl_kwargs(tls)) if tls is not None else {}
    return redis.Redis(host=ep.host, port=ep.port, password=skw.get("password") or None,
                       username=skw.get("username") or None,
                       socket_connect_timeout=timeout, socket_timeout=timeout,
                       retry=Retry(NoBackoff(), 0), health_check_interval=0, **ssl_kwargs)


def resolve_sentinel_master(endpoints: tuple[Endpoint, ...], timeout: float,
                            options: dict[str, Any] | None) -> Endpoint:
    """`SENTINEL GET-MASTER-ADDR-BY-NAME` on each sentinel in turn: the current master, as a
    redis:// Endpoint with the URL's password and db. Raises ConnectionError naming every
    sentinel tried when none knows the master."""
    from urllib.parse import quote

    from celeryctl.collect.bounded import describe_error

    name = sentinel_master_name(endpoints, options)
    errors = []
    for ep in endpoints:
        client = _sentinel_client(ep, timeout, options)
        try:
            addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
            if not addr:
                errors.append(f"sentinel {ep.address}: no master named {name!r}")
                continue
            host, port = _s(addr[0]), int(addr[1])
            auth = ""
            if ep.password:
                auth = (quote(ep.username, safe="") if ep.username else "") + ":" + \
                    quote(ep.password, safe="") + "@"
            db = ep.path or "0"
            # the master is reached with the broker's TLS settings (kombu: broker_use_ssl
            # makes the managed master connections SSL)
            return Endpoint(raw=f"redis://{auth}{host}:{port}/{db}", scheme="redis",
                            host=host, port=port, username=ep.username,
                            password=ep.password, path=db, tls=ep.tls)
        except Exception as exc:  # noqa: BLE001 - try the next sentinel
            errors.append(f"sentinel {ep.address}: {describe_error(exc)}")
        finally:
            client.close()
    raise ConnectionError("; ".join(errors))


def resolve_endpoints(endpoints: tuple[Endpoint, ...], timeout: float,
                      options: dict[str, Any] | None) -> tuple[Endpoint, ...]:
    """The Redis servers to connect to: the URLs themselves, or — for sentinel:// URLs — the
    current master (one place, so every connection follows a failover the same way)."""
    if endpoints and endpoints[0].scheme == "sentinel":
        return (resolve_sentinel_master(endpoints, timeout, options),)
    return endpoints


def collect_sentinel(endpoints: tuple[Endpoint, ...], timeout: float,
                     options: dict[str, Any] | None) -> dict[str, Any]:
    """Every sentinel's view of the master: `SENTINEL MASTER`, `REPLICAS`, `SENTINELS` (one
    pipeline per sentinel). -> {master_name, sentinels: [{address, ok, error, master,
    replicas, sentinels}]}; the checks compare them."""
    from celeryctl.collect.bounded import describe_error

    name = sentinel_master_name(endpoints, options)
    views = []
    for ep in endpoints:
        client = _sentinel_client(ep, timeout, options)
        try:
            pipe = client.pipeline(transaction=False)
            pipe.execute_command("SENTINEL", "MASTER", name)
            pipe.execute_command("SENTINEL", "REPLICAS", name)
            pipe.execute_command("SENTINEL", "SENTINELS", name)
            master, replicas, sentinels = pipe.execute()
            views.append({"address": ep.address, "ok": True, "error": None,
                          "master": _pairs(master),
                          "replicas": [_pairs(r) for r in replicas or []],
                          "sentinels": [_pairs(x) for x in sentinels or []]})
        except Exception as exc:  # noqa: BLE001 - this sentinel's view is missing, not all
            views.append({"address": ep.address, "ok": False, "error": describe_error(exc)})
        finally:
            client.close()
    return {"master_name": name, "sentinels": views}


def _pairs(reply: Any) -> dict[str, str]:
    """A SENTINEL reply (flat [k, v, k, v, ...] list, or a dict from redis-py) -> str dict."""
    if isinstance(reply, dict):
        return {_s(k): _s(v) for k, v in reply.items()}
    items = list(reply or [])
    return {_s(items[i]): _s(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def connect_first(endpoints: tuple[Endpoint, ...], timeout: float,
                  options: dict[str, Any] | None = None, opened: list | None = None):
    """Try each failover URL in order; return (client, endpoint) of the first that PINGs.
    Raises the last error, with every attempt named. sentinel:// URLs are resolved to the
    current master first (`options`: the transport options, for master_name). `opened`
    collects every client made, so a caller that abandons the call at its deadline can shut
    them down (collect/bounded.py)."""
    endpoints = resolve_endpoints(endpoints, timeout, options)
    errors = []
    from celeryctl.collect.errors import Denied, classify, redis_denial

    kind = None
    for ep in endpoints:
        client = redis_client(ep, timeout)
        if opened is not None:
            opened.append(client)
        try:
            try:
                client.ping()
            except Exception as exc:  # noqa: BLE001 - a refused PING is still an answer
                if redis_denial(exc) is None:
                    raise
                refused = _refused_command(exc)
                if refused not in (None, "ping"):
                    # redis-py runs AUTH/SELECT/HELLO on connect: every later command
                    # would fail the same way, so this account cannot read this db at all
                    raise Denied(f"{refused.upper()} while connecting (db "
                                 f"{ep.redis_db})", f"ACL +{refused}",
                                 redis_denial(exc) or "") from None
            return client, ep
        except Exception as exc:  # noqa: BLE001 - collected, reported together
            kind, text = classify(exc)
            errors.append(f"{ep.address}: {text}" if len(endpoints) > 1 else text)
            client.close()
    err = ConnectionError("; ".join(errors))
    err.kind = kind or "failed"  # type: ignore[attr-defined]
    raise err


def _refused_command(exc: BaseException) -> str | None:
    """The command an ACL refused, from redis's "no permissions to run the 'X' command"."""
    import re

    m = re.search(r"run the '([a-z|_-]+)' command", str(exc), re.I)
    return m.group(1).lower() if m else None


@dataclass
class RedisLayout:
    """Where kombu keeps things on this broker (from transport options, else detected)."""

    prefix: str = ""
    prefix_source: str = "default"
    sep: str = DEFAULT_SEP
    priority_steps: tuple[int, ...] = DEFAULT_PRIORITY_STEPS
    visibility_timeout: float = 3600.0
    other_prefixes: tuple[str, ...] = ()

    def key(self, queue: str, step: int = 0) -> bytes:
        name = f"{self.prefix}{queue}" if not step else f"{self.prefix}{queue}{self.sep}{step}"
        return name.encode("utf-8", "surrogateescape")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RedisLayout:
        layout = cls()
        if options.get("global_keyprefix") not in (None, "", "********"):
            layout.prefix = str(options["global_keyprefix"])
            layout.prefix_source = "transport options"
        if options.get("sep"):
            layout.sep = str(options["sep"])
        steps = options.get("priority_steps")
        if steps:
            layout.priority_steps = tuple(sorted({int(s) for s in steps} | {0}))
        if options.get("visibility_timeout"):
            layout.visibility_timeout = float(options["visibility_timeout"])
        return layout


@dataclass
class Binding:
    exchange: str
    routing_key: str
    pattern: str
    queue: str


@dataclass
class RedisDiscovery:
    layout: RedisLayout
    bindings: list[Binding] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # binding tables SMEMBERS refused
    # kombu never writes these: a binding table that is not a set, members that do not split
    # in `routing_key SEP pattern SEP queue`, members that are not UTF-8 (kept byte for byte)
    garbage: list[str] = field(default_factory=list)
    error: str | None = None  # SCAN itself refused: no binding was read at all

    @property
    def pidbox_nodes(self) -> list[str]:
        """Worker node names from the `<control_exchange>.pidbox` fanout bindings."""
        out = []
        for b in self.bindings:
            if b.exchange.endswith(".pidbox") and not b.exchange.startswith("reply.") \
                    and b.queue.endswith(f".{b.exchange}"):
                out.append(b.queue[: -len(b.exchange) - 1])
        return sorted(set(out))

    def queue_names(self) -> dict[str, bool]:
        """Queues that are Redis lists: name -> internal. Fanout queues (worker pidbox,
        celeryev receivers) are PUB/SUB and never hold messages, so they are left out."""
        out: dict[str, bool] = {}
        for b in self.bindings:
            if b.exchange.startswith("reply.") and b.exchange.endswith(".pidbox"):
                out[b.queue] = True
            elif b.exchange.endswith(".pidbox") or b.exchange == "celeryev" or \
                    b.queue.startswith("celeryev."):
                continue
            else:
                out.setdefault(b.queue, False)
        return out

    def resolve(self, exchange: str, routing_key: str) -> list[str]:
        """kombu's `_lookup`: the queues a message published to (exchange, routing_key) went to."""
        if not exchange:
            return [routing_key]
        table = [b for b in self.bindings if b.exchange == exchange]
        direct = [b.queue for b in table if b.routing_key == routing_key]
        if direct:
            return direct
        return sorted({b.queue for b in table}) if table and all(
            not b.routing_key or b.routing_key == "#" for b in table) else []


def detect_layout(client, options: dict[str, Any]) -> tuple[RedisLayout, list[bytes]]:
    """Read transport options and SCAN for `*_kombu.binding.*` to find the global key prefix
    when none was configured (one SCAN pass serves both purposes). A refused SCAN raises
    `Denied`: the caller falls back to the layout of the options and the queues it knows."""
    from celeryctl.collect.errors import redis_op

    layout = RedisLayout.from_options(options)
    with redis_op("SCAN MATCH *_kombu.binding.* (discovering queues and workers)", "+scan"):
        keys = list(client.scan_iter(match=b"*" + BINDING.encode() + b"*", count=SCAN_COUNT))
    by_prefix: dict[str, list[bytes]] = {}
    for k in keys:
        text = k.decode("utf-8", "surrogateescape")
        prefix = text[: text.find(BINDING)]
        by_prefix.setdefault(prefix, []).append(k)
    if layout.prefix_source == "default" and "" not in by_prefix and len(by_prefix) == 1:
        layout.prefix = next(iter(by_prefix))
        layout.prefix_source = "detected from _kombu.binding keys"
    layout.other_prefixes = tuple(sorted(p for p in by_prefix if p != layout.prefix))
    return layout, by_prefix.get(layout.prefix, [])


def discovery_or_known(client, transport_options) -> RedisDiscovery:
    """collect_discovery, or — when the account may not SCAN (an ACL, a renamed command) —
    an empty discovery carrying the refusal: the callers go on with the queue names they
    know (flags, the app, the workers). Other errors propagate."""
    from celeryctl.collect.errors import DENIED, classify

    try:
        return collect_discovery(client, transport_options)
    except Exception as exc:  # noqa: BLE001 - discovery refused: what else we know
        kind, text = classify(exc)
        if kind != DENIED:
            raise
        return RedisDiscovery(layout=RedisLayout.from_options(transport_options), error=text)


def collect_discovery(client, options: dict[str, Any]) -> RedisDiscovery:
    """`SCAN MATCH *_kombu.binding.*` then `SMEMBERS` each (pipelined) -> bindings. A binding
    table this account may not read is named in `unreadable` (the others still count)."""
    from celeryctl.collect.errors import redis_denial, redis_op

    layout, keys = detect_layout(client, options)
    with redis_op("SMEMBERS of the _kombu.binding.* tables", "+smembers"):
        members = pipelined(client, [("smembers", (k,)) for k in keys], raise_on_error=False)
    bindings = []
    unreadable = []
    garbage = []
    plen = len(layout.prefix) + len(BINDING)
    wrong = [k for k, mems in zip(keys, members, strict=True) if is_wrongtype(mems)]
    types = dict(zip(wrong, key_types(client, wrong), strict=True))
    for k, mems in zip(keys, members, strict=True):
        exchange = k.decode("utf-8", "surrogateescape")[plen:]
        table = f"{BINDING}{literal_text(exchange)}"
        if k in types:
            garbage.append(f"{table}: {wrongtype_reason(types[k], 'set')}")
            continue
        if isinstance(mems, Exception):
            why = redis_denial(mems)
            unreadable.append(f"{literal_text(exchange)}: "
                              f"{why or ' '.join(str(mems).split())[:120]}")
            continue
        table_bindings, problems = parse_binding_members(exchange, mems or (), layout.sep)
        bindings.extend(table_bindings)
        garbage.extend(f"{table}: {p}" for p in problems)
    return RedisDiscovery(layout=layout, bindings=bindings, unreadable=unreadable,
                          garbage=garbage)


def parse_binding_members(exchange: str, members, sep: str = DEFAULT_SEP
                          ) -> tuple[list[Binding], list[str]]:
    """kombu's binding members `routing_key SEP pattern SEP queue` -> Bindings, and what was
    wrong with the others: members that do not split in three are left out; members that are
    not UTF-8 are decoded as kombu's `get_table` decodes them (`errors="replace"`: U+FFFD for
    each bad byte), so the queue read is the one kombu routes to, and every name stays
    valid text (strict JSON)."""
    bindings = []
    malformed: list[bytes] = []
    not_utf8: list[bytes] = []
    for m in members:
        raw = m if isinstance(m, bytes) else str(m).encode("utf-8", "surrogateescape")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            not_utf8.append(raw)
        parts = raw.decode("utf-8", "replace").split(sep)
        if len(parts) == 3:
            bindings.append(Binding(exchange, parts[0], parts[1], parts[2]))
        else:
            malformed.append(raw)
    problems = []
    if malformed:
        problems.append(f"{len(malformed)} member(s) not kombu's 'routing_key{literal_text(sep)}"
                        f"pattern{literal_text(sep)}queue' (left out), e.g. "
                        f"'{literal_text(sorted(malformed)[0], 60)}'")
    if not_utf8:
        problems.append(f"{len(not_utf8)} member(s) not UTF-8 (read as kombu reads them, "
                        f"each bad byte as U+FFFD), e.g. "
                        f"'{literal_text(sorted(not_utf8)[0], 60)}'")
    return bindings, problems


def collect_unacked(client, layout: RedisLayout, discovery: RedisDiscovery | None,
                    now: float | None = None) -> RedisUnacked:
    """`HLEN unacked`, the oldest receive time (`ZRANGE unacked_index 0 (+inf BYSCORE LIMIT 0 1
    WITHSCORES`), the scores that are no receive time (`ZRANGE ... -inf (0 BYSCORE` and
    `+inf +inf BYSCORE`, at most BAD_SCORES_LISTED + 1 each), `PTTL unacked_mutex`, one
    pipeline; when the hash is small enough, `HSCAN unacked` +
    `ZRANGE unacked_index 0 -1 WITHSCORES` to attribute each in-flight message to its queue
    (via its exchange/routing key, as kombu's restore does).

    Garbage costs only the numbers it feeds, each named in `problems`: `unacked` that is not
    a hash -> total and per-queue counts None; `unacked_index` that is not a sorted set ->
    ages None; a score that is -inf, +inf or negative (kombu writes `time()`; its sweep reads
    only [0, now - visibility_timeout], so such an entry is never restored) gives no age;
    an entry that is not JSON `[message, exchange, routing_key]` is counted in `malformed`.
    No number is ever non-finite. A refused command still raises `Denied`."""
    from celeryctl.collect.errors import redis_denial, redis_op

    now = time.time() if now is None else now
    p = layout.prefix
    ukey, ikey, mkey = f"{p}unacked", f"{p}unacked_index", f"{p}unacked_mutex"
    by_score = {"byscore": True, "offset": 0}
    reads = pipelined(client, [
        ("hlen", (ukey,)),
        ("zrange", (ikey, 0, "(+inf"), dict(by_score, num=1, withscores=True)),
        ("zrange", (ikey, "-inf", "(0"), dict(by_score, num=BAD_SCORES_LISTED + 1)),
        ("zrange", (ikey, "+inf", "+inf"), dict(by_score, num=BAD_SCORES_LISTED + 1)),
        ("pttl", (mkey,))], raise_on_error=False)
    for r in reads:
        if isinstance(r, Exception) and (redis_denial(r) or not is_wrongtype(r)):
            with redis_op("HLEN/ZRANGE/PTTL of unacked, unacked_index, unacked_mutex",
                          "+hlen +zrange +pttl and read access to those keys"):
                raise r
    total_r, oldest_r, below_r, above_r, mutex_ttl = reads
    problems: list[str] = []
    wrong = [k for k, r in ((ukey, total_r), (ikey, oldest_r)) if is_wrongtype(r)]
    types = dict(zip(wrong, key_types(client, [k.encode("utf-8", "surrogateescape")
                                               for k in wrong]), strict=True))
    hash_ok, index_ok = ukey not in types, ikey not in types
    if not hash_ok:
        problems.append(f"unacked: {wrongtype_reason(types[ukey], 'hash')}: the in-flight "
                        f"count and the per-queue in-flight counts are unknown")
    if not index_ok:
        problems.append(f"unacked_index: {wrongtype_reason(types[ikey], 'zset')}: the ages "
                        f"of in-flight messages are unknown")
    total = int(total_r or 0) if hash_ok else None
    oldest_seconds = None
    if index_ok:
        bad = len(below_r or ()) + len(above_r or ())
        if bad:
            many = max(len(below_r or ()), len(above_r or ())) > BAD_SCORES_LISTED
            problems.append(f"unacked_index: {'more than ' if many else ''}"
                            f"{min(bad, BAD_SCORES_LISTED)} score(s) that are no receive time "
                            f"(-inf, +inf or negative): those entries have no age, and "
                            f"kombu's visibility sweep never restores them")
        score = _score(oldest_r[0][1]) if oldest_r else None
        oldest_seconds = max(0.0, now - score) if score is not None else None
    per_queue: dict[str, int] | None = None
    oldest_per_queue: dict[str, float] | None = None
    unattributed = 0
    malformed = 0
    if total == 0:
        per_queue, oldest_per_queue = {}, ({} if index_ok else None)
    elif total is not None and total <= UNACKED_ATTRIBUTION_LIMIT:
        with redis_op("ZRANGE unacked_index / HSCAN unacked", "+zrange +hscan"):
            scores: dict[bytes, float] = {}
            if index_ok:
                for tag, sc in client.zrange(ikey, 0, -1, withscores=True):
                    good = _score(sc)
                    if good is not None:
                        scores[tag] = good
            entries = list(client.hscan_iter(ukey, count=1000))
        per_queue = {}
        oldest_per_queue = {} if index_ok else None
        example = None
        for tag, raw in entries:
            parsed = parse_unacked_entry(raw)
            if isinstance(parsed, str):
                malformed += 1
                example = example or f"{literal_text(tag, 40)}: {parsed}"
                continue
            exchange, routing_key = parsed
            queues = (discovery.resolve(exchange, routing_key) if discovery
                      else [routing_key])
            if not queues:
                unattributed += 1
                continue
            age = max(0.0, now - scores[tag]) if tag in scores else None
            for q in queues:
                per_queue[q] = per_queue.get(q, 0) + 1
                if age is not None and oldest_per_queue is not None:
                    oldest_per_queue[q] = max(oldest_per_queue.get(q, 0.0), age)
        if malformed:
            problems.append(f"unacked: {malformed} entr{'y' if malformed == 1 else 'ies'} "
                            f"not kombu's JSON [message, exchange, routing_key] (e.g. "
                            f"{example}): not attributed to any queue")
    return RedisUnacked(total=total, oldest_seconds=oldest_seconds,
                        per_queue=per_queue, oldest_per_queue=oldest_per_queue,
                        unattributed=unattributed,
                        mutex_ttl_ms=int(mutex_ttl) if mutex_ttl and mutex_ttl > 0 else None,
                        malformed=malformed, problems=tuple(problems))


def _score(value: Any) -> float | None:
    """A zset score as a receive time: None unless a finite, non-negative number."""
    import math

    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) and score >= 0 else None


def parse_unacked_entry(raw: bytes | str) -> tuple[str, str] | str:
    """One `unacked` value, kombu's JSON `[message, exchange, routing_key]` ->
    (exchange, routing_key); anything else -> why it is not that (a short reason)."""
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not JSON ({type(exc).__name__})"
    except RecursionError:
        return "not JSON (nested too deep)"
    if not isinstance(value, list):
        return f"a JSON {_json_kind(value)}, not a list of 3"
    if len(value) != 3:
        return f"a JSON list of {len(value)}, not 3"
    message, exchange, routing_key = value
    if not isinstance(message, dict):
        return f"its message is a JSON {_json_kind(message)}, not an object"
    if not all(isinstance(v, (str, type(None))) for v in (exchange, routing_key)):
        return "its exchange or routing key is not a string"
    return exchange or "", routing_key or ""


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _json_kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), "number")


def pipelined(client, calls: list[tuple], batch: int = PIPELINE_BATCH, *,
              raise_on_error: bool = True) -> list:
    """Run (method, args[, kwargs]) calls in pipelines of at most `batch` commands: one round trip for
    a small cluster, a bounded number of bounded ones for 10,000 queues. Never MULTI/EXEC
    (`transaction=False`): a read needs no transaction, and managed Redis or an ACL may
    refuse MULTI. `raise_on_error=False`: a command the server refused (NOPERM on one key,
    WRONGTYPE) comes back as its exception in place, and the others still count."""
    out: list = []
    for i in range(0, len(calls), batch):
        pipe = client.pipeline(transaction=False)
        for name, args, *kwargs in calls[i:i + batch]:
            getattr(pipe, name)(*args, **(kwargs[0] if kwargs else {}))
        out.extend(pipe.execute(raise_on_error=raise_on_error))
    return out


# --- keys that do not hold what kombu writes -----------------------------------------------

TYPE_PHRASES = {"string": "a string", "list": "a list", "set": "a set", "zset": "a sorted set",
                "hash": "a hash", "stream": "a stream",
                "none": "no key (it went away while being read)"}


def is_wrongtype(reply: Any) -> bool:
    """A pipelined reply that is Redis's `WRONGTYPE Operation against a key holding the wrong
    kind of value` (the key exists but is not of the type the command reads)."""
    return isinstance(reply, Exception) and str(reply).lstrip().startswith("WRONGTYPE")


def type_phrase(redis_type: str | None) -> str:
    """`TYPE` reply -> "a hash", "a sorted set", ...; a module type (`ReJSON-RL`) as itself."""
    if redis_type is None:
        return "of a type that could not be read"
    return TYPE_PHRASES.get(redis_type, f"a {literal_text(redis_type)} value")


def wrongtype_reason(actual: str | None, expected: str) -> str:
    """"WRONGTYPE: a hash, not a list" — the key's real TYPE named."""
    return f"WRONGTYPE: {type_phrase(actual)}, not {type_phrase(expected)}"


def key_types(client, keys: list[bytes]) -> list[str | None]:
    """`TYPE` of each key (pipelined); None where TYPE itself was refused."""
    if not keys:
        return []
    out = pipelined(client, [("type", (k,)) for k in keys], raise_on_error=False)
    return [None if isinstance(t, Exception) else _s(t) for t in out]


def literal_text(value: bytes | str, limit: int = 80) -> str:
    """Bytes or text from the broker as printable text: not UTF-8 bytes as \\xNN, control
    characters (kombu's separator \\x06\\x16 among them) as \\xNN, cut at `limit`."""
    if isinstance(value, str):  # names read with surrogateescape: back to their bytes
        value = value.encode("utf-8", "surrogateescape" if _escaped_only(value)
                             else "backslashreplace")
    value = value.decode("utf-8", "backslashreplace")
    out = "".join(c if c.isprintable() else
                  (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                  for c in value)
    return out if len(out) <= limit else out[:limit - 3] + "..."


def _escaped_only(text: str) -> bool:
    """Every surrogate in `text` is one surrogateescape made (a byte that was not UTF-8)."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def key_label(queue: str, step: int) -> str:
    """How a queue's key is named in a reason: the queue, or its priority sub-list."""
    return queue if not step else f"{queue} (priority {step} sub-list)"


def collect_depths(client, layout: RedisLayout, queues: list[str]
                   ) -> tuple[dict[str, dict[str, int]], dict[str, str], dict[str, str]]:
    """`LLEN` of every queue's priority sub-lists, as kombu's `Channel._size`, pipelined
    (PIPELINE_BATCH commands per round trip). Returns (queue -> {step: length} (step "0" is
    the bare list), queue -> why it could not be read, queue -> the Redis TYPE of its key
    that is not a list). A key this account may not read, or one that is not a list
    (WRONGTYPE: its real type is read with `TYPE` and named, "WRONGTYPE: a hash, not a
    list"), costs that queue only. Every key refused: `Denied`."""
    from celeryctl.collect.errors import redis_denial, redis_op

    keys = [(q, step) for q in queues for step in layout.priority_steps]
    lengths = pipelined(client, [("llen", (layout.key(q, step),)) for q, step in keys],
                        raise_on_error=False)
    wrong = [i for i, n in enumerate(lengths) if is_wrongtype(n)]
    types = dict(zip(wrong, key_types(client, [layout.key(*keys[i]) for i in wrong]),
                     strict=True))
    out: dict[str, dict[str, int]] = {}
    errors: dict[str, str] = {}
    wrong_types: dict[str, str] = {}
    denied = 0
    for i, ((q, step), n) in enumerate(zip(keys, lengths, strict=True)):
        if i in types:
            if q not in errors:
                errors[q] = wrongtype_reason(types[i], "list") + (
                    f" (its priority {step} sub-list)" if step else "")
                wrong_types[q] = types[i] or "unknown"
            continue
        if isinstance(n, Exception):
            why = redis_denial(n)
            denied += why is not None
            errors.setdefault(q, f"LLEN {key_label(q, step)}: "
                                 + (f"permission denied ({why})" if why else
                                    " ".join(str(n).split())[:160]))
            continue
        out.setdefault(q, {})[str(step)] = int(n or 0)
    if keys and denied == len(keys):
        with redis_op("LLEN of the queue lists", "+llen (and read access to the queue keys)"):
            raise lengths[0]
    return {q: b for q, b in out.items() if q not in errors}, errors, wrong_types


def collect_info(client) -> dict[str, Any]:
    """`INFO` (the default sections) -> a JSON-safe dict."""
    from celeryctl.collect.errors import redis_op

    with redis_op("INFO", "+info"):
        return _jsonable_info(client.info())


def collect_config(client) -> dict[str, str]:
    """`CONFIG GET` of the settings doctor needs, one key per command, pipelined: keys the
    server refuses are left out; every key refused (ACL, or CONFIG renamed/disabled as
    managed Redis does) raises `Denied`."""
    from celeryctl.collect.errors import redis_op

    with redis_op("CONFIG GET", "+config|get"):
        parts = pipelined(client, [("config_get", (k,)) for k in CONFIG_KEYS],
                          raise_on_error=False)
    config: dict[str, str] = {}
    refused = [p for p in parts if isinstance(p, Exception)]
    for part in parts:
        if not isinstance(part, Exception):
            config.update({_s(k): _s(v) for k, v in (part or {}).items()})
    if refused and not config:
        with redis_op("CONFIG GET", "+config|get"):  # a refusal, named; anything else as is
            raise refused[0]
    return config


def server_record(info: dict[str, Any] | None, config: dict[str, str] | None,
                  config_error: str | None, layout: RedisLayout,
                  binding_garbage: list[str] | tuple[str, ...] = ()) -> RedisServer:
    return RedisServer(version=str(info.get("redis_version")) if info else None,
                       info=info or {}, config=config, config_error=config_error,
                       keyprefix=layout.prefix, keyprefix_source=layout.prefix_source,
                       other_keyprefixes=layout.other_prefixes,
                       binding_garbage=tuple(binding_garbage))


def collect_clients(client) -> list[Connection]:
    """`CLIENT LIST` -> one Connection per line (`k=v` tokens; unknown fields kept in raw,
    missing ones tolerated: the field set grows with each Redis release). The line of this
    very command's connection (`CLIENT ID`, when allowed) is marked role "celeryctl"."""
    from celeryctl.collect.errors import redis_denial, redis_op

    try:
        own_id: str | None = str(client.client_id())
    except Exception as exc:  # noqa: BLE001 - CLIENT ID refused: own line unmarked
        if redis_denial(exc) is None:
            raise
        own_id = None
    with redis_op("CLIENT LIST", "+client|list"):
        raw = client.execute_command("CLIENT LIST")
    if isinstance(raw, list):  # redis-py parsed it into dicts already
        rows = [{_s(k): _s(v) for k, v in row.items()} for row in raw if isinstance(row, dict)]
    else:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        rows = [parse_client_fields(line) for line in text.splitlines()]
    return [c for c in (client_from_fields(f, own_id) for f in rows) if c]


def parse_client_fields(line: str) -> dict[str, str]:
    """One CLIENT LIST line as `k=v` tokens (values never contain spaces)."""
    fields: dict[str, str] = {}
    for token in line.strip().split(" "):
        if "=" in token:
            k, _, v = token.partition("=")
            fields[k] = v
    return fields


def client_from_fields(fields: dict[str, str], own_id: str | None = None) -> Connection | None:
    if "addr" not in fields:
        return None
    flags = fields.get("flags", "")
    cmd = fields.get("cmd", "")
    sub = _int(fields.get("sub")) or 0
    psub = _int(fields.get("psub")) or 0
    if own_id is not None and fields.get("id") == own_id:
        role = "celeryctl"
    elif (fields.get("name") or "").startswith("sentinel-"):
        role = "sentinel"  # Redis Sentinel's own links (cmd, pubsub on __sentinel__:hello)
    elif "P" in flags or sub or psub:
        role = "pubsub"
    elif cmd in ("brpop", "blpop", "bzpopmin", "bzpopmax", "blmove", "brpoplpush"):
        role = "consumer"
    elif "M" in flags or "S" in flags:
        role = "replication"
    else:
        role = "client"
    return Connection(
        broker="redis", address=fields["addr"], name=fields.get("name") or None,
        id=fields.get("id"), age_seconds=_float(fields.get("age")),
        idle_seconds=_float(fields.get("idle")), command=cmd or None, flags=flags or None,
        db=_int(fields.get("db")), user=fields.get("user"), role=role, raw=fields,
    )


def build_queue_depths(names: dict[str, tuple[bool, tuple[str, ...]]],
                       depths: dict[str, dict[str, int]], unacked: RedisUnacked | None,
                       consumers: dict[str, list[str]] | None,
                       ttls: dict[str, int] | None = None,
                       errors: dict[str, str] | None = None,
                       bindings_known: bool = True,
                       wrong_types: dict[str, str] | None = None) -> list[QueueDepth]:
    """Combine discovered names (name -> (internal, discovered_by)), LLENs, unacked attribution,
    worker consumers and list TTLs into QueueDepth records. A queue in `errors` could not be
    read: its depth is unknown (None) and the reason is on the row; one in `wrong_types`
    (its key, or a priority sub-list, is not a list) has that Redis TYPE as its `type`."""
    out = []
    for name, (internal, discovered_by) in sorted(names.items()):
        buckets = depths.get(name)
        per_q = unacked.per_queue if unacked else None
        workers = (consumers or {}).get(name, [])
        out.append(QueueDepth(
            name=name, broker="redis",
            ready=sum(buckets.values()) if buckets is not None else None,
            buckets=buckets,
            unacked=(per_q.get(name, 0) if per_q is not None else None),
            oldest_unacked_seconds=(unacked.oldest_per_queue or {}).get(name) if unacked else None,
            consumers=len(workers) if consumers is not None else None,
            consumers_source="workers" if consumers is not None else None,
            consumer_workers=tuple(workers), internal=internal,
            # without the binding tables an empty list may still be a declared queue: only
            # their absence from a table that was read says "missing"
            exists=bool(buckets and sum(buckets.values())) or "binding" in discovered_by
            or not bindings_known,
            source="redis", discovered_by=discovered_by, ttl_seconds=(ttls or {}).get(name),
            error=(errors or {}).get(name), type=(wrong_types or {}).get(name),
        ))
    return out


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _float(v: str | None) -> float | None:
    """A number from the server's text, or None: never NaN or an infinity."""
    import math

    try:
        f = float(v) if v is not None else None
    except ValueError:
        return None
    return f if f is None or math.isfinite(f) else None


def _jsonable_info(info: dict[str, Any]) -> dict[str, Any]:
    import math

    out: dict[str, Any] = {}
    for k, v in (info or {}).items():
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, dict):
            v = _jsonable_info(v)
        elif isinstance(v, float) and not math.isfinite(v):
            v = str(v)  # as the server wrote it ("nan", "inf"): never a non-finite number
        out[_s(k)] = v
    return out


def collect_samples(client, layout: RedisLayout, depths: dict[str, dict[str, int]],
                    per_queue: int = 10) -> dict[str, list[MessageSample]]:
    """`LRANGE key -k -1` on the consuming end (kombu BRPOPs the right side, lowest priority
    step first) of each non-empty sub-list, up to `per_queue` messages per queue, pipelined.
    At most SAMPLE_QUEUES_LIMIT queues, the deepest first, so 10,000 queues cost no more than
    200. Read-only: LRANGE neither pops nor reorders."""
    from celeryctl.collect.errors import redis_op

    plan: list[tuple[str, int]] = []
    calls: list[tuple[str, tuple]] = []
    busy = sorted((q for q, b in depths.items() if any(int(v) for v in b.values())),
                  key=lambda q: (-sum(int(v) for v in depths[q].values()), q))
    for queue in sorted(busy[:SAMPLE_QUEUES_LIMIT]):
        buckets = depths[queue]
        left = per_queue
        for step in layout.priority_steps:
            n = min(left, int(buckets.get(str(step), 0)))
            if n <= 0:
                continue
            calls.append(("lrange", (layout.key(queue, step), -n, -1)))
            plan.append((queue, step))
            left -= n
            if left <= 0:
                break
    with redis_op("LRANGE (sampling queued messages)", "+lrange"):
        results = pipelined(client, calls)
    out: dict[str, list[MessageSample]] = {}
    for (queue, step), items in zip(plan, results, strict=True):
        # rightmost first: the next message a worker would receive
        for raw in reversed(items or []):
            out.setdefault(queue, []).append(parse_envelope(queue, step, raw))
    return out


def parse_envelope(queue: str, step: int | None, raw: bytes) -> MessageSample:
    """kombu's Redis envelope is JSON whatever the serializer: read content type and Celery's
    protocol-2 headers; leave `body` alone."""
    size = len(raw) if raw else 0
    try:
        env = json.loads(raw)
        if not isinstance(env, dict):
            raise ValueError("envelope is not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        return MessageSample(queue, step, size_bytes=size,
                             error=f"not a kombu envelope ({type(exc).__name__})")
    headers = env.get("headers") if isinstance(env.get("headers"), dict) else {}
    props = env.get("properties") if isinstance(env.get("properties"), dict) else {}
    info = props.get("delivery_info") if isinstance(props.get("delivery_info"), dict) else {}
    retries = headers.get("retries")
    return MessageSample(
        queue=queue, priority_step=step, content_type=_str(env.get("content-type")),
        content_encoding=_str(env.get("content-encoding")), task=_str(headers.get("task")),
        id=_str(headers.get("id")), eta=_str(headers.get("eta")),
        retries=retries if isinstance(retries, int) else None,
        redelivered=bool(headers.get("redelivered") or info.get("redelivered")),
        compression=_str(headers.get("compression")), size_bytes=size,
    )


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else (None if v is None else str(v)[:200])


def collect_reply_ttls(client, layout: RedisLayout, names: list[str]) -> dict[str, int]:
    """`TTL` of pidbox reply lists that hold messages (one pipeline): -1 means they never
    expire (celery/celery#6089)."""
    if not names:
        return {}
    ttls = pipelined(client, [("ttl", (layout.key(n),)) for n in names])
    return {n: int(t) for n, t in zip(names, ttls, strict=True)}


SET_ASIDE_ORIGIN = "interrupted purge"
# the set of tokens whose messages a purge set aside and has not finished with
# (celeryctl/actions/purge.py writes it, collect_set_aside reads it)
PURGE_PENDING = "_celeryctl.purge.pending"


def collect_set_aside(client, layout: RedisLayout, now: float | None = None
                      ) -> list[QueueDepth]:
    """What a purge killed mid-way left set aside (celeryctl/actions/purge.py): `SMEMBERS
    _celeryctl.purge.pending`, the hash of each token, `LLEN` of its lists. One row per
    token, internal, named after its aside lists; `arguments` says whose queue they are,
    since when, which process set them aside and where its backup is."""
    p = layout.prefix
    tokens = sorted(t.decode("utf-8", "replace")
                    for t in client.smembers(f"{p}{PURGE_PENDING}"))
    now = time.time() if now is None else now
    rows = []
    for token in tokens:
        h = client.hgetall(f"{p}_celeryctl.purge.{token}")
        try:
            meta = json.loads(h.get(b"meta") or b"{}")
        except ValueError:
            meta = {}
        meta = meta if isinstance(meta, dict) else {}
        lists = meta.get("lists") if isinstance(meta.get("lists"), dict) else {}
        lengths = pipelined(client, [("llen", (k.encode("utf-8", "surrogateescape"),))
                                     for k in lists], raise_on_error=False)
        n = sum(x for x in lengths if isinstance(x, int))
        at = meta.get("set_aside_at")
        age = now - at if isinstance(at, (int, float)) and math.isfinite(at) else None
        rows.append(QueueDepth(
            name=f"_celeryctl.purge.{token}", broker="redis", ready=n, internal=True,
            exists=True, source="redis", discovered_by=(SET_ASIDE_ORIGIN,),
            error=None if h else "its record (_celeryctl.purge.TOKEN hash) is missing",
            arguments={"purge_of": meta.get("queue"), "token": token,
                       "set_aside_seconds": age, "host": meta.get("host"),
                       "pid": meta.get("pid"), "backup": meta.get("backup"),
                       "state": (h.get(b"state") or b"").decode() or None,
                       "lists": lists}))
    return rows


class BoundedClient:
    """A redis-py client for the guarded actions whose every command — and pipeline
    `execute` — ends within `timeout` (+ bounded.SLACK) as a whole: redis-py's socket
    timeout is per recv, and a server trickling its reply would hold a purge (and its
    put-back) for ever. On expiry the connection's sockets are shut down and the command
    raises `NoAnswer`; the next command connects afresh (`connect()`), so a put-back after
    a stalled read still gets its chance."""

    def __init__(self, connect, timeout: float, describe: str) -> None:
        self._connect = connect
        self._timeout = timeout
        self._describe = describe
        self._client = None

    def _current(self):
        from celeryctl.collect.bounded import call, shutdown_redis

        if self._client is None:
            opened: list = []
            self._client = call("connect", lambda: self._connect(opened), self._describe,
                                self._timeout,
                                cancel=lambda: [shutdown_redis(c) for c in opened])
        return self._client

    def run(self, what: str, fn):
        """`fn(client)` within the deadline."""
        from celeryctl.collect.bounded import NoAnswer, call, shutdown_redis

        client = self._current()
        try:
            return call(what, lambda: fn(client), self._describe, self._timeout,
                        cancel=lambda: shutdown_redis(client))
        except NoAnswer:
            self._client = None  # shut down: the next command reconnects
            raise

    def pipeline(self, *args, **kwargs):
        return _BoundedPipeline(self, self._current().pipeline(*args, **kwargs))

    def __getattr__(self, name: str):
        return lambda *a, **kw: self.run(name, lambda c: getattr(c, name)(*a, **kw))


class _BoundedPipeline:
    def __init__(self, owner: BoundedClient, pipe) -> None:
        self._owner, self._pipe = owner, pipe

    def execute(self, *args, **kwargs):
        return self._owner.run("pipeline", lambda _c: self._pipe.execute(*args, **kwargs))

    def __getattr__(self, name: str):
        return getattr(self._pipe, name)


def bounded_client(endpoints: tuple[Endpoint, ...], timeout: float,
                   options: dict[str, Any] | None = None) -> BoundedClient:
    ep = endpoints[0]
    return BoundedClient(lambda opened: connect_first(endpoints, timeout, options,
                                                      opened=opened)[0],
                         timeout, f"redis broker {ep.host}:{ep.port}")


# --- in-flight messages one by one (the task view) ------------------------------------------

INFLIGHT_LIMIT = 20000  # `unacked` entries read for the task view; above, the rest is unknown


def collect_inflight(client, layout: RedisLayout, limit: int = INFLIGHT_LIMIT):
    """kombu's `unacked` hash entry by entry, for `celeryctl tasks`: `HLEN unacked`, then
    `HSCAN unacked` (stopping after `limit` entries) and one `ZSCORE unacked_index TAG` per
    entry read (pipelined). Each entry is reduced on arrival to its task id and name, routing,
    receive time and whether kombu restored it (never its body or arguments).

    A hash larger than `limit` is read in part (`complete=False`: tasks not among the entries
    read have no held time). `unacked` or `unacked_index` of the wrong type costs only what it
    feeds (named in `problems`); a refused command raises `Denied`."""
    from celeryctl.collect.errors import redis_denial, redis_op
    from celeryctl.snapshot import RedisInFlight

    p = layout.prefix
    ukey, ikey = f"{p}unacked", f"{p}unacked_index"
    total_r, card_r = pipelined(client, [("hlen", (ukey,)), ("zcard", (ikey,))],
                                raise_on_error=False)
    for r in (total_r, card_r):
        if isinstance(r, Exception) and (redis_denial(r) or not is_wrongtype(r)):
            with redis_op("HLEN unacked / ZCARD unacked_index", "+hlen +zcard"):
                raise r
    problems: list[str] = []
    if is_wrongtype(total_r):
        (t,) = key_types(client, [ukey.encode("utf-8", "surrogateescape")])
        problems.append(f"unacked: {wrongtype_reason(t, 'hash')}: in-flight messages unknown")
        return RedisInFlight(total=None, complete=False, problems=tuple(problems))
    index_ok = not is_wrongtype(card_r)
    if not index_ok:
        (t,) = key_types(client, [ikey.encode("utf-8", "surrogateescape")])
        problems.append(f"unacked_index: {wrongtype_reason(t, 'zset')}: how long in-flight "
                        f"messages have been held is unknown")
    total = int(total_r or 0)
    entries: list[tuple[bytes, bytes]] = []
    if total:
        with redis_op("HSCAN unacked", "+hscan"):
            for tag, raw in client.hscan_iter(ukey, count=1000):
                entries.append((tag, raw))
                if len(entries) >= limit:
                    break
    scores: list[Any] = []
    if entries and index_ok:
        with redis_op("ZSCORE unacked_index", "+zscore"):
            scores = pipelined(client, [("zscore", (ikey, tag)) for tag, _ in entries])
    messages = []
    malformed = 0
    for i, (tag, raw) in enumerate(entries):
        msg = parse_inflight_entry(_s(tag), raw, _score(scores[i]) if scores else None)
        if msg is None:
            malformed += 1
        else:
            messages.append(msg)
    if malformed:
        problems.append(f"unacked: {malformed} entr{'y' if malformed == 1 else 'ies'} not "
                        f"kombu's JSON [message, exchange, routing_key]")
    return RedisInFlight(messages=tuple(messages), total=total, read=len(entries),
                         complete=len(entries) >= total, malformed=malformed,
                         problems=tuple(problems))


def parse_inflight_entry(tag: str, raw: bytes | str, delivered_at: float | None):
    """One `unacked` value -> InFlightMessage (headers and routing only), None if it is not
    kombu's `[message, exchange, routing_key]`."""
    from celeryctl.snapshot import InFlightMessage

    if isinstance(parse_unacked_entry(raw), str):
        return None
    message, exchange, routing_key = json.loads(raw)
    headers = message.get("headers") if isinstance(message.get("headers"), dict) else {}
    props = message.get("properties") if isinstance(message.get("properties"), dict) else {}
    dinfo = props.get("delivery_info") if isinstance(props.get("delivery_info"), dict) else {}
    restored = headers.get("redelivered") is True or dinfo.get("redelivered") is True
    return InFlightMessage(delivery_tag=tag, id=_str(headers.get("id")),
                           task=_str(headers.get("task")), exchange=exchange or "",
                           routing_key=routing_key or "", delivered_at=delivered_at,
                           restored=restored, eta=_str(headers.get("eta")))
