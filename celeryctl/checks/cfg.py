"""CFG: risky Celery settings (from -A and from the workers' conf)."""

from __future__ import annotations

from collections.abc import Iterator

from celeryctl.checks import Finding, Limits, Severity, check


@check("CFG001", "acks-late-without-reject-on-worker-lost", needs=("workers",))
def acks_late_without_reject_on_worker_lost(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers with `task_acks_late = True` but `task_reject_on_worker_lost = False`.

    ## Why it matters
    When a pool process dies mid-task (OOM kill, segfault), Celery acks the message anyway and
    marks the task failed with WorkerLostError: the at-least-once guarantee that acks_late was
    chosen for is lost exactly when it matters.

    ## How to fix
    Set `task_reject_on_worker_lost = True` (tasks must be idempotent), or accept the loss
    knowingly.
    """
    for name, c in snap.worker_confs().items():
        if c.get("task_acks_late") is True and not c.get("task_reject_on_worker_lost"):
            yield Finding(Severity.INFO, f"worker {name}",
                          "task_acks_late without task_reject_on_worker_lost: a task whose "
                          "process dies is acked and lost, not redelivered",
                          hint="Set task_reject_on_worker_lost = True for idempotent tasks.")


@check("CFG002", "broker-heartbeat-off", needs=("workers",),
       broker="amqp")
def broker_heartbeat_off(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers on RabbitMQ with `broker_heartbeat` set to 0 or None.

    ## Why it matters
    Without heartbeats a silently dropped TCP connection (NAT, load balancer idle timeout) is
    not noticed: the worker waits forever for messages that never come.

    ## How to fix
    Keep the default `broker_heartbeat = 120` (RabbitMQ negotiates 60).
    """
    for name, c in snap.worker_confs().items():
        if "broker_heartbeat" in c and not c.get("broker_heartbeat"):
            yield Finding(Severity.WARNING, f"worker {name}",
                          f"broker_heartbeat is {c.get('broker_heartbeat')!r}: heartbeats are "
                          "off, so a silently dropped connection goes unnoticed",
                          evidence={"broker_heartbeat": c.get("broker_heartbeat")},
                          hint="Set broker_heartbeat = 120.")


@check("CFG003", "connection-retry-on-startup-unset", needs=("workers",))
def connection_retry_on_startup_unset(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers where `broker_connection_retry_on_startup` is not set explicitly (None).

    ## Why it matters
    Its behaviour at start-up then follows `broker_connection_retry`, with a deprecation
    warning; Celery 6 changes the default. A worker started while the broker is down may exit
    instead of waiting for it — or the reverse of what you expect.

    ## How to fix
    Set `broker_connection_retry_on_startup = True` (or False) explicitly.
    """
    for name, c in snap.worker_confs().items():
        if "broker_connection_retry_on_startup" in c and \
                c["broker_connection_retry_on_startup"] is None:
            yield Finding(Severity.INFO, f"worker {name}",
                          "broker_connection_retry_on_startup is not set: whether the worker "
                          "waits for a broker that is down at start-up follows "
                          "broker_connection_retry, with a deprecation warning",
                          hint="Set broker_connection_retry_on_startup = True (or False) "
                               "explicitly.")


@check("CFG004", "non-utc-timezone", needs=("workers",))
def non_utc_timezone(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers configured with a `timezone` other than UTC, or with `enable_utc = False`.

    ## Why it matters
    ETAs, countdowns and beat schedules shift across DST changes and between hosts with
    different settings; times in results and events are harder to correlate.

    ## How to fix
    Keep `enable_utc = True` and `timezone = "UTC"`; convert at the edges.
    """
    for name, c in snap.worker_confs().items():
        tz = c.get("timezone")
        if (tz not in (None, "UTC", "Etc/UTC")) or c.get("enable_utc") is False:
            what = "enable_utc is False" if c.get("enable_utc") is False else \
                f"timezone is {tz!r}, not UTC"
            yield Finding(Severity.INFO, f"worker {name}",
                          f"{what}: ETAs and schedules shift with DST and between hosts",
                          evidence={"timezone": tz, "enable_utc": c.get("enable_utc")},
                          hint="Use UTC.")


@check("CFG005", "visibility-timeout-below-time-limit", needs=("workers",),
       broker="redis")
def visibility_timeout_below_time_limit(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    On Redis, a `task_time_limit` (hard limit) longer than the effective `visibility_timeout`
    with `task_acks_late = True`.

    ## Why it matters
    A task allowed to run longer than visibility_timeout is still unacknowledged when kombu
    restores it to the queue: another worker runs it again while the first is still busy.

    ## How to fix
    Raise `visibility_timeout` above the longest time limit (and the longest ETA).
    """
    from celeryctl.checks.que import visibility_timeout

    vt, source = visibility_timeout(snap)
    for name, c in snap.worker_confs().items():
        limit = c.get("task_time_limit")
        if c.get("task_acks_late") is True and isinstance(limit, (int, float)) and limit > vt:
            yield Finding(Severity.WARNING, f"worker {name}",
                          f"task_time_limit {limit:.0f} s > visibility_timeout {vt:.0f} s "
                          f"({source}) with acks_late: long tasks run twice",
                          evidence={"task_time_limit": limit, "visibility_timeout": vt},
                          hint="Raise visibility_timeout above the time limit.")


@check("CFG006", "publisher-confirms-off", needs=("app",),
       broker="amqp")
def publisher_confirms_off(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    An app on RabbitMQ without `broker_transport_options = {"confirm_publish": True}`.

    ## Why it matters
    Without publisher confirms `apply_async` returns before the broker has the message: a
    broker restart, a memory alarm or a dropped connection loses tasks the producer believes
    were sent.

    ## How to fix
    Set `broker_transport_options = {"confirm_publish": True}` (a little latency per publish).
    """
    opts = (snap.app_settings or {}).get("broker_transport_options") or {}
    if not opts.get("confirm_publish"):
        yield Finding(Severity.INFO, "setting broker_transport_options",
                      "publisher confirms off: published tasks can be lost",
                      evidence={"confirm_publish": opts.get("confirm_publish")},
                      hint='Set broker_transport_options = {"confirm_publish": True}.')
