"""`celeryctl task ID...` as text: one block per task — the id and state, the verdict line,
then every place it was seen. Everything from a broker, a worker or the backend (queue and
worker names, task names, exception messages) goes through `literal`: shown as written."""

from __future__ import annotations

from typing import Any

from celeryctl.render.text import literal, safe
from celeryctl.taskfind import Finding
from celeryctl.views import human_age as age

STATE_STYLE = {"active": "bold green", "failed": "bold red", "unknown": "bold yellow",
               "revoked": "magenta", "in_flight": "cyan", "retrying": "yellow"}


def location_line(loc: dict[str, Any]) -> str:
    kind = loc.get("kind")
    if kind == "queue":
        pos = loc.get("position")
        text = f"queue {safe(loc.get('queue'))}"
        if loc.get("priority_step"):
            text += f" (priority {loc['priority_step']} sub-list)"
        if pos is not None:
            text += f": position {pos:,}" + (f" of {loc['of']:,}" if loc.get("of") is not None
                                             else "")
    elif kind == "unacked":
        text = (f"unacked (Redis, delivery tag {safe(loc.get('delivery_tag'))}): from queue "
                f"{safe(loc.get('queue'))}, delivered "
                f"{age(loc.get('delivered_seconds'))} ago")
    elif kind == "worker":
        text = f"worker {safe(loc.get('worker'))}: {safe(loc.get('state'))}"
        if loc.get("pid"):
            text += f", pid {loc['pid']}"
        if loc.get("runtime_seconds") is not None:
            text += f", running {age(loc['runtime_seconds'])}"
        if loc.get("acknowledged") is not None:
            text += ", acknowledged" if loc["acknowledged"] else ", not acknowledged"
    elif kind == "revoked":
        text = f"revoked on worker {safe(loc.get('worker'))}"
    elif kind == "result_backend":
        text = f"result backend: {safe(loc.get('status') or loc.get('undecoded') or '?')}"
        if loc.get("date_done"):
            text += f" at {safe(loc['date_done'])}"
        if loc.get("exception_type"):
            text += f": {safe(loc['exception_type'])}: {safe(loc.get('exception_message'))}"
        if loc.get("traceback_line"):
            text += f" ({safe(loc['traceback_line'])})"
        if loc.get("children"):
            text += f"; children: {', '.join(safe(c) for c in loc['children'][:5])}"
            if len(loc["children"]) > 5:
                text += f" and {len(loc['children']) - 5} more"
    else:
        text = safe(kind)
    if kind in ("queue", "unacked", "worker") and loc.get("task"):
        text += f" [{safe(loc['task'])}]"
    if loc.get("redelivered"):
        text += " (redelivered)"
    return text


def render_findings(out, findings: list[Finding], searched: str) -> None:
    from rich.text import Text

    for i, f in enumerate(findings):
        if i:
            out.print()
        out.print(Text.assemble(literal(f.id, "bold"), "  ",
                                (f.state, STATE_STYLE.get(f.state, "bold"))), highlight=False)
        out.print(Text.assemble("  ", literal(f.verdict)), highlight=False)
        for loc in f.locations:
            out.print(Text.assemble("    - ", literal(location_line(loc), "dim")),
                      highlight=False)
    if searched:
        out.print()
        out.print(literal(searched, "dim"), highlight=False)
