"""`celeryctl events`: turn task events on only where they are off, and put them back.

    ping the workers -> state file (phase "enabling", the candidates) -> enable_events to the
    candidates -> state file (phase "enabled", exactly the workers that answered "task events
    enabled") -> the window -> disable_events to exactly those -> state file removed

Celery's `enable_events` says what it found: "task events enabled" (they were off: this run
turned them on and must turn them off) or "task events already enabled" (a worker started with
-E, or Flower turned them on: left alone). `disable_events` answers "task events disabled" or
"task events already disabled" (someone else did it: fine too).

The state file (`$XDG_STATE_HOME/celeryctl/events/<pid>.json`, like the audit log) holds the
broker (redacted: no password), the host and pid of the run, when it started, and the workers
it enabled. It is written before anything is enabled and removed once every one is restored.
A run killed with -9 leaves it; the next `celeryctl events` on the same broker (or
`events --restore`) finishes that run's job — only once its pid is dead on this host. A file
left in phase "enabling" (killed between sending enable_events and reading the replies) cannot
tell which workers it turned on: it is reported with the candidates, never acted on blindly.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENABLED = "task events enabled"
ALREADY = "task events already enabled"
DISABLED = "task events disabled"
ALREADY_OFF = "task events already disabled"


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "celeryctl" / "events"


@dataclass
class RunState:
    broker: str                 # redacted
    vhost: str | None
    pid: int
    host: str
    started: str
    phase: str                  # "enabling" | "enabled"
    candidates: list[str] = field(default_factory=list)
    enabled: list[str] = field(default_factory=list)
    path: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {"schema": 1, "broker": self.broker, "vhost": self.vhost, "pid": self.pid,
                "host": self.host, "started": self.started, "phase": self.phase,
                "candidates": self.candidates, "enabled": self.enabled}


def new_state(broker_redacted: str, vhost: str | None, candidates: list[str]) -> RunState:
    return RunState(broker=broker_redacted, vhost=vhost, pid=os.getpid(),
                    host=socket.gethostname(),
                    started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    phase="enabling", candidates=sorted(candidates))


def write_state(st: RunState, directory: Path | None = None) -> Path:
    """Atomically (temp file + rename), mode 0600. Raises OSError: the caller must not
    enable anything it could not record."""
    d = directory or state_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = st.path or d / f"{st.pid}.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(st.to_json(), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    st.path = path
    return path


def remove_state(st: RunState) -> None:
    if st.path is not None:
        try:
            st.path.unlink()
        except FileNotFoundError:
            pass


def read_states(directory: Path | None = None) -> list[RunState]:
    d = directory or state_dir()
    out = []
    try:
        files = sorted(d.glob("*.json"))
    except OSError:
        return []
    for p in files:
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            out.append(RunState(broker=str(doc["broker"]), vhost=doc.get("vhost"),
                                pid=int(doc["pid"]), host=str(doc["host"]),
                                started=str(doc.get("started")), phase=str(doc["phase"]),
                                candidates=[str(x) for x in doc.get("candidates") or []],
                                enabled=[str(x) for x in doc.get("enabled") or []], path=p))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671,
                 "pyamqp": 5672, "librabbitmq": 5672}


def broker_identity(url: str, vhost: str | None = None) -> str:
    """The broker a (redacted) URL points at, whatever its spelling: scheme family, the host's
    resolved address, the port (default filled in), the Redis db (default 0) or the virtual
    host (default "/"). redis://localhost:6379, redis://127.0.0.1:6379/0 and
    redis://LOCALHOST/ are one broker. Several endpoints (';'): each, sorted."""
    from urllib.parse import unquote, urlsplit

    out = []
    for part in str(url or "").split(";"):
        part = part.strip()
        if not part:
            continue
        try:
            u = urlsplit(part)
            scheme = (u.scheme or "").lower()
            host = (u.hostname or "localhost").lower()
            port = u.port or DEFAULT_PORTS.get(scheme)
        except ValueError:
            out.append(part)
            continue
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
            addr = sorted(str(i[4][0]) for i in infos)[0] if infos else host
        except (OSError, UnicodeError):
            addr = host
        if addr in ("::1", "0:0:0:0:0:0:0:1") or addr.startswith("127."):
            addr = "127.0.0.1"  # loopback, however it is spelled
        path = unquote(u.path.lstrip("/"))
        if scheme.startswith("redis"):
            family = "redis"
            try:
                place = str(int(path.split("/")[0] or 0))
            except ValueError:
                place = path
        else:
            family = "amqp"
            place = vhost if vhost is not None else (path or "/")
        out.append(f"{family}://{addr}:{port}/{place}")
    return ";".join(sorted(out))


