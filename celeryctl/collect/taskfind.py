"""`celeryctl task ID...`: look for task ids everywhere they can be, under ONE deadline
(`--timeout`, from the start).

In parallel:
- Redis: a bounded scan of the task queues' lists in consumption order (priority step 0
  first, then 3, 6, 9; within a list from the right, the end BRPOP pops), `LRANGE` in chunks;
  only the envelope's `headers.id` is read (a byte search first, then JSON of the candidates;
  the body is never decoded); it stops at the first match of each id, or at the deadline, and
  says how far it looked. Then `HSCAN unacked` (bounded) for in-flight messages, with their
  `unacked_index` receive time. RabbitMQ: queued messages are not visible without `--peek`
  (the management API's get, as `doctor --peek`: they are requeued, marked redelivered).
- workers: one remote-control round trip — `query_task(ids)`, `revoked`, `active_queues`,
  `registered(time_limit)`, `conf` (non-defaults: `task_time_limit`).
- result backend: Redis `GET celery-task-meta-<id>` (collect/backend.read_task_results);
  rpc:// is not readable by a third party.

Read-only: LLEN, LRANGE, HLEN, HSCAN, ZMSCORE/ZSCORE, GET, SCAN (discovery).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from celeryctl.snapshot import Observed, SourceStatus
from celeryctl.targets import Target

CHUNK = 2000  # LRANGE items per round trip
HSCAN_COUNT = 1000
RESERVE = 0.15  # kept back from the deadline so the scan can say how far it got
WORKER_METHODS = ("query_task", "revoked", "active_queues", "registered", "conf")
PEEK_MAX_QUEUES = 200  # --peek on RabbitMQ: queues read at most (those with messages first)
# every `"id": "..."` string of an envelope: candidates for a set lookup, confirmed on the
# parsed headers (one pass per message, whatever the number of ids asked)
_ID_RE = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.)*)"')


@dataclass
class ScanProgress:
    """Shared with the scanning thread: readable even if that thread is abandoned."""

    total: int = 0
    queues: int = 0
    searched: int = 0
    done: bool = False
    stopped: str | None = None
    errors: list[str] = field(default_factory=list)
    hits: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.monotonic)
    seconds: float | None = None  # how long the scan ran (set when it ends)
    sized: bool = False  # the queue lengths were read (`total` is known)
    in_call: bool = False  # waiting for the broker's answer (not matching what it sent)
    named: int = 0  # queues to search (known before their lengths are)

    def summary(self) -> str:
        took = self.seconds if self.seconds is not None else time.monotonic() - self.started
        if not self.done and not self.sized:
            n = max(self.named, self.queues)
            return (f"no message searched: stopped after {took:.1f} s before the lengths of "
                    f"the {n} queue{'' if n == 1 else 's'} to search were read: "
                    f"{self.stopped or 'no answer in time'}")
        q = f"{self.queues} queue{'' if self.queues == 1 else 's'} in {took:.1f} s"
        if self.done and not self.stopped:
            found = " (stopped at the last match)" if self.searched < self.total else ""
            return f"searched {self.searched:,} of {self.total:,} messages in {q}{found}"
        return (f"stopped after {self.searched:,} of {self.total:,} messages in {q}: "
                f"{self.stopped or 'no answer in time'}")


@dataclass
class Lookup:
    """What the collector found: per-id evidence pieces, how far each place was read."""

    ids: list[str]
    queue_hits: dict[str, dict[str, Any]] = field(default_factory=dict)
    unacked_hits: dict[str, dict[str, Any]] = field(default_factory=dict)
    worker_hits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    revoked_by: dict[str, list[str]] = field(default_factory=dict)
    backend: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    sources: list[SourceStatus] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    queue_summary: str = ""
    queue_gap: str | None = None
    unacked_gap: str | None = None
    workers_gap: str | None = None
    silent_workers: tuple[str, ...] = ()
    backend_gap: str | None = None
    backend_note: str | None = None
    backend_kind: str = "none"
    visibility_timeout: float = 3600.0
    elapsed_seconds: float = 0.0


# --- Redis queue scan ----------------------------------------------------------------------

def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _headers(env: Any) -> dict[str, Any]:
    h = env.get("headers") if isinstance(env, dict) else None
    return h if isinstance(h, dict) else {}


def envelope_id(raw: bytes) -> str | None:
    """`headers.id` of a kombu Redis envelope (JSON whatever the serializer), or None."""
    tid = _headers(_loads(raw)).get("id")
    return tid if isinstance(tid, str) else None


def candidate_ids(raw: bytes) -> set[str]:
    """The values of every `"id": "..."` in a raw envelope (JSON string escapes undone)."""
    out: set[str] = set()
    for m in _ID_RE.finditer(raw):
        v = m.group(1)
        if b"\\" in v:
            try:
                out.add(json.loads(b'"' + v + b'"'))
            except (ValueError, UnicodeDecodeError, RecursionError):
                continue
        else:
            out.add(v.decode("utf-8", "surrogateescape"))
    return out


def envelope_fields(env: Any) -> dict[str, Any]:
    """What an operator needs from an envelope's headers (never the body)."""
    h = _headers(env)
    props = env.get("properties") if isinstance(env, dict) and \
        isinstance(env.get("properties"), dict) else {}
    info = props.get("delivery_info") if isinstance(props.get("delivery_info"), dict) else {}
    retries = h.get("retries")
    return {"task": h.get("task") if isinstance(h.get("task"), str) else None,
            "eta": h.get("eta") if isinstance(h.get("eta"), str) else None,
            "retries": retries if isinstance(retries, int) and not isinstance(retries, bool)
            else None,
            "redelivered": bool(h.get("redelivered") or info.get("redelivered"))}


