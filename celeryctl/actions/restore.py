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
    stopped: str | None = None  # the signal that stopped it (after last_line)

    @property
    def restored(self) -> int:
        return sum(self.counts.values())

    def committed(self, pending: dict[str, int], last: int | None, progress=None) -> None:
        """A chunk is on the broker: count it (`pending` is emptied), note its last line,
        tell `progress`."""
        for q, n in pending.items():
            self.counts[q] = self.counts.get(q, 0) + n
        pending.clear()
        self.last_line = last
        if progress is not None:
            progress(self)


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
                  result: RestoreResult | None = None, *, stop=None,
                  progress=None, progress_key: bytes | None = None) -> RestoreResult:
    """Push every record, CHUNK at a time, each chunk one MULTI/EXEC transaction that also
    records the last line it holds in the hash `progress_key`: a restore killed at any
    instant has restored exactly the lines up to the recorded one (`broker_progress`).
    `result` (updated as chunks are executed) says what was done if this raises.
    `stop.requested`: stop after the chunk in hand; `progress(res)` after every chunk."""
    import time

    from celeryctl.actions.interrupt import Never

    stop = stop or Never()
    res = result if result is not None else RestoreResult()
    pipe = client.pipeline(transaction=True)
    pending: dict[str, int] = {}
    last = None

    def flush() -> None:
        if progress_key is not None and last is not None:
            pipe.hset(progress_key, mapping={"last_line": last, "time": time.time()})
            pipe.expire(progress_key, PROGRESS_TTL)
        pipe.execute()
        res.committed(pending, last, progress)

    for line, rec in records:
        if stop.requested:
            res.stopped = stop.signal
            break
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


PROGRESS_TTL = 30 * 86400


def file_id(path) -> str:
    """A backup's identity for restore's progress records: a hash of its header line
    (which holds its creation time, the broker and the queues it was purged from)."""
    import hashlib

    with open(path, "rb") as fh:
        first = fh.readline()
    return hashlib.sha256(first).hexdigest()[:16]


def redis_progress_key(prefix: str, path) -> bytes:
    """Where a restore of this file records its progress on Redis."""
    return f"{prefix}_celeryctl.restore.{file_id(path)}".encode()


def broker_progress(client, key: bytes) -> dict[str, Any] | None:
    """What a restore of the file recorded on this Redis (None: nothing)."""
    h = client.hgetall(key)
    try:
        return {"last_line": int(h[b"last_line"]), "time": time_text(float(h[b"time"]))} \
            if h else None
    except (KeyError, ValueError):
        return None


def time_text(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


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
                   result: RestoreResult | None = None, *, stop=None,
                   progress=None, progress_queue: str | None = None) -> RestoreResult:
    """Publish every record in AMQP transactions of CHUNK messages; with `progress_queue`
    (declared by `open_rabbit_progress`) each transaction also publishes the last line it
    holds there, so a restore killed at any instant has restored exactly the lines up to
    the recorded one (`rabbit_progress`). `progress(res)` after each commit;
    `stop.requested` stops after the chunk in hand."""
    from celeryctl.actions.interrupt import Never

    stop = stop or Never()
    res = result if result is not None else RestoreResult()
    pending: dict[str, int] = {}
    state = {"last": None, "dropped": 0}
    channel.tx_select()

    def commit() -> None:
        if progress_queue is not None and state["last"] is not None:
            channel.basic_publish(exchange="", routing_key=progress_queue,
                                  body=json.dumps({"last_line": state["last"],
                                                   "time": time_now()}).encode())
        channel.tx_commit()  # commit-ok: the chunk (and its progress) is on the broker
        res.user_id_dropped += state["dropped"]
        state["dropped"] = 0
        res.committed(pending, state["last"], progress)

    for line, rec in records:
        if stop.requested:
            res.stopped = stop.signal
            break
        queue = to or str(rec.get("queue"))
        try:
            body, props, dropped = amqp_message(rec, user)
        except ValueError as exc:
            res.failed.append((line, f"cannot be published to RabbitMQ: {exc}"))
            continue
        channel.basic_publish(exchange="", routing_key=queue, body=body,
                              properties=amqpwire.publishable(props))
        pending[queue] = pending.get(queue, 0) + 1
        state["dropped"] += dropped
        state["last"] = line
        if sum(pending.values()) >= CHUNK:
            commit()
    if pending:
        commit()
    return res


