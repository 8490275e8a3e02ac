"""Doctor report renderers: table (rich), markdown (for incident tickets), JSON."""

from __future__ import annotations

from typing import Any

from celeryctl.render.jsonout import dumps
from celeryctl.render.text import bind_units, md, md_code, safe
from celeryctl.snapshot import SCHEMA

STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan", "ok": "green"}


FIXES = {
    "permission-denied": "the account may not do this: grant the privilege named (see "
                         "docs/permissions.md) or use an account that has it",
    "auth-failed": "check the user name and password in the URL (and that the user exists)",
    "unreachable": "check the server process, its port, the network path and TLS settings",
    "not-configured": "give its URL (flag, environment, profile or -A)",
    "failed": "rerun with --debug; report it if it persists",
}
STATE_LABELS = {"permission-denied": "permission denied", "auth-failed": "authentication failed",
                "unreachable": "unreachable", "not-configured": "not configured",
                "not-checked": "not checked", "failed": "failed", "observed": "observed",
                "not-asked": "not asked", "not collected": "not collected",
                "no-reply": "no reply", "partial": "observed in part"}


def _gist(reason: str, state: str) -> str:
    """The gist of a reason for the one-line verdict (the sources section has it whole):
    "permission denied: remote control refused", "authentication failed", ..."""
    import re

    m = re.search(r"permission denied: (.+?) refused", reason)
    if state == "permission-denied" and m:
        return f"permission denied: {m.group(1)} refused"
    if state in ("partial", "no-reply"):
        return reason if len(reason) <= 160 else reason[:157] + "..."
    return STATE_LABELS.get(state, state)


def _missing_text(report) -> str:
    names = {m.name for m in report.missing}
    # the workers are asked over the broker: when it was not observed, it is the one reason
    shown = [m for m in report.missing
             if not ("broker" in names and m.name != "broker"
                     and m.reason.startswith("the broker was not observed"))]
    return "; ".join(f"{m.name} observed in part — {_gist(m.reason, m.state)}"
                     if m.state == "partial" else
                     f"{m.name} not observed — {_gist(m.reason, m.state)}" for m in shown)


def verdict(report) -> str:
    """One line: all clear, the worst findings, or what could not be seen and why. "All
    clear" only when the broker and the workers were observed."""
    c = report.counts()
    from celeryctl.checks import count

    tail = f"{count(len(report.ran), 'check')} ran, {len(report.skipped)} skipped"
    if report.partial:
        tail += f", {len(report.partial)} on partial data"
    worst = report.worst()
    if worst.label in ("critical", "warning"):
        # "1 critical, 3 warnings, 2 info": warning is the one noun
        parts = [count(c[k], k) if k == "warning" else f"{c[k]} {k}"
                 for k in ("critical", "warning", "info") if c.get(k)]
        text = f"{worst.label.upper()}: " + ", ".join(parts) + f" — {tail}."
        if report.incomplete:
            text += " Incomplete: " + "; ".join(
                f"{m.name} observed in part" if m.state == "partial" else
                f"{m.name} not observed ({STATE_LABELS.get(m.state, m.state)})"
                for m in report.missing) + "."
        return text
    if report.incomplete:
        info = f" ({c['info']} info)" if c.get("info") else ""
        return f"INCOMPLETE: {_missing_text(report)}{info} — {tail} (see SOURCES)."
    others = [u for u in report.unobserved if u.name not in ("broker", "workers")]
    if report.findings:
        text = f"INFO: {c['info']} info — {tail}."
    elif others or report.partial:
        text = f"All clear in what was observed: {tail}, nothing wrong."
    else:
        return f"All clear: {count(len(report.ran), 'check')} ran, nothing wrong" + (
            f" ({len(report.skipped)} skipped)" if report.skipped else "") + "."
    if others:
        text += " Not observed: " + "; ".join(
            f"{u.name} ({STATE_LABELS.get(u.state, u.state)})" for u in others) + "."
    if report.partial:
        text += " Partial: " + "; ".join(dict.fromkeys(p.reason for p in report.partial)) + "."
    return text


def hang(prefix, text):
    """`prefix` then `text`, wrapped lines starting under the text's first character (a
    hanging indent), never at column 0; nothing cut (a long token folds). Both may be str
    (shown literally) or rich Text."""
    from rich.table import Table
    from rich.text import Text

    head = prefix if isinstance(prefix, Text) else Text(prefix)
    body = text if isinstance(text, Text) else Text(safe(text))
    g = Table.grid(padding=0)
    g.add_column(no_wrap=True, width=head.cell_len)
    g.add_column(overflow="fold")
    g.add_row(head, body)
    return g


