"""Celery naming knowledge (pure): what a queue or key name says about its role.

Sources: celery-internals.md §4.1 (pidbox), §7 (celeryev, rpc and legacy amqp result queues).
"""

from __future__ import annotations

import re

_UUID_DASHED = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def classify_queue(name: str) -> str:
    """task | pidbox | pidbox-reply | events | result-rpc | result-amqp | celeryctl.

    - `<oid>.reply.celery.pidbox`: an inspect/control client's reply queue.
    - `<node>.celery.pidbox`: a worker's remote-control queue.
    - `celeryev.<uuid>`: an event receiver (Flower, `celery events`).
    - `<uuid3 with dashes>`: an rpc:// result backend reply queue (one per client thread).
    - `<32 hex>`: a legacy amqp:// result backend queue (one per task; Celery <= 4).
    - `celeryctl.restore.<id>`: where `celeryctl restore` records its progress (RabbitMQ).
    """
    if name.startswith("celeryctl.restore."):
        return "celeryctl"
    if name.endswith(".reply.celery.pidbox") or (".reply." in name and name.endswith(".pidbox")):
        return "pidbox-reply"
    if name.endswith(".pidbox"):
        return "pidbox"
    if name.startswith("celeryev."):
        return "events"
    if _UUID_DASHED.match(name):
        return "result-rpc"
    if _HEX32.match(name):
        return "result-amqp"
    return "task"


def node_host(node: str) -> str:
    """`celery@web-1.example` -> `web-1.example` (the part Celery puts after the @)."""
    return node.split("@", 1)[1] if "@" in node else node


# --- RabbitMQ version facts (pure). Sources: rabbitmq-server tags v3.10.8 .. v4.2.9, see
# docs/compatibility.md. ---------------------------------------------------------------

RABBIT_STATS_DISABLED = ("statistics disabled on the server (management.disable_stats or "
                         "management_agent.disable_metrics_collector)")
RABBIT_RATES_OFF = "message rates disabled on the server (management.rates_mode = none)"


def rabbit_version(text: str | None) -> tuple[int, int] | None:
    """'3.13.7' / '4.1.0-rc.1' -> (3, 13); None when unknown or unparsable."""
    m = re.match(r"^(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _policy_arg(arguments: dict | None, policy: dict | None, key: str):
    """RabbitMQ's `args_policy_lookup`: (policy value, `x-` argument value), each None when
    unset or not an integer."""
    def num(v):
        return v if isinstance(v, int) and not isinstance(v, bool) else None
    return num((policy or {}).get(key)), num((arguments or {}).get(f"x-{key}"))


def queue_consumer_timeout_ms(arguments: dict | None, policy: dict | None,
                              version: tuple[int, int] | None) -> int | None:
    """A queue's own delivery-acknowledgement timeout, or None when it has none (the node's
    `consumer_timeout` applies) or the server predates it. 3.12+: the smaller of the
    `consumer-timeout` policy key and the `x-consumer-timeout` argument
    (rabbit_channel.erl:get_queue_consumer_timeout -> rabbit_queue_type_util:
    args_policy_lookup with erlang:min; consumers.md "Starting with RabbitMQ 3.12");
    3.10 and 3.11 ignore both."""
    if version is None or version < (3, 12):
        return None
    pol, arg = _policy_arg(arguments, policy, "consumer-timeout")
    values = [v for v in (pol, arg) if v is not None]
    return min(values) if values else None


def quorum_delivery_limit(arguments: dict | None, policy: dict | None,
                          version: tuple[int, int] | None) -> int | None:
    """A quorum queue's delivery limit, or None when it has none (or, unset, the version is
    unknown). Policy
    `delivery-limit` and argument `x-delivery-limit`: the smaller, unless either is negative
    (then the larger; a negative result disables the limit). Unset: 20 from 4.0 on
    (rabbit_quorum_queue.erl ?DEFAULT_DELIVERY_LIMIT, resolve_delivery_limit/2; release notes
    4.0.1 "Quorum Queues Now Have a Default Redelivery Limit"), no limit before."""
    pol, arg = _policy_arg(arguments, policy, "delivery-limit")
    if pol is not None and arg is not None:
        limit = max(pol, arg) if pol < 0 or arg < 0 else min(pol, arg)
    else:
        limit = pol if pol is not None else arg
    if limit is None:
        return 20 if version is not None and version >= (4, 0) else None
    return limit if limit >= 0 else None
