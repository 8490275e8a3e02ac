"""`celeryctl control`: Celery's remote-control commands, planned before they are sent.

plan_control (pure) -> the plan is shown -> the guard (only for disruptive commands) -> the
command is broadcast with its destinations -> control_rows (pure): one row per targeted worker,
answered or not, and what it said.

What makes a command disruptive (and so a dry run unless `--confirm`, typed or `--yes`):
`shutdown`; `revoke --terminate` (kills the process running the task); `cancel-consumer` of
the last queue a worker consumes (the worker keeps running but does nothing); and any command
without `--destination`, which reaches every worker of the cluster.
"""

from __future__ import annotations

import difflib
import re
import signal as _signal
from dataclasses import dataclass, field
from typing import Any

# command -> (Celery's control method, does the worker reply)
COMMANDS: dict[str, tuple[str, bool]] = {
    "pool-grow": ("pool_grow", True),
    "pool-shrink": ("pool_shrink", True),
    "autoscale": ("autoscale", True),
    "rate-limit": ("rate_limit", True),
    "time-limit": ("time_limit", True),
    "add-consumer": ("add_consumer", True),
    "cancel-consumer": ("cancel_consumer", True),
    "revoke": ("revoke", True),
    "enable-events": ("enable_events", True),
    "disable-events": ("disable_events", True),
    "shutdown": ("shutdown", False),
}

SIGNATURES = {
    "pool-grow": "[N=1]", "pool-shrink": "[N=1]", "autoscale": "MAX MIN",
    "rate-limit": "TASK RATE", "time-limit": "TASK SOFT [HARD]", "add-consumer": "QUEUE",
    "cancel-consumer": "QUEUE", "revoke": "ID... [--terminate [--signal SIG]]",
    "enable-events": "", "disable-events": "", "shutdown": "",
}

# Celery's rate string: a number, optionally per second/minute/hour ("0" disables the limit)
RATE = re.compile(r"^\d+(\.\d+)?(/[smh])?$")


class ControlArgumentError(ValueError):
    """An argument Celery would reject (or silently misread): refused before sending."""


@dataclass(frozen=True)
class ControlPlan:
    command: str
    method: str
    arguments: dict[str, Any]
    destination: list[str] | None  # None: broadcast to every worker
    targets: list[str]  # the workers expected to act (answered ping)
    disruptive: list[str] = field(default_factory=list)  # why the guard applies
    refusals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reply: bool = True

    @property
    def guarded(self) -> bool:
        return bool(self.disruptive)


def parse_command(command: str, words: list[str], *, terminate: bool = False,
                  signal: str | None = None) -> tuple[str, dict[str, Any]]:
    """`pool-grow 2` -> ("pool-grow", {"n": 2}): the command's positional words as Celery's
    arguments (underscored names as `celery control` spells them are accepted too)."""
    cmd = command.strip().lower().replace("_", "-")
    if cmd not in COMMANDS:
        close = difflib.get_close_matches(cmd, list(COMMANDS), n=2)
        raise ControlArgumentError(f"unknown control command {command!r}"
                                   + (f"; did you mean {' or '.join(close)}?" if close else
                                      f"; one of: {', '.join(COMMANDS)}"))
    usage = f"usage: celeryctl control {cmd} {SIGNATURES[cmd]}".rstrip()
    if (terminate or signal) and cmd != "revoke":
        raise ControlArgumentError(f"--terminate and --signal only apply to revoke. {usage}")

    def number(word: str, kind=int):
        try:
            return kind(word)
        except ValueError:
            raise ControlArgumentError(f"{word!r} is not a number. {usage}") from None

    n_words = {"pool-grow": (0, 1), "pool-shrink": (0, 1), "autoscale": (2, 2),
               "rate-limit": (2, 2), "time-limit": (2, 3), "add-consumer": (1, 1),
               "cancel-consumer": (1, 1), "revoke": (1, 10_000)}.get(cmd, (0, 0))
    if not n_words[0] <= len(words) <= n_words[1]:
        raise ControlArgumentError(f"{cmd} takes {SIGNATURES[cmd] or 'no arguments'}, got "
                                   f"{len(words)} word(s). {usage}")
    if cmd in ("pool-grow", "pool-shrink"):
        raw: dict[str, Any] = {"n": number(words[0]) if words else 1}
    elif cmd == "autoscale":
        raw = {"max": number(words[0]), "min": number(words[1])}
    elif cmd == "rate-limit":
        raw = {"task": words[0], "rate": words[1]}
    elif cmd == "time-limit":
        raw = {"task": words[0], "soft": number(words[1], float),
               "hard": number(words[2], float) if len(words) > 2 else None}
    elif cmd in ("add-consumer", "cancel-consumer"):
        raw = {"queue": words[0]}
    elif cmd == "revoke":
        raw = {"ids": words, "terminate": terminate, "signal": signal}
    else:
        raw = {}
    return cmd, control_arguments(cmd, raw)


