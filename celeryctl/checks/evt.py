"""EVT: task events — failure ratio, retry storms, tasks that never finished and late events
(from a `doctor --events SECONDS` window), and workers sending task events nobody reads.

EVT001-EVT004 read the `events` part: the summary of a bounded window, as `celeryctl events
--format json` prints it (celeryctl/events/agg.py). Without `--events` they are skipped with
the reason. EVT005 reads `event_consumers` from the ordinary snapshot (no window needed).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from celeryctl.checks import Finding, Limits, Severity, check, count, verb
from celeryctl.invocation import quote

WINDOW_HINT = "pass --events SECONDS"


def _window(snap) -> dict[str, Any]:
    return snap.get("events") or {}


def _tasks(snap) -> list[dict[str, Any]]:
    return [t for t in _window(snap).get("tasks") or [] if isinstance(t, dict)]


def _n(v: Any) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def _secs(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v:.0f} s" if abs(v) >= 10 else f"{v:.1f} s"


@check("EVT001", "task-failure-ratio", needs=("events",))
def task_failure_ratio(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A task name whose runs failed more often than `--failure-ratio-warn` (default 0.1: one in
    ten) during the `--events` window, with at least `failure_min` (3) failures so that one
    failure out of two runs is not an alarm. The most frequent exception is named, with an
    example message (task arguments are never shown).

    ## Why it matters
    Failures are what users see: lost work, retries by hand, alerts downstream. A ratio per
    task name separates a broken task (a bad deploy, a dependency down) from a cluster-wide
    problem, and the exception says where to look.

    ## How to fix
    Read the exception and the worker logs of the failing task (`celeryctl events --task NAME
    --for 60` for a longer look); fix or roll back the code or the dependency. A task expected
    to fail often: raise `--failure-ratio-warn`.
    """
    for t in _tasks(snap):
        failed, succeeded = _n(t.get("failed")), _n(t.get("succeeded"))
        done = failed + succeeded
        if not done or failed < limits.failure_min:
            continue
        ratio = failed / done
        if ratio <= limits.failure_ratio_warn:
            continue
        name = str(t.get("name"))
        exc = (t.get("exceptions") or [{}])[0] or {}
        top = f"; mostly {exc.get('type')} ({_n(exc.get('count'))})" if exc.get("type") else ""
        yield Finding(
            Severity.WARNING, f"task {name}",
            f"{failed} of {done} runs failed ({ratio:.0%}) in the "
            f"{_secs(_window(snap).get('window_seconds'))} window{top}",
            evidence={"failed": failed, "succeeded": succeeded,
                      "failure_ratio": round(ratio, 4),
                      "threshold": limits.failure_ratio_warn,
                      "exceptions": t.get("exceptions") or []},
            hint=(f"Example: {exc.get('example')}. " if exc.get("example") else "")
            + "Read the failing task's worker logs; a longer look: celeryctl events --task "
            "NAME.",
            commands=[f"celeryctl events --task {quote(name)} --for 60"])


