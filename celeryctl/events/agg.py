"""Aggregating Celery events as they arrive (pure: no I/O, no clock of its own).

    agg = Aggregator(window_start=time.time())
    agg.feed(event_dict, received_at=time.time())   # every event, in arrival order
    agg.summary(now=time.time())                   # the JSON shape of docs/json.md#events

Memory is bounded whatever the window's length or the event rate: per task name a few counters,
two quantile sketches and two bucket arrays (celeryctl/events/sketch.py); per worker a few
numbers; at most MAX_TASK_NAMES names and MAX_EXCEPTIONS exception types per name (beyond them,
counted in an overflow). The only per-task state is the set of tasks *in progress* (received or
started, not yet finished), needed to tell a task-succeeded (which carries only the id) to
which name it belongs and how long it waited: at most MAX_IN_PROGRESS entries, the oldest
dropped first and counted (`in_progress_dropped`), and the names of the last RECENT_FINISHED
finished ids (a late event of an earlier run still finds its name). No history is kept.

Event fields (celery/worker/strategy.py, request.py, events/dispatcher.py): every event has
`type`, `hostname` (the sender's node name), `timestamp` (the sender's time.time()),
`utcoffset` (hours), `pid` and `clock` (the sender's Lamport clock, forwarded once per event
sent). task-received and task-sent carry `name`, `args`, `kwargs` (reprs); the other task
events only `uuid`. task-succeeded carries `runtime`; task-failed and task-retried
`exception` (a repr: "RuntimeError('demo failure')"); worker-heartbeat `freq`.

Loss and order are read from each sender's logical clock: the next event should carry the next
value. A value lower than one already seen is out of order (a threads pool publishes from
several threads: the clock is forwarded before the publish lock); a jump forward is a gap —
events lost on the way (Redis pub/sub drops what a slow subscriber cannot take) *or* the
worker's clock pushed forward by a message carrying a later clock (a broadcast from a client
whose clock is ahead). So `clock_gaps` is an upper bound on loss, never a proof of it; a
repeated (sender, clock) is a duplicate and is not counted twice.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from celeryctl.events.sketch import RUNTIME_BOUNDS, WAIT_BOUNDS, Buckets, Sketch

SCHEMA = 1
MAX_TASK_NAMES = 500
MAX_EXCEPTIONS = 20
MAX_IN_PROGRESS = 20_000
MAX_WORKERS = 2_000
MAX_UNFINISHED_SHOWN = 10
RECENT_CLOCKS = 256
# ids of tasks finished lately -> name: a late event of an earlier run (a task-retried batched
# on one worker, arriving after the retried run finished on another) still finds its name
RECENT_FINISHED = 4096  # per sender: clocks remembered to tell a duplicate from out-of-order
EXAMPLE_CHARS = 300
UNKNOWN_NAME = "(received before the window)"
OTHER_NAMES = "(other task names)"

COUNTS = ("received", "started", "succeeded", "failed", "retried", "rejected", "revoked")
TASK_EVENTS = {"task-" + c: c for c in COUNTS}
TASK_EVENTS["task-sent"] = "sent"
FINAL = ("succeeded", "failed", "retried", "rejected", "revoked")
_EXC = re.compile(r"^([A-Za-z_][\w.]*)(?:\((.*)\))?$", re.S)


def exception_type(text: Any) -> tuple[str, str]:
    """("RuntimeError", "'demo failure'") from Celery's repr "RuntimeError('demo failure')"."""
    s = str(text or "").strip()
    m = _EXC.match(s)
    if not m:
        return "(unparsed)", s
    return m.group(1), (m.group(2) if m.group(2) is not None else "")


@dataclass
class _Task:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    runtime: Sketch = field(default_factory=Sketch)
    wait: Sketch = field(default_factory=Sketch)
    sent_wait: Sketch = field(default_factory=Sketch)
    runtime_buckets: Buckets = field(default_factory=lambda: Buckets(RUNTIME_BOUNDS))
    wait_buckets: Buckets = field(default_factory=lambda: Buckets(WAIT_BOUNDS))
    exceptions: dict[str, list[Any]] = field(default_factory=dict)  # type -> [n, example, args]
    exceptions_other: int = 0

    def add(self, other: _Task) -> None:  # for "overall": counters only (sketches merged)
        for k in COUNTS:
            self.counts[k] += other.counts[k]


