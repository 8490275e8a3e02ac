"""Result backend collector: what kind it is, whether it answers, whether it shares the broker.

Redis: `PING` on the backend's own db. rpc:// results travel over the broker, so it is probed
by connecting to the broker. amqp:// (removed in Celery 5: "Unknown result backend: 'amqp'")
is probed as an AMQP server and flagged. Database, cache and other backends are not probed:
their status is "not checked", never "ok".
"""

from __future__ import annotations

import dataclasses

from celeryctl.snapshot import BackendStatus
from celeryctl.tls import TLSConfig
from celeryctl.urls import Endpoint, parse_endpoint, redact

REDIS_SCHEMES = ("redis", "rediss")
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def backend_kind(url: str | None) -> str:
    if not url:
        return "none"
    scheme = url.split("://", 1)[0].lower() if "://" in url else url.lower()
    if scheme in REDIS_SCHEMES or scheme in ("sentinel", "redis+socket"):
        return "redis"
    if scheme == "rpc":
        return "rpc"
    if scheme in AMQP_SCHEMES:
        return "amqp"
    if scheme.startswith("db+") or scheme in ("django-db", "database", "sqlalchemy"):
        return "database"
    if scheme.startswith("cache+") or scheme in ("cache", "memcache", "django-cache"):
        return "cache"
    if scheme in ("disabled",):
        return "none"
    return "other"


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("localhost", "127.0.0.1", "::1", "ip6-localhost") else host


def collect_backend(url: str | None, broker: tuple[Endpoint, ...], timeout: float,
                    tls: TLSConfig | None = None) -> BackendStatus:
    """`tls`: the backend's own TLS (URL parameters over `redis_backend_use_ssl`, resolved by
    targets); rpc:// travels over the broker's connection and its TLS."""
    kind = backend_kind(url)
    red = redact(url)
    if kind == "none":
        return BackendStatus(url=None, kind="none", reachable=None,
                             detail="no result backend configured")
    if kind == "redis" and url and url.split("://", 1)[0].lower() in REDIS_SCHEMES:
        from celeryctl.collect.redis import redis_client

        ep = dataclasses.replace(parse_endpoint(url, what="result backend URL"), tls=tls)
        b = broker[0]
        same_instance = b.kind == "redis" and \
            (_loopback(b.host), b.port) == (_loopback(ep.host), ep.port)
        same_db = same_instance and b.redis_db == ep.redis_db
        client = redis_client(ep, timeout)
        try:
            client.ping()
            sampled, no_ttl = sample_result_ttls(client)
            return BackendStatus(url=red, kind=kind, reachable=True,
                                 same_instance_as_broker=same_instance, same_db_as_broker=same_db,
                                 result_keys_sampled=sampled, result_keys_without_ttl=no_ttl)
        finally:
            client.close()
    if kind == "rpc":
        b = broker[0]
        if b.kind == "amqp":
            from celeryctl.collect.rabbitmq import amqp_connect

            conn, _ = amqp_connect(broker, timeout, None)
            conn.close()
        else:
            from celeryctl.collect.redis import connect_first

            client, _ = connect_first(broker, timeout)
            client.close()
        return BackendStatus(url=red, kind=kind, reachable=True, same_instance_as_broker=True,
                             detail="rpc:// results travel over the broker as messages")
    if kind == "amqp" and url:
        from celeryctl.collect.rabbitmq import amqp_connect

        ep = dataclasses.replace(parse_endpoint(url, what="result backend URL"), tls=tls)
        conn, _ = amqp_connect((ep,), timeout, None)
        conn.close()
        return BackendStatus(url=red, kind=kind, reachable=True,
                             detail="the amqp:// result backend was removed in Celery 5 "
                                    "(\"Unknown result backend: 'amqp'\"); use rpc:// or redis://")
    return BackendStatus(url=red, kind=kind, reachable=None,
                         detail=f"celeryctl does not probe {kind} result backends")


