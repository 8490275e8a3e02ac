"""`celeryctl purge`: the plan (pure, over what `gather` observed) and its execution.

Redis: every priority sub-list of a queue is RENAMEd aside in one Lua call (atomic: a message
published a microsecond later lands in a fresh list and survives), then the aside lists are
streamed to the backup oldest-first in chunks, fsynced, and only then deleted. If the backup
fails, the aside lists are appended back at the consuming end (they are older than anything
published meanwhile), so nothing is lost.

RabbitMQ: without a backup, `DELETE /api/queues/VHOST/NAME/contents` (or AMQP queue.purge
when the management API is not available). With a backup, at most the planned count is
drained over AMQP with a prefetch window that never exceeds what is left to take, each
batch written and fsynced before it is acked; a failure closes the channel, and the broker
requeues every message not yet acked.
"""

from __future__ import annotations

import difflib
import uuid
from dataclasses import dataclass, field
from typing import Any

from celeryctl.actions.backup import BackupWriter, record_from_amqp, record_from_redis
from celeryctl.snapshot import MessageSample, QueueDepth, WorkersView

CHUNK = 1000


@dataclass(frozen=True)
class PurgeItem:
    queue: str
    ready: int | None
    buckets: dict[str, int] | None
    unacked: int | None
    consumers: int | None
    consumer_workers: tuple[str, ...]
    internal: bool
    samples: tuple[MessageSample, ...] = ()


@dataclass
class PurgePlan:
    broker: str  # redacted
    broker_kind: str
    vhost: str | None
    items: list[PurgeItem] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [i.queue for i in self.items]

    @property
    def total(self) -> int:
        return sum(i.ready or 0 for i in self.items)


def worker_queues(view: WorkersView | None) -> list[str]:
    """The queues live workers consume (active_queues), whatever the app config says."""
    names: set[str] = set()
    for node in view.nodes if view else ():
        for q in node.replies.get("active_queues") or []:
            if isinstance(q, dict) and q.get("name"):
                names.add(str(q["name"]))
    return sorted(names)


def plan_purge(requested: list[str], depths: list[QueueDepth], *, broker: str, broker_kind: str,
               vhost: str | None, samples: dict[str, list[MessageSample]] | None = None,
               force: bool = False, include_internal: bool = False) -> PurgePlan:
    """Decide what a purge would do, and whether it must refuse (pure)."""
    plan = PurgePlan(broker=broker, broker_kind=broker_kind, vhost=vhost)
    known = {q.name: q for q in depths if q.exists or (q.ready or 0) > 0}
    for name in dict.fromkeys(requested):
        q = known.get(name)
        if q is None:
            close = difflib.get_close_matches(name, list(known), n=5, cutoff=0.6)
            plan.refusals.append(
                f"no queue named {name!r} on this broker"
                + (f" (did you mean: {', '.join(close)}?)" if close else
                   " (celeryctl queues --all lists them)"))
            continue
        if q.error:
            plan.refusals.append(f"queue {name!r} could not be read: {q.error}")
            continue
        if q.internal and not include_internal:
            plan.refusals.append(f"{name!r} is one of Celery's internal queues (remote control, "
                                 f"events or results): pass --include-internal to purge it")
            continue
        busy = (q.consumers or 0) > 0 or bool(q.consumer_workers)
        if busy and not force:
            who = ", ".join(q.consumer_workers) or f"{q.consumers} consumer(s)"
            plan.refusals.append(f"queue {name!r} has consumers attached ({who}): purging would "
                                 f"race them; stop or cancel them first, or pass --force")
            continue
        plan.items.append(PurgeItem(name, q.ready, q.buckets, q.unacked, q.consumers,
                                    q.consumer_workers, q.internal,
                                    tuple((samples or {}).get(name, ()))))
    return plan


# --- Redis ---------------------------------------------------------------------------------

_RENAME_ASIDE = """
local moved = {}
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 1])
    moved[#moved + 1] = KEYS[i + 1]
  end
end
return moved
"""

# Put an aside list back at the consuming (right) end of the live list, order kept.
_PUT_BACK = """
local n = redis.call('LLEN', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 0 then
  if n > 0 then redis.call('RENAME', KEYS[1], KEYS[2]) end
  return n
end
local i = 0
while i < n do
  local items = redis.call('LRANGE', KEYS[1], i, i + 999)
  redis.call('RPUSH', KEYS[2], unpack(items))
  i = i + 1000
end
redis.call('DEL', KEYS[1])
return n
"""


@dataclass
class PurgeResult:
    queue: str
    purged: int = 0
    backed_up: int = 0
    error: str | None = None
    put_back: int = 0


