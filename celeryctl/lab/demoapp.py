"""The lab's demo Celery app: a few tasks and queues, configured from the environment so the
same module serves every deployment shape (Redis or RabbitMQ broker; Redis, rpc or no backend;
a global key prefix; priority queues).

Environment: CELERY_BROKER_URL, CELERY_RESULT_BACKEND, CELERYCTL_LAB_KEYPREFIX,
CELERYCTL_LAB_SERIALIZER, CELERYCTL_LAB_RESULT_SERIALIZER, CELERYCTL_LAB_ACCEPT (comma list), CELERYCTL_LAB_PREFETCH,
CELERYCTL_LAB_ACKS_LATE=1, CELERYCTL_LAB_VISIBILITY (seconds), CELERYCTL_LAB_OLD_CODE=1
(a worker of an "old deploy", without the `fail` task), CELERYCTL_LAB_HEARTBEAT (seconds),
CELERYCTL_LAB_RISKY=1 (broker_pool_limit 1, no acquire timeout, retry_on_startup unset,
non-UTC timezone), CELERYCTL_LAB_TIME_LIMITS=1 (every task gets its own hard and soft time
limit, as a well-run deployment does: the lab's workers run so), CELERYCTL_LAB_UNBOUNDED=1
(also register `sleep_unbounded`, a task with no time limit at all).

TLS (`lab up --tls`): a rediss:// broker URL carries the CA (and client certificate) as
`ssl_*` query parameters, which kombu hands to redis-py. An amqps:// URL cannot (kombu passes
them to py-amqp, which rejects those names): the demo app moves them into `broker_use_ssl`,
in py-amqp's names, as a real deployment configures it.

It imports only the standard library, celery and kombu (redis inside one task; celeryctl's
pure `tls` module for an amqps:// URL only): the lab runs it with older Celery releases from
their own virtualenvs, which hold nothing else.
"""

from __future__ import annotations

import os
import time

from celery import Celery
from celery.app.defaults import DEFAULTS as _KNOWN
from kombu import Queue

app = Celery("celeryctl_lab")

_transport: dict = {}
if os.environ.get("CELERYCTL_LAB_KEYPREFIX"):
    _transport["global_keyprefix"] = os.environ["CELERYCTL_LAB_KEYPREFIX"]
if os.environ.get("CELERYCTL_LAB_MASTER_NAME"):  # behind Redis Sentinel
    _transport["master_name"] = os.environ["CELERYCTL_LAB_MASTER_NAME"]
if os.environ.get("CELERYCTL_LAB_VISIBILITY"):
    _transport["visibility_timeout"] = float(os.environ["CELERYCTL_LAB_VISIBILITY"])

_broker_url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
_broker_use_ssl = None
if _broker_url.startswith(("amqps://", "amqp://", "pyamqp://")) and "ssl_" in _broker_url:
    from urllib.parse import parse_qsl, urlsplit

    from celeryctl.tls import amqp_sslopts, resolve_tls, settings_from_query, strip_tls_query

    _parts = urlsplit(_broker_url)
    _tls = resolve_tls(_parts.scheme, [("URL", settings_from_query(
        parse_qsl(_parts.query), "CELERY_BROKER_URL"))])
    if _tls is not None:
        _broker_use_ssl = amqp_sslopts(_tls, _parts.hostname or "localhost")
        _broker_url = strip_tls_query(_broker_url)
        # Celery reads CELERY_BROKER_URL before broker_url: the stripped URL goes there too
        os.environ["CELERY_BROKER_URL"] = _broker_url

