"""`celeryctl restore FILE`: republish a purge backup, in its order, with its priorities.

Input: `(line number, record)` pairs from `backup.read_messages` (a caller may filter them).

Redis: LPUSH in pipelined chunks to the message's original priority bucket (so the first
message of the file is the first a worker receives). A record from Redis is pushed as the
exact bytes it was stored as — one exception: with `--to` another queue, a kombu envelope's
`delivery_info` is pointed at the new queue (else a worker's visibility-timeout restore would
send the message back to the old one), so that envelope is re-encoded (`json.dumps`).

RabbitMQ: publish through the default exchange to the queue (never to the original exchange:
a fanout or topic could copy it elsewhere), with the exact property bytes the message had
(amqpwire). One exception: RabbitMQ refuses a `user_id` that is not the connecting user
(PRECONDITION_FAILED, closing the channel), so such a `user_id` is left out, and counted.
RabbitMQ restarts an `expiration` (per-message TTL) from the restore.

Across brokers (re-encoded, lossy): a RabbitMQ record restored to Redis becomes a kombu
envelope (base64 body, content type and encoding, delivery_mode, priority, correlation_id,
reply_to; header values as plain JSON: decimals, bytes and non-finite floats as strings,
timestamps as integers). A Redis record restored to RabbitMQ: a kombu envelope gives its body,
content type/encoding, headers (JSON numbers as doubles or 32/64-bit integers),
delivery_mode (else persistent), priority, correlation_id, reply_to; any other entry is
published as its bytes, persistent. A record that cannot be converted (an integer beyond 64
bits, headers that are not an object) is not published and is listed in `failed`.
"""

from __future__ import annotations

import base64
import json
import uuid
from bisect import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from celeryctl.actions import amqpwire
from celeryctl.actions.backup import _envelope

CHUNK = 1000
Records = Iterable[tuple[int, dict[str, Any]]]


@dataclass
class RestoreResult:
    counts: dict[str, int] = field(default_factory=dict)  # restored, per queue
    failed: list[tuple[int, str]] = field(default_factory=list)  # (line, why) not restored
    user_id_dropped: int = 0
    last_line: int | None = None  # the last line restored (for a restore that failed midway)

    @property
    def restored(self) -> int:
        return sum(self.counts.values())


# --- Redis ----------------------------------------------------------------------------------

def redis_key(layout, queue: str, rec: dict[str, Any]) -> bytes:
    """Where a restored message goes: its original bucket, else its priority's bucket."""
    bucket = rec.get("bucket")
    if isinstance(bucket, int) and bucket in layout.priority_steps:
        return layout.key(queue, bucket)
    pri = rec.get("priority") if "raw" in rec else (rec.get("properties") or {}).get("priority")
    pri = min(max(int(pri), 0), 9) if isinstance(pri, int) else 0
    steps = list(layout.priority_steps)
    return layout.key(queue, steps[max(0, bisect(steps, pri) - 1)])


def redis_entry(rec: dict[str, Any], queue: str) -> bytes:
    """The list entry to push for a record restored to `queue` (see the module docstring)."""
    if "raw" in rec:
        raw = base64.b64decode(rec["raw"])
        if queue == rec.get("queue"):
            return raw
        env = _envelope(raw)
        props = env.get("properties") if env is not None else None
        if not isinstance(props, dict):
            return raw
        info = props.get("delivery_info")
        props["delivery_info"] = {**(info if isinstance(info, dict) else {}),
                                  "exchange": "", "routing_key": queue}
        return json.dumps(env).encode()
    p = rec.get("properties") or {}
    eprops: dict[str, Any] = {}
    for k in ("correlation_id", "reply_to"):
        if p.get(k) is not None:
            eprops[k] = amqpwire.plain(p[k])
    eprops.update(delivery_mode=p.get("delivery_mode", 2),
                  delivery_info={"exchange": "", "routing_key": queue},
                  priority=p.get("priority", 0), body_encoding="base64",
                  delivery_tag=str(uuid.uuid4()))
    headers = amqpwire.plain(p.get("headers") or {})
    env = {"body": rec["body"], "content-encoding": amqpwire.plain(p.get("content_encoding")),
           "content-type": amqpwire.plain(p.get("content_type")),
           "headers": headers if isinstance(headers, dict) else {}, "properties": eprops}
    return json.dumps(env).encode()