def control_arguments(command: str, args: dict[str, Any]) -> dict[str, Any]:
    """Celery's argument names for `command` from the CLI's values; validates what Celery would
    otherwise accept and misapply (a rate it cannot parse, soft > hard, an unknown signal)."""
    if command in ("pool-grow", "pool-shrink"):
        n = int(args["n"])
        if n < 1:
            raise ControlArgumentError("N must be at least 1")
        return {"n": n}
    if command == "autoscale":
        mx, mn = int(args["max"]), int(args["min"])
        if mn < 0 or mx < 1 or mn > mx:
            raise ControlArgumentError(f"autoscale needs MAX >= MIN >= 0 and MAX >= 1, "
                                       f"got {mx} {mn}")
        return {"max": mx, "min": mn}
    if command == "rate-limit":
        rate = str(args["rate"]).strip()
        if not RATE.match(rate):
            raise ControlArgumentError(f"rate {rate!r} is not a Celery rate: N, N/s, N/m or "
                                       f"N/h (0 removes the limit)")
        return {"task_name": args["task"], "rate_limit": rate}
    if command == "time-limit":
        soft, hard = args.get("soft"), args.get("hard")
        for label, v in (("soft", soft), ("hard", hard)):
            if v is not None and v < 0:
                raise ControlArgumentError(f"{label} time limit must not be negative")
        if soft is not None and hard is not None and soft > hard:
            raise ControlArgumentError(f"soft limit {soft} s is above the hard limit {hard} s: "
                                       f"the task would be killed before it is warned")
        return {"task_name": args["task"], "soft": soft, "hard": hard}
    if command in ("add-consumer", "cancel-consumer"):
        q = str(args["queue"])
        if not q.strip():
            raise ControlArgumentError("the queue name is empty")
        return {"queue": q}
    if command == "revoke":
        ids = [str(i) for i in args["ids"] if str(i).strip()]
        if not ids:
            raise ControlArgumentError("name at least one task id")
        out: dict[str, Any] = {"task_id": ids, "terminate": bool(args.get("terminate"))}
        sig = args.get("signal")
        if sig is not None:
            if not args.get("terminate"):
                raise ControlArgumentError("--signal only applies with --terminate")
            out["signal"] = signal_name(sig)
        return out
    if command in ("enable-events", "disable-events", "shutdown"):
        return {}
    raise ControlArgumentError(f"unknown control command {command!r}")


def signal_name(sig: str) -> str:
    """'KILL', 'SIGKILL', 'kill' or '9' -> 'SIGKILL' (Celery's signum() takes either form)."""
    text = str(sig).strip().upper()
    if text.isdigit():
        try:
            return _signal.Signals(int(text)).name
        except ValueError:
            raise ControlArgumentError(f"no signal number {text}") from None
    name = text if text.startswith("SIG") else "SIG" + text
    if name not in _signal.Signals.__members__:
        raise ControlArgumentError(f"unknown signal {sig!r} (TERM, KILL, INT, HUP, USR1, ...)")
    return name