@check("EVT002", "retry-storm", needs=("events",))
def retry_storm(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A task name retrying itself a lot during the `--events` window: at least `retry_min` (5)
    `task-retried` events and either more than half of its runs ending in a retry
    (`retry_ratio_warn` 0.5) or more than `retry_rate_warn` (1) retry per second.

    ## Why it matters
    A retry storm hides a failure behind "it will retry": the same work runs again and again,
    fills the queues and the workers, and hammers the dependency that made it fail (an API
    rate limit, a database that is down). Retries without a countdown or backoff make it worse.

    ## How to fix
    Find why the task retries (the exception passed to `self.retry`, the worker logs). Use
    `autoretry_for` with `retry_backoff=True` and `retry_jitter`, a bounded `max_retries`, and
    fix the dependency.
    """
    window = _window(snap).get("window_seconds") or 0.0
    for t in _tasks(snap):
        retried = _n(t.get("retried"))
        if retried < limits.retry_min:
            continue
        runs = retried + _n(t.get("succeeded")) + _n(t.get("failed"))
        ratio = retried / runs if runs else 1.0
        rate = retried / window if window > 0 else 0.0
        if ratio <= limits.retry_ratio_warn and rate <= limits.retry_rate_warn:
            continue
        name = str(t.get("name"))
        yield Finding(
            Severity.WARNING, f"task {name}",
            f"{count(retried, 'retry', 'retries')} in {_secs(window)} ({rate:.1f}/s), "
            f"{ratio:.0%} of its runs ended in a retry",
            evidence={"retried": retried, "runs": runs, "retry_ratio": round(ratio, 4),
                      "retries_per_second": round(rate, 3), "window_seconds": window},
            hint="Find why it retries (worker logs); retry with a backoff "
            "(retry_backoff=True, retry_jitter) and a bounded max_retries.",
            commands=[f"celeryctl events --task {quote(name)} --for 60"])


@check("EVT003", "tasks-never-finished", needs=("events",))
def tasks_never_finished(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Tasks that started during the `--events` window and had not finished when it ended,
    running for at least half the window (a task that started in its last moments is not
    counted), per task name, with the oldest one's age.

    ## Why it matters
    A task that starts and does not finish holds a pool slot: a hung call without a timeout,
    a lock, a task much slower than usual. Several of one name point at the same cause.

    ## How to fix
    Look at them with `celeryctl tasks` (running for how long, on which worker); a doctor run
    reports the long ones (TSK001). Set `task_time_limit`/`task_soft_time_limit` and timeouts
    on the calls the task makes.
    """
    window = _window(snap).get("window_seconds") or 0.0
    for t in _tasks(snap):
        rows = [r for r in t.get("unfinished") or [] if isinstance(r, dict)
                and isinstance(r.get("age_seconds"), (int, float))
                and r["age_seconds"] >= window / 2]
        if not rows:
            continue
        n = max(len(rows), _n(t.get("unfinished_count")) if len(rows) >= 10 else len(rows))
        oldest = max(rows, key=lambda r: r["age_seconds"])
        name = str(t.get("name"))
        yield Finding(
            Severity.INFO, f"task {name}",
            f"{count(n, 'run')} started in the window and {verb(n, 'was', 'were')} still "
            f"running at its end (the oldest for {_secs(oldest['age_seconds'])}, on "
            f"{oldest.get('worker') or '?'})",
            evidence={"unfinished": rows[:10], "window_seconds": window},
            hint="See them with celeryctl tasks (the long ones: TSK001 in a doctor run); "
            "set task_time_limit and timeouts on the calls the task makes.",
            commands=["celeryctl tasks"])


@check("EVT004", "events-arrive-late", needs=("events",))
def events_arrive_late(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers whose events arrive late during the `--events` window: an event clock drift
    (receive time minus the event's timestamp, the smallest seen) beyond `event_lag_warn`
    (5 s) either way, a last heartbeat older than twice the heartbeat interval plus a
    second, or no heartbeat at all in a window of at least 5 s.

    ## Why it matters
    Monitors (Flower, `celery events`, celeryctl) judge workers by their heartbeats: a late
    heartbeat makes a live worker look offline, a clock far off makes every runtime and wait
    computed from timestamps wrong, and ETA/countdown tasks run early or late on that host.
    A worker that sends no heartbeat (started with `--without-heartbeat`, or its event
    connection stuck) cannot be watched at all.

    ## How to fix
    Synchronise the clocks (NTP/chrony) on the worker hosts. For late heartbeats: look at the
    worker's load (a blocked event loop, a busy solo pool) and its link to the broker.
    """
    window = _window(snap).get("window_seconds") or 0.0
    for w in _window(snap).get("workers") or []:
        if not isinstance(w, dict):
            continue
        name = str(w.get("name"))
        drift = w.get("clock_drift_seconds")
        why = []
        if isinstance(drift, (int, float)) and abs(drift) > limits.event_lag_warn:
            ahead = "ahead of" if drift < 0 else "behind"
            why.append(f"its clock is {_secs(abs(drift))} {ahead} this host's")
        if w.get("heartbeat_late") is True:
            why.append(f"its last heartbeat is {_secs(w.get('heartbeat_age_seconds'))} old "
                       f"(every {_secs(w.get('heartbeat_freq_seconds'))} expected)")
        elif not _n(w.get("heartbeats")) and window >= 5:
            why.append(f"no heartbeat in the {_secs(window)} window")
        if not why:
            continue
        yield Finding(
            Severity.WARNING, f"worker {name}", "events arrive late: " + "; ".join(why),
            evidence={k: w.get(k) for k in ("clock_drift_seconds", "event_delay_max_seconds",
                                            "heartbeats", "heartbeat_age_seconds",
                                            "heartbeat_freq_seconds", "heartbeat_late")},
            hint="Synchronise the worker hosts' clocks (NTP); for late heartbeats look at the "
            "worker's load and its link to the broker.",
            commands=[f"celeryctl workers inspect stats -d {quote(name)}"])


@check("EVT005", "task-events-without-consumer", needs=("event_consumers",))
def task_events_without_consumer(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers sending task events while nothing consumes them: no consumer on any `celeryev.*`
    queue (RabbitMQ, management API) or no subscriber to the event channels (Redis: PUBSUB
    NUMSUB and pattern subscribers beyond one per worker). A worker is known to send them when
    its `conf` has `worker_send_task_events`, when a `celeryctl events` run that is no longer
    running (killed with -9) left them on (its state file on this host), or — with `--events`
    — when the window found them already on (`-E`, or switched on by Flower).

    A worker started with `-E` or switched on with `enable_events` does not say so in its
    `stats` or `conf`: without `--events` only the first two are seen. When it cannot be told
    whether anything listens, the check is skipped with the reason: no management API, or on
    Redis pattern subscribers beyond one per worker — Redis does not say which pattern a
    client holds, so one PSUBSCRIBEd to something else (`*pidbox*`) cannot be told from Flower.

    ## Why it matters
    Every task then sends three or more events that are published for nobody: broker load and
    worker CPU for nothing. This is what a `kill -9`ed `celeryctl events` or a dead Flower
    leaves behind; the next monitor that attaches may also be flooded.

    ## How to fix
    `celeryctl events --restore` finishes a dead celeryctl run's job; otherwise turn them off
    where nobody needs them: `celeryctl control disable-events -d NODE` (and remove `-E` /
    `worker_send_task_events` from the worker's start-up if set there).
    """
    from celeryctl.checks import Skip

    ec = snap.get("event_consumers") or {}
    senders = [s for s in ec.get("senders") or [] if isinstance(s, dict)]
    window = snap.get("events") if snap.observed("events") else None
    if isinstance(window, dict):
        known = {s.get("worker") for s in senders}
        for w in window.get("workers") or []:
            if isinstance(w, dict) and w.get("events_were_enabled") is True \
                    and w.get("name") not in known:
                senders.append({"worker": w.get("name"),
                                "why": "task events already on when the --events window "
                                       "began (-E or enable_events)"})
    if not senders:
        return
    if ec.get("consumers"):
        return
    if ec.get("unknown"):
        raise Skip(f"{count(len(senders), 'worker')} send task events, but whether anything "
                   f"consumes them is unknown: {ec['unknown']}")
    if ec.get("maybe"):
        raise Skip(f"{count(len(senders), 'worker')} send task events; whether anything "
                   f"consumes them cannot be told: {'; '.join(map(str, ec['maybe']))} (Redis "
                   "does not say which pattern a client subscribes to)")
    for s in sorted(senders, key=lambda s: str(s.get("worker"))):
        name = str(s.get("worker"))
        yield Finding(
            Severity.WARNING, f"worker {name}",
            f"sends task events and nothing consumes them ({s.get('why')})",
            evidence={"why": s.get("why"), "broker": snap.broker_kind},
            hint="celeryctl events --restore if a celeryctl events run was killed; else turn "
            "them off: celeryctl control disable-events -d NODE.",
            commands=["celeryctl events --restore",
                      f"celeryctl control disable-events -d {quote(name)}"])
