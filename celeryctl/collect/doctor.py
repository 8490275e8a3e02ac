"""What `celeryctl doctor` collects: one `gather` of every source, then — with
`--sample-interval` — a second sample for queue growth and memory growth. Returns the
Gathered (sources, notes) and the Snapshot the checks read."""

from __future__ import annotations

import time

from celeryctl.collect import Gathered, gather, to_snapshot
from celeryctl.collect.errors import NOT_ASKED
from celeryctl.snapshot import (
    Observed,
    Snapshot,
    growth_from_rates,
    growth_from_samples,
    rss_growth,
)
from celeryctl.targets import Target

DOCTOR_METHODS = ("ping", "stats", "active", "reserved", "scheduled", "active_queues", "conf",
                  "registered", "report")  # registered: with TASK_INFO_ITEMS (celeryctl.tasks)
ONE_SAMPLE = "one sample only: pass --sample-interval SECONDS to measure {}"


def collect_doctor(target: Target, *, sample: int, sample_interval: float,
                   peek: bool, events: bool = False) -> tuple[Gathered, Snapshot]:
    """`events`: a `--events` window follows (its part is added by cli/doctor.py): who
    consumes events is then read whatever the workers' settings say (EVT005)."""
    g = gather(target, workers=DOCTOR_METHODS, queues=True, connections=True, server=True,
               backend=bool(target.result_backend), samples=sample, peek=peek,
               inflight=True)
    snap = to_snapshot(g)
    snap.parts.update(_growth_parts(g, target, sample_interval))
    from celeryctl.tasks import task_view, tasks_part

    # the task view as it was at collection (snapshots carry it; TSK checks read it)
    snap.parts["tasks"] = tasks_part(task_view(snap, snap.taken_at))
    snap.parts["event_consumers"] = event_consumers(g, target, always=events)
    snap.parts["events"] = Observed(error=NO_WINDOW, kind=NOT_ASKED)
    return g, snap


NO_WINDOW = "no events window: pass --events SECONDS"


def event_consumers(g: Gathered, target: Target, always: bool = False) -> Observed:
    """EVT005's input: which workers are known to send task events (their conf, or a dead
    `celeryctl events` run's state file on this host) and what consumes events. The
    consumers are read (one PUBSUB NUMSUB + CLIENT LIST on Redis, one management API call on
    RabbitMQ) only when some worker sends them, or `always` (a --events window follows)."""
    if not g.workers.ok or g.workers.value is None:
        return Observed(error=f"workers not observed: {g.workers.error}",
                        kind=g.workers.kind)
    nodes = g.workers.value.nodes
    senders: list[dict] = []
    for n in nodes:
        conf = n.replies.get("conf")
        if isinstance(conf, dict) and conf.get("worker_send_task_events") is True:
            senders.append({"worker": n.name, "why": "worker_send_task_events is on in its "
                                                     "conf"})
    from celeryctl.actions.events import classify_states, read_states

    vhost = target.effective_vhost if target.broker_kind == "amqp" else None
    dead, _live, _notes = classify_states(read_states(), target.broker_redacted, vhost)
    known = {s["worker"] for s in senders}
    for st in dead:
        for w in st.enabled if st.phase == "enabled" else ():
            if w not in known:
                known.add(w)
                senders.append({"worker": w, "why": f"left on by celeryctl events pid "
                                                    f"{st.pid} (started {st.started}, no longer "
                                                    "running)"})
    if not senders and not always:
        return Observed({"senders": [], "consumers": [], "maybe": [], "unknown": None},
                        source="workers")
    from celeryctl.collect.events import event_listeners

    t0 = time.monotonic()
    try:
        seen = event_listeners(target, len(nodes))
    except Exception as exc:  # noqa: BLE001 - said as unknown, never a traceback
        from celeryctl.collect.bounded import describe_error

        seen = {"consumers": [], "maybe": [], "unknown": f"unknown whether anything "
                f"consumes events ({describe_error(exc)})"}
    return Observed({"senders": senders, **seen},
                    source="workers+broker", elapsed_seconds=time.monotonic() - t0)


def _growth_parts(g: Gathered, target: Target, interval: float) -> dict[str, Observed]:
    """`growth` (queues) and `rss_growth` (workers): from a second sample `interval` seconds
    later; without one, queue growth from RabbitMQ's rates when it has them."""
    if not g.queues.ok:
        return {"growth": Observed(error="queues not observed", kind=g.queues.kind),
                "rss_growth": Observed(error=ONE_SAMPLE.format("memory growth"),
                                       kind=NOT_ASKED)}
    if interval > 0:
        time.sleep(interval)
        g2 = gather(target, queues=True, workers=("stats",))
        rss = (Observed(rss_growth(g.workers.value, g2.workers.value))
               if g.workers.ok and g2.workers.ok
               else Observed(error="workers not observed in both samples",
                             kind=g2.workers.kind or g.workers.kind))
        growth = (Observed(growth_from_samples(g.queues.value, g2.queues.value, interval),
                           source="samples", partial=g2.queues.partial)
                  if g2.queues.ok else Observed(error=f"second sample failed: {g2.queues.error}",
                                                kind=g2.queues.kind))
        return {"growth": growth, "rss_growth": rss}
    rates = growth_from_rates(g.queues.value)
    why = ONE_SAMPLE.format("growth")
    if not rates and g.rabbit_server.ok:
        from celeryctl.collect.rabbitmq import rates_unknown_reason

        off = rates_unknown_reason(g.rabbit_server.value)
        why = f"unknown: {off}, so no message rates; {why}" if off else why
    return {"growth": Observed(rates, source="management-api rates") if rates
            else Observed(error=why, kind=NOT_ASKED),
            "rss_growth": Observed(error=ONE_SAMPLE.format("memory growth"), kind=NOT_ASKED)}
