"""`celeryctl purge`: the plan (pure, over what `gather` observed) and its execution.

Redis: the queue's priority sub-lists are set aside atomically (a Lua RENAME), streamed to the
backup, fsynced and verified, then deleted — also atomically; any interruption or error puts
them back. RabbitMQ: at most the planned count is drained in committed AMQP transactions, a
batch written and fsynced before it is acked. docs/purge.md gives the guarantees.
"""

from __future__ import annotations

import difflib
import uuid
from dataclasses import dataclass, field
from typing import Any

from celeryctl.actions.backup import BackupWriter, record_from_amqp, record_from_redis
from celeryctl.actions.interrupt import Never
from celeryctl.collect.redis import PURGE_PENDING as PENDING
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
#
# One purge of one queue is one token. `_celeryctl.purge.<token>` (a hash) says what was set
# aside, from which queue, by whom and where its backup is; `_celeryctl.purge.pending` (a
# set) lists the tokens whose messages are still set aside, so `queues`, doctor and
# `restore --set-aside` find what a killed purge left without a SCAN. Each step below is one
# Lua script, so the broker never holds a half-done state:
#
#   SET_ASIDE   RENAME each priority sub-list aside (at most the planned count stays aside:
#               messages beyond it, the newest, go straight back), record the hash -> set-aside
#   (stream the aside lists to the backup, fsync, verify)
#   DROP        DEL the aside lists, hash -> deleted (kept 30 days, for restore to consult)
#   PUT_BACK    on any interruption or error: the aside lists go back at the consuming end
#               (they are older than anything published since), hash -> put-back

AUDIT_TTL = 30 * 86400

_SET_ASIDE = """
-- KEYS[1] meta hash, KEYS[2] pending set, then pairs (live, aside)
-- ARGV[1] token, ARGV[2] meta JSON, ARGV[3..] limit per pair (-1: no limit)
local moved = {}
for i = 3, #KEYS, 2 do
  local live, aside = KEYS[i], KEYS[i + 1]
  local limit = tonumber(ARGV[(i - 3) / 2 + 3])
  if redis.call('EXISTS', live) == 1 and redis.call('TYPE', live).ok == 'list' then
    local n = redis.call('LLEN', live)
    if limit ~= 0 then
      redis.call('RENAME', live, aside)
      if limit > 0 and n > limit then
        -- the newest n - limit (left end) were not in the plan: straight back, order kept
        local extra = n - limit
        local j = 0
        while j < extra do
          local last = math.min(j + 999, extra - 1)
          redis.call('RPUSH', live, unpack(redis.call('LRANGE', aside, j, last)))
          j = last + 1
        end
        redis.call('LTRIM', aside, extra, -1)
        n = limit
      end
      moved[#moved + 1] = aside
      moved[#moved + 1] = n
    end
  end
end
if #moved > 0 then
  redis.call('HSET', KEYS[1], 'token', ARGV[1], 'meta', ARGV[2], 'state', 'set-aside')
  redis.call('SADD', KEYS[2], ARGV[1])
end
return moved
"""

_DROP = """
-- KEYS[1] meta, KEYS[2] pending set, KEYS[3..] aside lists; ARGV[1] token, ARGV[2] ttl,
-- ARGV[3] deleted count
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('HSET', KEYS[1], 'state', 'deleted', 'count', ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

# Put aside lists back at the consuming (right) end of their live lists, order kept.
_PUT_BACK = """
-- KEYS[1] meta, KEYS[2] pending set, then pairs (aside, live); ARGV[1] token, ARGV[2] ttl
local total = 0
for i = 3, #KEYS, 2 do
  local aside, live = KEYS[i], KEYS[i + 1]
  local n = redis.call('LLEN', aside)
  if n > 0 then
    if redis.call('EXISTS', live) == 0 then
      redis.call('RENAME', aside, live)
    else
      local j = 0
      while j < n do
        redis.call('RPUSH', live, unpack(redis.call('LRANGE', aside, j, j + 999)))
        j = j + 1000
      end
      redis.call('DEL', aside)
    end
  end
  total = total + n
end
redis.call('HSET', KEYS[1], 'state', 'put-back', 'count', total)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('SREM', KEYS[2], ARGV[1])
return total
"""


@dataclass
class PurgeResult:
    queue: str
    purged: int = 0
    backed_up: int = 0
    error: str | None = None
    put_back: int = 0
    interrupted: str | None = None  # the signal that stopped it (everything was put back)
    set_aside: str | None = None  # a token whose lists could not be put back (see restore)
    token: str | None = None


@dataclass
class SetAside:
    """One queue's lists set aside under one token (what `_SET_ASIDE` did)."""

    token: str
    queue: str
    meta_key: bytes
    pending: bytes
    live_of: dict[bytes, tuple[bytes, int]]  # aside list -> (live list, priority step)
    moved: list[tuple[bytes, int]] = field(default_factory=list)  # (aside list, length)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.moved)


