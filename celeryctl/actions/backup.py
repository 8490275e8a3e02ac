"""Purge backups: JSON Lines, streamed (never a whole queue in memory), read back by restore.

Line 1, the header: `{"celeryctl_backup": 2, "created", "broker" (redacted), "broker_kind",
"vhost", "queues", "planned"}`. Then one line per message, oldest (next to be delivered)
first within each queue. What restore republishes is kept exactly as the broker held it:

- Redis: `{"queue", "bucket", "raw"}` — `raw` is base64 of the exact list entry; restore to
  Redis pushes those bytes unchanged. `bucket` is the priority step (sub-list) it sat in.
  When the entry is a kombu envelope, decoded copies of `content_type`, `content_encoding`,
  `headers`, `priority`, `exchange`, `routing_key` are added for people and tools reading
  the file; restore never uses them.
- RabbitMQ: `{"queue", "bucket": null, "exchange", "routing_key", "body", "body_encoding":
  "base64", "properties"}` — `body` is base64 of the body, `properties` every basic property
  the message had, in the typed JSON of celeryctl/actions/amqpwire.py (floats, decimals,
  bytes, timestamps and integer widths of header values kept; restore re-encodes them to the
  same bytes).

Other lines are not messages:

- control lines: any JSON object with a key `"celeryctl_marker"` (written by purge, e.g.
  `{"celeryctl_marker": "acked", "count": N}`): collected in `BackupFile.markers`;
- the end line: `{"end": true, "count": N, ...}` (extra keys allowed), `BackupFile.end`. A
  file without it was cut short (the purge stopped there). Message lines after an end line
  (files appended to or concatenated) are counted and restored like the others, and reported
  (`BackupFile.after_end`); a second header line is skipped and reported (`notes`).

Format 1 (the same layout, Redis records decoded into `body`, `properties`, ... with unknown
keys lost, RabbitMQ header values as pika gave them) is still read: `read_messages` turns its
records into format 2 ones, as faithfully as the file allows.

A damaged line — not UTF-8, not JSON, not an object, a record without its body, fields of
the wrong type, the torn last line of an interrupted write — does not stop the others:
`inspect_backup` lists it in `BackupFile.bad` as `(line number, why)` and `read_messages`
skips it. Only a file whose first line is not a backup header is refused (BackupError).

API: `inspect_backup(path) -> BackupFile` (one streaming pass, for the plan);
`read_messages(path)` yields `(line_number, record)` for every restorable message, in file
order (the records `inspect_backup` counted); `record_from_redis` / `record_from_amqp` make
records; `BackupWriter` writes the file.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celeryctl.actions import amqpwire

FORMAT = 2
READABLE = (1, 2)

# pika keeps the wire bytes of every content header from now on (record_from_amqp uses them)
amqpwire.install()


class BackupError(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    v = float(text)
    if math.isinf(v):  # 1e400: JSON cannot write it back
        raise ValueError(f"{text} is out of range")
    return v


def _loads(data: str | bytes) -> Any:
    """Strict JSON (no NaN/Infinity); ValueError for anything else that goes wrong."""
    try:
        return json.loads(data, parse_constant=_reject_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _envelope(raw: bytes) -> dict[str, Any] | None:
    """A kombu Redis envelope (a JSON object with a body), else None."""
    try:
        env = _loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return env if isinstance(env, dict) and "body" in env else None


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def record_from_redis(queue: str, bucket: int, raw: bytes) -> dict[str, Any]:
    """A Redis list entry -> a backup record: its exact bytes, plus decoded fields to read."""
    rec: dict[str, Any] = {"queue": queue, "bucket": bucket,
                           "raw": base64.b64encode(raw).decode()}
    env = _envelope(raw)
    if env is not None:
        props = _dict(env.get("properties"))
        info = _dict(props.get("delivery_info"))
        for k, v in (("content_type", env.get("content-type")),
                     ("content_encoding", env.get("content-encoding")),
                     ("headers", env.get("headers")), ("priority", props.get("priority")),
                     ("exchange", info.get("exchange")),
                     ("routing_key", info.get("routing_key"))):
            if v is not None and _strict(v):
                rec[k] = v
    return rec


def _strict(v: Any) -> bool:
    """Writable as strict JSON (1e400 parses as infinity, which JSON cannot hold)."""
    try:
        json.dumps(v, allow_nan=False)
    except ValueError:
        return False
    return True


def record_from_amqp(queue: str, method: Any, props: Any, body: bytes) -> dict[str, Any]:
    """A message from basic_get/consume -> a backup record with every property, typed."""
    wire = getattr(props, "wire", None)
    try:
        p = amqpwire.props_to_json(wire) if wire is not None else amqpwire.props_from_pika(props)
    except ValueError:
        p = amqpwire.props_from_pika(props)
    return {"queue": queue, "bucket": None, "exchange": method.exchange,
            "routing_key": method.routing_key, "body": base64.b64encode(body).decode(),
            "body_encoding": "base64", "properties": p}


@dataclass
class BackupWriter:
    """Opened before anything is deleted: a path that cannot be written stops the purge
    while nothing has changed. `sync()` writes out and fsyncs; callers delete only after it.

    `mark(obj)` writes a control line (`{"celeryctl_marker": ...}`, not a message);
    `offset()` / `truncate_to(offset)` let a purge drop the lines of a queue it put back —
    also when the disk is full: the writer keeps its own buffer (the file is unbuffered), so
    dropping lines never needs to write any first. `finish(**end)` writes the end line only
    after checking that the file on disk holds every byte written (the size seen by fstat)."""

    path: Path
    fh: Any = None  # an unbuffered binary file
    count: int = 0
    size: int = 0  # bytes written, buffered ones included
    on_disk: int = 0  # bytes handed to the kernel
    buf: bytearray = field(default_factory=bytearray)

    BUFFER = 1 << 20

    def open(self, header: dict[str, Any]) -> None:
        try:
            # "x": never overwrite a backup, even one created since the plan was made
            self.fh = open(self.path, "xb", buffering=0)  # noqa: SIM115 - closed in close()
            os.chmod(self.path, 0o600)  # task arguments can be sensitive
            self._line({"celeryctl_backup": FORMAT,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        **header})
            self.sync()
        except OSError as exc:
            raise BackupError(f"cannot write the backup {self.path}: {exc.strerror or exc}"
                              ) from None

    def write(self, rec: dict[str, Any]) -> None:
        self._guarded(rec)
        self.count += 1

    def mark(self, obj: dict[str, Any]) -> None:
        self._guarded({"celeryctl_marker": obj.pop("celeryctl_marker"), **obj})

    def offset(self) -> tuple[int, int]:
        """Where the file ends now, and how many messages it holds."""
        return self.size, self.count

    def truncate_to(self, at: tuple[int, int]) -> None:
        """Drop every line written after `offset()` returned `at` (and fsync). Needs no
        free space: buffered lines are dropped unwritten, written ones cut by ftruncate."""
        assert self.fh is not None
        size, count = at
        if size >= self.on_disk:
            del self.buf[size - self.on_disk:]
        else:
            self.buf.clear()
            try:
                os.ftruncate(self.fh.fileno(), size)
                os.lseek(self.fh.fileno(), size, os.SEEK_SET)
                os.fsync(self.fh.fileno())
            except OSError as exc:
                raise BackupError(f"truncating the backup {self.path} failed: "
                                  f"{exc.strerror or exc}") from None
            self.on_disk = size
        self.size, self.count = size, count

    def sync(self) -> None:
        assert self.fh is not None
        try:
            self._drain()
            os.fsync(self.fh.fileno())
        except OSError as exc:
            raise BackupError(f"writing the backup {self.path} failed: "
                              f"{exc.strerror or exc}") from None

    def verify(self) -> None:
        """Everything written is on disk: the file's size is the bytes written."""
        self.sync()
        assert self.fh is not None
        on_disk = os.fstat(self.fh.fileno()).st_size
        if on_disk != self.size:
            raise BackupError(f"the backup {self.path} holds {on_disk} bytes, {self.size} "
                              f"were written: not complete")

    def finish(self, **end: Any) -> None:
        self.verify()
        self._guarded({"end": True, "count": self.count, **end})
        self.sync()
        self.close()

    def close(self) -> None:
        """Close without writing what is still buffered (a finished file has none)."""
        if self.fh is not None:
            try:
                self.fh.close()
            except OSError:
                pass
            self.fh = None
            self.buf.clear()

    def _drain(self) -> None:
        """Hand the buffer to the kernel; on a short write or an error, what was written
        is accounted for and the rest stays buffered."""
        view = memoryview(self.buf)
        done = 0
        try:
            while done < len(view):
                n = self.fh.write(view[done:])
                done += n or 0
        finally:
            view.release()
            del self.buf[:done]
            self.on_disk += done

    def _guarded(self, obj: dict[str, Any]) -> None:
        try:
            self._line(obj)
        except OSError as exc:
            raise BackupError(f"writing the backup {self.path} failed: "
                              f"{exc.strerror or exc}") from None

    def _line(self, obj: dict[str, Any]) -> None:
        assert self.fh is not None
        # ASCII only (ensure_ascii): a file that survives any tool; str for whatever else
        data = (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()
        self.buf += data
        self.size += len(data)
        if len(self.buf) >= self.BUFFER:
            self._drain()


# --- reading --------------------------------------------------------------------------------

@dataclass
class BackupFile:
    header: dict[str, Any]
    end: dict[str, Any] | None  # the end line, None when the file was cut short
    count: int  # restorable message records (what read_messages yields)
    per_queue: dict[str, int] = field(default_factory=dict)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line, why): not restorable
    markers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    after_end: int = 0  # message records after the end line (counted in `count`)
    end_line: int | None = None  # where the (first) end line is
    lines: int = 0  # lines in the file
    bad_lines: frozenset[int] = frozenset()  # the line numbers of `bad`, for counting
    missing: int = 0  # lines the end line counts that are not in the file
    notes: list[str] = field(default_factory=list)  # other oddities of the file

    @property
    def complete(self) -> bool:
        return self.end is not None

    @property
    def damaged(self) -> bool:
        """Some message of the file cannot be restored (damaged lines, missing lines)."""
        return bool(self.bad) or self.missing > 0

    @property
    def format(self) -> int:
        return int(self.header["celeryctl_backup"])