def same_broker(st: RunState, broker_redacted: str, vhost: str | None) -> bool:
    if st.broker == broker_redacted and (st.vhost or None) == (vhost or None):
        return True
    return broker_identity(st.broker, st.vhost) == broker_identity(broker_redacted, vhost)


def classify_states(states: list[RunState], broker_redacted: str, vhost: str | None,
                    alive=pid_alive) -> tuple[list[RunState], list[RunState], list[str]]:
    """(dead runs of this broker to finish, live runs of this broker, notes) — a file of
    another host is never acted on (its pid cannot be checked from here). The broker is
    compared by identity (broker_identity), not by the literal URL."""
    dead, live, notes = [], [], []
    here = socket.gethostname()
    for st in states:
        if not same_broker(st, broker_redacted, vhost):
            continue
        if st.pid == os.getpid():
            continue
        if st.host != here:
            notes.append(f"a celeryctl events run on {st.host} (pid {st.pid}) enabled events "
                         f"on {', '.join(st.enabled) or 'nothing yet'}: not checked from here "
                         f"({st.path})")
            continue
        (live if alive(st.pid) else dead).append(st)
    return dead, live, notes


def enable_outcome(replies: dict[str, list[Any]], candidates: list[str]
                   ) -> tuple[list[str], list[str], dict[str, str]]:
    """From enable_events replies: (enabled by us, already on, problems node -> text)."""
    mine, already, problems = [], [], {}
    for n in candidates:
        got = replies.get(n) or []
        text = _text(got[0]) if got else None
        if text is None:
            problems[n] = "no reply to enable_events"
        elif text == ENABLED:
            mine.append(n)
            if len(got) > 1:
                problems[n] = f"{len(got)} workers share this node name"
        elif text == ALREADY:
            already.append(n)
        else:
            problems[n] = f"enable_events: {text}"
    return mine, already, problems


def disable_outcome(replies: dict[str, list[Any]], enabled: list[str]
                    ) -> tuple[list[str], dict[str, str]]:
    """(restored, problems node -> text) from disable_events replies."""
    done, problems = [], {}
    for n in enabled:
        got = replies.get(n) or []
        text = _text(got[0]) if got else None
        if text in (DISABLED, ALREADY_OFF):
            done.append(n)
        elif text is None:
            problems[n] = "no reply to disable_events: task events may still be on"
        else:
            problems[n] = f"disable_events: {text}"
    return done, problems


def _text(reply: Any) -> str | None:
    if isinstance(reply, dict):
        v = reply.get("ok", reply.get("error"))
        return str(v) if v is not None else None
    return None if reply is None else str(reply)


