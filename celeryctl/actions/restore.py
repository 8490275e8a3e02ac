"""`celeryctl restore FILE`: republish a purge backup, in its order, with its priorities.

Redis: LPUSH of kombu envelopes, in pipelined chunks, to the message's original priority
bucket (so the first message of the file is the first a worker receives). RabbitMQ: publish
through the default exchange to the queue (never to the original exchange: a fanout or topic
could copy it elsewhere), then the depth is re-read to check every message arrived.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celeryctl.actions.backup import body_bytes, read_messages
from celeryctl.actions.purge import CHUNK, redis_envelope, redis_restore_key

_PIKA_PROPS = ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
               "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
               "app_id")


def restore_redis(client, layout, path: Path, to: str | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    pipe = client.pipeline(transaction=False)
    pending = 0
    for rec in read_messages(path):
        queue = to or str(rec.get("queue"))
        pipe.lpush(redis_restore_key(layout, queue, rec), redis_envelope(rec, queue))
        counts[queue] = counts.get(queue, 0) + 1
        pending += 1
        if pending >= CHUNK:
            pipe.execute()
            pending = 0
    if pending:
        pipe.execute()
    return counts


def amqp_properties(rec: dict[str, Any]):
    import pika

    props = rec.get("properties") or {}
    kw = {k: props.get(k) for k in _PIKA_PROPS if props.get(k) is not None}
    kw["content_type"] = rec.get("content_type") or kw.get("content_type")
    kw["content_encoding"] = rec.get("content_encoding") or kw.get("content_encoding")
    kw["headers"] = rec.get("headers") or kw.get("headers") or {}
    if rec.get("priority") is not None:
        kw["priority"] = int(rec["priority"])
    kw.setdefault("delivery_mode", 2)
    return pika.BasicProperties(**{k: v for k, v in kw.items() if v is not None})


def restore_rabbit(channel, path: Path, to: str | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rec in read_messages(path):
        queue = to or str(rec.get("queue"))
        channel.basic_publish(exchange="", routing_key=queue, body=_amqp_body(rec),
                              properties=amqp_properties(rec))
        counts[queue] = counts.get(queue, 0) + 1
    return counts


def _amqp_body(rec: dict[str, Any]) -> bytes:
    if "raw" in rec:  # a Redis entry that was not an envelope: republish its bytes as they were
        import base64

        return base64.b64decode(rec["raw"])
    return body_bytes(rec)