def scan_queues(client, layout, queues: list[str], ids: list[str], deadline: float,
                progress: ScanProgress, chunk: int = CHUNK) -> None:
    """Bounded scan (see the module docstring). Positions are 1-based in consumption order
    across the queue's priority sub-lists, `of` the queue's length when the scan began."""
    from celeryctl.collect.redis import is_wrongtype, literal_text, pipelined

    steps = list(layout.priority_steps)
    keys = [(q, s) for q in queues for s in steps]
    with progress.lock:
        progress.named = len(queues)
    progress.in_call = True
    lengths = pipelined(client, [("llen", (layout.key(q, s),)) for q, s in keys],
                        raise_on_error=False)
    progress.in_call = False
    sizes: dict[tuple[str, int], int] = {}
    bad: set[str] = set()
    for (q, s), n in zip(keys, lengths, strict=True):
        if isinstance(n, Exception):
            if q not in bad:
                why = "not a list (WRONGTYPE)" if is_wrongtype(n) else \
                    " ".join(str(n).split())[:120]
                progress.errors.append(f"{literal_text(q)}: {why}")
            bad.add(q)
            continue
        sizes[(q, s)] = int(n or 0)
    readable = [q for q in queues if q not in bad]
    with progress.lock:
        progress.queues = len(readable)
        progress.total = sum(sizes.get((q, s), 0) for q in readable for s in steps)
        progress.sized = True
    wanted = set(ids)
    for q in readable:
        qtotal = sum(sizes.get((q, s), 0) for s in steps)
        before = 0
        for s in steps:
            n = sizes.get((q, s), 0)
            i = 0
            while i < n and wanted:
                if time.monotonic() >= deadline:
                    progress.stopped = "--timeout"
                    progress.seconds = time.monotonic() - progress.started
                    return
                end = min(n, i + chunk)
                progress.in_call = True
                items = client.lrange(layout.key(q, s), -end, -(i + 1)) or []
                progress.in_call = False
                # items are left to right; the consumption order is right to left
                for j, raw in enumerate(reversed(items)):
                    for tid in candidate_ids(raw) & wanted:
                        env = _loads(raw)
                        if _headers(env).get("id") == tid:
                            hit = {"queue": q, "priority_step": s,
                                   "position": before + i + j + 1, "of": qtotal,
                                   **envelope_fields(env)}
                            with progress.lock:
                                progress.hits[tid] = hit
                            wanted.discard(tid)
                with progress.lock:
                    progress.searched += len(items)
                if len(items) < end - i:  # consumed while we read: the list is shorter now
                    break
                i = end
            before += n
        if not wanted:
            break
    progress.seconds = time.monotonic() - progress.started
    progress.done = True


