"""The guard every mutating command goes through, and its audit log.

    plan (pure) -> show the plan -> decide() -> typed confirmation or --yes -> act
    -> re-read and report -> audit()

Without `--confirm` a mutating command is a dry run. `--confirm` on a terminal asks the operator
to type a token (the queue name, or the number of queues/workers/connections); `--yes` skips
the prompt for runbooks; `--confirm` with no terminal and no `--yes` is refused (exit 64).
"""

from __future__ import annotations

import enum
import getpass
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from celeryctl.urls import SECRETS, redact


class Decision(enum.Enum):
    DRY_RUN = "dry-run"
    PROMPT = "prompt"
    GO = "go"
    REFUSE = "refuse"


def decide(*, confirm: bool, yes: bool, interactive: bool) -> Decision:
    if not confirm:
        return Decision.DRY_RUN
    if yes:
        return Decision.GO
    return Decision.PROMPT if interactive else Decision.REFUSE


def confirmation_token(names: list[str], noun: str) -> tuple[str, str]:
    """What the operator must type, and the question: one name, or a count."""
    if len(names) == 1:
        return names[0], f"Type the {noun} name ({names[0]}) to go ahead: "
    return str(len(names)), f"Type the number of {noun}s ({len(names)}) to go ahead: "


def default_audit_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "celeryctl" / "audit.log"


def audit(path: Path | None, *, target: str, command: str, result: str,
          subjects: list[str] | None = None, counts: dict[str, Any] | None = None,
          extra: dict[str, Any] | None = None) -> str | None:
    """Append one JSON line: time, user, host, target (redacted), command, subjects (queues,
    workers, connections), counts, result. Returns an error text instead of raising: a full
    disk must not turn a finished purge into a crash (the caller reports it)."""
    path = path or default_audit_path()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "user": user,
            "host": socket.gethostname(), "target": SECRETS.scrub(redact(target) or ""),
            "command": SECRETS.scrub(command),
            "subjects": subjects or [], "counts": counts or {},
            "result": SECRETS.scrub(result),
            **(extra or {})}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, default=str) + "\n")
    except OSError as exc:
        return f"audit log {path}: {exc.strerror or exc}"
    return None
