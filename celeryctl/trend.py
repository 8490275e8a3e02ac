"""Pure: successive watch samples -> rows (rates, trend, time to drain) and the staleness of
what is shown. No I/O; `queues watch` feeds it and renders what it returns.

Rates. `net_rate` (messages/s, positive while growing) comes from the ready counts of the
samples in a short window (the oldest kept sample within `window` refreshes and now), so one
noisy refresh does not swing it.

On RabbitMQ `rate_in`/`rate_out` come from the management API's counters (publish; ack, else
deliver/get). The API refreshes them only every statistics interval (5 s by default), so a
rate is the change between the first and last *changes* of a counter seen in the history
(each seen within one refresh of when it happened) over the time between them — not over our
refresh interval, which would read 0 then a spike. Until two changes were seen, the API's own
`rate` is shown. The net rate is then `rate_in - rate_out`.

Redis keeps no per-list counters: there `rate_in` is the net rate of a queue no worker
consumes (everything arriving stays), `rate_out` 0 for it, and both are unknown (null) for a
consumed queue — never guessed.

Time to drain: `ready / -net_rate` while shrinking; 0 when empty; None ("never") while
growing or flat with messages waiting.

Stalls (`stalled_seconds`): how long a queue with messages waiting and consumers has
delivered nothing, as seen across refreshes (a lower bound: it started at or before the first
refresh that saw it). Redis: no message left the consuming end of any of its priority
sub-lists (the digest of each one's last element is unchanged; a message arriving in an
empty sub-list is an arrival, not progress). RabbitMQ: the management API's consumer capacity
is below full (`FULL_CAPACITY`: the queue could not always hand messages to its consumers,
their prefetch being full) and the ack/deliver counter did not move. Not "below some low
value": the server recomputes capacity only on queue events, so a queue whose consumer holds
its prefetch and acks nothing keeps the last value, e.g. 0.61 on 3.10.8 (a worker with
prefetch 1 on a long task), not 0; the counter that does not move is what tells. 0 when the queue moves, is empty or has
no consumer (that is QUE002's case, not a stall); None when it cannot be told: consumers
unknown, the head not readable, or a RabbitMQ server that reports no capacity. A row is
marked stalled from `stalled_after` seconds on.
"""

from __future__ import annotations

import fnmatch
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

SPARK = "▁▂▃▄▅▆▇█"
FULL_CAPACITY = 0.99  # RabbitMQ consumer capacity at or above: the consumers can take more