def search_unacked(client, layout, ids: list[str], deadline: float, now: float,
                   resolve=None) -> tuple[dict[str, dict[str, Any]], str | None]:
    """`HSCAN unacked` (bounded) for entries whose envelope `headers.id` is one of `ids`;
    their receive time from `unacked_index` (ZSCORE). -> (hits, why incomplete or None)."""
    from celeryctl.collect.redis import parse_unacked_entry

    p = layout.prefix
    ukey, ikey = f"{p}unacked", f"{p}unacked_index"
    wanted = set(ids)
    hits: dict[str, dict[str, Any]] = {}
    tags: dict[str, bytes] = {}
    cursor = 0
    seen = 0
    while wanted:
        if time.monotonic() >= deadline:
            return hits, f"stopped after {seen:,} entries of unacked: --timeout"
        cursor, page = client.hscan(ukey, cursor=cursor, count=HSCAN_COUNT)
        for tag, raw in (page or {}).items():
            seen += 1
            for tid in candidate_ids(raw) & wanted:
                parsed = parse_unacked_entry(raw)
                if isinstance(parsed, str):
                    continue
                env = _loads(raw)[0]
                if _headers(env).get("id") != tid:
                    continue
                exchange, routing_key = parsed
                queues = resolve(exchange, routing_key) if resolve else [routing_key]
                hits[tid] = {"delivery_tag": tag.decode("utf-8", "replace"),
                             "queue": queues[0] if queues else None,
                             "exchange": exchange, "routing_key": routing_key,
                             **envelope_fields(env)}
                tags[tid] = tag
                wanted.discard(tid)
        if cursor == 0:
            break
    for tid, tag in tags.items():
        score = client.zscore(ikey, tag)
        try:
            received = float(score) if score is not None else None
        except (TypeError, ValueError):
            received = None
        if received is not None and received >= 0 and received == received:
            hits[tid]["received_at"] = received
            hits[tid]["delivered_seconds"] = max(0.0, now - received)
        else:
            hits[tid]["received_at"] = None
            hits[tid]["delivered_seconds"] = None
        hits[tid]["visibility_timeout"] = layout.visibility_timeout
    return hits, None


# --- workers -------------------------------------------------------------------------------

def worker_findings(view, ids: list[str], now: float
                    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[str]]]:
    """query_task / revoked / registered / conf replies -> per-id worker locations and the
    workers that list it as revoked. Arguments are never kept (query_task sends them)."""
    from celeryctl.taskfind import hard_limit_from_registered, runtime_seconds

    hits: dict[str, list[dict[str, Any]]] = {}
    revoked: dict[str, list[str]] = {}
    wanted = set(ids)
    for node in view.nodes:
        replies = node.replies
        conf = replies.get("conf") if isinstance(replies.get("conf"), dict) else {}
        conf_limit = conf.get("task_time_limit")
        conf_limit = float(conf_limit) if isinstance(conf_limit, (int, float)) and \
            not isinstance(conf_limit, bool) and conf_limit > 0 else None
        qt = replies.get("query_task")
        for tid, pair in (qt.items() if isinstance(qt, dict) else ()):
            if tid not in wanted or not isinstance(pair, (list, tuple)) or len(pair) != 2:
                continue
            state, info = pair
            info = info if isinstance(info, dict) else {}
            dinfo = info.get("delivery_info") if isinstance(info.get("delivery_info"),
                                                            dict) else {}
            name = info.get("name") if isinstance(info.get("name"), str) else None
            listed, task_limit = hard_limit_from_registered(replies.get("registered"), name)
            limit = task_limit if task_limit is not None else conf_limit
            pid = info.get("worker_pid")
            hits.setdefault(tid, []).append({
                "worker": node.name, "state": state if state in ("active", "reserved",
                                                                 "scheduled") else str(state),
                "task": name, "pid": pid if isinstance(pid, int) else None,
                "time_start": info.get("time_start")
                if isinstance(info.get("time_start"), (int, float)) else None,
                "runtime_seconds": runtime_seconds(info.get("time_start"), now, limit)
                if state == "active" else None,
                "acknowledged": info.get("acknowledged")
                if isinstance(info.get("acknowledged"), bool) else None,
                "redelivered": dinfo.get("redelivered")
                if isinstance(dinfo.get("redelivered"), bool) else None,
                "queue": dinfo.get("routing_key")
                if isinstance(dinfo.get("routing_key"), str) else None,
                "time_limit": limit,
                "eta": None,  # query_task does not say: filled from `scheduled` (_fill_etas)
                # known when the worker answered registered and conf: None then means none
                "time_limit_known": listed and "conf" in replies,
            })
        rv = replies.get("revoked")
        for tid in (rv if isinstance(rv, list) else ()):
            if tid in wanted:
                revoked.setdefault(tid, []).append(node.name)
    return hits, revoked


