"""The task view: every task the workers hold, one `TaskRow` each. Pure: a Snapshot (what
collect gathered, or a snapshot file) and the time "now" in, rows out; no I/O.

What it joins, per worker (`WorkerNode.replies`):

- `active` / `reserved` / `scheduled`: Celery's `Request.info()` of each task (`scheduled`
  wraps it as `{"eta", "priority", "request"}`): id, name, `time_start`, `worker_pid`,
  `acknowledged`, `delivery_info` (exchange, routing_key, priority, redelivered);
- `registered` asked with `TASK_INFO_ITEMS`: `"name [time_limit=300 acks_late=False]"` per
  task (Celery leaves out attributes that are None), and `conf` (`task_time_limit`,
  `task_soft_time_limit`, `task_acks_late`) for what the task does not set itself;
- `report`: the worker's Celery version, which says what clock `time_start` is on;
- on Redis, the `redis_inflight` part: kombu's `unacked` hash entry by entry (task id ->
  when a consumer received it, whether kombu restored it).

`time_start` (celery/worker/request.py `on_accepted`): since Celery 4.4.0 (celery/celery
commit fd6e475 "Refer worker request info to absolute time", #3684) it is wall-clock epoch
seconds, converted from the pool's monotonic accept time, read in the source of 5.2.7,
5.3.6, 5.5.3 and 5.7.0 alike; before 4.4 it was the raw monotonic value, which is no
date. So a runtime is given only for a worker whose version is known to be >= 4.4, and is
null (with a note) otherwise — never a wrong age. It is the worker host's clock (so is the
Redis `unacked_index` score), and no inspect reply carries the worker's wall clock to
measure the offset: a clearly negative age (the worker's clock ahead) or a runtime past the
task's hard time limit + CLOCK_LIMIT_MARGIN (a prefork pool kills it there: the worker's
clock behind) is reported as unknown, "worker clock skew" (a note) — never clamped to 0.

Not visible anywhere a third party can read: a per-call time limit
(`apply_async(time_limit=...)`, the message's `timelimit` header) — the limits shown are
the task's and the worker's.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celeryctl.snapshot import InFlightMessage, RedisInFlight, Snapshot, WorkersView

# asked of `registered` (Celery's `taskinfoitems`); returned as strings, None ones left out
TASK_INFO_ITEMS = ["time_limit", "soft_time_limit", "acks_late", "rate_limit"]
# the inspect methods the task view reads (`stats` for the pool, `report` for the version)
TASK_METHODS = ("active", "reserved", "scheduled", "registered", "conf", "report")
STATES = ("active", "reserved", "scheduled")
WALL_CLOCK_SINCE = (4, 4)  # Celery versions from which time_start is epoch seconds
CLOCK_TOLERANCE = 5.0  # seconds a worker clock may be ahead before an age is refused
CLOCK_LIMIT_MARGIN = 60.0  # seconds past the hard time limit before a runtime is refused
EPOCH_FLOOR = 1e9  # 2001-09-09: a time_start below it is no epoch (a monotonic clock)


@dataclass(frozen=True)
class TaskRow:
    """One task a worker holds. Stable shape (the doctor's TSK checks read it); None means
    not known. Seconds are floats; `eta` is the worker's ISO 8601 text."""

    id: str | None
    name: str | None
    state: str  # active | reserved | scheduled
    worker: str  # node name
    pid: int | None = None  # pool process running it (`worker_pid`; active only)
    queue: str | None = None  # routing key it was delivered with (the queue on Redis)
    runtime_seconds: float | None = None  # active: now - time_start (see the module doc)
    held_seconds: float | None = None  # Redis: now - delivered_at (unacked_index)
    eta: str | None = None  # scheduled: when it is due
    eta_in_seconds: float | None = None  # scheduled: eta - now (negative: overdue)
    time_limit: float | None = None  # hard limit in force (task's, else the worker's)
    soft_time_limit: float | None = None
    acks_late: bool | None = None
    redelivered: bool | None = None  # delivered before (broker flag, or kombu's restore)
    # --- beyond the fields -----------------------------------------------------
    time_limits_known: bool = False  # False: registered/conf not seen (limits unknown)
    # "registered" (the task's attributes as the worker reports them: Celery copies
    # task_time_limit into them), "worker conf", both, "none set"; None: unknown
    time_limits_source: str | None = None
    restored: bool | None = None  # Redis: kombu put it back (visibility timeout, shutdown)
    exchange: str | None = None
    priority: int | None = None
    acknowledged: bool | None = None  # acked already (not acks_late, or done)
    time_start: float | None = None  # epoch seconds by the worker's clock (when trusted)
    delivered_at: float | None = None  # epoch seconds (Redis unacked_index score)
    celery_version: str | None = None
    args: Any = None  # the reply's args/kwargs: shown only with --include-args
    kwargs: Any = None
    notes: tuple[str, ...] = ()  # why a field is null when it could have been known

    @property
    def age_seconds(self) -> float | None:
        """How old it is in its state: runtime when active (held while unknown), held time
        otherwise. What `--older-than` and the sort read."""
        if self.state == "active" and self.runtime_seconds is not None:
            return self.runtime_seconds
        return self.held_seconds

    def to_dict(self, *, include_args: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "name": self.name, "state": self.state, "worker": self.worker,
            "pid": self.pid, "queue": self.queue,
            "runtime_seconds": _round(self.runtime_seconds),
            "held_seconds": _round(self.held_seconds), "eta": self.eta,
            "eta_in_seconds": _round(self.eta_in_seconds), "time_limit": self.time_limit,
            "soft_time_limit": self.soft_time_limit, "acks_late": self.acks_late,
            "redelivered": self.redelivered, "time_limits_known": self.time_limits_known,
            "time_limits_source": self.time_limits_source, "restored": self.restored,
            "exchange": self.exchange, "priority": self.priority,
            "acknowledged": self.acknowledged, "time_start": self.time_start,
            "delivered_at": self.delivered_at, "celery_version": self.celery_version,
            "notes": list(self.notes),
        }
        if include_args:
            out["args"], out["kwargs"] = self.args, self.kwargs
        return out


@dataclass(frozen=True)
class TaskView:
    """The rows and what was not seen: `complete` is False when a worker expected did not
    reply, or did not answer one of active/reserved/scheduled (its tasks are missing)."""

    rows: tuple[TaskRow, ...] = ()
    observed: bool = False  # the workers were asked and the answer read
    error: str | None = None  # why not observed
    kind: str | None = None  # the failure's kind (collect/errors.py)
    complete: bool = False
    unseen: tuple[str, ...] = ()  # "w1@h: no reply", "w2@h: did not answer reserved"
    notes: tuple[str, ...] = field(default_factory=tuple)
    workers: tuple[str, ...] = ()  # node names that replied


# --- registered --------------------------------------------------------------------------

_REGISTERED = re.compile(r"^(\S+) \[(.*)\]$")


def registered_name(entry: Any) -> str:
    """`"proj.add [time_limit=30 acks_late=False]"` -> `"proj.add"` (any `registered`
    reply entry, with task attributes or without)."""
    text = str(entry)
    m = _REGISTERED.match(text)
    return m.group(1) if m else text


def parse_registered(reply: Any) -> dict[str, dict[str, str]]:
    """A `registered` reply -> {task name: {attribute: value as text}}. Values are Celery's
    `str()` of the attribute; an attribute that is None is absent (Celery drops it)."""
    out: dict[str, dict[str, str]] = {}
    if not isinstance(reply, list):
        return out
    for entry in reply:
        if not isinstance(entry, str):
            continue
        m = _REGISTERED.match(entry)
        if not m:
            out[entry] = {}
            continue
        attrs = {}
        for item in m.group(2).split():
            k, eq, v = item.partition("=")
            if eq:
                attrs[k] = v
        out[m.group(1)] = attrs
    return out


def _seconds(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v in ("True", "False"):
        return v == "True"
    return None


def task_limits(attrs: dict[str, str] | None, conf: dict[str, Any] | None
                ) -> tuple[float | None, float | None, bool | None, bool, str | None]:
    """(hard limit, soft limit, acks_late, known, source) for one task on one worker: the
    task's own attribute when set, else the worker's `task_time_limit` /
    `task_soft_time_limit` / `task_acks_late` (what Celery's pool applies by default)."""
    used = set()
    limits: list[float | None] = []
    for attr, setting in (("time_limit", "task_time_limit"),
                          ("soft_time_limit", "task_soft_time_limit")):
        v = _seconds((attrs or {}).get(attr))
        if v is not None:
            used.add("registered")
        elif conf is not None:
            v = _seconds(conf.get(setting))
            if v is not None:
                used.add("worker conf")
        limits.append(v)
    acks = _bool((attrs or {}).get("acks_late"))
    if acks is None and conf is not None:
        acks = _bool(conf.get("task_acks_late"))
        if acks is None and "task_acks_late" in conf:
            acks = bool(conf.get("task_acks_late"))
    # both are needed to know: a limit the task leaves unset may come from the worker's conf,
    # and the conf's may be overridden by the task
    known = attrs is not None and conf is not None
    source = " and ".join(s for s in ("registered", "worker conf") if s in used) or (
        "none set" if known else None)
    return limits[0], limits[1], acks, known, source


# --- versions and clocks -------------------------------------------------------------------

def version_tuple(text: Any) -> tuple[int, ...] | None:
    m = re.match(r"^(\d+)\.(\d+)", str(text or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def time_start_clock(version: str | None) -> str:
    """"wall" (epoch seconds: Celery >= 4.4), "monotonic" (older), "unknown"."""
    v = version_tuple(version)
    if v is None:
        return "unknown"
    return "wall" if v >= WALL_CLOCK_SINCE else "monotonic"


def runtime_of(time_start: Any, version: str | None, now: float,
               time_limit: float | None = None
               ) -> tuple[float | None, float | None, str | None]:
    """(runtime seconds, time_start as epoch, note) — runtime None with the reason when it
    cannot be known to be right. `time_start` is on the worker's clock: a clearly negative
    age (the worker's clock ahead) or, given the task's hard `time_limit`, a runtime past it
    by more than `CLOCK_LIMIT_MARGIN` (a prefork pool kills the task at its hard limit: the
    worker's clock is behind) is "worker clock skew", never a runtime — nor clamped to 0."""
    if time_start is None:
        return None, None, None
    ts = _number(time_start)
    if ts is None:
        return None, None, "time_start is not a number"
    clock = time_start_clock(version)
    if clock == "unknown" and ts >= EPOCH_FLOOR:
        # no version, but no monotonic clock reads 1e9 s (31 years since boot): an epoch
        clock = "wall"
    if clock == "unknown":
        return None, None, ("runtime unknown: the worker did not report its Celery version "
                            "(inspect report) and time_start is no wall-clock time (a "
                            "monotonic clock, as before Celery 4.4)")
    if clock == "monotonic":
        return None, None, (f"runtime unknown: Celery {version} reports time_start on the "
                            f"worker's monotonic clock (wall-clock from 4.4)")
    age = now - ts
    if age < -CLOCK_TOLERANCE:
        return None, ts, (f"runtime unknown (worker clock skew): time_start is "
                          f"{human_age(-age)} in the future — the worker's clock is ahead "
                          f"of this machine's")
    if time_limit is not None and age > time_limit + CLOCK_LIMIT_MARGIN:
        return None, ts, (f"runtime unknown (worker clock skew): time_start says "
                          f"{human_age(age)}, past its hard time limit of "
                          f"{human_age(time_limit)} (a prefork pool kills it there) — the "
                          f"worker's clock is likely behind this machine's")
    return max(0.0, age), ts, None


def held_of(delivered_at: float, now: float) -> tuple[float | None, str | None]:
    """(held seconds, note): `delivered_at` is kombu's `unacked_index` score, set by the
    consuming worker's clock; clearly in the future is worker clock skew, not 0 s."""
    age = now - delivered_at
    if age < -CLOCK_TOLERANCE:
        return None, (f"held time unknown (worker clock skew): delivered "
                      f"{human_age(-age)} in the future by the worker's clock — it is ahead "
                      f"of this machine's")
    return max(0.0, age), None


def human_age(seconds: float) -> str:
    from celeryctl.views import human_seconds

    return human_seconds(seconds)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def eta_in(eta: Any, now: float) -> tuple[float | None, str | None]:
    if not isinstance(eta, str) or not eta:
        return None, None
    try:
        when = datetime.fromisoformat(eta)
    except ValueError:
        return None, f"eta {eta[:40]!r} is not an ISO 8601 time"
    if when.tzinfo is None:
        return None, "eta has no time zone (naive, in the worker's zone): time to it unknown"
    return when.timestamp() - now, None


# --- the view ----------------------------------------------------------------------------

def _requests(node_replies: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(state, request info, extra) from one worker's replies; active first so a task seen
    twice (active and reserved at the same instant) keeps its active row."""
    out = []
    for state in STATES:
        reply = node_replies.get(state)
        if not isinstance(reply, list):
            continue
        for item in reply:
            if not isinstance(item, dict):
                continue
            if state == "scheduled":
                req = item.get("request") if isinstance(item.get("request"), dict) else {}
                out.append((state, req, {"eta": item.get("eta"),
                                         "priority": item.get("priority")}))
            else:
                out.append((state, item, {}))
    return out


def _inflight_by_id(part) -> tuple[dict[str, list[InFlightMessage]], RedisInFlight | None]:
    value = part.value if part is not None and part.ok else None
    if not isinstance(value, RedisInFlight):
        return {}, None
    out: dict[str, list[InFlightMessage]] = {}
    for m in value.messages:
        if m.id:
            out.setdefault(m.id, []).append(m)
    return out, value


def task_view(snap: Snapshot, now: float) -> TaskView:
    """Every task the workers of `snap` hold, oldest first, with what was not seen."""
    part = snap.part("workers")
    if part is None or not part.ok or not isinstance(part.value, WorkersView):
        return TaskView(error=(part.error if part is not None else None) or "not collected",
                        kind=part.kind if part is not None else None)
    view: WorkersView = part.value
    notes: list[str] = []
    unseen = [f"{n}: expected ({view.expected_source}) but did not reply"
              for n in view.missing]
    redis = snap.broker_kind == "redis"
    by_id: dict[str, list[InFlightMessage]] = {}
    inflight = None
    if redis:
        ipart = snap.part("redis_inflight")
        by_id, inflight = _inflight_by_id(ipart)
        if inflight is None:
            notes.append("held times unknown: kombu's unacked entries were not read ("
                         + ((ipart.error if ipart is not None else None) or "not collected")
                         + ")")
        else:
            if not inflight.complete and inflight.total is not None:
                notes.append(f"held times partial: {inflight.read} of {inflight.total} "
                             f"unacked entries read")
            notes.extend(inflight.problems)
    else:
        notes.append("held times unknown on RabbitMQ: the broker does not say when it "
                     "delivered an unacknowledged message")
    rows: list[TaskRow] = []
    for node in view.nodes:
        r = node.replies
        for m in ("active", "reserved", "scheduled"):
            if m in view.methods and not isinstance(r.get(m), list):
                unseen.append(f"{node.name}: did not answer {m} (its {m} tasks are not "
                              f"listed)")
        version = (r.get("report") or {}).get("celery") if isinstance(r.get("report"),
                                                                      dict) else None
        registered = parse_registered(r.get("registered")) \
            if isinstance(r.get("registered"), list) else None
        conf = r.get("conf") if isinstance(r.get("conf"), dict) else None
        seen: set[str] = set()
        for state, req, extra in _requests(r):
            tid = req.get("id") if isinstance(req.get("id"), str) else None
            if tid is not None:
                if tid in seen:
                    continue
                seen.add(tid)
            rows.append(_row(node.name, state, req, extra, version, registered, conf,
                             by_id.get(tid or "", []), inflight, redis, now))
    rows.sort(key=_order)
    if view.foreign_replies:
        unseen.append(f"{view.foreign_replies} worker replies in "
                      f"{', '.join(view.foreign_content_types)} were not decoded")
    return TaskView(rows=tuple(rows), observed=True, complete=not unseen,
                    unseen=tuple(unseen), notes=tuple(dict.fromkeys(notes)),
                    workers=tuple(n.name for n in view.nodes))


def task_rows(snap: Snapshot, now: float) -> list[TaskRow]:
    """The rows alone (oldest first); [] when the workers were not observed — use
    `task_view` to tell that apart from "no tasks"."""
    return list(task_view(snap, now).rows)


def _row(worker: str, state: str, req: dict[str, Any], extra: dict[str, Any],
         version: str | None, registered: dict[str, dict[str, str]] | None,
         conf: dict[str, Any] | None, copies: list[InFlightMessage],
         inflight: RedisInFlight | None, redis: bool, now: float) -> TaskRow:
    notes: list[str] = []
    name = req.get("name") if isinstance(req.get("name"), str) else None
    dinfo = req.get("delivery_info") if isinstance(req.get("delivery_info"), dict) else {}
    attrs = None
    if registered is not None:
        attrs = registered.get(name or "", None)
        if attrs is None:
            notes.append("task not in the worker's registered list")
    hard, soft, acks, known, source = task_limits(attrs, conf)
    runtime, started = None, None
    if state == "active":
        runtime, started, why = runtime_of(req.get("time_start"), version, now, hard)
        if why:
            notes.append(why)
    # the worker's delivery_info flag (AMQP's, or on Redis the one kombu's restore sets)
    flag = dinfo.get("redelivered")
    if isinstance(flag, bool) and copies:
        # each row keeps its own delivery: after a restore (visibility timeout) the same task
        # id is held twice — the first delivery (flag False; its unacked entry was removed by
        # the restore) and the second (kombu's restore flag set)
        own = [c for c in copies if c.restored is None or bool(c.restored) == flag]
        if not own:
            notes.append("held time unknown: this delivery is no longer in kombu's unacked "
                         "hash (the task id's entry there is a later delivery"
                         + (": redelivered after a restore)" if not flag else ")"))
        copies = own
    held, delivered_at, restored = None, None, None
    if copies:
        times = [c.delivered_at for c in copies if c.delivered_at is not None]
        if times:
            delivered_at = max(times)
            held, why = held_of(delivered_at, now)
            if why:
                notes.append(why)
        restored = any(c.restored for c in copies)
        if len(copies) > 1:
            notes.append(f"{len(copies)} in-flight copies of this task id in unacked")
    elif redis and inflight is not None and inflight.complete and state != "active" \
            and not any("no longer in kombu's unacked" in n for n in notes):
        notes.append("not in kombu's unacked hash")
    redelivered = True if (flag is True or restored) else (False if flag is False else None)
    eta, eta_secs = None, None
    if state == "scheduled":
        eta = extra.get("eta") if isinstance(extra.get("eta"), str) else None
        eta_secs, why = eta_in(eta, now)
        if why:
            notes.append(why)
    prio = extra.get("priority") if state == "scheduled" else dinfo.get("priority")
    pid = req.get("worker_pid")
    return TaskRow(
        id=req.get("id") if isinstance(req.get("id"), str) else None, name=name, state=state,
        worker=worker, pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        queue=dinfo.get("routing_key") if isinstance(dinfo.get("routing_key"), str) else None,
        runtime_seconds=runtime, held_seconds=held, eta=eta, eta_in_seconds=eta_secs,
        time_limit=hard, soft_time_limit=soft, acks_late=acks, redelivered=redelivered,
        time_limits_known=known, time_limits_source=source, restored=restored,
        exchange=dinfo.get("exchange") if isinstance(dinfo.get("exchange"), str) else None,
        priority=prio if isinstance(prio, int) and not isinstance(prio, bool) else None,
        acknowledged=req.get("acknowledged") if isinstance(req.get("acknowledged"), bool)
        else None,
        time_start=started, delivered_at=delivered_at, celery_version=version,
        args=req.get("args"), kwargs=req.get("kwargs"), notes=tuple(notes))


def _order(row: TaskRow) -> tuple:
    age = row.age_seconds
    return (age is None, -(age or 0.0), STATES.index(row.state) if row.state in STATES else 9,
            row.worker, row.id or "")


def filter_rows(rows: list[TaskRow] | tuple[TaskRow, ...], *, states: list[str] | None = None,
                name: str | None = None, worker: list[str] | None = None,
                older_than: float | None = None) -> list[TaskRow]:
    """`--state`, `--name PATTERN` (fnmatch, case-sensitive), `--worker NODE` (exact node
    names), `--older-than SECONDS` (age known and above; unknown ages are left out)."""
    out = []
    for r in rows:
        if states and r.state not in states:
            continue
        if name and not fnmatch.fnmatchcase(r.name or "", name):
            continue
        if worker and r.worker not in worker:
            continue
        if older_than is not None and (r.age_seconds is None or r.age_seconds < older_than):
            continue
        out.append(r)
    return out


def _round(v: float | None) -> float | None:
    return round(v, 3) if isinstance(v, float) and math.isfinite(v) else (
        None if isinstance(v, float) else v)


# --- in snapshots --------------------------------------------------------------------------

def tasks_part(view: TaskView):
    """The task view as a snapshot part (`parts.tasks`): the rows, with what was not seen in
    `notes` and `partial`; an error when the workers were not observed."""
    from celeryctl.snapshot import Observed

    if not view.observed:
        return Observed(error=view.error or "workers not observed", kind=view.kind)
    return Observed(value=list(view.rows), source="workers",
                    notes=tuple(view.unseen) + tuple(view.notes),
                    partial="; ".join(view.unseen) if view.unseen else None)


def snapshot_task_view(snap: Snapshot) -> TaskView:
    """The task view of a snapshot as it was when taken: its `tasks` part when it has one,
    else computed from its workers' replies at `taken_at` (snapshots written before the
    task view existed)."""
    part = snap.parts.get("tasks")
    if part is None:
        return task_view(snap, snap.taken_at)
    if not part.ok:
        return TaskView(error=part.error, kind=part.kind)
    unseen = tuple(part.partial.split("; ")) if part.partial else ()
    return TaskView(rows=tuple(part.value or ()), observed=True, complete=not unseen,
                    unseen=unseen, notes=tuple(n for n in part.notes if n not in unseen),
                    workers=tuple(sorted({r.worker for r in part.value or ()})))