def render_report_table(out, report, sources) -> None:
    """Wrapped lines keep their indent: a finding's message continues under its name, an
    evidence or fix line under its text (render via `hang`). Numbers stay with their units
    (`300 s` is never split at a line's end: render/text.bind_units)."""
    worst = report.worst().label
    style = STYLE.get(worst, "") if worst != "ok" or not report.incomplete else "bold magenta"
    from rich.text import Text

    out.print(bind_units(safe(verdict(report))), style=style or None, markup=False, highlight=False)
    for sev in ("critical", "warning", "info"):
        group = [f for f in report.findings if f.severity.label == sev]
        if not group:
            continue
        out.print()
        out.print(f"[{STYLE[sev]}]{sev.upper()}[/]", markup=True)
        for f in group:
            # the subject and the message name queues, workers, tasks: data, never markup
            out.print(hang(Text.assemble("  ", (f.code, STYLE[sev]), " "),
                           Text.assemble(f"{f.name}  ", (safe(f.subject), "bold"), ": ",
                                         bind_units(safe(f.message)))))
            if f.evidence:
                ev = ", ".join(f"{k}={_short(v)}" for k, v in f.evidence.items())
                out.print(hang("      evidence: ", ev))
            if f.hint:
                out.print(hang("      fix: ", bind_units(safe(f.hint))))
            from celeryctl.invocation import as_typed  # celeryctl named as it was run

            for cmd in f.commands:
                out.print(hang("      $ ", as_typed(cmd)))
    if report.partial:
        out.print()
        out.print("[dim]PARTIAL (ran on data observed in part)[/]", markup=True)
        for s in report.partial:
            out.print(hang(f"  {s.code} ", bind_units(safe(f"{s.name}: {s.reason}"))))
    if report.skipped:
        out.print()
        out.print("[dim]SKIPPED (inputs not observed)[/]", markup=True)
        # one line per cause: a broker (or workers) not observed skips dozens of checks at once
        not_seen = {m.name for m in report.missing}
        by_reason: dict[str, list] = {}
        for s in report.skipped:
            reason = s.reason
            if s.missing and "broker" in not_seen:
                reason = "they read the broker, which was not observed (see SOURCES)"
            elif "workers" in s.missing and "workers" in not_seen:
                reason = "they read the workers, which were not observed (see SOURCES)"
            by_reason.setdefault(reason, []).append(s)
        for reason, group in by_reason.items():
            if len(group) == 1:
                s = group[0]
                out.print(hang(f"  {s.code} ", bind_units(safe(f"{s.name}: {reason}"))))
            else:
                out.print(hang(f"  {len(group)} checks ",
                               bind_units(safe(f"({', '.join(s.code for s in group)}): "
                                               f"{reason}"))))
    for s in sources:  # topology worth seeing on every run: Sentinel's view of the master
        if s.name == "sentinel" and s.ok and s.detail:
            out.print()
            out.print(hang("sentinel: ", s.detail))
    bad = [s for s in sources if s.ok is False or s.partial]
    if bad:
        out.print()
        out.print("[dim]SOURCES NOT OBSERVED (or observed in part)[/]", markup=True)
        for s in bad:
            if s.ok is False:
                out.print(hang("  ", f"{s.name} {s.url or ''}: "
                                     f"{STATE_LABELS.get(s.state, s.state)}: {s.error}"))
                out.print(hang("      fix: ", FIXES.get(s.state, FIXES['failed'])))
            for p in s.partial:
                out.print(hang("  ", f"{s.name}: not read: {p}"))


def _short(v: Any) -> str:
    text = dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 120 else text[:117] + "..."