def _worker_queue_names(view) -> list[str]:
    out = []
    for node in view.nodes:
        for q in node.replies.get("active_queues") or []:
            if isinstance(q, dict) and isinstance(q.get("name"), str):
                out.append(q["name"])
    return out


def _control_exchange(target: Target) -> str:
    if target.app and target.app.settings.get("control_exchange"):
        return str(target.app.settings["control_exchange"])
    return "celery"


def _spawn_workers(target: Target, ids: list[str], options: dict[str, Any], deadline: float,
                   expected):
    from celeryctl.collect.bounded import spawn
    from celeryctl.collect.workers import collect_workers

    args = {"query_task": {"ids": list(ids)}, "registered": {"taskinfoitems": ["time_limit"]},
            "conf": {"with_defaults": False}}
    return spawn("workers", lambda: collect_workers(
        target.broker, options, WORKER_METHODS, target.timeout, deadline, expected, None,
        _control_exchange(target), arguments=args), "workers")


def _finish_workers(lk: Lookup, wobs: Observed, ids: list[str], url: str, now: float) -> Any:
    from celeryctl.collect import _workers_source

    lk.sources.append(_workers_source(wobs, url))
    if not wobs.ok:
        lk.workers_gap = wobs.error
        return None
    view = wobs.value
    lk.worker_hits, lk.revoked_by = worker_findings(view, ids, now)
    missing = getattr(view, "missing", None)
    if missing:
        lk.silent_workers = tuple(missing)
    elif view.expected is None:
        lk.notes.append("which workers exist is unknown: replies were collected for the "
                        "whole --timeout")
    return view


# --- result backend ------------------------------------------------------------------------

def _spawn_backend(target: Target, ids: list[str]):
    from celeryctl.collect.backend import read_task_results
    from celeryctl.collect.bounded import spawn

    return spawn("backend", lambda: read_task_results(
        target.result_backend, ids, target.timeout, target.result_backend_tls),
        "result backend")


def _finish_backend(lk: Lookup, target: Target, task, deadline: float) -> None:
    from celeryctl.collect.backend import backend_kind
    from celeryctl.urls import redact

    kind = backend_kind(target.result_backend)
    lk.backend_kind = kind
    url = redact(target.result_backend) if target.result_backend else None
    if kind == "none":
        lk.backend_note = "no result backend configured"
        lk.sources.append(SourceStatus("result-backend", None, None, lk.backend_note,
                                       kind="not-configured"))
        return
    if kind == "rpc":
        lk.backend_note = ("rpc:// results are messages to the caller's own reply queue: not "
                           "readable by a third party")
        lk.sources.append(SourceStatus("result-backend", url, None, lk.backend_note,
                                       kind="not-checked"))
        return
    if kind != "redis":
        lk.backend_note = f"celeryctl does not read {kind} result backends"
        lk.sources.append(SourceStatus("result-backend", url, None, lk.backend_note,
                                       kind="not-checked"))
        return
    obs = task.wait(deadline)
    lk.sources.append(SourceStatus("result-backend", url, obs.ok, obs.error,
                                   obs.elapsed_seconds, detail="redis GET celery-task-meta-<id>",
                                   kind=obs.kind))
    if not obs.ok:
        lk.backend_gap = obs.error
        return
    lk.backend = obs.value


