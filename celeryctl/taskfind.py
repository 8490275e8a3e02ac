"""`celeryctl task ID...`: where a task is now — the pure part (no I/O).

The collector (celeryctl/collect/taskfind.py) gathers, for each id, every place it was seen
(`Evidence`) and how much of each place it could read (`Coverage`); `decide` turns them into
one state and one verdict line. A place that could not be read is named in the verdict of a
task not found elsewhere: "not found" is said only when every place was read (Honest rule).

States: queued, in_flight, reserved, active, scheduled, succeeded, failed, retrying, revoked,
unknown. Precedence (what the task *is* when it is seen in several places): running on a
worker (active) > revoked > scheduled / reserved on a worker > in flight on Redis (delivered,
no worker that answered holds it) > waiting in a queue > result-backend state > unknown.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from celeryctl.views import human_age

STATES = ("queued", "in_flight", "reserved", "active", "scheduled", "succeeded", "failed",
          "retrying", "revoked", "unknown")
MAX_ID_LENGTH = 1024
# a wall-clock `time_start` is an epoch after 2001; anything below is no wall-clock time


def check_ids(ids: list[Any]) -> list[str]:
    """The ids as given, or ValueError naming the first bad one (not a string, empty or
    blank, longer than MAX_ID_LENGTH). Duplicates are dropped, order kept."""
    out: list[str] = []
    for i, tid in enumerate(ids, 1):
        if not isinstance(tid, str):
            raise ValueError(f"task id #{i} is not a string")
        if not tid.strip():
            raise ValueError(f"task id #{i} is empty")
        if len(tid) > MAX_ID_LENGTH:
            raise ValueError(f"task id #{i} is longer than {MAX_ID_LENGTH} characters")
        if tid not in out:
            out.append(tid)
    if not out:
        raise ValueError("give at least one task id")
    return out


def runtime_seconds(time_start: Any, now: float, time_limit: float | None = None
                    ) -> float | None:
    """How long an active task has run, from `query_task`'s `time_start`, or None when that
    cannot be known — never a wrong age. One rule with `celeryctl tasks`
    (celeryctl.tasks.runtime_of: wall-clock from Celery 4.4, a monotonic value gives None,
    a worker clock ahead of ours by more than CLOCK_TOLERANCE, or a runtime well past the
    task's hard `time_limit` — a worker clock behind ours — gives None); query_task does not
    say the worker's version, so the value itself decides."""
    from celeryctl.tasks import runtime_of

    return runtime_of(time_start, None, now, time_limit)[0]


def parse_date(value: Any) -> float | None:
    """Celery's `date_done` (ISO 8601; naive means UTC, as older Celery wrote it) -> epoch."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    ts = dt.timestamp()
    return ts if math.isfinite(ts) else None


def hard_limit_from_registered(lines: Any, task_name: str | None) -> tuple[bool, float | None]:
    """`registered(taskinfoitems=["time_limit"])` reply -> (task listed, its time_limit).
    Celery formats each task as `name [time_limit=300]`, or `name` when the attribute is
    None (then the worker's `task_time_limit` applies)."""
    if not task_name or not isinstance(lines, list):
        return False, None
    for line in lines:
        if not isinstance(line, str):
            continue
        name = line.split(" [", 1)[0]
        if name != task_name:
            continue
        m = re.search(r"(?<![a-z_])time_limit=([0-9.eE+-]+)", line)
        if m:
            try:
                v = float(m.group(1))
                return True, v if math.isfinite(v) and v > 0 else None
            except ValueError:
                return True, None
        return True, None
    return False, None


BACKEND_KEYS = ("status", "date_done", "date_done_epoch", "exception_type", "exception_message",
                "traceback_line", "children", "retries", "worker")


def backend_location(tid: str, meta: dict[str, Any]) -> dict[str, Any]:
    """A result-backend record as a `result_backend` location: every documented key present
    (null where not known), `undecoded` only for a record not in JSON; the task itself is not
    its own child (a retry is sent with the same id, and Celery records it as a child)."""
    out: dict[str, Any] = {k: meta.get(k) for k in BACKEND_KEYS}
    if isinstance(out["children"], list):
        out["children"] = [c for c in out["children"] if c != tid]
    if meta.get("undecoded"):
        out["undecoded"] = meta["undecoded"]
    return out


@dataclass
class Evidence:
    """Everything seen of one id."""

    id: str
    queue: dict[str, Any] | None = None  # first match in consumption order
    unacked: dict[str, Any] | None = None
    workers: list[dict[str, Any]] = field(default_factory=list)  # query_task hits
    revoked_by: list[str] = field(default_factory=list)
    backend: dict[str, Any] | None = None  # the meta read (status, date_done, ...)


@dataclass
class Coverage:
    """How much of each place was read. `*_gap`: why a place was not (fully) read, None when
    it was. `queue_summary`: "searched 100,000 of 100,000 messages in 7 queues"."""

    broker_kind: str = "redis"
    queue_summary: str = ""
    queue_gap: str | None = None
    unacked_gap: str | None = None  # Redis only
    workers_gap: str | None = None
    silent_workers: tuple[str, ...] = ()
    backend_gap: str | None = None  # configured, and could not be read
    # not configured, rpc://, a kind celeryctl does not read: no failure to observe, but a
    # finished task leaves no trace celeryctl can see
    backend_note: str | None = None
    backend_kind: str = "none"
    visibility_timeout: float = 3600.0

    def gaps(self) -> list[str]:
        out = []
        if self.queue_gap:
            out.append(f"queues ({self.queue_gap})")
        if self.unacked_gap:
            out.append(f"in-flight messages ({self.unacked_gap})")
        if self.workers_gap:
            out.append(f"workers ({self.workers_gap})")
        elif self.silent_workers:
            out.append(f"workers {', '.join(self.silent_workers)} (did not answer)")
        if self.backend_gap:
            out.append(f"result backend ({self.backend_gap})")
        return out


@dataclass
class Finding:
    id: str
    state: str
    verdict: str
    locations: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "verdict": self.verdict,
                "locations": self.locations}


def _limit_text(loc: dict[str, Any]) -> str:
    if loc.get("time_limit") is not None:
        return f"hard time limit {human_age(loc['time_limit'])}"
    if loc.get("time_limit_known"):
        return "no hard time limit"
    return "hard time limit unknown"


def _exc_text(meta: dict[str, Any]) -> str:
    et, em = meta.get("exception_type"), meta.get("exception_message")
    if et and em:
        return f"{et}: {em}"
    return str(et or em or "no exception recorded")


def _where_queue(q: dict[str, Any]) -> str:
    text = f"waiting in `{q['queue']}`"
    if q.get("priority_step"):
        text += f" (priority {q['priority_step']} sub-list)"
    if q.get("position") is not None:
        text += f", position {q['position']:,}"
        if q.get("of") is not None:
            text += f" of {q['of']:,}"
        if q.get("peeked"):
            text += " (among the messages --peek read)"
    return text


def _unacked_text(u: dict[str, Any], vt: float) -> str:
    d = u.get("delivered_seconds")
    text = f"delivered {human_age(d)} ago" if d is not None else "delivered (receive time unknown)"
    if d is not None:
        left = vt - d
        text += (f", redelivered in {human_age(left)} by visibility_timeout ({human_age(vt)})" if left > 0
                 else f", past visibility_timeout ({human_age(vt)}) by {human_age(-left)}: the next "
                      f"restore sweep of any worker delivers it again")
    return text


def _eta_text(eta: Any, now: float) -> str:
    """", ETA 2027-01-15T08:12:00+00:00 (in 12 min)" — how far away by our clock."""
    if not isinstance(eta, str) or not eta:
        return ", ETA unknown (not in what the worker and the broker reported)"
    text = f", ETA {eta}"
    ts = parse_date(eta)
    if ts is None:
        return text
    d = ts - now
    if d >= 1:
        return text + f" (in {human_age(d)})"
    if d > -1:
        return text + " (due now)"
    return text + f" (due {human_age(-d)} ago, not started yet)"


def _finished_note(status: Any, done_age: float | None) -> str:
    """A task seen waiting / held / running while the backend already has its outcome."""
    if status not in ("SUCCESS", "FAILURE"):
        return ""
    when = f" ({human_age(done_age)} ago)" if done_age is not None else ""
    return (f"; but the result backend already says {status}{when}: it will run again "
            f"(a redelivery or a duplicate message)")


def decide(ev: Evidence, cov: Coverage, now: float) -> Finding:
    """One state and one verdict line for `ev`; `locations` list every place it was seen."""
    locs: list[dict[str, Any]] = []
    for w in ev.workers:
        locs.append({"kind": "worker", **w})
    if ev.unacked is not None:
        locs.append({"kind": "unacked", **ev.unacked})
    if ev.queue is not None:
        locs.append({"kind": "queue", **ev.queue})
    for node in ev.revoked_by:
        locs.append({"kind": "revoked", "worker": node})
    if ev.backend is not None:
        locs.append({"kind": "result_backend", **backend_location(ev.id, ev.backend)})

    active = [w for w in ev.workers if w.get("state") == "active"]
    held = [w for w in ev.workers if w.get("state") in ("reserved", "scheduled")]
    revoked_note = (f"; revoked on {', '.join(ev.revoked_by)}" if ev.revoked_by else "")
    meta = ev.backend or {}
    status = meta.get("status")
    done_age = None
    if meta.get("date_done_epoch") is not None:
        done_age = max(0.0, now - meta["date_done_epoch"])
    finished = status in ("SUCCESS", "FAILURE")
    waiting = ev.queue is not None or bool(held) or ev.unacked is not None

    if active:
        w = active[0]
        rt = w.get("runtime_seconds")
        run = f"running {human_age(rt)}" if rt is not None else "running (for how long unknown)"
        text = f"{run} on {w.get('worker')} pid {w.get('pid') or '?'}, {_limit_text(w)}"
        if len(active) > 1:
            text += f" — and on {len(active) - 1} more worker(s): it runs twice"
        if ev.unacked and ev.unacked.get("delivered_seconds") is not None:
            text += f"; message {_unacked_text(ev.unacked, cov.visibility_timeout)}"
        if finished:
            text += (f"; the result backend already says {status}"
                     + (f" ({human_age(done_age)} ago)" if done_age is not None else "")
                     + ": this is another run")
        return Finding(ev.id, "active", text + revoked_note, locs)
    # revoked after it had started: it ran to the end all the same (a revoke without
    # terminate does not stop a running task), and the backend has its outcome
    late_revoke = bool(ev.revoked_by) and finished and not waiting
    if (ev.revoked_by or status == "REVOKED") and not late_revoke:
        by = ", ".join(ev.revoked_by) if ev.revoked_by else "the result backend"
        text = f"revoked (on {by})"
        if ev.queue is not None:
            text += (f"; its message is still {_where_queue(ev.queue)}: a worker discards it "
                     f"on receipt, unless it restarted since the revoke (revokes live in "
                     f"worker memory)")
        elif held:
            text += f"; still held by {held[0].get('worker')}, which will discard it"
        elif done_age is not None:
            text += f", recorded {human_age(done_age)} ago"
        return Finding(ev.id, "revoked", text, locs)
    if held:
        w = held[0]
        state = w["state"]
        if state == "scheduled":
            text = f"scheduled on {w.get('worker')}"
            text += _eta_text((ev.unacked or {}).get("eta") or w.get("eta"), now)
        else:
            text = f"reserved (prefetched) by {w.get('worker')}, waiting for a free pool process"
        if ev.unacked is not None:
            text += f"; message {_unacked_text(ev.unacked, cov.visibility_timeout)}"
        return Finding(ev.id, state, text + _finished_note(status, done_age), locs)
    if ev.unacked is not None:
        text = (f"in flight: {_unacked_text(ev.unacked, cov.visibility_timeout)}, from "
                f"`{ev.unacked.get('queue')}`")
        if cov.workers_gap or cov.silent_workers:
            text += "; which worker holds it is unknown (not every worker answered)"
        else:
            text += "; no worker that answered holds it (its worker may be gone: the " \
                    "message is restored when visibility_timeout passes)"
        return Finding(ev.id, "in_flight", text + _finished_note(status, done_age), locs)
    if ev.queue is not None:
        text = _where_queue(ev.queue)
        eta = ev.queue.get("eta")
        if eta:
            text += _eta_text(eta, now).replace(", ETA", "; ETA", 1)
        if status == "RETRY":
            n = ev.queue.get("retries")
            if n is None:
                n = meta.get("retries")
            text += f" (retry {n if n is not None else '?'})"
        return Finding(ev.id, "queued", text + _finished_note(status, done_age), locs)
    late = (f"; revoked on {', '.join(ev.revoked_by)} after it had started: the revoke came "
            f"too late" if late_revoke else "")
    if status == "SUCCESS":
        return Finding(ev.id, "succeeded", (f"succeeded {human_age(done_age)} ago"
                       if done_age is not None else "succeeded") + late, locs)
    if status == "FAILURE":
        when = f"failed {human_age(done_age)} ago" if done_age is not None else "failed"
        return Finding(ev.id, "failed", f"{when}: {_exc_text(meta)}" + late, locs)
    if status == "RETRY":
        when = f" {human_age(done_age)} ago" if done_age is not None else ""
        text = f"retrying: the last attempt failed{when}: {_exc_text(meta)}"
        if cov.gaps():
            text += "; its next attempt was not seen in " + "; ".join(cov.gaps())
        return Finding(ev.id, "retrying", text, locs)
    gaps = cov.gaps()
    if meta.get("undecoded"):
        text = ("the result backend has a record of it, not in JSON (not decoded): it was "
                "sent and has probably finished; no queue, in-flight message or worker that "
                "answered holds it")
        if gaps:
            text += "; not read: " + "; ".join(gaps)
        return Finding(ev.id, "unknown", text, locs)
    if status:
        text = (f"the result backend says {status}"
                + (f" ({human_age(done_age)} ago)" if done_age is not None else "")
                + ", but no queue, in-flight message or worker that answered holds it")
        if status == "STARTED":
            text += ": the worker running it may have died"
        if gaps:
            text += "; not read: " + "; ".join(gaps)
        return Finding(ev.id, "unknown", text, locs)
    if not gaps:
        text = "not found anywhere: never sent, already expired, or lost"
        if cov.backend_note:
            text += (f" (or finished: results are not seen — {cov.backend_note})")
        return Finding(ev.id, "unknown", text, locs)
    return Finding(ev.id, "unknown", "not found in what could be read; not read: "
                   + "; ".join(gaps), locs)


def exit_code(findings: list[Finding], cov: Coverage) -> int:
    """0 every task located; 1 some task not found anywhere, or found only as a record whose
    state is not known (every place was read); 3 some task not located and some place could
    not be read (so "not found" is not known)."""
    unknown = [f for f in findings if f.state == "unknown"]
    if not unknown:
        return 0
    return 3 if cov.gaps() else 1


def findings(lk: Any, now: float) -> tuple[list[Finding], Coverage]:
    """The collector's `Lookup` -> one Finding per id, and the Coverage they were decided on."""
    cov = Coverage(broker_kind="", queue_summary=lk.queue_summary, queue_gap=lk.queue_gap,
                   unacked_gap=lk.unacked_gap, workers_gap=lk.workers_gap,
                   silent_workers=tuple(lk.silent_workers), backend_gap=lk.backend_gap,
                   backend_note=lk.backend_note,
                   backend_kind=lk.backend_kind, visibility_timeout=lk.visibility_timeout)
    out = []
    for tid in lk.ids:
        ev = Evidence(id=tid, queue=lk.queue_hits.get(tid), unacked=lk.unacked_hits.get(tid),
                      workers=list(lk.worker_hits.get(tid, [])),
                      revoked_by=list(lk.revoked_by.get(tid, [])),
                      backend=lk.backend.get(tid) if isinstance(lk.backend, dict) else None)
        out.append(decide(ev, cov, now))
    return out, cov
