"""Purge backups: JSON Lines, streamed (never a whole queue in memory).

Line 1, the header: `{"celeryctl_backup": 1, "created", "broker" (redacted), "broker_kind",
"vhost", "queues", "planned"}`. Then one line per message, oldest (next to be delivered)
first within each queue:

    {"queue", "bucket", "body", "body_encoding", "content_type", "content_encoding",
     "headers", "properties", "priority", "exchange", "routing_key"}

`bucket` is the Redis priority step the message sat in (None on RabbitMQ); `body` is text as
it was on the broker (kombu's Redis envelope keeps it base64, `body_encoding` says so; AMQP
bodies are base64-encoded here). A Redis list entry that is not a kombu envelope is kept as
`{"queue", "bucket", "raw": base64}`. Last line: `{"end": true, "count": N}` — a file without
it was cut short (the purge stopped there; what it holds is all that was deleted).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

FORMAT = 1


class BackupError(Exception):
    pass


def record_from_redis(queue: str, bucket: int, raw: bytes) -> dict[str, Any]:
    """A kombu Redis envelope -> a backup record (the body is kept as stored, never decoded)."""
    try:
        env = json.loads(raw)
        if not isinstance(env, dict) or "body" not in env:
            raise ValueError("not an envelope")
    except (ValueError, UnicodeDecodeError):
        return {"queue": queue, "bucket": bucket, "raw": base64.b64encode(raw).decode()}
    props = env.get("properties") if isinstance(env.get("properties"), dict) else {}
    info = props.get("delivery_info") if isinstance(props.get("delivery_info"), dict) else {}
    return {"queue": queue, "bucket": bucket, "body": env.get("body"),
            "body_encoding": props.get("body_encoding"),
            "content_type": env.get("content-type"),
            "content_encoding": env.get("content-encoding"),
            "headers": env.get("headers") or {}, "properties": props,
            "priority": props.get("priority"), "exchange": info.get("exchange"),
            "routing_key": info.get("routing_key")}


_AMQP_PROPS = ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
               "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
               "user_id", "app_id")


def record_from_amqp(queue: str, method: Any, props: Any, body: bytes) -> dict[str, Any]:
    p = {k: getattr(props, k, None) for k in _AMQP_PROPS}
    p = {k: v for k, v in p.items() if v is not None}
    return {"queue": queue, "bucket": None, "body": base64.b64encode(body).decode(),
            "body_encoding": "base64", "content_type": p.get("content_type"),
            "content_encoding": p.get("content_encoding"), "headers": p.get("headers") or {},
            "properties": p, "priority": p.get("priority"), "exchange": method.exchange,
            "routing_key": method.routing_key}


def body_bytes(rec: dict[str, Any]) -> bytes:
    body = rec.get("body")
    if body is None:
        return b""
    if rec.get("body_encoding") == "base64":
        return base64.b64decode(body)
    return body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode()


@dataclass
class BackupWriter:
    """Opened before anything is deleted: a path that cannot be written stops the purge
    while nothing has changed. `sync()` flushes and fsyncs; callers delete only after it.

    `mark(obj)` writes a control line (`{"celeryctl_marker": ...}`, not a message);
    `offset()` / `truncate_to(offset, count)` let a purge drop the lines of a queue it put
    back. `finish(**end)` writes the end line only after checking that the file on disk
    holds every byte written (the size seen by fstat)."""

    path: Path
    fh: IO[bytes] | None = None
    count: int = 0
    size: int = 0

    def open(self, header: dict[str, Any]) -> None:
        try:
            # "x": never overwrite a backup, even one created since the plan was made
            self.fh = open(self.path, "xb")  # noqa: SIM115 - closed in close()
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
        """Drop every line written after `offset()` returned `at` (and fsync)."""
        assert self.fh is not None
        try:
            self.fh.flush()
            self.fh.truncate(at[0])
            self.fh.seek(at[0])
            os.fsync(self.fh.fileno())
        except OSError as exc:
            raise BackupError(f"truncating the backup {self.path} failed: "
                              f"{exc.strerror or exc}") from None
        self.size, self.count = at

    def sync(self) -> None:
        assert self.fh is not None
        try:
            self.fh.flush()
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
        if self.fh is not None:
            try:
                self.fh.close()
            except OSError:
                pass
            self.fh = None

    def _guarded(self, obj: dict[str, Any]) -> None:
        try:
            self._line(obj)
        except OSError as exc:
            raise BackupError(f"writing the backup {self.path} failed: "
                              f"{exc.strerror or exc}") from None

    def _line(self, obj: dict[str, Any]) -> None:
        assert self.fh is not None
        data = (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()
        self.fh.write(data)
        self.size += len(data)


@dataclass
class BackupFile:
    header: dict[str, Any]
    complete: bool
    count: int  # message lines
    per_queue: dict[str, int] = field(default_factory=dict)


def inspect_backup(path: Path) -> BackupFile:
    """Read a backup once, streaming, to plan a restore (and reject what is not one)."""
    header: dict[str, Any] | None = None
    complete, count, per_queue = False, 0, {}
    for obj in _lines(path):
        if header is None:
            if not isinstance(obj, dict) or obj.get("celeryctl_backup") != FORMAT:
                raise BackupError(f"{path} is not a celeryctl backup (no header line)")
            header = obj
        elif obj.get("end") is True:
            complete = True
        elif "celeryctl_marker" not in obj:
            count += 1
            q = str(obj.get("queue"))
            per_queue[q] = per_queue.get(q, 0) + 1
    if header is None:
        raise BackupError(f"{path} is empty")
    return BackupFile(header, complete, count, per_queue)


def read_messages(path: Path, skip: Skip | None = None) -> Iterator[dict[str, Any]]:
    for n, obj in enumerate(_lines(path), 1):
        if n == 1:
            continue
        if obj.get("end") is True:
            return
        if "celeryctl_marker" not in obj and not (skip and n in skip):
            yield obj


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


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise BackupError(f"{path}:{n}: not JSON (a damaged backup?)") from None
            if not isinstance(obj, dict):
                raise BackupError(f"{path}:{n}: not a JSON object")
            yield obj
