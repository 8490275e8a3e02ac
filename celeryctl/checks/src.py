"""SRC: the sources doctor reads — broker, workers, management API, result backend."""

from __future__ import annotations

from collections.abc import Iterator

from celeryctl.checks import Finding, Limits, Severity, check
from celeryctl.invocation import quote


def _source(snap, name):
    return next((s for s in snap.sources if s.name == name), None)


@check("SRC001", "broker-unreachable")
def broker_unreachable(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    The broker refused the connection, did not answer within `--timeout`, reset it, or its
    host name does not resolve, or the TLS handshake failed.

    A broker that answers but rejects celeryctl's credentials (authentication failed) or
    refuses its account an operation (permission denied) is *not* this finding: that says
    nothing about the cluster's health. The report is then INCOMPLETE (exit 3) and the
    sources section names what was refused and the privilege that would allow it.

    ## Why it matters
    Nothing can be published or consumed: producers block or fail, workers reconnect in a
    loop. Every check that reads the broker or the workers is skipped, so the rest of this
    report is partial.

    ## How to fix
    Check the broker process and its port from the host running celeryctl
    (`redis-cli -h HOST -p PORT ping`, `rabbitmq-diagnostics -q ping`), the firewall, and for
    TLS the CA (`ssl_ca_certs`) and client certificate settings.
    """
    src = _source(snap, "broker")
    if src is not None and src.ok is False and src.state == "unreachable":
        yield Finding(Severity.CRITICAL, f"broker {src.url}", f"broker unreachable: {src.error}",
                      evidence={"url": src.url, "error": src.error},
                      hint="Check that the broker runs and that its port is reachable from "
                           "this host (firewall, DNS, TLS settings).",
                      commands=(["redis-cli -h HOST -p PORT ping"] if snap.broker_kind == "redis"
                                else ["rabbitmq-diagnostics -q ping",
                                      "rabbitmq-diagnostics -q listeners"]))


# what a source that did not answer as it should did, by collect/errors.py state
_STATES = {"unreachable": "unreachable", "auth-failed": "refused the credentials",
           "permission-denied": "refused an operation (permission denied)",
           "not-configured": "not configured"}


@check("SRC002", "management-api-unavailable",
       broker="amqp")
def management_api_unavailable(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    The RabbitMQ management HTTP API could not be reached: no URL known, connection refused,
    timed out, TLS handshake failed — the plugin is not running or not exposed to this host.

    An API that answers but rejects celeryctl's credentials or refuses its user (no
    monitoring tag, no permissions on the vhost) is not this finding: it says nothing about
    the cluster. The sources section says what was refused and which tag or permission would
    allow it (docs/permissions.md); the checks that need the API are skipped with that reason.

    ## Why it matters
    Without it doctor cannot see unacknowledged counts, rates, connections, channels, node
    alarms or which workers are expected; queue depth falls back to AMQP passive declares.

    ## How to fix
    Enable the plugin (`rabbitmq-plugins enable rabbitmq_management`), pass `--rabbitmq-api`
    with a user tagged `monitoring`, or open port 15672 to this host.
    """
    src = _source(snap, "management-api")
    if src is None:
        yield Finding(Severity.WARNING, "management API",
                      "no management API URL given or derived: unacked counts, rates, "
                      "connections and node alarms are not observed",
                      hint="Pass --rabbitmq-api http://USER:PASSWORD@HOST:15672.")
    elif src.ok is False and src.state in ("unreachable", "not-configured"):
        yield Finding(Severity.WARNING, f"management API {src.url}",
                      f"management API {_STATES[src.state]}: {src.error}",
                      evidence={"url": src.url, "state": src.state, "error": src.error},
                      hint="Give a reachable --rabbitmq-api with a monitoring user.",
                      commands=["rabbitmq-plugins enable rabbitmq_management",
                                "rabbitmqctl set_user_tags USER monitoring"])


@check("SRC003", "result-backend-unreachable")
def result_backend_unreachable(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    The result backend did not answer (refused, timed out, wrong credentials).

    ## Why it matters
    Workers fail when storing results (tasks may be retried or marked failed), and
    `AsyncResult.get()` blocks in producers.

    ## How to fix
    Check the backend server and the `result_backend` URL; if results are not used, set
    `task_ignore_result = True`.
    """
    src = _source(snap, "result-backend")
    if src is not None and src.ok is False:
        what = _STATES.get(src.state or "", "could not be read")
        yield Finding(Severity.CRITICAL, f"result backend {src.url}",
                      f"result backend {what}: {src.error}",
                      evidence={"url": src.url, "error": src.error},
                      hint="Check the backend server and credentials in result_backend.")


@check("SRC004", "no-worker-replied", needs=("workers",))
def no_worker_replied(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    No worker answered remote control (ping/stats/...) within `--timeout`.

    ## Why it matters
    Either no worker is running for this broker (vhost, db, key prefix), or workers are alive
    but cannot answer: blocked event loop, solo pool busy with a long task, or a control
    request in a serializer they do not accept (they drop it silently).

    ## How to fix
    Check the worker processes and their logs; confirm they use the same broker URL, vhost/db
    and `global_keyprefix`; retry with a longer `--timeout`.
    """
    view = snap.workers
    if not view.nodes:
        yield Finding(Severity.CRITICAL, "workers",
                      f"no worker replied within {view.waited_seconds:.1f} s",
                      evidence={"expected": list(view.expected or []),
                                "waited_seconds": round(view.waited_seconds, 2)},
                      hint="Start workers, or check they use this broker, vhost/db and prefix.",
                      commands=["celery -A proj worker -l INFO",
                                "celeryctl workers --timeout 10"])


@check("SRC005", "expected-worker-silent", needs=("workers",))
def expected_worker_silent(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers named by their pidbox bindings (`_kombu.binding.celery.pidbox` on Redis, the
    `celery.pidbox` exchange's bindings on RabbitMQ) that did not reply.

    ## Why it matters
    A binding without a reply is a worker that died without cleaning up, or one that is alive
    but stuck (blocked event loop, long task on the solo pool). Its prefetched messages are
    in limbo until it recovers or, on Redis, until visibility_timeout redelivers them.

    ## How to fix
    Look at that host: is the process there, is it busy (`py-spy dump --pid PID`)? Restart it
    if hung. Stale Redis bindings expire on their own (kombu >= 5.7) or vanish when the
    worker restarts.
    """
    view = snap.workers
    if view.nodes and view.missing:
        for name in view.missing:
            yield Finding(Severity.WARNING, f"worker {name}",
                          f"did not reply within {view.waited_seconds:.1f} s, though its "
                          f"pidbox binding says it runs",
                          evidence={"expected_source": view.expected_source,
                                    "replied": len(view.nodes)},
                          hint="Check the worker's host and process; restart it if hung.",
                          commands=[f"celeryctl workers inspect ping -d {quote(name)} --timeout 10"])