# --- the whole lookup ----------------------------------------------------------------------

def lookup(target: Target, ids: list[str], *, peek: bool = False, peek_count: int = 100
           ) -> Lookup:
    started = time.monotonic()
    deadline = started + target.timeout
    lk = Lookup(ids=list(ids))
    btask = _spawn_backend(target, ids) if target.result_backend else None
    if target.broker_kind == "redis":
        _lookup_redis(lk, target, ids, deadline)
    else:
        _lookup_rabbit(lk, target, ids, deadline, peek, peek_count)
    _finish_backend(lk, target, btask, deadline)
    lk.elapsed_seconds = time.monotonic() - started
    return lk


def _lookup_redis(lk: Lookup, target: Target, ids: list[str], deadline: float) -> None:
    from celeryctl.collect import _queue_names_redis, _shut
    from celeryctl.collect import redis as r
    from celeryctl.collect.bounded import spawn

    url = target.broker_redacted
    opened: list = []
    try:
        obs = spawn("broker", lambda: r.connect_first(
            target.broker, target.timeout, target.transport_options, opened=opened),
            "redis broker").wait(deadline)
        lk.sources.append(SourceStatus("broker", url, obs.ok, obs.error, obs.elapsed_seconds,
                                       detail="redis", kind=obs.kind))
        if not obs.ok:
            why = f"the broker was not observed ({obs.state})"
            lk.queue_gap = lk.unacked_gap = lk.workers_gap = why
            lk.queue_summary = "queues not searched: " + why
            return
        client, _ep = obs.value

        def discover():
            return r.discovery_or_known(client, target.transport_options)

        dobs = spawn("discovery", discover, "redis broker").wait(deadline)
        discovery = dobs.value if dobs.ok else r.RedisDiscovery(
            layout=r.RedisLayout.from_options(target.transport_options), error=dobs.error)
        layout = discovery.layout
        lk.visibility_timeout = layout.visibility_timeout
        options = dict(target.transport_options)
        if layout.prefix:
            options["global_keyprefix"] = layout.prefix
        expected = (Observed(error=f"pidbox bindings not read ({discovery.error})")
                    if discovery.error else
                    Observed(value=discovery.pidbox_nodes,
                             source="redis binding _kombu.binding.celery.pidbox"))
        wtask = _spawn_workers(target, ids, options, deadline - RESERVE, lambda: expected)
        now = time.time()
        utask = spawn("unacked", lambda: search_unacked(client, layout, ids,
                                                        deadline - RESERVE, now,
                                                        discovery.resolve),
                      "redis broker (unacked)")
        names = _task_queues(_queue_names_redis(discovery, target, Observed(error="-")))
        progress = ScanProgress(named=len(names))
        stask = spawn("scan", lambda: scan_queues(client, layout, names, ids,
                                                  deadline - RESERVE, progress),
                      "redis broker (queue scan)")
        sobs = stask.wait(deadline)
        wobs = wtask.wait(deadline)
        view = _finish_workers(lk, wobs, ids, url, time.time())
        if view is not None and sobs.ok and progress.done:
            extra = [q for q in dict.fromkeys(_worker_queue_names(view))
                     if q not in names and not q.endswith(".pidbox")]
            extra = _task_queues({q: (False, ("worker",)) for q in extra})
            left = {tid for tid in ids if tid not in progress.hits}
            if extra and left:
                more = ScanProgress()
                mobs = spawn("scan", lambda: scan_queues(client, layout, extra, sorted(left),
                                                         deadline - RESERVE, more),
                             "redis broker (queue scan)").wait(deadline)
                with progress.lock:
                    progress.total += more.total
                    progress.queues += more.queues
                    progress.searched += more.searched
                    progress.hits.update(more.hits)
                    progress.errors += more.errors
                    progress.seconds = (progress.seconds or 0.0) + (
                        more.seconds if more.seconds is not None
                        else time.monotonic() - more.started)
                    if not (mobs.ok and more.done):
                        progress.done = False
                        progress.stopped = more.stopped or mobs.error
        if not sobs.ok and not progress.stopped:
            # the broker's silence only when the scan was waiting for it, else --timeout
            # caught celeryctl still matching what it had read
            progress.stopped = sobs.error if progress.in_call or sobs.kind != "unreachable" \
                else "--timeout (while matching the messages read, not waiting for the broker)"
        lk.queue_hits = dict(progress.hits)
        lk.queue_summary = progress.summary()
        if discovery.error:
            lk.notes.append(f"queue discovery: {discovery.error}: only the queues named by "
                            f"the workers, -A and -Q were searched")
        if progress.errors:
            lk.notes.append("queues not searched: " + "; ".join(progress.errors[:5]))
        if not progress.done:
            lk.queue_gap = lk.queue_summary
        uobs = utask.wait(deadline)
        if uobs.ok:
            lk.unacked_hits, lk.unacked_gap = uobs.value
        else:
            lk.unacked_gap = uobs.error
        _fill_etas(lk, target, options, deadline)
        partial = tuple(x for x in (
            f"queue scan: {lk.queue_summary}" if lk.queue_gap else None,
            f"unacked: {lk.unacked_gap}" if lk.unacked_gap else None) if x)
        lk.sources[0] = SourceStatus("broker", url, True, None, obs.elapsed_seconds,
                                     detail=f"redis; {lk.queue_summary}", partial=partial)
    finally:
        _shut(opened)