def time_now() -> float:
    import time

    return time.time()


def rabbit_progress_queue(path) -> str:
    """The queue where a restore of this file records its progress on RabbitMQ (one
    message: the newest; it expires after 30 days unused)."""
    return f"celeryctl.restore.{file_id(path)}"


def open_rabbit_progress(conn, queue: str):
    """Declare the progress queue; (channel to restore on, queue) — queue None when this
    account may not declare it (then only FILE.restored records the progress)."""
    import pika.exceptions as pe

    ch = conn.channel()
    try:
        ch.queue_declare(queue, durable=True, arguments={
            "x-max-length": 1, "x-expires": PROGRESS_TTL * 1000})
        return ch, queue
    except pe.ChannelClosedByBroker:
        return conn.channel(), None


def rabbit_progress(conn, queue: str) -> dict[str, Any] | None:
    """What a restore of the file recorded on this RabbitMQ (None: nothing, or not
    readable). The message is read without acknowledging it: it stays."""
    import pika.exceptions as pe

    ch = conn.channel()
    try:
        ch.queue_declare(queue, passive=True)
        method, _props, body = ch.basic_get(queue, auto_ack=False)
    except pe.ChannelClosedByBroker:
        return None
    finally:
        if ch.is_open:
            ch.close()  # unacked: the message goes back
    if method is None:
        return None
    try:
        doc = json.loads(body)
        return {"last_line": int(doc["last_line"]), "time": time_text(float(doc["time"]))}
    except (ValueError, KeyError, TypeError):
        return None


# --- what a stopped or killed purge left (celeryctl/actions/purge.py, docs/purge.md) ---------

@dataclass
class Sections:
    """What a purge's control lines say about its backup: per Redis token, its queue,
    whether the purge finished it, and the lines of its messages; the RabbitMQ lines
    written but never recorded as committed. Line ranges, so memory stays flat."""

    queue_of: dict[str, str] = field(default_factory=dict)  # token -> queue
    done: set[str] = field(default_factory=set)  # tokens whose queue_done line is there
    put_back: set[str] = field(default_factory=set)  # tokens restore --set-aside put back
    lines_of: dict[str, tuple[int, int]] = field(default_factory=dict)  # token -> lines
    unconfirmed: list[tuple[int, int]] = field(default_factory=list)  # RabbitMQ: lines


def read_sections(info) -> Sections:
    """From the control lines `inspect_backup` collected (no second pass over the file):
    a queue section runs from its "queue" line to the next control line that closes it
    (queue_done, the next queue, the end line) — messages of a section without a
    queue_done line after its last "acked" line (RabbitMQ) are unconfirmed. Files of
    releases before these lines have no section: everything in them is confirmed."""
    sec = Sections()
    opened: tuple[int, dict[str, Any]] | None = None  # the "queue" line of the open section
    last_acked = 0

    def close(at: int, finished: bool) -> None:
        nonlocal opened
        if opened is None:
            return
        start, marker = opened
        token = marker.get("token")
        if token:
            sec.lines_of[str(token)] = (start + 1, at - 1)
        elif not finished:
            sec.unconfirmed.append((max(start, last_acked) + 1, at - 1))
        opened = None

    for n, m in info.markers:
        kind = m.get("celeryctl_marker")
        if kind == "queue":
            close(n, False)
            opened, last_acked = (n, m), n
            if m.get("token"):
                sec.queue_of[str(m["token"])] = str(m.get("queue"))
        elif kind == "queue_done":
            close(n, True)
            if m.get("token"):
                sec.done.add(str(m["token"]))
        elif kind == "acked":
            last_acked = n
        elif kind == "put_back" and m.get("token"):
            sec.put_back.add(str(m["token"]))
    close(info.end_line or info.lines + 1, False)
    sec.unconfirmed = [(a, b) for a, b in sec.unconfirmed if message_lines(info, a, b)]
    return sec


