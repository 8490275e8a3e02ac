"""`celeryctl connections kill`: close stale broker connections, never a live consumer.

plan_kill (pure) picks the connections the filters match and sets aside the ones it protects:

- a Redis client blocked in BRPOP (a worker's task consumer) or subscribed to pub/sub (its
  remote control and events), replication links and Redis Sentinel's links;
- a RabbitMQ connection with consumers on its channels, or whose consumers are unknown;
- this celeryctl's own connection; a connection whose idle time is not known (RabbitMQ:
  no channel) is not "idle over" anything.

A protected connection is closed only when named explicitly: `--address` equal to its exact
`host:port`, or `--name` equal to its exact client name (no wildcard). Right before acting, the
plan is checked again against a fresh listing (`still_selected`): a connection that became a
consumer, woke up, or went away in the meantime is left alone. `close_redis`/`close_rabbit`
act; `kill_rows` (pure) judges each from the listing taken afterwards.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from celeryctl.snapshot import Connection

PROTECTED_REDIS_ROLES = {
    "consumer": "a live consumer (blocked in BRPOP)",
    "pubsub": "subscribed to pub/sub (a worker's remote control or events)",
    "replication": "a replication link",
    "sentinel": "a Redis Sentinel link (its monitoring and failover)",
}
WILDCARDS = set("*?[")


@dataclass(frozen=True)
class KillFilters:
    idle_over: float | None = None
    addresses: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.idle_over is None and not self.addresses and not self.names


@dataclass(frozen=True)
class KillPlan:
    selected: list[Connection]
    protected: list[tuple[Connection, str]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [c.address for c in self.selected]


def _address_matches(conn: Connection, wanted: str) -> bool:
    """`host:port` exactly, or a bare host (every port of it)."""
    if wanted == conn.address:
        return True
    host = conn.address.rsplit(":", 1)[0]
    return wanted.strip("[]") == host.strip("[]")


def _named_explicitly(conn: Connection, f: KillFilters) -> bool:
    return conn.address in f.addresses or bool(
        conn.name and any(n == conn.name and not (set(n) & WILDCARDS) for n in f.names))


def _protection(conn: Connection) -> str | None:
    if conn.role == "celeryctl":
        return "this celeryctl's own connection"
    if conn.broker == "redis":
        return PROTECTED_REDIS_ROLES.get(conn.role or "")
    if conn.consumers is None:
        return "its consumers are unknown (the management API did not list them)"
    if conn.consumers:
        return f"a live consumer ({conn.consumers} consumer(s) on its channels)"
    return None


def matches(conn: Connection, f: KillFilters) -> bool:
    if f.addresses and not any(_address_matches(conn, a) for a in f.addresses):
        return False
    if f.names and not (conn.name and any(fnmatch.fnmatchcase(conn.name, n) for n in f.names)):
        return False
    if f.idle_over is not None:
        return conn.idle_seconds is not None and conn.idle_seconds >= f.idle_over
    return True


def _order(c: Connection) -> tuple:
    host, _, port = c.address.rpartition(":")
    return (c.worker is None, c.worker or "", host, int(port) if port.isdigit() else -1,
            c.address)


def plan_kill(conns: list[Connection], f: KillFilters) -> KillPlan:
    if f.empty:
        return KillPlan([], refusals=["say which connections: --idle-over SECONDS, "
                                      "--address HOST[:PORT] or --name NAME"])
    selected, protected = [], []
    for c in sorted(conns, key=_order):  # the same order every run: worker, then address
        if not matches(c, f):
            continue
        why = _protection(c)
        if c.role == "celeryctl":
            protected.append((c, why))
        elif why and not _named_explicitly(c, f):
            protected.append((c, why + "; name it with --address " + c.address
                              + " to close it anyway"))
        else:
            selected.append(c)
    return KillPlan(selected, protected)


def still_selected(plan: KillPlan, now: list[Connection], f: KillFilters) -> tuple[
        list[Connection], list[tuple[Connection, str]]]:
    """The planned connections that the fresh listing `now` still selects (same id), and the
    ones to leave alone with the reason (gone, no longer idle, became a consumer)."""
    fresh = {c.id: c for c in plan_kill(now, f).selected}
    present = {c.id for c in now}
    go, left = [], []
    for c in plan.selected:
        if c.id in fresh:
            go.append(fresh[c.id])
        elif c.id not in present:
            left.append((c, "already closed"))
        else:
            left.append((c, "changed since the plan (active again, or now a consumer): left "
                            "open"))
    return go, left


# --- acting: close, then judge from a fresh listing ------------------------------------------

def close_redis(client, conns: list[Connection]) -> dict[str, str]:
    """`CLIENT KILL ID` each; returns id -> error for those not closed by this call."""
    errors: dict[str, str] = {}
    for x in conns:
        try:
            if not client.execute_command("CLIENT KILL", "ID", x.id):
                errors[x.id or ""] = "already closed"
        except Exception as exc:  # noqa: BLE001 - report, keep going
            errors[x.id or ""] = str(exc)
    return errors


def close_rabbit(api, conns: list[Connection]) -> dict[str, str]:
    """Management API `DELETE /api/connections/NAME` each, with an `X-Reason` the client sees;
    returns name -> error for those it refused."""
    from urllib.parse import quote

    from celeryctl.collect.rabbitmq import ManagementError

    errors: dict[str, str] = {}
    for x in conns:
        idle = f"idle {x.idle_seconds:.0f} s" if x.idle_seconds is not None else "named"
        try:
            api.delete(f"/connections/{quote(x.id or '', safe='')}",
                       headers={"X-Reason": f"closed by celeryctl connections kill ({idle})"})
        except ManagementError as exc:
            errors[x.id or ""] = str(exc)
    return errors


def closing_ids(after: list[Connection]) -> set[str]:
    """RabbitMQ keeps a connection "closing" until the client answers close-ok: a client that
    does no I/O (a leak) never does, and the broker has closed it all the same."""
    return {x.id or "" for x in after if x.state in ("closing", "closed")}


def still_open(go: list[Connection], after: list[Connection]) -> bool:
    listed = {x.id for x in after} - closing_ids(after)
    return any(x.id in listed for x in go)


def kill_rows(go: list[Connection], left: list[tuple[Connection, str]],
              errors: dict[str, str], after: list[Connection]) -> list[dict[str, Any]]:
    """One row per planned connection: left open (and why), closed, or the error."""
    rows = [{"address": x.address, "id": x.id, "result": "left open: " + why}
            for x, why in left]
    listed, closing = {x.id for x in after}, closing_ids(after)
    for x in go:
        err = errors.get(x.id or "")
        if err and err != "already closed":
            result = f"error: {err}"
        elif x.id in closing:
            result = "closed (closing: the client has not acknowledged)"
        elif x.id in listed:
            result = "error: still listed after closing"
        else:
            result = "closed"
        rows.append({"address": x.address, "id": x.id, "result": result})
    return rows