def restore_redis(client, layout, records: Records, to: str | None,
                  result: RestoreResult | None = None) -> RestoreResult:
    """Push every record; `result` (updated as chunks are executed) says what was done if
    this raises."""
    res = result if result is not None else RestoreResult()
    pipe = client.pipeline(transaction=False)
    pending: dict[str, int] = {}
    last = None

    def flush() -> None:
        pipe.execute()
        for q, n in pending.items():
            res.counts[q] = res.counts.get(q, 0) + n
        pending.clear()
        res.last_line = last

    for line, rec in records:
        queue = to or str(rec.get("queue"))
        try:
            entry = redis_entry(rec, queue)
        except (ValueError, TypeError) as exc:
            res.failed.append((line, f"cannot be made a Redis entry: {exc}"))
            continue
        pipe.lpush(redis_key(layout, queue, rec), entry)
        pending[queue] = pending.get(queue, 0) + 1
        last = line
        if sum(pending.values()) >= CHUNK:
            flush()
    if pending:
        flush()
    return res


# --- RabbitMQ -------------------------------------------------------------------------------

def amqp_message(rec: dict[str, Any], user: str | None) -> tuple[bytes, bytes, bool]:
    """(body, property bytes, whether a user_id was left out) for a record published by
    `user`. Raises ValueError (amqpwire.WireError) when it cannot be expressed in AMQP."""
    if "raw" not in rec:
        props = dict(rec.get("properties") or {})
        dropped = "user_id" in props and amqpwire.plain(props["user_id"]) != user
        if dropped:
            del props["user_id"]
        return base64.b64decode(rec["body"]), amqpwire.props_from_json(props), dropped
    raw = base64.b64decode(rec["raw"])
    env = _envelope(raw)
    if env is None:
        return raw, amqpwire.props_from_json({"delivery_mode": 2}), False
    ep = env.get("properties") if isinstance(env.get("properties"), dict) else {}
    body = env.get("body")
    if isinstance(body, str):
        if ep.get("body_encoding") == "base64":
            try:
                data = base64.b64decode(body, validate=True)
            except ValueError:
                raise amqpwire.WireError("its body is not base64") from None
        else:
            data = body.encode("utf-8", "surrogatepass")
    else:
        data = b"" if body is None else json.dumps(body).encode()
    headers = env.get("headers")
    if headers is not None and not isinstance(headers, dict):
        raise amqpwire.WireError("its headers are not an object")
    props: dict[str, Any] = {"headers": amqpwire.json_from_python(headers or {})}
    for k, src in (("content_type", env.get("content-type")),
                   ("content_encoding", env.get("content-encoding")),
                   ("correlation_id", ep.get("correlation_id")),
                   ("reply_to", ep.get("reply_to"))):
        if isinstance(src, str) and len(src.encode("utf-8", "surrogatepass")) <= 255:
            props[k] = src
    mode = ep.get("delivery_mode")
    props["delivery_mode"] = mode if mode in (1, 2) and not isinstance(mode, bool) else 2
    pri = ep.get("priority")
    if isinstance(pri, int) and not isinstance(pri, bool) and 0 <= pri <= 255:
        props["priority"] = pri
    return data, amqpwire.props_from_json(props), False


def restore_rabbit(channel, records: Records, to: str | None, user: str | None,
                   result: RestoreResult | None = None) -> RestoreResult:
    """Publish every record (the caller closes the channel: that round trip is what says
    every publish reached the broker)."""
    res = result if result is not None else RestoreResult()
    for line, rec in records:
        queue = to or str(rec.get("queue"))
        try:
            body, props, dropped = amqp_message(rec, user)
        except ValueError as exc:
            res.failed.append((line, f"cannot be published to RabbitMQ: {exc}"))
            continue
        channel.basic_publish(exchange="", routing_key=queue, body=body,
                              properties=amqpwire.publishable(props))
        res.counts[queue] = res.counts.get(queue, 0) + 1
        res.user_id_dropped += dropped
        res.last_line = line
    return res
