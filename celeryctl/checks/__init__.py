"""Doctor's checks: pure functions Snapshot -> findings, registered with a stable code.

A check is declared once::

    @check("QUE001", "queue-backlog", needs=("queues",))
    def queue_backlog(snap, limits): ...

The registry stamps code and name on every finding, so an id is written once. A check whose
`needs` were not observed is reported as *skipped* with the reason — "no findings" never
means "didn't look". A check that does not apply to this deployment (a Redis-only check on
RabbitMQ) is reported as not applicable. Codes are a family prefix plus three digits; retired
codes stay documented and are never reused. This package imports only the snapshot model, the
standard library and celeryctl.invocation.quote (fix commands pasted as printed).
"""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

FAMILIES = {
    "SRC": "sources",
    "WRK": "workers",
    "SER": "serialization",
    "CON": "connections",
    "POOL": "capacity and pool exhaustion",
    "QUE": "queues",
    "RES": "result backend",
    "BRK": "broker server",
    "CFG": "Celery settings",
    "SEC": "security",
    "TSK": "tasks",
    "EVT": "task events",
}
HEADINGS = ("What it finds", "Why it matters", "How to fix")
_CODE = re.compile(r"^(SRC|WRK|SER|CON|POOL|QUE|RES|BRK|CFG|SEC|TSK|EVT)\d{3}$")
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class Severity(enum.IntEnum):
    OK = 0
    INFO = 1
    WARNING = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls[text.upper()]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    subject: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    hint: str = ""
    commands: tuple[str, ...] = ()
    code: str = ""  # stamped by the registry
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "severity": self.severity.label,
                "subject": self.subject, "message": self.message, "evidence": self.evidence,
                "hint": self.hint, "commands": list(self.commands)}


@dataclass(frozen=True)
class Skipped:
    code: str
    name: str
    reason: str
    missing: tuple[str, ...] = ()  # the parts it needed that were not observed

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "name": self.name, "reason": self.reason}


@dataclass(frozen=True)
class Limits:
    """Thresholds, each with a documented default and a doctor flag."""

    queue_warn: int = 100
    queue_crit: int = 1000
    stale_after: float = 300.0
    clients_warn_ratio: float = 0.80
    clients_crit_ratio: float = 0.95
    memory_warn_ratio: float = 0.80
    connections_per_worker: int = 30
    consumer_timeout: float = 1800.0  # RabbitMQ's default; assumed where 3.12+ do not report it
    long_task_after: float = 1800.0  # TSK001: a task running longer is reported
    scheduled_warn: int = 100  # TSK005: ETA/countdown tasks one worker may hold
    # EVT (a doctor --events window)
    failure_ratio_warn: float = 0.1  # --failure-ratio-warn
    failure_min: int = 3  # failures of a task name before its ratio counts
    retry_ratio_warn: float = 0.5
    retry_rate_warn: float = 1.0  # retries per second of one task name
    retry_min: int = 5
    event_lag_warn: float = 5.0  # seconds of event clock drift


BROKER_NAMES = {"redis": "Redis", "amqp": "RabbitMQ"}