RESULT_KEY_SAMPLE = 200
SCAN_STEPS = 20  # SCAN calls at most (COUNT 1000 each): bounded on a huge keyspace


def sample_result_ttls(client) -> tuple[int, int]:
    """Up to 200 `celery-task-meta-*` keys (SCAN, bounded) and their TTLs (pipelined):
    returns (sampled, without TTL)."""
    keys: list[bytes] = []
    cursor = 0
    for _ in range(SCAN_STEPS):
        cursor, batch = client.scan(cursor=cursor, match=b"celery-task-meta-*", count=1000)
        keys.extend(batch)
        if cursor == 0 or len(keys) >= RESULT_KEY_SAMPLE:
            break
    keys = keys[:RESULT_KEY_SAMPLE]
    if not keys:
        return 0, 0
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.ttl(k)
    ttls = pipe.execute()
    return len(keys), sum(1 for t in ttls if t == -1)


RESULT_PREFIX = "celery-task-meta-"
TRACEBACK_LIMIT = 300


def read_task_results(url: str | None, ids: list[str], timeout: float,
                      tls: TLSConfig | None = None) -> dict[str, dict | None]:
    """`celeryctl task`: the Redis result backend's record of each id — `GET
    celery-task-meta-<id>` (one pipeline) -> id -> None (no record) or {status, date_done,
    date_done_epoch, exception_type, exception_message, traceback_line, children,
    retries, worker, undecoded}. Results themselves are never returned (they may hold data);
    a record not in JSON (pickle) is not decoded: `undecoded` says so."""
    from celeryctl.collect.redis import redis_client
    from celeryctl.taskfind import parse_date

    ep = dataclasses.replace(parse_endpoint(url, what="result backend URL"), tls=tls)
    client = redis_client(ep, timeout)
    try:
        pipe = client.pipeline(transaction=False)
        for tid in ids:
            pipe.get(f"{RESULT_PREFIX}{tid}".encode("utf-8", "surrogateescape"))
        raws = pipe.execute()
    finally:
        client.close()
    return {tid: (None if raw is None else parse_result_meta(raw, parse_date))
            for tid, raw in zip(ids, raws, strict=True)}


def parse_result_meta(raw: bytes, parse_date) -> dict:
    import json

    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {"status": None, "undecoded": "not JSON (result_serializer pickle or "
                "another format): not decoded"}
    status = meta.get("status") if isinstance(meta.get("status"), str) else None
    out: dict = {"status": status,
                 "date_done": meta.get("date_done") if isinstance(meta.get("date_done"), str)
                 else None}
    out["date_done_epoch"] = parse_date(out["date_done"])
    result = meta.get("result")
    if status in ("FAILURE", "RETRY") and isinstance(result, dict):
        et, em = result.get("exc_type"), result.get("exc_message")
        if isinstance(em, list):
            em = ", ".join(str(x) for x in em)
        out["exception_type"] = et if isinstance(et, str) else None
        out["exception_message"] = str(em)[:TRACEBACK_LIMIT] if em is not None else None
    tb = meta.get("traceback")
    if isinstance(tb, str) and tb.strip():
        frames = [ln.strip() for ln in tb.splitlines() if ln.strip().startswith("File ")]
        out["traceback_line"] = (frames[-1] if frames else tb.strip().splitlines()[0]
                                 )[:TRACEBACK_LIMIT]
    children = meta.get("children")
    if isinstance(children, list):
        ids = []
        for c in children:  # [[id, parent], None] tuples as Celery serialises results
            while isinstance(c, list) and c:
                c = c[0]
            if isinstance(c, str):
                ids.append(c)
        out["children"] = ids[:100]
    if isinstance(meta.get("retries"), int):
        out["retries"] = meta["retries"]
    if isinstance(meta.get("worker"), str):
        out["worker"] = meta["worker"]
    return out