def send(target, method: str, nodes: list[str], deadline: float | None = None,
         broadcast: bool = False) -> tuple[dict[str, list[Any]], str | None]:
    """Send enable_events/disable_events (or ping) to exactly `nodes`; (replies, error).
    `deadline` (time.monotonic()): a hard end — a broker that trickles bytes keeps every
    per-recv timeout from firing, so the call runs in a thread and is abandoned then.
    `broadcast`: to every worker (replies of all), waiting for `nodes`."""
    from celeryctl.collect import send_control

    if not nodes:
        return {}, None
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["obs"] = send_control(target, method, {},
                                      destination=None if broadcast else list(nodes),
                                      wanted=list(nodes))
        except Exception as exc:  # noqa: BLE001 - said as the error
            from celeryctl.collect.bounded import describe_error

            box["exc"] = describe_error(exc)

    if deadline is None:
        call()
    else:
        th = threading.Thread(target=call, name=f"events-{method}", daemon=True)
        th.start()
        th.join(max(0.0, deadline - time.monotonic()))
        if th.is_alive():
            return {}, "no answer before the deadline (the broker is too slow or silent)"
    if "exc" in box:
        return {}, box["exc"]
    obs = box["obs"]
    if not obs.ok:
        return {}, obs.error
    replies: dict[str, list[Any]] = {}
    for n in obs.value.nodes:
        replies.setdefault(n.name, []).append(n.replies.get(method))
    return replies, None


@dataclass
class Restored:
    done: list[str] = field(default_factory=list)          # turned off again
    problems: dict[str, str] = field(default_factory=dict)  # could not: node -> why
    gone: dict[str, str] = field(default_factory=dict)      # went away: nothing to restore
    kept: dict[str, int] = field(default_factory=dict)      # a live run relies on it: its pid


def restore_deadline(target) -> float:
    """A hard end for one restore: two tries of a control round trip, plus a ping."""
    t = float(getattr(target, "timeout", None) or 2.0)
    return time.monotonic() + 3 * t + 3.0


def restore(target, st: RunState, attempts: int = 2, *, keep: dict[str, int] | None = None,
            offline: set[str] | frozenset[str] = frozenset(),
            deadline: float | None = None) -> Restored:
    """Disable task events on the workers `st` enabled, within `deadline` (default
    restore_deadline). Not on a worker another live run on this broker listens to (`keep`:
    node -> its pid): it stays in the file, and the last run to end turns it off. A worker
    that went offline (`offline`, or no reply to disable_events nor to a ping) needs nothing:
    a restarted worker starts with task events off (unless -E); it is dropped from the file.
    The file is removed when nothing is left, else rewritten with what is left (kept or
    failed)."""
    keep = keep or {}
    deadline = deadline if deadline is not None else restore_deadline(target)
    r = Restored()
    todo = []
    for n in st.enabled:
        if n in keep:
            r.kept[n] = keep[n]
        elif n in offline:
            r.gone[n] = "went offline during the window (worker-offline event)"
        else:
            todo.append(n)
    for _ in range(max(1, attempts)):
        if not todo:
            break
        replies, err = send(target, "disable_events", todo, deadline)
        if err:
            r.problems = {n: f"could not send disable_events: {err}" for n in todo}
            if time.monotonic() >= deadline:
                break
            continue
        ok, r.problems = disable_outcome(replies, todo)
        r.done += ok
        todo = [n for n in todo if n not in ok]
    silent = [n for n in todo if r.problems.get(n, "").startswith("no reply")]
    if silent and time.monotonic() < deadline:
        # a ping to every worker: a silent broker answers nothing, so a node counts as gone
        # only when some other worker answers
        replies, err = send(target, "ping", silent, deadline, broadcast=True)
        if not err and any(replies.get(n) for n in replies if n not in silent):
            for n in silent:
                if not replies.get(n):
                    r.gone[n] = ("no reply to disable_events nor to ping: the worker is gone "
                                 "(it starts with task events off when it comes back, "
                                 "unless -E)")
                    r.problems.pop(n, None)
            todo = [n for n in todo if n not in r.gone]
    left = todo + [n for n in st.enabled if n in r.kept]
    if left:
        st.enabled = left
        try:
            write_state(st, st.path.parent if st.path else None)
        except OSError:
            pass
    else:
        remove_state(st)
        r.problems = {}
    return r