def render_report_markdown(out, report, sources, target: dict) -> None:
    """Every name and text from the cluster through render/text.md (or a code span or fence
    longer than any backtick run in it): a queue called `a|b` stays in its table cell."""
    lines = [f"## celeryctl doctor — {md(verdict(report))}", "",
             f"Broker {md_code(target.get('broker'))}"
             + (f", result backend {md_code(target.get('result_backend'))}"
                if target.get("result_backend") else ""), ""]
    if report.findings:
        lines += ["| severity | code | subject | finding |", "|---|---|---|---|"]
        for f in report.findings:
            lines.append(f"| {f.severity.label} | {f.code} {md(f.name)} | {md(f.subject)} | "
                         f"{md(f.message)} |")
        lines.append("")
        for f in report.findings:
            lines += [f"### {f.code} {md(f.name)}: {md(f.subject)}", "", md(f.message), ""]
            if f.evidence:
                lines += ["Evidence:", "", *_fenced("json", dumps(f.evidence, indent=2)), ""]
            if f.hint:
                lines += [f"Fix: {md(f.hint)}", ""]
            if f.commands:
                lines += [*_fenced("sh", "\n".join(safe(c) for c in f.commands)), ""]
    if report.skipped:
        lines += ["### Skipped", ""] + [f"- {s.code} {md(s.name)}: {md(s.reason)}"
                                        for s in report.skipped] + [""]
    if report.partial:
        lines += ["### Partial", ""] + [f"- {s.code} {md(s.name)}: {md(s.reason)}"
                                        for s in report.partial] + [""]
    lines += ["### Sources", ""] + [
        f"- {md(s.name)} {md_code(s.url)}: "
        + ("observed" if s.ok else "not checked" if s.ok is None
           else f"**{STATE_LABELS.get(s.state, s.state)}** ({md(s.error or '-')})")
        + "".join(f"; not read: {md(p)}" for p in s.partial)
        for s in sources]
    out.write("\n".join(lines) + "\n")


def _fenced(lang: str, text: str) -> list[str]:
    """A fenced code block no backtick run inside `text` can close."""
    import re

    longest = max((len(r) for r in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * (longest + 1)
    return [fence + lang, text, fence]


def render_report_json(out, report, sources, target: dict, elapsed: float,
                       notes: list[str] | None = None) -> None:
    doc = {
        "schema": SCHEMA,
        "findings": [f.to_dict() for f in report.findings],
        "skipped": [s.to_dict() for s in report.skipped],
        "not_applicable": [s.to_dict() for s in report.not_applicable],
        "partial": [s.to_dict() for s in report.partial],
        "sources": [s.to_dict() for s in sources],
        "summary": {"verdict": verdict(report), "worst": report.worst().label,
                    "complete": not report.incomplete,
                    "not_observed": [m.to_dict() for m in report.missing],
                    **report.counts(), "checks_ran": len(report.ran),
                    "checks_skipped": len(report.skipped),
                    "checks_partial": len(report.partial),
                    "elapsed_seconds": round(elapsed, 3)},
        "target": target,
        "notes": list(notes or []),
    }
    out.write(dumps(doc, indent=2) + "\n")


def render_check_page(c) -> str:
    """The docs/checks/CODE.md page of a check (also what `celeryctl explain` prints)."""
    from celeryctl.checks import BROKER_NAMES

    needs = ", ".join(c.needs) or "nothing beyond the target"
    broker = f" Applies to: {BROKER_NAMES[c.broker]} only." if c.broker else ""
    return (f"# {c.code} {c.name}\n\nFamily: {c.family}. Needs: {needs}.{broker}\n\n"
            f"{c.doc}\n")


def rewrap_markdown(text: str, width: int) -> str:
    """Markdown rewrapped to `width` for a terminal: paragraphs and list items refilled
    (list items keep a hanging indent); headings, tables, code blocks (fenced or indented)
    and blank lines kept as they are."""
    import re
    import textwrap

    width = max(width, 20)
    out: list[str] = []
    para: list[str] = []
    lead = ""

    def flush() -> None:
        nonlocal para, lead
        if para:
            out.extend(textwrap.wrap(" ".join(para), width, initial_indent=lead,
                                     subsequent_indent=" " * len(lead),
                                     break_long_words=False, break_on_hyphens=False))
        para, lead = [], ""

    fenced = False
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            flush()
            fenced = not fenced
            out.append(line)
            continue
        if (fenced or not line.strip() or line.startswith(("#", "|", "    ", "\t"))
                or re.match(r"^[-*_]{3,}\s*$", line)):
            flush()
            out.append(line)
            continue
        item = re.match(r"^(\s*(?:[-*+]|\d+[.)])\s+)(.*)$", line)
        if item:
            flush()
            lead, rest = item.group(1), item.group(2)
            para = [rest]
            continue
        para.append(line.strip())
    flush()
    return "\n".join(out)
