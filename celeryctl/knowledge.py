"""Celery naming knowledge (pure): what a queue or key name says about its role.

Sources: celery-internals.md §4.1 (pidbox), §7 (celeryev, rpc and legacy amqp result queues).
"""

from __future__ import annotations

import re

_UUID_DASHED = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def classify_queue(name: str) -> str:
    """task | pidbox | pidbox-reply | events | result-rpc | result-amqp.

    - `<oid>.reply.celery.pidbox`: an inspect/control client's reply queue.
    - `<node>.celery.pidbox`: a worker's remote-control queue.
    - `celeryev.<uuid>`: an event receiver (Flower, `celery events`).
    - `<uuid3 with dashes>`: an rpc:// result backend reply queue (one per client thread).
    - `<32 hex>`: a legacy amqp:// result backend queue (one per task; Celery <= 4).
    """
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