def inspect_backup(path: Path) -> BackupFile:
    """Read a backup once, streaming, to plan a restore. BackupError: not a backup at all
    (or unreadable); anything else wrong with a line is listed, never raised."""
    info: BackupFile | None = None
    end_line = None
    before_end = 0
    for n, kind, obj in _scan(path):
        if info is None:
            info = BackupFile(header=obj, end=None, count=0)
            continue
        info.lines = n
        if kind == "bad":
            info.bad.append((n, obj))
        elif kind == "marker":
            info.markers.append((n, obj))
        elif kind == "header":
            info.notes.append(f"line {n}: another backup's header (files concatenated?); "
                              f"the messages after it are restored too")
        elif kind == "end":
            if info.end is None:
                info.end, end_line = obj, n
                info.end_line = n
                before_end = info.count + len(info.bad)
            else:
                info.notes.append(f"line {n}: another end line (the first is line {end_line})")
        else:
            info.count += 1
            q = str(obj.get("queue"))
            info.per_queue[q] = info.per_queue.get(q, 0) + 1
            if info.end is not None:
                info.after_end += 1
    if info is None:
        raise BackupError(f"{path} is empty (not a celeryctl backup)")
    info.lines = max(info.lines, 1)
    info.bad_lines = frozenset(n for n, _ in info.bad)
    if info.after_end:
        info.notes.append(f"{info.after_end} message line(s) after the end line (line "
                          f"{end_line}): the file was appended to; they are restored too")
    said = info.end.get("count") if info.end else None
    held = info.count + len(info.bad)  # message lines, intact or not, anywhere in the file
    if isinstance(said, int) and not isinstance(said, bool) and said != before_end:
        info.missing = max(0, said - held)
        info.notes.append(f"the end line says {said} messages were written; the file holds "
                          f"{before_end} message lines before it and {held} in all"
                          + (f": {info.missing} are missing" if info.missing else ""))
    return info