def aside_lists(layout, queue: str, token: str) -> SetAside:
    """Where a queue's lists go under `token` (nothing is moved yet)."""
    sa = SetAside(token, queue, f"{layout.prefix}_celeryctl.purge.{token}".encode(),
                  f"{layout.prefix}{PENDING}".encode(), {})
    for step in layout.priority_steps:
        aside = f"{layout.prefix}_celeryctl.purge.{token}.{step}".encode()
        sa.live_of[aside] = (layout.key(queue, step), step)
    return sa


def set_aside(client, layout, queue: str, *, limits: dict[int, int] | None = None,
              token: str | None = None, info: dict[str, Any] | None = None) -> SetAside:
    """Set a queue's messages aside in one Lua call: at most `limits[step]` per priority
    sub-list (None: all), recorded under a fresh token (see the comment above)."""
    import json
    import os
    import socket
    import time

    token = token or uuid.uuid4().hex[:16]
    sa = aside_lists(layout, queue, token)
    pairs: list[bytes] = []
    limit_args: list[int] = []
    for aside, (live, step) in sa.live_of.items():
        pairs += [live, aside]
        limit_args.append(-1 if limits is None else int(limits.get(step, 0)))
    record = {"queue": queue, "token": token, "set_aside_at": time.time(),
              "host": socket.gethostname(), "pid": os.getpid(), **(info or {}),
              "lists": {a.decode("utf-8", "surrogateescape"): lv.decode(
                  "utf-8", "surrogateescape") for a, (lv, _) in sa.live_of.items()}}
    raw = client.eval(_SET_ASIDE, 2 + len(pairs), sa.meta_key, sa.pending, *pairs, token,
                      json.dumps(record), *limit_args) or []
    sa.moved = [(bytes(raw[i]), int(raw[i + 1])) for i in range(0, len(raw), 2)]
    return sa


def put_back(client, prefix: str, token: str, lists: dict[bytes, bytes]) -> int:
    """Put set-aside lists (aside -> live) back at the consuming end, order kept, and mark
    the token put back (one Lua call). Returns how many messages went back."""
    keys = [k for aside, live in lists.items() for k in (aside, live)]
    return int(client.eval(_PUT_BACK, 2 + len(keys), f"{prefix}_celeryctl.purge.{token}",
                           f"{prefix}{PENDING}", *keys, token, AUDIT_TTL) or 0)


def purge_redis(client, layout, queue: str, backup: BackupWriter | None, *,
                limits: dict[int, int] | None = None, stop=None) -> PurgeResult:
    """Purge one queue: at most `limits[step]` messages of each priority sub-list (the plan's
    counts; None: all). With a backup, the messages are on disk (fsynced, verified) before
    anything is deleted. `stop.requested` (a signal) or any error puts everything back and
    drops this queue's lines from the backup."""
    stop = stop or Never()
    res = PurgeResult(queue)
    start = backup.offset() if backup else None
    token = uuid.uuid4().hex[:16]
    res.token = token
    if backup is not None:
        backup.mark({"celeryctl_marker": "queue", "queue": queue, "token": token,
                     "prefix": layout.prefix})
    if stop.requested:
        return _stopped(res, stop, backup, start)
    sa = aside_lists(layout, queue, token)
    try:
        sa = set_aside(client, layout, queue, limits=limits, token=token,
                       info={"backup": str(backup.path.resolve()) if backup else None})
    except Exception as exc:  # noqa: BLE001 - refused, or no answer: did anything move?
        try:
            moved = int(client.exists(*sa.live_of))
        except Exception:  # noqa: BLE001 - not known: undo whatever may have moved
            moved = None
        if moved == 0:  # nothing set aside (e.g. the ACL refused the RENAME): say it as is
            if backup is not None:
                backup.truncate_to(start)
            raise
        res.error = str(exc) or type(exc).__name__
        sa.moved = [(a, -1) for a in sa.live_of]  # every list it may have moved
        return _undo(client, layout, sa, res, backup, start)
    if not sa.moved:
        if backup is not None:
            backup.truncate_to(start)
        return res
    try:
        for aside, n in sa.moved:  # priority order: the order workers would have received them
            if backup is None:
                continue
            step = sa.live_of[aside][1]
            end = n
            while end > 0:  # from the right (oldest) to the left, in chunks
                if stop.requested:
                    raise _Stop()
                begin = max(0, end - CHUNK)
                items = client.lrange(aside, begin, end - 1)
                for raw_item in reversed(items):
                    backup.write(record_from_redis(queue, step, raw_item))
                    res.backed_up += 1
                end = begin
        if backup is not None:
            backup.verify()
            if res.backed_up != sa.total:
                raise RuntimeError(f"read {res.backed_up} of {sa.total} set-aside messages")
        if stop.requested:
            raise _Stop()
    except BaseException as exc:  # noqa: BLE001 - a signal, an error: everything goes back
        if isinstance(exc, _Stop):
            res.interrupted = stop.signal
        else:
            res.error = str(exc) or type(exc).__name__
        _undo(client, layout, sa, res, backup, start)
        if not isinstance(exc, Exception):
            raise
        return res
    try:
        client.eval(_DROP, 2 + len(sa.moved), sa.meta_key, sa.pending,
                    *[a for a, _ in sa.moved], token, AUDIT_TTL, sa.total)
    except Exception as exc:  # noqa: BLE001 - backed up; whether deleted is not known
        res.set_aside = token
        res.error = (f"the broker did not confirm the deletion ({exc}): the messages are "
                     f"either deleted (and in the backup) or still set aside as "
                     f"{layout.prefix}_celeryctl.purge.{token}.* — `celeryctl queues` says "
                     f"which; `celeryctl restore --set-aside` puts them back")
        return res
    res.purged = sa.total
    if backup is not None:
        backup.mark({"celeryctl_marker": "queue_done", "queue": queue, "token": token,
                     "count": sa.total})
    return res