def _task_queues(names: dict[str, tuple[bool, tuple[str, ...]]]) -> list[str]:
    from celeryctl.knowledge import classify_queue

    return sorted(n for n, (internal, _h) in names.items()
                  if not internal and classify_queue(n) == "task")


def _lookup_rabbit(lk: Lookup, target: Target, ids: list[str], deadline: float, peek: bool,
                   peek_count: int) -> None:
    from celeryctl.collect import rabbitmq as rq
    from celeryctl.collect.bounded import spawn

    url = target.broker_redacted
    api = rq.ManagementAPI(target.rabbitmq_api, target.timeout) if target.rabbitmq_api \
        else None
    ptask = qtask = None
    if api is not None:
        ptask = spawn("pidbox", lambda: Observed(rq.collect_pidbox_nodes(
            api, target.effective_vhost), source="management-api binding celery.pidbox"),
            "management API")
        if peek:  # every queue the API lists, not only those the workers consume
            qtask = spawn("queues", lambda: rq.collect_rabbit_queues(
                api, target.effective_vhost), "management API (queue list)")

    from celeryctl.collect import expected_from

    expected = expected_from(ptask, deadline)
    wtask = _spawn_workers(target, ids, target.transport_options, deadline - RESERVE, expected)
    wobs = wtask.wait(deadline)
    view = _finish_workers(lk, wobs, ids, url, time.time())
    _fill_etas(lk, target, target.transport_options, deadline)
    lk.sources.insert(0, SourceStatus("broker", url, wobs.ok, wobs.error,
                                      wobs.elapsed_seconds, kind=wobs.kind))
    lk.unacked_gap = None  # RabbitMQ: in-flight messages are the workers' (query_task)
    if not peek:
        lk.queue_summary = ("queued messages on RabbitMQ are not visible without --peek "
                            "(the management API's get requeues them marked redelivered)")
        lk.queue_gap = "not visible without --peek"
        return
    if api is None:
        lk.queue_summary = "--peek needs the management API (--rabbitmq-api)"
        lk.queue_gap = lk.queue_summary
        return
    named = set(target.queues)
    if target.app:
        named |= set(target.app.queue_names)
    if view is not None:
        named |= set(_worker_queue_names(view))
    gaps: list[str] = []
    ready: dict[str, int | None] = {}
    qobs = qtask.wait(deadline - RESERVE) if qtask is not None else None
    if qobs is not None and qobs.ok:
        listed, _notes = qobs.value
        for q in listed:
            if not q.internal:
                ready[q.name] = q.ready
        gaps += list(_notes)
    else:
        gaps.append(f"the queue list was not read ({qobs.error if qobs else 'no API'}): "
                    f"only the queues named by the workers, -A and -Q were peeked at")
    for n in named:
        ready.setdefault(n, None)
    names = _task_queues({n: (False, ()) for n in ready})
    # every one, even those the API says are empty: its counts lag (statistics are
    # collected every 5 s by default); the named ones first, then the fullest
    todo = sorted(names, key=lambda n: (n not in named, -(ready.get(n) or 0), n))
    if len(todo) > PEEK_MAX_QUEUES:
        gaps.append(f"{len(todo) - PEEK_MAX_QUEUES:,} queues with messages not peeked at "
                    f"(at most {PEEK_MAX_QUEUES})")
        todo = todo[:PEEK_MAX_QUEUES]
    samples: dict[str, list] = {}

    def peek_all() -> None:
        for n in todo:
            if time.monotonic() >= deadline - RESERVE:
                return
            samples[n] = rq.collect_peek(api, target.effective_vhost, [n],
                                         peek_count).get(n, [])

    pobs = spawn("peek", peek_all, "management API (--peek)").wait(deadline - RESERVE / 2)
    if pobs.ok:
        api.close()
    else:
        api.abort()
    done = dict(samples)
    unread = [n for n in todo if n not in done]
    if unread:
        why = pobs.error if not pobs.ok else "--timeout"
        gaps.append(f"{len(unread):,} queue{'' if len(unread) == 1 else 's'} not peeked at "
                    f"({why})")
    read = 0
    beyond = []
    for q, got in done.items():
        read += len(got)
        if len(got) >= peek_count:  # fewer: the get reached the end of the queue
            beyond.append(q)
        for pos, m in enumerate(got, 1):
            if m.id in ids and m.id not in lk.queue_hits:
                lk.queue_hits[m.id] = {"queue": q, "priority_step": None, "position": pos,
                                       "of": None, "peeked": True, "task": m.task,
                                       "eta": m.eta, "redelivered": m.redelivered}
    lk.queue_summary = (f"--peek read the first {read:,} messages (at most {peek_count} per "
                        f"queue) of {len(done):,} queue{'' if len(done) == 1 else 's'}")
    if beyond:
        gaps.append(f"messages beyond the first {peek_count} not read in "
                    + ", ".join(f"`{q}`" for q in sorted(beyond)[:5])
                    + (f" and {len(beyond) - 5} more" if len(beyond) > 5 else ""))
    lk.queue_gap = "; ".join(gaps) or None
    if lk.queue_gap:
        lk.queue_summary += ": " + lk.queue_gap