@dataclass
class Skip:
    """Line numbers not to restore: whole ranges (a purge's queue whose messages went back)
    and single lines (RabbitMQ messages found in the queue). Flat in memory."""

    ranges: list[tuple[int, int]] = field(default_factory=list)
    lines: set[int] = field(default_factory=set)

    def __contains__(self, n: int) -> bool:
        return n in self.lines or any(a <= n <= b for a, b in self.ranges)

    def __len__(self) -> int:
        return len(self.lines) + sum(b - a + 1 for a, b in self.ranges)

    def __bool__(self) -> bool:
        return bool(self.lines or self.ranges)


def read_messages(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for every restorable message, in file order; format 1 records
    come out as format 2 ones."""
    for n, kind, obj in _scan(path):
        if kind == "message":
            yield n, obj


def _scan(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(line, kind, value): kind "header" (the first, else BackupError), "message" (a
    format 2 record), "marker", "end", "bad" (value: why)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from None
    fmt = None
    with fh:
        n = 0
        while True:
            try:
                line = fh.readline()
            except OSError as exc:
                raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from None
            if not line:
                break
            n += 1
            torn = not line.endswith(b"\n")
            if not line.strip():
                continue
            obj, why = _parse(line)
            if fmt is None:
                fmt = _header_format(path, obj)
                yield n, "header", obj
                continue
            if why is not None:
                yield n, "bad", ("cut short (the last line is incomplete: an interrupted "
                                 "write)" if torn else why)
            elif "celeryctl_marker" in obj:
                yield n, "marker", obj
            elif "celeryctl_backup" in obj:
                yield n, "header", obj
            elif obj.get("end") is True:
                yield n, "end", obj
            else:
                rec, why = normalize(obj, fmt)
                if why is not None:
                    yield n, "bad", why
                else:
                    yield n, "message", rec


def _parse(line: bytes) -> tuple[Any, str | None]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    try:
        obj = _loads(text)
    except ValueError:
        return None, "not JSON"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    return obj, None


def _header_format(path: Path, obj: Any) -> int:
    v = obj.get("celeryctl_backup") if isinstance(obj, dict) else None
    if v is None or isinstance(v, bool):
        raise BackupError(f"{path} is not a celeryctl backup (its first line is not a backup "
                          f"header)")
    if v not in READABLE:
        raise BackupError(f"{path} is a celeryctl backup of format {v!r}, which this version "
                          f"does not read (it reads {', '.join(map(str, READABLE))})")
    return int(v)


# --- records --------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _b64(v: Any) -> bytes | None:
    if not isinstance(v, str):
        return None
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        return None


def normalize(obj: dict[str, Any], fmt: int) -> tuple[dict[str, Any] | None, str | None]:
    """A record as read -> (a format 2 record, None), or (None, why it cannot be restored)."""
    if not isinstance(obj.get("queue"), str):
        return None, "wrong field types: queue is not a string" if "queue" in obj else \
            "not a message record (no queue)"
    if obj.get("bucket") is not None and not _is_int(obj.get("bucket")):
        return None, "wrong field types: bucket is not an integer"
    for k in ("exchange", "routing_key"):
        if obj.get(k) is not None and not isinstance(obj[k], str):
            return None, f"wrong field types: {k} is not a string"
    if "raw" in obj:
        if _b64(obj["raw"]) is None:
            return None, "wrong field types: raw is not base64"
        return obj, None
    if "body" not in obj:
        return None, "a record missing its body"
    if fmt == 1:
        return _from_format1(obj)
    if obj.get("body_encoding") != "base64" or _b64(obj["body"]) is None:
        return None, "wrong field types: body is not base64"
    try:
        amqpwire.props_from_json(obj.get("properties") or {})
    except amqpwire.WireError as exc:
        return None, f"wrong field types: properties: {exc}"
    return obj, None


def _from_format1(obj: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """Format 1 (decoded kombu envelopes, pika's view of AMQP properties) -> format 2."""
    body, enc = obj["body"], obj.get("body_encoding")
    if enc is not None and not isinstance(enc, str):
        return None, "wrong field types: body_encoding is not a string"
    if enc == "base64" and _b64(body) is None:
        return None, "wrong field types: body is not base64"
    for k, want in (("headers", dict), ("properties", dict), ("content_type", str),
                    ("content_encoding", str)):
        if obj.get(k) is not None and not isinstance(obj[k], want):
            return None, f"wrong field types: {k} is not {'a' if want is str else 'an'} " \
                f"{'string' if want is str else 'object'}"
    if obj.get("priority") is not None and not _is_int(obj["priority"]):
        return None, "wrong field types: priority is not an integer"
    if obj.get("bucket") is not None:  # a Redis envelope: what restore pushed for it
        return {"queue": obj["queue"], "bucket": obj["bucket"],
                "raw": base64.b64encode(_legacy_envelope(obj)).decode()}, None
    if isinstance(body, str):
        data = base64.b64decode(body) if enc == "base64" else body.encode("utf-8",
                                                                          "surrogatepass")
    else:
        data = json.dumps(body).encode()
    props = {k: v for k, v in _dict(obj.get("properties")).items()
             if k in amqpwire.NAMES and v is not None}
    for k in ("content_type", "content_encoding", "headers", "priority"):
        if obj.get(k) is not None:
            props[k] = obj[k]
    try:
        typed = {k: (amqpwire.json_from_python(v) if k == "headers" else v)
                 for k, v in props.items()}
        amqpwire.props_from_json(typed)
    except amqpwire.WireError as exc:
        return None, f"wrong field types: properties: {exc}"
    return {"queue": obj["queue"], "bucket": None, "exchange": obj.get("exchange"),
            "routing_key": obj.get("routing_key"), "body": base64.b64encode(data).decode(),
            "body_encoding": "base64", "properties": typed}, None


def _legacy_envelope(rec: dict[str, Any]) -> bytes:
    """A format 1 Redis record -> the kombu envelope (what format 1's restore pushed)."""
    import uuid

    props = dict(_dict(rec.get("properties")))
    if "body_encoding" not in props and rec.get("body_encoding") == "base64":
        props["body_encoding"] = "base64"
    props.setdefault("delivery_tag", str(uuid.uuid4()))
    props.setdefault("delivery_mode", 2)
    if rec.get("priority") is not None:
        props["priority"] = rec["priority"]
    info = props.get("delivery_info", {})
    if isinstance(info, dict) and "exchange" not in info:  # anything else is kept as it was
        props["delivery_info"] = {**info, "exchange": "", "routing_key": rec["queue"]}
    env = {"body": rec.get("body"), "content-encoding": rec.get("content_encoding"),
           "content-type": rec.get("content_type"), "headers": rec.get("headers") or {},
           "properties": props}
    return json.dumps(env).encode()
