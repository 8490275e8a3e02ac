"""`celeryctl restore FILE`: republish a purge backup, in its order, with its priorities.

Redis: LPUSH of kombu envelopes, in pipelined chunks, to the message's original priority
bucket (so the first message of the file is the first a worker receives). RabbitMQ: publish
through the default exchange to the queue (never to the original exchange: a fanout or topic
could copy it elsewhere), then the depth is re-read to check every message arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celeryctl.actions.backup import body_bytes, read_messages
from celeryctl.actions.purge import CHUNK, redis_envelope, redis_restore_key

_PIKA_PROPS = ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
               "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
               "app_id")


@dataclass
class Sections:
    """What a purge's control lines say about its backup (celeryctl/actions/purge.py):
    per Redis token, its queue and whether the purge finished it; per line, the token it
    belongs to; the RabbitMQ lines written but never recorded as committed."""

    queue_of: dict[str, str] = field(default_factory=dict)  # token -> queue
    done: set[str] = field(default_factory=set)  # tokens whose queue_done line is there
    put_back: set[str] = field(default_factory=set)  # tokens restore --set-aside put back
    # token -> (first, last) line of its messages (they are contiguous): memory stays flat
    lines_of: dict[str, tuple[int, int]] = field(default_factory=dict)
    unconfirmed: list[int] = field(default_factory=list)  # RabbitMQ: at most a batch each


def read_sections(path: Path) -> Sections:
    """One streaming pass over the control lines (message lines are only numbered)."""
    sec = Sections()
    token = None
    section = False  # inside a queue section (files of older releases have none)
    batch: list[int] = []
    for n, obj in _numbered(path):
        m = obj.get("celeryctl_marker")
        if m == "queue":
            sec.unconfirmed += batch
            batch, section = [], True
            token = obj.get("token")
            if token:
                sec.queue_of[str(token)] = str(obj.get("queue"))
        elif m == "queue_done":
            batch, section, token = [], False, None  # the purge finished this queue
            if obj.get("token"):
                sec.done.add(str(obj["token"]))
        elif m == "acked":
            batch = []
        elif m == "put_back" and obj.get("token"):
            sec.put_back.add(str(obj["token"]))
        elif m is None and "end" not in obj and n > 1:
            if token:
                first = sec.lines_of.get(token, (n, n))[0]
                sec.lines_of[token] = (first, n)
            elif section:
                batch.append(n)
    sec.unconfirmed += batch
    return sec


def _numbered(path: Path):
    from celeryctl.actions.backup import _lines

    yield from enumerate(_lines(path), 1)


def redis_void_tokens(client, prefix: str, sec: Sections) -> tuple[set[str], list[str],
                                                                   list[str]]:
    """Tokens whose lines must not be restored (their messages went back to the queue),
    the refusals (messages still set aside), and notes. Asks the broker for each token the
    file does not show finished."""
    void, refusals, notes = set(sec.put_back), [], []
    for token, queue in sec.queue_of.items():
        if token in sec.done or token in void:
            continue
        state = client.hget(f"{prefix}_celeryctl.purge.{token}", "state")
        state = state.decode() if isinstance(state, bytes) else state
        if state == "put-back":
            void.add(token)
            notes.append(f"the lines of {queue!r} ({token}) are skipped: that purge was "
                         f"stopped and its messages were put back in the queue")
        elif state == "set-aside":
            refusals.append(f"the messages of {queue!r} ({token}) are still set aside by "
                            f"a purge that never finished: `celeryctl restore --set-aside` "
                            f"puts them back (then this file's lines for it are skipped)")
        elif state is None:
            notes.append(f"the purge of {queue!r} ({token}) did not finish and the broker "
                         f"keeps no record of it (another broker, or over 30 days ago): "
                         f"its lines are restored")
    return void, refusals, notes


def restore_redis(client, layout, path: Path, to: str | None,
                  skip=None) -> dict[str, int]:
    counts: dict[str, int] = {}
    pipe = client.pipeline(transaction=False)
    pending = 0
    for rec in read_messages(path, skip):
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


def message_identity(props: dict[str, Any], headers: dict[str, Any] | None,
                     body: bytes) -> str:
    """How restore recognises a message it may already find in the queue: its message_id,
    else its correlation_id, else the task id in its headers, else a hash of its body."""
    import hashlib

    for key in ("message_id", "correlation_id"):
        if props.get(key):
            return f"{key}:{props[key]}"
    h = headers or {}
    if isinstance(h, dict) and (h.get("id") or h.get("task_id")):
        return f"id:{h.get('id') or h.get('task_id')}"
    return "sha256:" + hashlib.sha256(body).hexdigest()


def rabbit_already_queued(channel, queue: str, records: list[dict[str, Any]]) -> set[str]:
    """Of `records` (written by a purge killed before it recorded their commit), the
    identities found at the head of `queue`, where RabbitMQ puts back the messages of a
    consumer that went away. Reads at most len(records) + 100 messages without acking
    them; closing the channel gives them back, in order."""
    want = {message_identity(r.get("properties") or {}, r.get("headers"), body_bytes(r))
            for r in records}
    seen: set[str] = set()
    limit = len(records) + 100
    channel.basic_qos(prefetch_count=min(limit, 65535))
    for got, (method, props, body) in enumerate(
            channel.consume(queue, inactivity_timeout=0.5), 1):
        if method is None:
            break
        p = {"message_id": props.message_id, "correlation_id": props.correlation_id}
        ident = message_identity(p, props.headers, body)
        if ident in want:
            seen.add(ident)
        if got >= limit:
            break
    channel.close()  # nothing acked: every message read goes back where it was
    return seen


def restore_rabbit(channel, path: Path, to: str | None,
                   skip=None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rec in read_messages(path, skip):
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