@dataclass
class _InProgress:
    name: str
    worker: str | None
    received: float | None = None  # sender timestamps
    started: float | None = None
    started_local: float | None = None
    sent: float | None = None
    args: str | None = None


@dataclass
class _Worker:
    name: str
    first_seen: float
    events: int = 0
    task_events: int = 0
    finished: int = 0
    heartbeats: int = 0
    last_heartbeat: float | None = None   # local receive time
    freq: float | None = None
    utcoffset: float | None = None
    offline: bool = False
    min_delay: float | None = None  # local receive time - sender timestamp, smallest seen
    max_delay: float | None = None
    last_delay: float | None = None
    last_clock: int | None = None
    max_clock: int | None = None
    max_clock_at: float | None = None  # local receive time of the event with max_clock
    clock_gaps: int = 0
    jumps_absorbed: int = 0  # clock steps explained by celeryctl's own control messages
    out_of_order: int = 0
    duplicates: int = 0
    recent: OrderedDict = field(default_factory=OrderedDict)


class Aggregator:
    def __init__(self, *, window_start: float, task_patterns: tuple[str, ...] = (),
                 workers: tuple[str, ...] = (), include_args: bool = False) -> None:
        self.window_start = window_start
        self.task_patterns = tuple(task_patterns)
        self.worker_names = tuple(workers)
        self.include_args = include_args
        self.tasks: dict[str, _Task] = {}
        self.workers: dict[str, _Worker] = {}
        self.in_progress: OrderedDict[str, _InProgress] = OrderedDict()
        self.in_progress_dropped = 0
        self.recent_finished: OrderedDict[str, str] = OrderedDict()
        self.events = 0
        self.ignored = 0          # filtered out by --task/--worker
        self.undecodable = 0      # counted by the collector (note_undecodable)
        self.duplicates = 0
        self.sent_seen = 0
        self.unattributed = 0     # task events for an id received before the window
        self.workers_dropped = 0
        self.last_event_at: float | None = None
        # celeryctl's own remote-control broadcasts sent while listening (enable_events):
        # each one forwards every worker's logical clock by one without an event
        self.control_jumps = 0
        self.control_until: float | None = None
        # silence: workers heartbeat every `freq` s (2 by default) even with task events
        # off, so a stretch with no event at all is a dead event connection, not a quiet
        # cluster (set by the caller when workers answered ping)
        self.expect_heartbeats = False
        self.silences: list[tuple[float, float]] = []  # (local start, seconds), in order

    # --- input ---------------------------------------------------------------------------

    def note_undecodable(self, n: int = 1) -> None:
        self.undecodable += n

    def note_control_sent(self, until: float, n: int = 1) -> None:
        """celeryctl broadcast `n` remote-control message(s) (enable_events) while listening,
        done by local time `until`. A worker's pidbox forwards its Lamport clock on every
        control message it receives, whatever its destination (celery/worker/pidbox.py
        on_message): a step of up to `n` in a worker's clock after an event heard by `until`
        (plus a second for the listener thread to catch up) is that, not a lost event."""
        self.control_jumps += n
        self.control_until = until + 1.0

    def feed(self, event: dict[str, Any], received_at: float) -> None:
        """One decoded event (a dict as Celery sends it) and the local time it arrived."""
        if not isinstance(event, dict):
            self.undecodable += 1
            return
        etype = str(event.get("type") or "")
        host = str(event.get("hostname") or "?")
        if etype == "task-sent":  # from a producer: not a worker, not filtered by --worker
            self._task_event(etype, event, None, received_at)
            return
        if self.worker_names and host not in self.worker_names:
            self.ignored += 1
            return
        w = self._worker(host, received_at)
        if w is None:
            return
        if self._clock(w, event, received_at):
            self.duplicates += 1
            return
        self.events += 1
        self._silence(received_at)
        self.last_event_at = received_at
        w.events += 1
        ts = _num(event.get("timestamp"))
        if ts is not None:
            delay = received_at - ts
            w.last_delay = delay
            w.min_delay = delay if w.min_delay is None else min(w.min_delay, delay)
            w.max_delay = delay if w.max_delay is None else max(w.max_delay, delay)
        off = _num(event.get("utcoffset"))
        if off is not None:
            w.utcoffset = off
        if etype in ("worker-heartbeat", "worker-online"):
            w.heartbeats += 1
            w.last_heartbeat = received_at
            w.freq = _num(event.get("freq")) or w.freq
            w.offline = False
        elif etype == "worker-offline":
            w.offline = True
        elif etype in TASK_EVENTS:
            w.task_events += 1
            self._task_event(etype, event, w, received_at)

    def silence_limit(self) -> float:
        """Seconds without any event that a heartbeat should have broken: twice the slowest
        worker's heartbeat period plus a second (Celery's default period: 2 s)."""
        freqs = [w.freq for w in self.workers.values() if w.freq]
        return 2 * max(freqs or [2.0]) + 1.0

    def _silence(self, at: float) -> None:
        since = max(self.last_event_at or self.window_start, self.window_start)
        if at - since > self.silence_limit():
            self.silences.append((since, at - since))

    def silent_seconds(self, now: float) -> float:
        """Seconds of the window with no event where heartbeats were due (the stretch still
        going at `now` included)."""
        if not self.expect_heartbeats and not self.workers:
            return 0.0
        total = sum(d for start, d in self.silences if start >= self.window_start)
        since = max(self.last_event_at or self.window_start, self.window_start)
        if now - since > self.silence_limit():
            total += now - since
        return total

    def _worker(self, host: str, now: float) -> _Worker | None:
        w = self.workers.get(host)
        if w is None:
            if len(self.workers) >= MAX_WORKERS:
                self.workers_dropped += 1
                return None
            w = self.workers[host] = _Worker(host, now)
        return w

    def _clock(self, w: _Worker, event: dict[str, Any], received_at: float = 0.0) -> bool:
        """Track the sender's logical clock; True when the event is a duplicate."""
        c = event.get("clock")
        if not isinstance(c, int) or isinstance(c, bool):
            return False
        if c in w.recent:
            w.duplicates += 1
            return True
        w.recent[c] = None
        if len(w.recent) > RECENT_CLOCKS:
            w.recent.popitem(last=False)
        if w.max_clock is None:
            w.max_clock, w.max_clock_at = c, received_at
        elif c > w.max_clock:
            if c > w.max_clock + 1:
                gap = c - w.max_clock - 1
                if (self.control_until is not None and w.max_clock_at is not None
                        and w.max_clock_at <= self.control_until):
                    absorbed = min(gap, self.control_jumps - w.jumps_absorbed)
                    w.jumps_absorbed += absorbed
                    gap -= absorbed
                w.clock_gaps += gap
            w.max_clock, w.max_clock_at = c, received_at
        else:
            w.out_of_order += 1
            if w.clock_gaps > 0:  # it filled a gap counted earlier
                w.clock_gaps -= 1
        w.last_clock = c
        return False

    def _wanted(self, name: str) -> bool:
        return not self.task_patterns or any(fnmatch.fnmatchcase(name, p)
                                             for p in self.task_patterns)

    def _stats(self, name: str) -> _Task:
        t = self.tasks.get(name)
        if t is None:
            if len(self.tasks) >= MAX_TASK_NAMES:
                name = OTHER_NAMES
                t = self.tasks.get(name)
            if t is None:
                t = self.tasks[name] = _Task()
        return t

    def _track(self, uuid: str, info: _InProgress) -> None:
        self.in_progress[uuid] = info
        self.in_progress.move_to_end(uuid)
        while len(self.in_progress) > MAX_IN_PROGRESS:
            self.in_progress.popitem(last=False)
            self.in_progress_dropped += 1

    def _task_event(self, etype: str, ev: dict[str, Any], w: _Worker | None,
                    now: float) -> None:
        kind = TASK_EVENTS[etype]
        uuid = str(ev.get("uuid") or "")
        ts = _num(ev.get("timestamp"))
        info = self.in_progress.get(uuid) if uuid else None
        name = ev.get("name") if kind in ("sent", "received") else None
        if name is None and info is not None:
            name = info.name
        if name is None and uuid:
            name = self.recent_finished.get(uuid)
        if name is None:
            name = UNKNOWN_NAME
            if kind != "sent":
                self.unattributed += 1
        name = str(name)
        if not self._wanted(name):
            if info is None and uuid and kind in ("sent", "received") and self.task_patterns:
                pass  # not tracked: its later events are unattributed, then filtered
            self.ignored += 1
            return
        if kind == "sent":
            self.sent_seen += 1
            if uuid:
                if info is None:
                    info = _InProgress(name, None)
                    self._track(uuid, info)
                info.sent = ts
            return
        t = self._stats(name)
        t.counts[kind] += 1
        if kind == "received":
            if info is None:
                info = _InProgress(name, w.name if w else None)
            info.received, info.worker = ts, (w.name if w else info.worker)
            if info.sent is not None and ts is not None:
                t.sent_wait.add(ts - info.sent)
            if self.include_args:
                info.args = _clip(redact_text(f"args={ev.get('args')} "
                                              f"kwargs={ev.get('kwargs')}"))
            if uuid:
                self._track(uuid, info)
        elif kind == "started":
            if info is None:
                info = _InProgress(name, w.name if w else None)
            info.started, info.started_local = ts, now
            if info.received is not None and ts is not None:
                wait = max(0.0, ts - info.received)
                t.wait.add(wait)
                t.wait_buckets.add(wait)
            if uuid and name != UNKNOWN_NAME:
                self._track(uuid, info)
        elif kind in FINAL:
            if w is not None:
                w.finished += 1
            if kind == "succeeded":
                rt = _num(ev.get("runtime"))
                if rt is not None:
                    t.runtime.add(rt)
                    t.runtime_buckets.add(rt)
            if kind in ("failed", "retried"):
                etype_, msg = exception_type(ev.get("exception"))
                if kind == "failed":
                    e = t.exceptions.get(etype_)
                    if e is None and len(t.exceptions) >= MAX_EXCEPTIONS:
                        t.exceptions_other += 1
                    elif e is None:
                        t.exceptions[etype_] = [1, _example(etype_, msg),
                                                info.args if info is not None else None]
                    else:
                        e[0] += 1
            if uuid and info is not None and info.worker in (None, w.name if w else None):
                if kind == "retried":
                    # the same id comes back (task-received again, maybe on another worker,
                    # maybe before this event: batches of different workers interleave):
                    # keep its name, it is just not running any more
                    info.started = info.started_local = None
                else:
                    self.in_progress.pop(uuid, None)
                    self.recent_finished[uuid] = name
                    if len(self.recent_finished) > RECENT_FINISHED:
                        self.recent_finished.popitem(last=False)

    # --- output --------------------------------------------------------------------------

    def summary(self, now: float, *, histograms: bool = False) -> dict[str, Any]:
        """The aggregate so far (strict JSON: no NaN/Infinity; null where not known)."""
        window = max(0.0, now - self.window_start)
        overall = _Task()
        unfinished: dict[str, list[dict[str, Any]]] = {}
        unfinished_n: dict[str, int] = {}
        for uuid, info in self.in_progress.items():
            if info.started is None:
                continue
            unfinished_n[info.name] = unfinished_n.get(info.name, 0) + 1
            age = now - info.started_local if info.started_local is not None else None
            unfinished.setdefault(info.name, []).append(
                {"id": uuid, "worker": info.worker, "age_seconds": _r(age)})
        tasks = []
        for name in sorted(self.tasks):
            t = self.tasks[name]
            overall.add(t)
            rows = sorted(unfinished.get(name, []), key=lambda r: -(r["age_seconds"] or 0))
            tasks.append(self._task_row(name, t, window, rows[:MAX_UNFINISHED_SHOWN],
                                        unfinished_n.get(name, 0), histograms))
        for name in unfinished:  # started in the window, name known, no other event counted
            if name not in self.tasks:
                rows = sorted(unfinished[name], key=lambda r: -(r["age_seconds"] or 0))
                tasks.append(self._task_row(name, _Task(), window,
                                            rows[:MAX_UNFINISHED_SHOWN], unfinished_n[name],
                                            histograms))
        total = self._task_row("(all)", overall, window, [], sum(unfinished_n.values()), False)
        for k in ("runtime", "wait", "sent_to_received", "exceptions", "unfinished"):
            total.pop(k, None)
        workers = [self._worker_row(w, now, window) for w in
                   sorted(self.workers.values(), key=lambda w: w.name)]
        gaps = sum(w.clock_gaps for w in self.workers.values())
        ooo = sum(w.out_of_order for w in self.workers.values())
        return {
            "schema": SCHEMA,
            "window_seconds": _r(window),
            "tasks": tasks,
            "overall": total,
            "workers": workers,
            "events": {
                "counted": self.events, "ignored_by_filter": self.ignored,
                "undecodable": self.undecodable, "duplicates": self.duplicates,
                "task_sent_seen": self.sent_seen,
                "unattributed": self.unattributed,
                "clock_gaps": gaps, "out_of_order": ooo,
                "in_progress_tracked": len(self.in_progress),
                "in_progress_dropped": self.in_progress_dropped,
                "workers_dropped": self.workers_dropped,
                "last_event_age_seconds": _r(now - self.last_event_at)
                if self.last_event_at is not None else None,
                "silent_seconds": _r(self.silent_seconds(now), 1),
            },
            "notes": self.notes(gaps, ooo, self.silent_seconds(now)),
        }

    def notes(self, gaps: int, ooo: int, silent: float = 0.0) -> list[str]:
        out = []
        if silent:
            out.append(f"no events for {silent:.1f} s (heartbeats missing from every "
                       "worker): the event connection was dead or stalled, counts are "
                       "incomplete")
        if not self.sent_seen:
            out.append("no task-sent events: the producers do not send them "
                       "(task_send_sent_event), so the wait from sent to received is unknown")
        if gaps:
            out.append(f"{gaps} event(s) possibly lost: gaps in the workers' logical clocks "
                       "(a gap is also what a worker's clock jumping forward looks like)")
        elif not silent:
            out.append("no event lost: every worker's logical clock advanced one by one")
        if ooo:
            out.append(f"{ooo} event(s) arrived out of order (a lower clock after a higher "
                       "one: normal with a threads or gevent pool)")
        if self.unattributed:
            out.append(f"{self.unattributed} task event(s) for tasks received before the "
                       f"window: counted under {UNKNOWN_NAME!r}")
        if self.in_progress_dropped:
            out.append(f"{self.in_progress_dropped} in-progress task(s) forgotten (more than "
                       f"{MAX_IN_PROGRESS} at once): their later events are unattributed")
        if self.undecodable:
            out.append(f"{self.undecodable} message(s) on the event channel could not be "
                       "decoded (not JSON)")
        return out

    def _task_row(self, name: str, t: _Task, window: float,
                  unfinished: list[dict[str, Any]], n_unfinished: int,
                  histograms: bool) -> dict[str, Any]:
        c = t.counts
        done = c["succeeded"] + c["failed"]
        runs = done + c["retried"]
        row: dict[str, Any] = {"name": name, **c}
        row.update(
            received_per_second=_rate(c["received"], window),
            finished_per_second=_rate(done, window),
            failure_ratio=_r(c["failed"] / done, 4) if done else None,
            retry_ratio=_r(c["retried"] / runs, 4) if runs else None,
            runtime=_quantiles(t.runtime),
            wait=_quantiles(t.wait),
            sent_to_received=_quantiles(t.sent_wait) if t.sent_wait.count else None,
            exceptions=[{"type": k, "count": v[0], "example": v[1],
                         **({"example_args": v[2]} if self.include_args else {})}
                        for k, v in sorted(t.exceptions.items(), key=lambda kv: -kv[1][0])],
            exceptions_other=t.exceptions_other,
            unfinished_count=n_unfinished,
            unfinished=unfinished,
        )
        if histograms:
            row["histograms"] = {"runtime": t.runtime_buckets, "wait": t.wait_buckets}
        return row

    def _worker_row(self, w: _Worker, now: float, window: float) -> dict[str, Any]:
        hb_age = now - w.last_heartbeat if w.last_heartbeat is not None else None
        late = None
        if hb_age is not None and w.freq:
            late = hb_age > 2 * w.freq + 1
        return {
            "name": w.name,
            "events": w.events,
            "task_events": w.task_events,
            "tasks_per_second": _rate(w.finished, window),
            "heartbeats": w.heartbeats,
            "heartbeat_freq_seconds": w.freq,
            "heartbeat_age_seconds": _r(hb_age),
            "heartbeat_late": late,
            "offline": w.offline,
            # receive time minus the sender's timestamp: transit plus clock difference. The
            # smallest is the best estimate of the clock drift (transit is then nearly 0)
            "clock_drift_seconds": _r(w.min_delay),
            "event_delay_max_seconds": _r(w.max_delay),
            "utcoffset_hours": w.utcoffset,
            "clock_gaps": w.clock_gaps,
            "out_of_order": w.out_of_order,
            "duplicates": w.duplicates,
        }


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _r(v: float | None, nd: int = 3) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return round(v, nd)