def message_lines(info, a: int, b: int) -> int:
    """How many message lines (not control lines, not damaged ones) lie in lines a..b."""
    if a > b:
        return 0
    markers = sum(1 for n, _ in info.markers if a <= n <= b)
    end = 1 if info.end_line is not None and a <= info.end_line <= b else 0
    bad = sum(1 for n in info.bad_lines if a <= n <= b) if info.bad_lines else 0
    return max(0, b - a + 1 - markers - end - bad)


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


def message_identity(message_id: Any, correlation_id: Any, headers: Any, body: bytes) -> str:
    """How restore recognises a message it may already find in the queue: its message_id,
    else its correlation_id, else the task id in its headers, else a hash of its body."""
    import hashlib

    for key, v in (("message_id", message_id), ("correlation_id", correlation_id)):
        if v:
            return f"{key}:{v}"
    h = headers if isinstance(headers, dict) else {}
    if h.get("id") or h.get("task_id"):
        return f"id:{h.get('id') or h.get('task_id')}"
    return "sha256:" + hashlib.sha256(body).hexdigest()


def record_identity(rec: dict[str, Any]) -> str:
    """message_identity of a RabbitMQ backup record."""
    p = rec.get("properties") or {}
    body = base64.b64decode(rec["body"]) if isinstance(rec.get("body"), str) else b""
    return message_identity(amqpwire.plain(p.get("message_id")),
                            amqpwire.plain(p.get("correlation_id")),
                            amqpwire.plain(p.get("headers")), body)


def rabbit_already_queued(channel, queue: str, records: list[dict[str, Any]]) -> set[str]:
    """Of `records` (written by a purge killed before it recorded their commit), the
    identities found at the head of `queue`, where RabbitMQ puts back the messages of a
    consumer that went away. Reads at most len(records) + 100 messages without acking
    them; closing the channel gives them back, in order."""
    want = {record_identity(r) for r in records}
    seen: set[str] = set()
    limit = len(records) + 100
    channel.basic_qos(prefetch_count=min(limit, 65535))
    for got, (method, props, body) in enumerate(
            channel.consume(queue, inactivity_timeout=0.5), 1):
        if method is None:
            break
        ident = message_identity(props.message_id, props.correlation_id, props.headers, body)
        if ident in want:
            seen.add(ident)
        if got >= limit:
            break
    channel.close()  # nothing acked: every message read goes back where it was
    return seen


# --- progress: a restore never runs a file twice by accident --------------------------------

def progress_path(path) -> Any:
    from pathlib import Path

    p = Path(path)
    return p.with_name(p.name + ".restored")


def read_progress(path) -> dict[str, Any] | None:
    """What an earlier restore of this file recorded (None: never restored, or unreadable)."""
    try:
        doc = json.loads(progress_path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("last_line"), int) else None


def write_progress(path, *, last_line: int, complete: bool, broker: str) -> str | None:
    """Record how far a restore got (atomically: a temp file renamed). Returns an error
    text instead of raising: a read-only backup directory must not stop a restore."""
    import os
    import time

    dest = progress_path(path)
    tmp = dest.with_name(dest.name + ".tmp")
    doc = {"last_line": last_line, "complete": complete, "broker": broker,
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(doc) + "\n")
        os.replace(tmp, dest)
    except OSError as exc:
        return f"cannot record the progress in {dest}: {exc.strerror or exc}"
    return None