@dataclass
class WatchState:
    queue_warn: int = 100
    queue_crit: int = 1000
    window: int = 5
    history: int = 30
    series: dict[str, deque] = field(default_factory=dict)  # name -> deque[(t, ready)]
    counters: dict[str, deque] = field(default_factory=dict)  # name -> deque[(t, in, out)]
    last: dict[str, Any] = field(default_factory=dict)  # name -> QueueReading
    last_good: float | None = None
    error: str | None = None
    error_since: float | None = None
    refreshes: int = 0
    stalled_after: float = 60.0
    stalls: dict[str, tuple[Any, float, float]] = field(default_factory=dict)
    # name -> (what must not change, since when, last seen); absent: not stalled or unknown
    stall_known: dict[str, bool] = field(default_factory=dict)  # name -> could it be told

    def update(self, sample, error: str | None = None) -> None:
        """Feed one refresh: a Sample, or None with the error that prevented it."""
        self.refreshes += 1
        if sample is None:
            self.error = error or "no sample"
            if self.error_since is None:
                self.error_since = time.time()
            return
        self.error, self.error_since = None, None
        self.last_good = sample.time
        seen = set()
        for q in sample.queues:
            seen.add(q.name)
            self.last[q.name] = q
            s = self.series.setdefault(q.name, deque(maxlen=self.history))
            if q.ready is not None:
                s.append((sample.time, q.ready))
            if q.published_total is not None or q.out_total is not None:
                self.counters.setdefault(q.name, deque(maxlen=self.history)).append(
                    (sample.time, q.published_total, q.out_total))
            self._stall(q, sample.time)
        for gone in set(self.last) - seen:  # deleted queues leave the screen
            self.last.pop(gone, None)
            self.series.pop(gone, None)
            self.counters.pop(gone, None)
            self.stalls.pop(gone, None)
            self.stall_known.pop(gone, None)

    def _stall(self, q, t: float) -> None:
        """Follow one queue's stall across samples (see the module's docstring)."""
        prev = self.stalls.get(q.name)
        if q.consumers == 0 or q.ready == 0 or q.internal:
            self.stalls.pop(q.name, None)
            self.stall_known[q.name] = True
            return
        if q.consumers is None or q.ready is None:
            self.stalls.pop(q.name, None)
            self.stall_known[q.name] = False
            return
        if q.head is not None:  # Redis
            # moved: a sub-list that had a head (a digest) has another one, or none any more;
            # None -> digest is an arrival; UNREAD (b"": empty last time) tells nothing
            moved = prev is None or not isinstance(prev[0], tuple) \
                or len(prev[0]) != len(q.head) \
                or any(p and h != b"" and p != h for p, h in zip(prev[0], q.head, strict=True))
            self.stalls[q.name] = (q.head, t if moved else prev[1], t)
            self.stall_known[q.name] = True
            return
        if q.capacity is not None:  # RabbitMQ
            self.stall_known[q.name] = True
            if q.capacity >= FULL_CAPACITY:
                self.stalls.pop(q.name, None)
                return
            key = ("out", q.out_total)
            moved = prev is None or prev[0] != key
            self.stalls[q.name] = (key, t if moved else prev[1], t)
            return
        self.stalls.pop(q.name, None)
        self.stall_known[q.name] = False

    def stalled_seconds(self, name: str) -> float | None:
        """How long the queue has been seen stalled (0: it moves); None: cannot be told."""
        if not self.stall_known.get(name):
            return None
        s = self.stalls.get(name)
        return 0.0 if s is None else max(0.0, s[2] - s[1])

    @property
    def stale(self) -> bool:
        return self.error is not None

    def age_seconds(self, now: float | None = None) -> float | None:
        if self.last_good is None:
            return None
        return max(0.0, (now or time.time()) - self.last_good)

    def net_rate(self, name: str) -> float | None:
        s = self.series.get(name)
        if not s or len(s) < 2:
            return None
        t1, r1 = s[-1]
        t0, r0 = s[max(0, len(s) - 1 - self.window)]
        return (r1 - r0) / (t1 - t0) if t1 > t0 else None

    def counter_rates(self, name: str) -> tuple[float | None, float | None]:
        c = self.counters.get(name)
        if not c:
            return None, None
        return (counter_rate([(t, v) for t, v, _ in c]),
                counter_rate([(t, v) for t, _, v in c]))

    def row(self, name: str) -> dict[str, Any]:
        q = self.last[name]
        net = self.net_rate(name)
        rate_in, rate_out = q.rate_in, q.rate_out
        c_in, c_out = self.counter_rates(name)
        if c_in is not None:
            rate_in = c_in
        if c_out is not None:
            rate_out = c_out
        if c_in is not None and c_out is not None:
            net = c_in - c_out
        if rate_in is None and rate_out is None and q.consumers == 0 and net is not None \
                and net >= 0:
            rate_in, rate_out = net, 0.0
        if net is None and rate_in is not None and rate_out is not None:
            net = rate_in - rate_out
        stalled = self.stalled_seconds(name)
        return {"name": name, "ready": q.ready, "unacked": q.unacked,
                "consumers": q.consumers, "rate_in": _r(rate_in), "rate_out": _r(rate_out),
                "net_rate": _r(net), "drain_seconds": _r(drain_seconds(q.ready, net)),
                "stalled_seconds": _r(stalled),
                "stalled": None if stalled is None else stalled >= self.stalled_after,
                "internal": q.internal, "level": self.level(q, stalled),
                "trend": sparkline([r for _, r in self.series.get(name, ())])}

    def level(self, q, stalled: float | None = None) -> str:
        """The colour of a row: doctor's queue thresholds (QUE001/QUE002); a stalled queue is
        at least a warning."""
        if q.ready is None:
            return "unknown"
        if q.ready and q.consumers == 0 and not q.internal:
            return "critical"
        if q.ready >= self.queue_crit:
            return "critical"
        if q.ready >= self.queue_warn:
            return "warning"
        if stalled is not None and stalled >= self.stalled_after:
            return "warning"
        return "ok"

    def rows(self, *, sort: str = "depth", patterns: tuple[str, ...] = (),
             include_internal: bool = False) -> list[dict[str, Any]]:
        rows = [self.row(n) for n in self.last
                if (include_internal or not self.last[n].internal)
                and (not patterns or any(fnmatch.fnmatchcase(n, p) for p in patterns))]
        if sort == "name":
            rows.sort(key=lambda r: r["name"])
        elif sort == "rate":
            rows.sort(key=lambda r: (-(r["net_rate"] or 0.0), -(r["ready"] or 0), r["name"]))
        else:
            rows.sort(key=lambda r: (-(r["ready"] or 0), r["name"]))
        return rows


def counter_rate(points: list[tuple[float, int | None]]) -> float | None:
    """Messages/s of a counter the server refreshes in steps: from the first to the last
    change seen after the first sample (a counter that went down — queue re-created, node
    restarted — starts over).
    A counter unchanged for more than twice its usual step has stopped: 0."""
    changes: list[tuple[float, int]] = []
    for t, v in points:
        if v is None:
            continue
        if changes and v < changes[-1][1]:
            changes = []
        if not changes or v != changes[-1][1]:
            changes.append((t, v))
    changes = changes[1:]  # the first value seen is a baseline: when it changed is unknown
    if len(changes) < 2:
        return None
    (t0, v0), (t1, v1) = changes[0], changes[-1]
    if t1 <= t0:
        return None
    step = (t1 - t0) / (len(changes) - 1)
    if points[-1][0] - t1 > 2 * step + 1.0:
        return 0.0
    return (v1 - v0) / (t1 - t0)


def drain_seconds(ready: int | None, net: float | None) -> float | None:
    if ready is None:
        return None
    if ready == 0:
        return 0.0
    if net is None or net >= 0:
        return None
    return ready / -net


def sparkline(values: list[int], width: int = 12) -> str:
    values = values[-width:]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if hi == lo:
        return SPARK[0] * len(values) if hi == 0 else SPARK[3] * len(values)
    return "".join(SPARK[round((v - lo) / (hi - lo) * (len(SPARK) - 1))] for v in values)


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)