def _rate(n: int, window: float) -> float | None:
    return _r(n / window, 2) if window > 0 else None


def _quantiles(s: Sketch) -> dict[str, Any]:
    return {"count": s.count, "p50": _r(s.quantile(0.5), 4), "p95": _r(s.quantile(0.95), 4),
            "p99": _r(s.quantile(0.99), 4), "max": _r(s.max, 4)}


def _clip(s: str) -> str:
    s = s.replace("\x00", "")
    return s if len(s) <= EXAMPLE_CHARS else s[:EXAMPLE_CHARS - 1] + "…"


# a secret-looking `key=value` or `'key': 'value'` in free text (an exception message, a repr of
# arguments): the value is masked. The key (maybe quoted, maybe `db_password`, `X-Api-Key`)
# names a password, token, secret, credential or key; `Authorization: Bearer X` masks X too.
_SECRET_KEY = (r"pass(?:word|wd|phrase)?|pwd|token|secret|credentials?|auth(?:orization)?"
               r"|api[_-]?key|private[_-]?key|access[_-]?key|secret[_-]?key|key")
_SECRET_PAIR = re.compile(
    r"(?P<key>(?<![\w.-])(?:\\?[\"'])?(?:[\w.-]*[_.-])?(?:" + _SECRET_KEY + r")"
    r"(?:[_.-][\w.-]*)?(?:\\?[\"'])?)(?P<sep>\s*[=:]\s*)"
    r"(?:(?P<open>\\?[\"'])(?P<qval>.*?)(?P<close>(?P=open))"
    r"|(?P<val>(?:(?:bearer|basic|token|digest)\s+)?[^\s\"',;&)}\]\\]+))",
    re.IGNORECASE)


def redact_text(text: str) -> str:
    """Free text from a worker (an exception's repr, arguments) with its secrets masked: the
    credentials of every URL in it (celeryctl.snapfile.redact_text: also every password
    celeryctl was given, celeryctl.urls.SECRETS) and secret-looking `key=value` pairs."""
    from celeryctl.snapfile import MASK
    from celeryctl.snapfile import redact_text as redact_urls

    def pair(m: re.Match) -> str:
        val = m.group("qval") if m.group("open") else m.group("val")
        if val in ("", MASK):
            return m.group(0)
        q = m.group("open") or ""
        return f"{m.group('key')}{m.group('sep')}{q}{MASK}{q}"

    return _SECRET_PAIR.sub(pair, redact_urls(text))


def _example(etype: str, msg: str) -> str:
    return _clip(redact_text(f"{etype}({msg})" if msg else etype))