def purge_redis(client, layout, queue: str, backup: BackupWriter | None) -> PurgeResult:
    token = uuid.uuid4().hex[:12]
    steps = list(layout.priority_steps)
    keys: list[bytes] = []
    aside_of: dict[bytes, tuple[bytes, int]] = {}
    for step in steps:
        live = layout.key(queue, step)
        aside = f"{layout.prefix}_celeryctl.purge.{token}.{step}".encode()
        keys += [live, aside]
        aside_of[aside] = (live, step)
    moved = [bytes(k) for k in client.eval(_RENAME_ASIDE, len(keys), *keys) or []]
    res = PurgeResult(queue)
    try:
        for aside in moved:  # priority order: the order workers would have received them
            n = int(client.llen(aside))
            res.purged += n
            if backup is None:
                continue
            step = aside_of[aside][1]
            end = n
            while end > 0:  # from the right (oldest) to the left, in chunks
                start = max(0, end - CHUNK)
                items = client.lrange(aside, start, end - 1)
                for raw in reversed(items):
                    backup.write(record_from_redis(queue, step, raw))
                    res.backed_up += 1
                end = start
        if backup is not None:
            backup.sync()
    except Exception as exc:
        res.error = str(exc) or type(exc).__name__
        for aside in moved:
            res.put_back += int(client.eval(_PUT_BACK, 2, aside, aside_of[aside][0]) or 0)
        res.purged = 0
        return res
    if moved:
        client.unlink(*moved)
    return res


def redis_restore_key(layout, queue: str, rec: dict[str, Any]) -> bytes:
    """Where a restored message goes: its original bucket, else its priority's bucket."""
    bucket = rec.get("bucket")
    if isinstance(bucket, int) and bucket in layout.priority_steps:
        return layout.key(queue, bucket)
    from bisect import bisect

    pri = rec.get("priority")
    pri = min(max(int(pri), 0), 9) if isinstance(pri, int) else 0
    steps = list(layout.priority_steps)
    return layout.key(queue, steps[bisect(steps, pri) - 1])


def redis_envelope(rec: dict[str, Any], queue: str) -> bytes:
    """A backup record -> kombu's Redis envelope (same key order as kombu writes it)."""
    import base64
    import json

    if "raw" in rec:
        return base64.b64decode(rec["raw"])
    props = dict(rec.get("properties") or {})
    body = rec.get("body")
    if "body_encoding" not in props and rec.get("body_encoding") == "base64":
        props["body_encoding"] = "base64"  # an AMQP body, base64-encoded in the backup
    props.setdefault("delivery_tag", str(uuid.uuid4()))
    props.setdefault("delivery_mode", 2)
    if rec.get("priority") is not None:
        props["priority"] = rec["priority"]
    info = dict(props.get("delivery_info") or {})
    if rec.get("queue") != queue or "exchange" not in info:
        # restored elsewhere: a later visibility-timeout restore must come back here
        info.update(exchange="", routing_key=queue)
    props["delivery_info"] = info
    env = {"body": body, "content-encoding": rec.get("content_encoding"),
           "content-type": rec.get("content_type"), "headers": rec.get("headers") or {},
           "properties": props}
    return json.dumps(env).encode()


# --- RabbitMQ ------------------------------------------------------------------------------

def purge_rabbit_api(api, vhost: str, queue: str) -> PurgeResult:
    from urllib.parse import quote

    api.delete(f"/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}/contents")
    return PurgeResult(queue)


def purge_rabbit_amqp(channel, queue: str, planned: int, backup: BackupWriter | None,
                      idle_seconds: float = 1.0) -> PurgeResult:
    """Drain at most `planned` messages; with a backup, ack each batch only once it is
    fsynced. Without a backup, AMQP queue.purge."""
    res = PurgeResult(queue)
    if backup is None:
        frame = channel.queue_purge(queue)
        res.purged = int(getattr(frame.method, "message_count", 0) or 0)
        return res
    left = planned
    try:
        while left > 0:
            window = min(CHUNK, left)
            channel.basic_qos(prefetch_count=window)
            batch = 0
            last_tag = None
            for method, props, body in channel.consume(queue, inactivity_timeout=idle_seconds):
                if method is None:
                    break  # nothing came within idle_seconds: the queue is empty
                backup.write(record_from_amqp(queue, method, props, body))
                last_tag = method.delivery_tag
                batch += 1
                if batch >= window:
                    break
            if batch == 0:
                break
            backup.sync()
            channel.basic_ack(delivery_tag=last_tag, multiple=True)
            res.purged += batch
            res.backed_up += batch
            left -= batch
            if batch < window:
                break
        channel.cancel()
    except Exception as exc:
        res.error = str(exc) or type(exc).__name__
        # not acked -> the broker requeues them when the channel closes
        try:
            channel.close()
        except Exception:  # noqa: BLE001
            pass
    return res