def count(n: int, noun: str, plural: str | None = None) -> str:
    """"1 queue", "2 queues": a finding's numbers in plain words (`plural` when not noun+s)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def verb(n: int, one: str, many: str) -> str:
    """The verb agreeing with a count: verb(1, "holds", "hold")."""
    return one if n == 1 else many


@dataclass(frozen=True)
class Check:
    code: str
    name: str
    needs: tuple[str, ...]
    applies: Callable[[Any], str | None] | None
    fn: Callable[..., Iterator[Finding]]
    broker: str | None = None  # "redis" | "amqp": the only broker kind it applies to

    def not_applicable(self, snap: Any) -> str | None:
        """Why this check does not apply to this deployment, or None when it does."""
        if self.broker is not None and snap.broker_kind != self.broker:
            return f"broker is not {BROKER_NAMES[self.broker]}"
        return self.applies(snap) if self.applies else None

    @property
    def family(self) -> str:
        return re.match(r"[A-Z]+", self.code).group(0)  # type: ignore[union-attr]

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.fn.__doc__ or "")

    def section(self, heading: str) -> str:
        m = re.search(rf"## {re.escape(heading)}\n(.*?)(?=\n## |\Z)", self.doc, re.S)
        return m.group(1).strip() if m else ""

    @property
    def summary(self) -> str:
        return " ".join(self.section("What it finds").split("\n\n")[0].split())


class Skip(Exception):
    """Raised by a check that finds at run time that its inputs were not observed."""


REGISTRY: dict[str, Check] = {}


def check(code: str, name: str, needs: tuple[str, ...] = (),
          applies: Callable[[Any], str | None] | None = None, broker: str | None = None):
    """Register a check. `needs`: snapshot parts that must have been observed. `broker`:
    "redis" or "amqp" when it only applies to that broker. `applies`: any other condition,
    returning the reason it does not apply (or None)."""
    if broker is not None and broker not in BROKER_NAMES:
        raise ValueError(f"bad broker {broker!r} for {code}")
    if not _CODE.match(code):
        raise ValueError(f"bad check code {code!r}")
    if not _NAME.match(name):
        raise ValueError(f"bad check name {name!r}")

    def deco(fn):
        if code in REGISTRY or any(c.name == name for c in REGISTRY.values()):
            raise ValueError(f"duplicate check {code} {name}")
        REGISTRY[code] = Check(code, name, tuple(needs), applies, fn, broker)
        return fn

    return deco


def catalogue() -> list[Check]:
    _load()
    return [REGISTRY[c] for c in sorted(REGISTRY, key=_sort_key)]


def _sort_key(code: str) -> tuple[int, str]:
    fam = re.match(r"[A-Z]+", code).group(0)  # type: ignore[union-attr]
    return (list(FAMILIES).index(fam), code)


def find(code_or_name: str) -> Check | None:
    _load()
    key = code_or_name.strip()
    return REGISTRY.get(key.upper()) or next(
        (c for c in REGISTRY.values() if c.name == key.lower()), None)


def _load() -> None:
    # importing the family modules registers their checks
    from celeryctl.checks import (  # noqa: F401
        brk,
        cfg,
        con,
        evt,
        pool,
        que,
        res,
        sec,
        ser,
        src,
        tsk,
        wrk,
    )


@dataclass(frozen=True)
class Unobserved:
    """A source (or an essential part) that was not observed, and why."""

    name: str
    # permission-denied | auth-failed | unreachable | not-configured | failed, and for the
    # essential parts also no-reply (no worker answered) and partial (queues seen in part)
    state: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "state": self.state, "reason": self.reason}


# Without these doctor cannot say "all clear": the broker itself, the workers, the queues.
ESSENTIAL = ("broker", "workers", "queues")


@dataclass
class Report:
    findings: list[Finding]
    skipped: list[Skipped]
    not_applicable: list[Skipped]
    ran: list[str]
    # checks that ran on an input observed only in part (queue discovery without SCAN or
    # without the management API, ...): their silence is not an all-clear for what was missed
    partial: list[Skipped] = field(default_factory=list)
    # essential inputs (broker, workers, queues) not observed: the report is incomplete
    missing: list[Unobserved] = field(default_factory=list)
    # every source not observed (the management API, the result backend, ...)
    unobserved: list[Unobserved] = field(default_factory=list)

    @property
    def incomplete(self) -> bool:
        return bool(self.missing)

    def worst(self) -> Severity:
        return max((f.severity for f in self.findings), default=Severity.OK)

    def counts(self) -> dict[str, int]:
        out = {s.label: 0 for s in Severity if s is not Severity.OK}
        for f in self.findings:
            if f.severity is not Severity.OK:
                out[f.severity.label] += 1
        return out


def select_checks(select: list[str] | None, ignore: list[str] | None) -> list[Check]:
    """--select / --ignore take codes, names or family prefixes (e.g. QUE)."""
    def match(c: Check, keys: list[str]) -> bool:
        for k in keys:
            k = k.strip()
            if k.upper() == c.code or k.lower() == c.name or k.upper() == c.family:
                return True
        return False

    checks = catalogue()
    for keys in (select or [], ignore or []):
        for k in keys:
            if not any(match(c, [k]) for c in checks):
                raise KeyError(k)
    if select:
        checks = [c for c in checks if match(c, select)]
    if ignore:
        checks = [c for c in checks if not match(c, ignore)]
    return checks


def run_checks(snap: Any, limits: Limits, checks: list[Check] | None = None) -> Report:
    checks = catalogue() if checks is None else checks
    findings: list[Finding] = []
    skipped: list[Skipped] = []
    na: list[Skipped] = []
    ran: list[str] = []
    partial: list[Skipped] = []
    unread = _unread_queues(snap)
    for c in checks:
        reason = c.not_applicable(snap)
        if reason:
            na.append(Skipped(c.code, c.name, reason))
            continue
        missing = [n for n in c.needs if not snap.observed(n)]
        if missing:
            skipped.append(Skipped(c.code, c.name, "; ".join(
                f"{n} not observed ({_state(snap, n)}): {snap.why_not(n)}" for n in missing),
                tuple(missing)))
            continue
        try:
            produced = list(c.fn(snap, limits) or ())
        except Skip as exc:
            skipped.append(Skipped(c.code, c.name, str(exc)))
            continue
        ran.append(c.code)
        gaps = [getattr(snap.part(n), "partial", None) for n in c.needs]
        if "queues" in c.needs and unread:
            gaps.append(unread)
        gaps = [g for g in gaps if g]
        if gaps:
            partial.append(Skipped(c.code, c.name, "; ".join(dict.fromkeys(gaps))))
        for f in produced:
            findings.append(Finding(f.severity, f.subject, f.message, f.evidence, f.hint,
                                    tuple(f.commands), c.code, c.name))
    findings.sort(key=lambda f: (-f.severity, _sort_key(f.code), f.subject))
    essential = [Unobserved(n, _state(snap, n), snap.why_not(n)) for n in ESSENTIAL
                 if not snap.observed(n)]
    view = snap.get("workers")
    if view is not None and not getattr(view, "nodes", ()):
        # remote control ran and nobody answered: the workers were not seen either (SRC004
        # says it as a finding; deselecting it must not turn this into an all-clear)
        essential.append(Unobserved("workers", "no-reply", "no worker replied within "
                                    f"{getattr(view, 'waited_seconds', 0.0):.1f} s"))
    queues = snap.part("queues")
    target = getattr(snap, "target", None) or {}
    if unread:
        essential.append(Unobserved("queues", "partial", unread))
    elif queues is not None and queues.ok and queues.partial and not (
            target.get("queues") or target.get("app")):
        # queues were discovered only in part (no SCAN, no management API) and the operator
        # named none: a backlog nobody consumes may be exactly what was missed
        essential.append(Unobserved("queues", "partial", queues.partial))
    sources = [Unobserved(s.name, s.state, s.error or s.state)
               for s in getattr(snap, "sources", ()) if s.ok is False]
    return Report(findings, skipped, na, ran, partial, essential, sources)


def _unread_queues(snap: Any) -> str | None:
    """Task queues listed but not read (their LLEN refused, a key of the wrong type): a
    backlog there is invisible, whoever named the queue."""
    from celeryctl.snapshot import unread_task_queues

    bad = unread_task_queues(snap.get("queues") or [])
    if not bad:
        return None
    return (f"{len(bad)} queue(s) listed but not read: "
            + "; ".join(f"{q.name}: {q.error}" for q in bad[:3])
            + ("; ..." if len(bad) > 3 else ""))


def _state(snap: Any, name: str) -> str:
    part = snap.part(name)
    if part is None:
        return "not collected"
    return getattr(part, "state", None) or ("observed" if part.ok else "failed")