def plan_control(command: str, arguments: dict[str, Any], destination: list[str] | None,
                 live: dict[str, list[str] | None], active: dict[str, list[str]] | None = None
                 ) -> ControlPlan:
    """`live`: node -> the queues it consumes (None when active_queues did not answer), for
    every worker that answered the plan's ping. `active`: node -> ids of its running tasks
    (revoke --terminate shows where the task runs)."""
    method, reply = COMMANDS[command]
    refusals: list[str] = []
    notes: list[str] = []
    disruptive: list[str] = []
    if destination:
        dest = list(dict.fromkeys(destination))
        unknown = [d for d in dest if d not in live]
        for d in unknown:
            close = difflib.get_close_matches(d, list(live), n=3, cutoff=0.5)
            refusals.append(f"no worker named {d!r} answered"
                            + (f"; did you mean {', '.join(close)}?" if close else
                               f"; answering: {', '.join(sorted(live)) or 'none'}"))
        targets = [d for d in dest if d in live]
    else:
        dest = None
        targets = sorted(live)
        if not live:
            refusals.append("no worker answered: nothing would receive the command")
        else:
            disruptive.append(f"no --destination: reaches every worker ({len(live)} answered "
                              f"ping, and any that did not)")
    if command == "shutdown":
        disruptive.append("shutdown stops the worker process (it finishes its running tasks "
                          "first); it does not come back unless a supervisor restarts it")
    if command == "revoke" and arguments.get("terminate"):
        sig = arguments.get("signal") or "SIGTERM"
        disruptive.append(f"revoke --terminate sends {sig} to the process running the task")
        if active is not None:
            ids = set(arguments["task_id"])
            where = sorted(n for n, running in active.items() if ids & set(running))
            notes.append(f"running on: {', '.join(where)}" if where else
                         "none of these tasks is running on an answering worker now: only "
                         "flagged as revoked")
    if command == "cancel-consumer":
        q = arguments["queue"]
        for n in targets:
            queues = live.get(n)
            if queues is None:
                disruptive.append(f"{n}: its queues are unknown (active_queues did not "
                                  f"answer): {q!r} may be its last")
            elif queues == [q]:
                disruptive.append(f"{n}: {q!r} is the only queue it consumes: it would "
                                  f"consume nothing")
            elif q not in queues:
                notes.append(f"{n} does not consume {q!r} (it consumes "
                             f"{', '.join(queues) or 'nothing'})")
    if command == "add-consumer":
        q = arguments["queue"]
        have = [n for n in targets if q in (live.get(n) or [])]
        if have:
            notes.append(f"already consuming {q!r}: {', '.join(have)}")
    return ControlPlan(command=command, method=method, arguments=arguments, destination=dest,
                       targets=targets, disruptive=disruptive, refusals=refusals, notes=notes,
                       reply=reply)


def control_rows(plan: ControlPlan, replies: dict[str, list[Any]],
                 stopped: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """One row per targeted worker (and any other worker that replied): answered, ok, what it
    said. Celery replies `{"ok": text}` or `{"error": text}`; `revoke` without --terminate
    replies with the text alone. For shutdown (no reply): `stopped` from the ping afterwards."""
    names = list(plan.targets) + sorted(n for n in replies if n not in plan.targets)
    rows = []
    for n in names:
        got = replies.get(n)
        row: dict[str, Any] = {"worker": n, "targeted": n in plan.targets}
        if not plan.reply:
            gone = (stopped or {}).get(n)
            row.update(answered=None, ok=gone, reply=None,
                       result="stopped (no longer answers ping)" if gone
                       else "still answering ping" if gone is False else "unknown")
        elif not got:
            row.update(answered=False, ok=False, reply=None, result="no reply")
        else:
            r = got[0]
            if isinstance(r, dict) and "error" in r:
                row.update(answered=True, ok=False, reply=r, result=f"error: {r['error']}")
            elif isinstance(r, dict) and "ok" in r:
                row.update(answered=True, ok=True, reply=r, result=str(r["ok"]))
            else:
                row.update(answered=True, ok=True, reply=r, result=str(r))
            if len(got) > 1:
                row["result"] += f" ({len(got)} workers share this node name)"
        rows.append(row)
    return rows


# --- verification: what the workers report after the command -------------------------------

VERIFY_METHOD = {"add-consumer": "active_queues", "cancel-consumer": "active_queues",
                 "pool-grow": "stats", "pool-shrink": "stats", "shutdown": "ping"}


def queue_names(active_queues_reply: Any) -> list[str] | None:
    if not isinstance(active_queues_reply, list):
        return None
    return [str(q.get("name")) for q in active_queues_reply if isinstance(q, dict)]


def pool_size(stats_reply: Any) -> int | None:
    """Pool processes (prefork: the live process list) or threads (max-concurrency)."""
    pool = (stats_reply or {}).get("pool") if isinstance(stats_reply, dict) else None
    if not isinstance(pool, dict):
        return None
    if isinstance(pool.get("processes"), list):
        return len(pool["processes"])
    v = pool.get("max-concurrency")
    return v if isinstance(v, int) else None


def verified(plan: ControlPlan, before: Any, after: Any) -> tuple[str, bool]:
    """(what the worker reports now, whether that shows the command took effect), from its
    reply to VERIFY_METHOD before and after."""
    if plan.command in ("add-consumer", "cancel-consumer"):
        now = queue_names(after)
        if now is None:
            return "unknown", False
        want_in = plan.command == "add-consumer"
        return ", ".join(now) or "(no queue)", (plan.arguments["queue"] in now) == want_in
    if plan.command in ("pool-grow", "pool-shrink"):
        b, a = pool_size(before), pool_size(after)
        if a is None:
            return "unknown", False
        if b is None:
            return f"pool {a}", False
        n = plan.arguments["n"] * (1 if plan.command == "pool-grow" else -1)
        return f"pool {b} -> {a}", a == max(0, b + n)
    return "", True
