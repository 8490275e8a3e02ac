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


def classify_states(states: list[RunState], broker_redacted: str, vhost: str | None,
                    alive=pid_alive) -> tuple[list[RunState], list[RunState], list[str]]:
    """(dead runs of this broker to finish, live runs of this broker, notes) — a file of
    another host is never acted on (its pid cannot be checked from here)."""
    dead, live, notes = [], [], []
    here = socket.gethostname()
    for st in states:
        if st.broker != broker_redacted or (st.vhost or None) != (vhost or None):
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


def send(target, method: str, nodes: list[str]) -> tuple[dict[str, list[Any]], str | None]:
    """Send enable_events/disable_events to exactly `nodes`; (replies, error)."""
    from celeryctl.collect import send_control

    if not nodes:
        return {}, None
    obs = send_control(target, method, {}, destination=list(nodes), wanted=list(nodes))
    if not obs.ok:
        return {}, obs.error
    replies: dict[str, list[Any]] = {}
    for n in obs.value.nodes:
        replies.setdefault(n.name, []).append(n.replies.get(method))
    return replies, None


def restore(target, st: RunState, attempts: int = 2) -> tuple[list[str], dict[str, str]]:
    """Disable task events on the workers `st` enabled; removes the file when all are done,
    else rewrites it with those left. (restored, problems)."""
    todo = list(st.enabled)
    done: list[str] = []
    problems: dict[str, str] = {}
    for _ in range(max(1, attempts)):
        if not todo:
            break
        replies, err = send(target, "disable_events", todo)
        if err:
            problems = {n: f"could not send disable_events: {err}" for n in todo}
            continue
        ok, problems = disable_outcome(replies, todo)
        done += ok
        todo = [n for n in todo if n not in ok]
    if todo:
        st.enabled = todo
        try:
            write_state(st, st.path.parent if st.path else None)
        except OSError:
            pass
    else:
        remove_state(st)
        problems = {}
    return done, problems
