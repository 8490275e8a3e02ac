"""Doctor report renderers: table (rich), markdown (for incident tickets), JSON."""

from __future__ import annotations

import json
from typing import Any

from celeryctl.snapshot import SCHEMA

STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan", "ok": "green"}


def verdict(report) -> str:
    c = report.counts()
    if not report.findings:
        return (f"All clear: {len(report.ran)} checks ran, nothing wrong"
                + (f" ({len(report.skipped)} skipped)" if report.skipped else "") + ".")
    parts = [f"{c[k]} {k}" for k in ("critical", "warning", "info") if c.get(k)]
    return f"{report.worst().label.upper()}: " + ", ".join(parts) + \
        f" — {len(report.ran)} checks ran, {len(report.skipped)} skipped."


def render_report_table(out, report, sources) -> None:
    worst = report.worst().label
    out.print(f"[{STYLE.get(worst, '')}]{verdict(report)}[/]", markup=True, highlight=False)
    for sev in ("critical", "warning", "info"):
        group = [f for f in report.findings if f.severity.label == sev]
        if not group:
            continue
        out.print()
        out.print(f"[{STYLE[sev]}]{sev.upper()}[/]", markup=True)
        for f in group:
            out.print(f"  [{STYLE[sev]}]{f.code}[/] {f.name}  [bold]{f.subject}[/]: {f.message}",
                      markup=True, highlight=False)
            if f.evidence:
                ev = ", ".join(f"{k}={_short(v)}" for k, v in f.evidence.items())
                out.print(f"      evidence: {ev}", markup=False, highlight=False)
            if f.hint:
                out.print(f"      fix: {f.hint}", markup=False, highlight=False)
            for cmd in f.commands:
                out.print(f"      $ {cmd}", markup=False, highlight=False)
    if report.skipped:
        out.print()
        out.print("[dim]SKIPPED (inputs not observed)[/]", markup=True)
        for s in report.skipped:
            out.print(f"  {s.code} {s.name}: {s.reason}", markup=False, highlight=False)
    for s in sources:  # topology worth seeing on every run: Sentinel's view of the master
        if s.name == "sentinel" and s.ok and s.detail:
            out.print()
            out.print(f"sentinel: {s.detail}", markup=False, highlight=False)
    bad = [s for s in sources if s.ok is False]
    if bad:
        out.print()
        out.print("[dim]SOURCES NOT OBSERVED[/]", markup=True)
        for s in bad:
            out.print(f"  {s.name} {s.url or ''}: {s.error}", markup=False, highlight=False)


def _short(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) else v
    return text if len(text) <= 120 else text[:117] + "..."


def render_report_markdown(out, report, sources, target: dict) -> None:
    lines = [f"## celeryctl doctor — {verdict(report)}", "",
             f"Broker `{target.get('broker')}`"
             + (f", result backend `{target.get('result_backend')}`"
                if target.get("result_backend") else ""), ""]
    if report.findings:
        lines += ["| severity | code | subject | finding |", "|---|---|---|---|"]
        for f in report.findings:
            lines.append(f"| {f.severity.label} | {f.code} {f.name} | {_md(f.subject)} | "
                         f"{_md(f.message)} |")
        lines.append("")
        for f in report.findings:
            lines += [f"### {f.code} {f.name}: {_md(f.subject)}", "", f.message, ""]
            if f.evidence:
                lines += ["Evidence:", "", "```json", json.dumps(f.evidence, indent=2,
                                                               default=str), "```", ""]
            if f.hint:
                lines += [f"Fix: {f.hint}", ""]
            if f.commands:
                lines += ["```sh", *f.commands, "```", ""]
    if report.skipped:
        lines += ["### Skipped", ""] + [f"- {s.code} {s.name}: {_md(s.reason)}"
                                        for s in report.skipped] + [""]
    lines += ["### Sources", ""] + [
        f"- {s.name} `{s.url}`: " + ("ok" if s.ok else "not checked" if s.ok is None
                                     else f"**unreachable** ({_md(s.error or '')})")
        for s in sources]
    out.write("\n".join(lines) + "\n")


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_report_json(out, report, sources, target: dict, elapsed: float,
                       notes: list[str] | None = None) -> None:
    doc = {
        "schema": SCHEMA,
        "findings": [f.to_dict() for f in report.findings],
        "skipped": [s.to_dict() for s in report.skipped],
        "not_applicable": [s.to_dict() for s in report.not_applicable],
        "sources": [s.to_dict() for s in sources],
        "summary": {"verdict": verdict(report), "worst": report.worst().label,
                    **report.counts(), "checks_ran": len(report.ran),
                    "checks_skipped": len(report.skipped), "elapsed_seconds": round(elapsed, 3)},
        "target": target,
        "notes": list(notes or []),
    }
    out.write(json.dumps(doc, indent=2, default=str) + "\n")


def render_check_page(c) -> str:
    """The docs/checks/CODE.md page of a check (also what `celeryctl explain` prints)."""
    from celeryctl.checks import BROKER_NAMES

    needs = ", ".join(c.needs) or "nothing beyond the target"
    broker = f" Applies to: {BROKER_NAMES[c.broker]} only." if c.broker else ""
    return (f"# {c.code} {c.name}\n\nFamily: {c.family}. Needs: {needs}.{broker}\n\n"
            f"{c.doc}\n")