_settings = dict(
    broker_url=_broker_url,
    broker_use_ssl=_broker_use_ssl,
    result_backend=os.environ.get("CELERY_RESULT_BACKEND") or None,
    broker_transport_options=_transport,
    broker_connection_retry_on_startup=(  # Celery >= 5.3
        None if os.environ.get("CELERYCTL_LAB_RISKY") == "1" else True),
    broker_pool_acquire_timeout=None if os.environ.get("CELERYCTL_LAB_RISKY") == "1" else 10,
    broker_pool_limit=1 if os.environ.get("CELERYCTL_LAB_RISKY") == "1" else 10,
    timezone="Europe/Paris" if os.environ.get("CELERYCTL_LAB_RISKY") == "1" else None,
    broker_heartbeat=int(os.environ.get("CELERYCTL_LAB_HEARTBEAT", "120")),
    task_serializer=os.environ.get("CELERYCTL_LAB_SERIALIZER", "json"),
    result_serializer=os.environ.get("CELERYCTL_LAB_RESULT_SERIALIZER", "json"),
    accept_content=os.environ.get("CELERYCTL_LAB_ACCEPT", "json").split(","),
    worker_prefetch_multiplier=int(os.environ.get("CELERYCTL_LAB_PREFETCH", "4")),
    task_acks_late=os.environ.get("CELERYCTL_LAB_ACKS_LATE", "") == "1",
    task_queues=[Queue("celery", routing_key="celery"),
                 Queue("hipri", routing_key="hipri", queue_arguments={"x-max-priority": 10}),
                 Queue("slow", routing_key="slow")],
    task_default_queue="celery",
    task_routes={"celeryctl.lab.demoapp.sleep": {"queue": "slow"}},
    # CELERYCTL_LAB_RESULT_EXPIRES=0: results never expire (the RES005 scenario)
    result_expires=int(os.environ.get("CELERYCTL_LAB_RESULT_EXPIRES", "3600")) or None,
    # CELERYCTL_LAB_TIME_LIMIT: a hard time limit (the CFG005 scenario sets it beyond the
    # visibility timeout)
    task_time_limit=float(os.environ["CELERYCTL_LAB_TIME_LIMIT"])
    if os.environ.get("CELERYCTL_LAB_TIME_LIMIT") else None,
    worker_hijack_root_logger=False,
)
# The lab runs this module under every Celery from 5.2 on (`lab up --celery-versions`): a
# setting this Celery does not know (broker_connection_retry_on_startup before 5.3,
# broker_pool_acquire_timeout before 5.7) is left out rather than set to no effect, so
# `inspect conf` shows what the worker really runs with.
app.conf.update({k: v for k, v in _settings.items() if k in _KNOWN})
if os.environ.get("CELERYCTL_LAB_SETTINGS"):  # any extra settings, as a JSON object
    import json

    app.conf.update(json.loads(os.environ["CELERYCTL_LAB_SETTINGS"]))


# CELERYCTL_LAB_TIME_LIMITS=1: each task's own limits (not the worker's task_time_limit, so
# `inspect conf` stays as it is); below kombu's default visibility_timeout of 3600 s
LIMITS = ({"time_limit": 3000, "soft_time_limit": 2900}
          if os.environ.get("CELERYCTL_LAB_TIME_LIMITS") == "1" else {})


@app.task(name="celeryctl.lab.demoapp.add", **LIMITS)
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="celeryctl.lab.demoapp.sleep", **LIMITS)
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


if os.environ.get("CELERYCTL_LAB_UNBOUNDED") == "1":
    @app.task(name="celeryctl.lab.demoapp.sleep_unbounded", time_limit=None,
              soft_time_limit=None)
    def sleep_unbounded(seconds: float) -> float:
        """A task with no time limit at all (what TSK001 and TSK006 find)."""
        time.sleep(seconds)
        return seconds


_leaked: list = []


@app.task(name="celeryctl.lab.demoapp.leak_connections", **LIMITS)
def leak_connections(n: int) -> int:
    """What buggy task code does: a new client (and connection) per call, never closed."""
    import redis

    for _ in range(n):
        client = redis.Redis.from_url(app.conf.broker_url)
        client.ping()
        _leaked.append(client)
    return len(_leaked)


_grown: list = []


@app.task(name="celeryctl.lab.demoapp.grow_memory", **LIMITS)
def grow_memory(megabytes: int, seconds: float, initial_mb: int = 0) -> int:
    """A leak in slow motion: allocate `initial_mb` at once, then `megabytes` over `seconds`,
    and keep it all."""
    if initial_mb:
        _grown.append(bytearray(initial_mb * 1024 * 1024))
    steps = max(20, int(seconds * 2))  # a step every half second at most
    for _ in range(steps):
        _grown.append(bytearray(megabytes * 1024 * 1024 // steps))
        time.sleep(seconds / steps)
    return len(_grown)


if os.environ.get("CELERYCTL_LAB_OLD_CODE") != "1":  # an "old deploy" lacks this task
    @app.task(name="celeryctl.lab.demoapp.fail", **LIMITS)
    def fail() -> None:
        raise RuntimeError("demo failure")


@app.task(name="celeryctl.lab.demoapp.arg_type", **LIMITS)
def arg_type(value) -> list:
    """What the task received, as the worker's kombu decoded it: [type name, repr]. (kombu
    5.2 decodes the {"__type__": ...} JSON markers of kombu >= 5.3 as plain dicts.)"""
    return [type(value).__name__, repr(value)[:200]]


@app.task(name="celeryctl.lab.demoapp.flaky", bind=True, max_retries=5, **LIMITS)
def flaky(self, retries: int = 1, seconds: float = 0.0) -> int:
    """Sleeps `seconds`, then retries itself (at once) `retries` times and succeeds: one
    task-retried event per retry (the `celeryctl events` tests count them)."""
    time.sleep(seconds)
    if self.request.retries < retries:
        raise self.retry(exc=ValueError(f"flaky attempt {self.request.retries}"), countdown=0)
    return self.request.retries