def _fill_etas(lk: Lookup, target: Target, options: dict[str, Any], deadline: float) -> None:
    """query_task does not say a scheduled task's ETA: ask the workers holding one
    (`scheduled`, to those nodes only) when no broker record gave it."""
    from celeryctl.collect.bounded import spawn
    from celeryctl.collect.workers import collect_workers

    nodes = sorted({w["worker"] for tid, hits in lk.worker_hits.items() for w in hits
                    if w.get("state") == "scheduled" and not w.get("eta")
                    and not (lk.unacked_hits.get(tid) or {}).get("eta")})
    left = deadline - RESERVE - time.monotonic()
    if not nodes or left <= 0.2:
        return
    obs = spawn("scheduled", lambda: collect_workers(
        target.broker, options, ("scheduled",), min(target.timeout, left), deadline - RESERVE,
        lambda: Observed(value=list(nodes)), nodes, _control_exchange(target)),
        "workers (scheduled)").wait(deadline - RESERVE)
    if not obs.ok:
        lk.notes.append(f"the ETA of scheduled tasks was not read: {obs.error}")
        return
    etas: dict[tuple[str, str], str] = {}
    for node in obs.value.nodes:
        for item in node.replies.get("scheduled") or []:
            req = item.get("request") if isinstance(item, dict) else None
            tid = req.get("id") if isinstance(req, dict) else None
            if isinstance(tid, str) and isinstance(item.get("eta"), str):
                etas[(node.name, tid)] = item["eta"]
    for tid, hits in lk.worker_hits.items():
        for w in hits:
            if w.get("state") == "scheduled" and (w["worker"], tid) in etas:
                w["eta"] = etas[(w["worker"], tid)]