def _undo(client, layout, sa: SetAside, res: PurgeResult, backup, start) -> PurgeResult:
    """Put everything set aside back, and drop this queue's lines from the backup; if the
    broker does not answer even that, say where the messages are."""
    res.backed_up = 0
    try:
        res.put_back = put_back(client, layout.prefix, sa.token,
                                {a: sa.live_of[a][0] for a, _ in sa.moved})
    except Exception as exc2:  # noqa: BLE001 - the broker is gone: say where they are
        res.set_aside = sa.token
        res.error = (res.error or "interrupted") + (
            f"; putting the messages back failed too ({exc2}): they are set aside as "
            f"{layout.prefix}_celeryctl.purge.{sa.token}.*; `celeryctl restore --set-aside` "
            f"puts them back")
        return res
    if backup is not None:
        try:
            backup.truncate_to(start)
        except Exception as exc3:  # noqa: BLE001
            res.error = (res.error or "interrupted") + f"; {exc3}"
    return res


class _Stop(Exception):
    """A signal was recorded: stop at this safe point."""


def _stopped(res: PurgeResult, stop, backup, start) -> PurgeResult:
    res.interrupted = stop.signal
    if backup is not None:
        backup.truncate_to(start)
    return res


# --- RabbitMQ ------------------------------------------------------------------------------

def purge_rabbit_amqp(channel, queue: str, planned: int, backup: BackupWriter | None, *,
                      stop=None, idle_seconds: float = 1.0, batch: int = CHUNK) -> PurgeResult:
    """Drain at most `planned` messages (the plan's count from a passive declare: never more,
    even if the queue grew since), in batches of at most `batch`, in an AMQP transaction:

        receive a batch (prefetch = what is left to take) -> write it to the backup, fsync
        -> basic.ack (multiple) + tx.commit, confirmed by commit-ok -> an "acked" marker line

    A signal stops between batches; a batch in hand but not committed is never written, and
    closing the channel gives it back to the queue (RabbitMQ requeues it at its place). Only
    a kill -9 between the fsync and the marker leaves a batch whose fate the file cannot
    tell: restore checks those messages against the queue (docs/purge.md)."""
    stop = stop or Never()
    res = PurgeResult(queue)
    left = planned
    batch_start = None  # the backup before the batch in hand: dropped if it is not committed
    committing = False
    try:
        channel.tx_select()
        if backup is not None:
            backup.mark({"celeryctl_marker": "queue", "queue": queue})
        while left > 0 and not stop.requested:
            window = min(batch, left)
            channel.basic_qos(prefetch_count=window)
            got = []
            for method, props, body in channel.consume(queue, inactivity_timeout=idle_seconds):
                if method is None:
                    break  # nothing came within idle_seconds: the queue is empty
                got.append((method, props, body))
                if len(got) >= window or stop.requested:
                    break
            channel.cancel()  # messages delivered but not yielded go back (rejected, requeued)
            if not got or stop.requested:
                break
            if backup is not None:
                batch_start = backup.offset()
                for method, props, body in got:
                    backup.write(record_from_amqp(queue, method, props, body))
                backup.sync()
            channel.basic_ack(delivery_tag=got[-1][0].delivery_tag, multiple=True)
            committing = True
            channel.tx_commit()
            committing, batch_start = False, None
            res.purged += len(got)
            left -= len(got)
            if backup is not None:
                res.backed_up += len(got)
                backup.mark({"celeryctl_marker": "acked", "queue": queue, "count": len(got)})
            if len(got) < window:
                break
        if stop.requested:
            res.interrupted = stop.signal
        if backup is not None:
            backup.mark({"celeryctl_marker": "queue_done", "queue": queue,
                         "count": res.purged})
    except Exception as exc:  # noqa: BLE001
        from celeryctl.collect.errors import DENIED, classify

        kind, text = classify(exc)
        res.error = text + (" (the operator account of docs/permissions.md may do this)"
                            if kind == DENIED else "")
        if batch_start is not None and not committing:
            # written, never committed: the broker takes the batch back; so does the file
            try:
                backup.truncate_to(batch_start)
            except Exception as exc2:  # noqa: BLE001
                res.error += f"; {exc2}"
        elif committing:
            res.error += ("; the connection was lost while the last batch was being "
                          "committed: its messages are in the backup and may also still be "
                          "in the queue (restore checks them by id and skips those found)")
    finally:
        # anything received and not committed goes back to the queue with the channel
        try:
            if channel.is_open:
                channel.close()
        except Exception:  # noqa: BLE001
            pass
    return res
