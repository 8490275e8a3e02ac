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
                          "acks_late without reject_on_worker_lost",
                          hint="Set task_reject_on_worker_lost = True for idempotent tasks.")


@check("CFG002", "broker-heartbeat-off", needs=("workers",),
       applies=lambda s: None if s.broker_kind == "amqp" else "heartbeats are AMQP-only")
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
            yield Finding(Severity.WARNING, f"worker {name}", "broker heartbeats disabled",
                          evidence={"broker_heartbeat": c.get("broker_heartbeat")},
                          hint="Set broker_heartbeat = 120.")
