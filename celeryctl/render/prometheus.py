"""`doctor --format prometheus`: the key gauges in the Prometheus text exposition format, for
node_exporter's textfile collector (write to a .prom file atomically: `> x.tmp && mv`).

Names follow Prometheus conventions: a `celeryctl_` prefix, base units (`_seconds`), no unit
for counts; labels are escaped per the exposition format, control characters written as
`\\x1b` text first (`label_value`). Only what was observed is exported:
an unobserved source yields `celeryctl_source_up 0`, not zeros that look like data.
"""

from __future__ import annotations

from typing import Any

SEVERITIES = ("info", "warning", "critical")


def label_value(value: Any) -> str:
    """A label value for the exposition text: control characters (ESC, BEL, CR, tab, C1, the
    bidirectional overrides...) first written as visible text (`\\x1b`, as a terminal shows
    names: celeryctl.render.text), then the format's own escaping of `\\`, `"` and newline —
    so neither `cat` of a .prom file nor a scrape ever carries a raw terminal escape."""
    from celeryctl.render.text import safe_lines

    return safe_lines(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')



def _labels(**labels: Any) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{label_value(v)}"' for k, v in labels.items()) + "}"


def _num(v: float | int) -> str:
    return repr(float(v)) if isinstance(v, float) else str(int(v))


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, help_text: str, samples: list[tuple[dict[str, Any], Any]]
               ) -> None:
        samples = [(lb, v) for lb, v in samples if v is not None]
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} gauge")
        for lb, v in samples:
            self.lines.append(f"{name}{_labels(**lb)} {_num(v)}")


def render_prometheus(snap, report, sources, elapsed: float) -> str:
    o = _Out()
    o.metric("celeryctl_source_up", "1 when celeryctl could read this source, else 0.",
             [({"source": s.name}, 1 if s.ok else 0) for s in sources if s.ok is not None])
    o.metric("celeryctl_doctor_duration_seconds", "Wall time of the collection.",
             [({}, round(elapsed, 3))])
    queues = [q for q in snap.queues if not q.internal]
    o.metric("celeryctl_queue_ready_messages", "Messages waiting in the queue (Redis: every "
             "priority sub-list).",
             [({"queue": q.name, "vhost": q.vhost or ""}, q.ready) for q in queues])
    o.metric("celeryctl_queue_unacked_messages", "Messages delivered and not yet acknowledged.",
             [({"queue": q.name, "vhost": q.vhost or ""}, q.unacked) for q in queues])
    o.metric("celeryctl_queue_consumers", "Consumers of the queue (RabbitMQ: the broker's count; "
             "Redis: workers whose active_queues include it).",
             [({"queue": q.name, "vhost": q.vhost or ""}, q.consumers) for q in queues])
    view = snap.workers
    if view is not None:
        o.metric("celeryctl_workers_up", "Workers that answered remote control.",
                 [({}, len({n.name for n in view.nodes}))])
        o.metric("celeryctl_workers_expected", "Workers expected from the pidbox bindings.",
                 [({}, len(view.expected) if view.expected is not None else None)])
    conns = snap.get("connections")
    if conns is not None:
        roles: dict[str, int] = {}
        for c in conns:
            roles[c.role or "other"] = roles.get(c.role or "other", 0) + 1
        o.metric("celeryctl_broker_connections", "Broker connections (Redis clients) by role.",
                 [({"role": r}, n) for r, n in sorted(roles.items())])
    counts: dict[tuple[str, str], int] = {}
    for f in report.findings:
        key = (f.code, f.severity.label)
        counts[key] = counts.get(key, 0) + 1
    o.metric("celeryctl_findings", "doctor findings by check code and severity.",
             [({"code": code, "severity": sev}, n) for (code, sev), n in sorted(counts.items())])
    by_sev = {s: 0 for s in SEVERITIES}
    for f in report.findings:
        if f.severity.label in by_sev:
            by_sev[f.severity.label] += 1
    o.metric("celeryctl_findings_by_severity", "doctor findings per severity.",
             [({"severity": s}, n) for s, n in by_sev.items()])
    o.metric("celeryctl_checks_skipped", "Checks that could not run (an input not observed).",
             [({}, len(report.skipped))])
    o.metric("celeryctl_snapshot_timestamp_seconds", "When the data was collected (Unix time).",
             [({}, round(snap.taken_at, 3))])
    return "\n".join(o.lines) + "\n"
