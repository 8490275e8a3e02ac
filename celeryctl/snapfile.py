"""Incident snapshots: everything doctor collected, as one versioned JSON document that can be
shared, diagnosed offline (`doctor --from FILE`) and compared (`snapshot diff A B`).

    {"schema": "celeryctl-snapshot/1", "tool_version", "taken_at", "collection_seconds",
     "broker_kind", "broker_hosts", "target", "sources": [... elapsed per source ...],
     "redaction": {"args": "redacted" | "included"}, "parts": {name: Observed}}

Redacted by default (`redact_document`), on the document as written, whatever the source:
- every URL's password (`scheme://user:PASSWORD@host`, `redis://PASSWORD@host`) and every
  secret this process has seen (SECRETS: from the URLs it was given);
- settings whose name looks secret (Celery's own rule: API, TOKEN, KEY, SECRET, PASS,
  SIGNATURE, DATABASE) in the workers' `conf` replies and the app's settings — Celery censors
  its own reply, but not a custom setting holding a URL, nor an older worker's;
- task arguments (`args`, `kwargs`, `argsrepr`, `kwargsrepr` in active/reserved/scheduled
  replies) unless `--include-args`.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import re
import time
from pathlib import Path
from typing import Any

from celeryctl.snapshot import (
    BackendStatus,
    Connection,
    MessageSample,
    Observed,
    QueueDepth,
    QueueGrowth,
    RabbitServer,
    RedisInFlight,
    RedisServer,
    RedisUnacked,
    Snapshot,
    SourceStatus,
    WorkerNode,
    WorkersView,
    to_jsonable,
)
from celeryctl.tasks import TaskRow

SCHEMA = "celeryctl-snapshot/1"
MASK = "********"
ARGS_MARKER = "[redacted: pass --include-args to keep task arguments]"
SECRET_NAME = re.compile(r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|DATABASE", re.IGNORECASE)
# a URL's userinfo: everything from `scheme://` to the last `@` before the next URL or white
# space (as celeryctl.urls.redact cuts it), so a password holding `/`, `?`, `#` or `@` is
# masked whole
URL_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)((?:(?![a-z][a-z0-9+.-]*://)\S)*)@",
                          re.IGNORECASE)
ARG_KEYS = {"args", "kwargs", "argsrepr", "kwargsrepr"}
# settings that name things and never hold secrets, though their names match SECRET_NAME
NOT_SECRET = {"routing_key", "task_default_routing_key", "global_keyprefix", "keyprefix"}

PART_TYPES: dict[str, Any] = {
    "workers": WorkersView, "queues": [QueueDepth], "connections": [Connection],
    "redis_server": RedisServer, "redis_unacked": RedisUnacked, "rabbit_server": RabbitServer,
    "backend": BackendStatus, "samples": {str: [MessageSample]}, "growth": {str: QueueGrowth},
    "rss_growth": {str: tuple},  # node -> (peak RSS before, after, recycling)
    "redis_inflight": RedisInFlight, "tasks": [TaskRow],  # the task view (celeryctl.tasks)
}


# without these doctor cannot say "all clear" (checks.ESSENTIAL)
ESSENTIAL_PARTS = ("broker", "workers", "queues")


class SnapshotError(ValueError):
    """Not a celeryctl snapshot, or one this version cannot read."""


# --- writing -----------------------------------------------------------------------------

def snapshot_document(snap: Snapshot, *, tool_version: str, collection_seconds: float,
                      include_args: bool = False) -> dict[str, Any]:
    doc = {
        "schema": SCHEMA, "tool_version": tool_version,
        "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(snap.taken_at)),
        "taken_at_epoch": snap.taken_at, "collection_seconds": round(collection_seconds, 3),
        "broker_kind": snap.broker_kind, "broker_hosts": list(snap.broker_hosts),
        "target": snap.target, "sources": [s.to_dict() for s in snap.sources],
        "redaction": {"passwords": "redacted", "secret_settings": "redacted",
                      "args": "included" if include_args else "redacted"},
        "parts": {name: to_jsonable(obs) for name, obs in snap.parts.items()},
    }
    return redact_document(doc, include_args=include_args)


def redact_document(obj: Any, *, include_args: bool = False, settings: bool = False) -> Any:
    """`settings`: inside a workers' `conf` reply or the app's settings, where a setting whose
    name looks secret is masked whatever its value."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            ks = str(k)
            if not include_args and ks in ARG_KEYS and v not in (None, "", [], {}):
                out[ks] = ARGS_MARKER
            elif (settings and ks not in NOT_SECRET and SECRET_NAME.search(ks)
                  and isinstance(v, str) and v):
                out[ks] = MASK
            else:
                out[ks] = redact_document(v, include_args=include_args,
                                          settings=settings or ks in ("conf", "app"))
        return out
    if isinstance(obj, list):
        return [redact_document(v, include_args=include_args, settings=settings) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def redact_text(text: str) -> str:
    from celeryctl.urls import SECRETS

    return SECRETS.scrub(URL_USERINFO.sub(_mask_userinfo, text))


def _mask_userinfo(m: re.Match) -> str:
    scheme, userinfo = m.group(1), m.group(2)
    user, colon, password = userinfo.partition(":")
    if not userinfo or userinfo == MASK or password == MASK:
        return m.group(0)
    if colon and not any(c in userinfo for c in "/?#;,\"'"):
        return f"{scheme}{user}:{MASK}@"
    if not colon and scheme.lower().rstrip("/:") in ("amqp", "amqps", "pyamqp", "http",
                                                      "https"):
        return m.group(0)  # a user name alone: no password there
    return f"{scheme}{MASK}@"


def write_snapshot(doc: dict[str, Any], path: Path) -> int:
    """Write (gzip when the name ends in .gz), mode 0600, never over an existing file.
    Returns the bytes written."""
    import os

    from celeryctl.render.jsonout import dumps

    data = dumps(doc, indent=1).encode("utf-8")  # strict: no NaN/Infinity
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return len(data)


# --- reading -----------------------------------------------------------------------------

def read_snapshot(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"{path}: {exc.strerror or exc}") from None
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        doc = json.loads(raw)
    except (OSError, ValueError, EOFError, RecursionError) as exc:
        raise SnapshotError(f"{path}: not a celeryctl snapshot ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith(
            "celeryctl-snapshot/"):
        raise SnapshotError(f"{path}: not a celeryctl snapshot (no schema line)")
    if doc["schema"] != SCHEMA:
        raise SnapshotError(f"{path}: snapshot schema {doc['schema']} is not {SCHEMA}: "
                            f"written by a newer celeryctl?")
    try:
        validate_document(doc)
    except RecursionError:
        raise SnapshotError(f"{path}: not a valid {SCHEMA} document: nested too deeply"
                            ) from None
    except SnapshotError as exc:
        raise SnapshotError(f"{path}: not a valid {SCHEMA} document: {exc}") from None
    return doc


# --- validation ----------------------------------------------------------------------------
# Structural, from the dataclasses' own annotations (celeryctl/snapshot.py), so the file and the
# code cannot drift apart: every field present has its type; fields without a default are
# required. Unknown keys are ignored (as load_snapshot ignores them).

@dataclasses.dataclass
class _EvException:  # events part: tasks[].exceptions[] (celeryctl/events/agg.py)
    type: str
    count: int
    example: str | None = None


@dataclasses.dataclass
class _EvUnfinished:
    id: str
    worker: str | None = None
    age_seconds: float | None = None


@dataclasses.dataclass
class _EvTask:
    name: str
    received: int = 0
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    rejected: int = 0
    revoked: int = 0
    failure_ratio: float | None = None
    retry_ratio: float | None = None
    exceptions: list[_EvException] | None = None
    unfinished_count: int | None = None
    unfinished: list[_EvUnfinished] | None = None


@dataclasses.dataclass
class _EvWorker:
    name: str
    heartbeats: int | None = None
    heartbeat_freq_seconds: float | None = None
    heartbeat_age_seconds: float | None = None
    heartbeat_late: bool | None = None
    clock_drift_seconds: float | None = None
    event_delay_max_seconds: float | None = None
    events_were_enabled: bool | None = None
    restored: bool | None = None


@dataclasses.dataclass
class _EvWindow:  # the `events` part: a `doctor --events` window's summary
    window_seconds: float
    tasks: list[_EvTask]
    workers: list[_EvWorker]
    notes: list[str] | None = None


@dataclasses.dataclass
class _EvSender:
    worker: str
    why: str | None = None


@dataclasses.dataclass
class _EvConsumers:  # the `event_consumers` part (collect/doctor.py)
    senders: list[_EvSender]
    consumers: list[str] | None = None
    unknown: str | None = None
    maybe: list[str] | None = None  # may consume events: cannot be attributed (EVT005 skips)


# parts whose value is not a dataclass (validation only; load_snapshot keeps them as they are)
PLAIN_PARTS: dict[str, Any] = {
    "broker": bool, "app": dict[str, Any], "redis_info": dict[str, Any],
    "redis_config": dict[str, Any], "sentinel": dict[str, Any],
    "events": _EvWindow, "event_consumers": _EvConsumers,
}
@dataclasses.dataclass
class _Source:  # a source as written by SourceStatus.to_dict
    name: str
    url: str | None = None
    ok: bool | None = None
    state: str | None = None
    error: str | None = None
    elapsed_seconds: float | None = None
    detail: str | None = None
    partial: list[str] | None = None


TOP_FIELDS: dict[str, Any] = {
    "schema": str, "tool_version": str | None, "taken_at": str | None,
    "taken_at_epoch": float | None, "collection_seconds": float | None,
    "broker_kind": str, "broker_hosts": list[str] | None, "target": dict[str, Any] | None,
    "sources": list[_Source] | None, "redaction": dict[str, Any] | None,
    "parts": dict[str, Any] | None,
}
OBSERVED_FIELDS: dict[str, Any] = {
    "error": str | None, "source": str | None, "elapsed_seconds": float | None,
    "notes": list[str] | None, "kind": str | None, "partial": str | None, "ok": bool | None,
}
BROKER_KINDS = ("redis", "amqp")


class _Mismatch(Exception):
    def __init__(self, path: str, expected: str, value: Any, *, missing: bool = False) -> None:
        super().__init__(f"{path}: missing (expected {expected})" if missing
                         else f"{path}: expected {expected}, got {_show(value)}")


def validate_document(doc: Any) -> None:
    """Raise SnapshotError naming the first field with the wrong type, e.g.
    `snapshot.parts.queues[3].ready: expected an integer or null, got "abc"`."""
    try:
        _check_fields(doc, TOP_FIELDS, "snapshot", required=("schema",))
        if doc.get("broker_kind") is not None and doc["broker_kind"] not in BROKER_KINDS:
            raise _Mismatch("snapshot.broker_kind", "redis or amqp", doc["broker_kind"])
        for name, obs in (doc.get("parts") or {}).items():
            where = f"snapshot.parts{_key(name)}"
            _check_fields(obs, OBSERVED_FIELDS, where)
            kind = PART_TYPES.get(name, PLAIN_PARTS.get(name))
            if obs.get("value") is not None and kind is not None:
                _check(obs["value"], _hint_of(kind), f"{where}.value")
    except _Mismatch as exc:
        raise SnapshotError(str(exc)) from None


def _hint_of(kind: Any) -> Any:
    """PART_TYPES' shorthand ([T], {str: T}, tuple) as a type hint."""
    if isinstance(kind, list):
        return list[_hint_of(kind[0])]  # type: ignore[misc]
    if isinstance(kind, dict):
        ((_, v),) = kind.items()
        return dict[str, _hint_of(v)]  # type: ignore[misc]
    return kind


def _key(name: Any) -> str:
    name = str(name)
    return f".{name}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else f"[{_show(name)}]"


def _show(value: Any) -> str:
    """A value in a message: JSON (escapes control characters), cut short."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_fields(obj: Any, fields: dict[str, Any], path: str,
                  required: tuple[str, ...] = ()) -> None:
    if not isinstance(obj, dict):
        raise _Mismatch(path, "an object", obj)
    for name in required:
        if name not in obj:
            raise _Mismatch(f"{path}{_key(name)}", _describe(fields[name]), None, missing=True)
    for name, hint in fields.items():
        if name in obj:
            _check(obj[name], hint, f"{path}{_key(name)}")


@functools.cache
def _hints(cls: Any) -> tuple[tuple[str, Any, bool], ...]:
    """(field, type hint, required) of a dataclass, resolved once (a snapshot can hold
    10,000 queues)."""
    import typing

    hints = typing.get_type_hints(cls)  # resolved in the dataclass's own module
    return tuple((f.name, hints[f.name], f.default is dataclasses.MISSING
                  and f.default_factory is dataclasses.MISSING)  # type: ignore[misc]
                 for f in dataclasses.fields(cls))


def _describe(hint: Any) -> str:
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null", list: "an array", tuple: "an array", dict: "an object"}.get(
        origin or hint, "an object")


def _check(value: Any, hint: Any, path: str, in_dataclass: bool = False) -> None:
    import types
    import typing

    if hint is Any:
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:  # Optional[X]: X's own (deeper) message
            try:
                _check(value, rest[0], path)
            except _Mismatch as exc:
                if str(exc).startswith(f"{path}: "):
                    raise _Mismatch(path, _describe(hint), value) from None
                raise
            return
        for a in rest:
            try:
                _check(value, a, path)
                return
            except _Mismatch:
                continue
        raise _Mismatch(path, _describe(hint), value)
    if hint is type(None):
        if value is not None:
            raise _Mismatch(path, "null", value)
    elif hint is bool:
        if not isinstance(value, bool):
            raise _Mismatch(path, "true or false", value)
    elif hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (
                isinstance(value, float) and value.is_integer())):
            raise _Mismatch(path, "an integer", value)
    elif hint is float:
        # Infinity is a number: snapshots written before issue 12 may hold one (an age from
        # a Redis score of -inf); what celeryctl prints from them is strict all the same
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _Mismatch(path, "a number", value)
    elif hint is str:
        if not isinstance(value, str):
            raise _Mismatch(path, "a string", value)
    elif value is None and in_dataclass and (hint in (list, tuple, dict)
                                              or origin in (list, tuple, dict)):
        return  # collectors write null for a collection they could not read (effective_policy)
    elif hint in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, list):
            raise _Mismatch(path, "an array", value)
        item = args[0] if args and (origin is list or args[-1] is Ellipsis) else Any
        for i, v in enumerate(value):
            _check(v, item, f"{path}[{i}]")
    elif hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch(path, "an object", value)
        item = args[1] if args else Any
        for k, v in value.items():
            _check(v, item, f"{path}{_key(k)}")
    elif dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _Mismatch(path, "an object", value)
        for name, field_hint, required in _hints(hint):
            if name in value:
                _check(value[name], field_hint, f"{path}{_key(name)}", in_dataclass=True)
            elif required:
                raise _Mismatch(f"{path}{_key(name)}", _describe(field_hint), None,
                                missing=True)
    elif isinstance(hint, typing.TypeVar):
        return
    else:  # pragma: no cover - a type this validator does not know: accept
        return


def load_snapshot(doc: dict[str, Any]) -> Snapshot:
    """The Snapshot the checks read, rebuilt from a document."""
    parts = {}
    for name, raw in (doc.get("parts") or {}).items():
        parts[name] = _observed(raw, PART_TYPES.get(name))
    for name in ESSENTIAL_PARTS:
        # a file without them is an incomplete diagnosis (doctor: INCOMPLETE, exit 3), never
        # an all-clear
        parts.setdefault(name, Observed(error="not in the snapshot file", kind="not collected"))
    sources = [SourceStatus(**{k: s.get(k) for k in ("name", "url", "ok", "error", "detail")},
                            elapsed_seconds=float(s.get("elapsed_seconds") or 0.0),
                            kind=s.get("state") if s.get("ok") is not True else None,
                            partial=tuple(s.get("partial") or ()))
               for s in doc.get("sources") or []]
    return Snapshot(broker_kind=doc.get("broker_kind", "redis"), target=doc.get("target") or {},
                    parts=parts, sources=sources,
                    taken_at=float(doc.get("taken_at_epoch") or 0.0),
                    broker_hosts=tuple(doc.get("broker_hosts") or ()))


def _observed(raw: dict[str, Any], kind: Any) -> Observed:
    value = raw.get("value")
    if raw.get("error") is None and value is not None:
        value = _build(value, kind)
    return Observed(value=value, error=raw.get("error"), source=raw.get("source") or "",
                    elapsed_seconds=float(raw.get("elapsed_seconds") or 0.0),
                    notes=tuple(raw.get("notes") or ()), kind=raw.get("kind"),
                    partial=raw.get("partial"))


def _build(value: Any, kind: Any) -> Any:
    if kind is None:
        return value
    if kind is tuple:
        return tuple(value)
    if isinstance(kind, list):
        return [_build(v, kind[0]) for v in value]
    if isinstance(kind, dict):
        (vk,) = kind.values()
        return {k: _build(v, vk) for k, v in value.items()}
    if kind is RedisInFlight:
        from celeryctl.snapshot import InFlightMessage

        msgs = tuple(_dataclass(InFlightMessage, m) for m in value.get("messages") or ())
        return _dataclass(RedisInFlight, {**value, "messages": msgs})
    if kind is WorkersView:
        nodes = tuple(WorkerNode(name=n["name"], replies=n.get("replies") or {},
                                 undecodable=tuple(n.get("undecodable") or ()))
                      for n in value.get("nodes") or ())
        return _dataclass(WorkersView, {**value, "nodes": nodes})
    return _dataclass(kind, value)


def _dataclass(cls, value: dict[str, Any]):
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in value:
            continue
        v = value[f.name]
        if isinstance(v, list) and str(f.type).startswith("tuple"):
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


def open_snapshot(path: str) -> tuple[dict[str, Any], Snapshot]:
    """The snapshot in FILE — the document and the loaded Snapshot — for `--from FILE` and
    `snapshot diff`: read, validated, loaded; a file that is no celeryctl snapshot is a usage
    error naming what is wrong (64)."""
    from celeryctl.status import UsageError

    try:
        doc = read_snapshot(Path(path).expanduser())
    except SnapshotError as exc:
        raise UsageError(str(exc)) from None
    return doc, load_snapshot(doc)
