"""SER: serialization — what producers send vs what workers accept."""

from __future__ import annotations

from collections.abc import Iterator

from celeryctl.checks import Finding, Limits, Severity, check
from celeryctl.invocation import quote

ALIASES = {"json": "application/json", "pickle": "application/x-python-serialize",
           "yaml": "application/x-yaml", "msgpack": "application/x-msgpack",
           "application/data": "application/data", "auth": "application/data"}


def content_types(accept) -> set[str]:
    """Celery accept_content names/MIME types -> MIME types (kombu's prepare_accept_content)."""
    out = set()
    for a in accept or ():
        a = str(a)
        out.add(ALIASES.get(a, a))
    return out


@check("SER001", "pickle-accepted", needs=("workers",))
def pickle_accepted(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers whose `accept_content` includes pickle (`application/x-python-serialize`).

    ## Why it matters
    Anyone who can publish to the broker can run code on the worker: unpickling a message
    executes whatever it says. The Celery docs warn against it.

    ## How to fix
    Use `accept_content = ["json"]` and JSON-serialisable task arguments; if pickle is
    unavoidable, sign messages (`task_serializer = "auth"`, `celery.security`).
    """
    for name, c in snap.worker_confs().items():
        if "application/x-python-serialize" in content_types(c.get("accept_content")):
            yield Finding(Severity.WARNING, f"worker {name}",
                          "accepts pickle: anyone who can publish to the broker can run code "
                          "on this worker",
                          evidence={"accept_content": c.get("accept_content")},
                          hint='Set accept_content = ["json"].')


@check("SER002", "producer-serializer-not-accepted", needs=("workers", "app"))
def producer_serializer_not_accepted(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    The app's `task_serializer` (from `-A`) is not in some worker's `accept_content`.

    ## Why it matters
    Workers refuse such messages ("Refusing to deserialize untrusted content") and discard
    them without a result or a failure event: the tasks silently never run.

    ## How to fix
    Make producers and workers agree: the same `task_serializer`, listed in every worker's
    `accept_content`. When the producers send pickle, switch them to json
    (`task_serializer = "json"`) rather than adding pickle to `accept_content`: a worker that
    accepts pickle runs code for anyone who can publish to the broker (SER001).
    """
    app = snap.app_settings
    ser = app.get("task_serializer") or "json"
    mime = ALIASES.get(ser, ser)
    for name, c in snap.worker_confs().items():
        accepted = content_types(c.get("accept_content"))
        if accepted and mime not in accepted and mime != "application/data":
            yield Finding(Severity.CRITICAL, f"worker {name}",
                          f"producers send {ser} but the worker accepts only "
                          f"{', '.join(sorted(accepted))}: it discards those tasks unrun",
                          evidence={"task_serializer": ser,
                                    "accept_content": c.get("accept_content")},
                          hint=_ser002_hint(mime))


def _ser002_hint(mime: str) -> str:
    if mime == ALIASES["pickle"]:  # never "add pickle to accept_content": that is SER001
        return ('Switch the producers to json (task_serializer = "json"); do not add pickle '
                "to accept_content: unpickling runs code for anyone who can publish (SER001).")
    return "Add the producers' serializer to accept_content, or change task_serializer."


@check("SER003", "workers-disagree-on-accept-content", needs=("workers",))
def workers_disagree_on_accept_content(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers with different `accept_content` sets.

    ## Why it matters
    A message that one worker runs, another discards as untrusted: which happens depends on
    who picks it up. Workers that reply in a serializer their peers do not accept also break
    mingle and gossip.

    ## How to fix
    Deploy one `accept_content` to every worker.
    """
    from celeryctl.checks.wrk import reported

    values, _absent = reported(snap.worker_confs(), "accept_content")
    sets = {name: sorted(content_types(v)) for name, v in values.items()}
    if len({tuple(v) for v in sets.values()}) > 1:
        n = len({tuple(v) for v in sets.values()})
        yield Finding(Severity.WARNING, "setting accept_content",
                      f"{len(sets)} workers accept {n} different sets of content types: a "
                      "message one of them runs, another discards",
                      evidence={"per_worker": sets},
                      hint="Deploy one accept_content everywhere.")


@check("SER004", "queued-content-not-accepted", needs=("samples", "workers", "queues"))
def queued_content_not_accepted(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Messages waiting in a queue whose content type no worker consuming that queue accepts.
    Doctor reads a bounded sample from the consuming end of each queue (Redis `LRANGE`; the
    JSON envelope and headers only, never the body, never unpickling) and compares each
    message's `content-type` with the consumers' `accept_content` (from `inspect conf`). For a
    queue nobody consumes, every live worker's `accept_content` is used.

    ## Why it matters
    A worker that receives such a message logs "Refusing to deserialize untrusted content of
    type ..." and discards it: no result, no failure event, no retry. The queue drains and
    the work is silently lost.

    ## How to fix
    Make producers use a serializer the workers accept (`task_serializer`, or
    `apply_async(serializer=...)`), or add that type to the workers' `accept_content`
    (never pickle from untrusted producers). Until then, stop the consumers of that queue so
    the messages are not discarded.
    """
    confs = snap.worker_confs()
    if not confs:
        return
    consumers = {q.name: list(q.consumer_workers) for q in snap.queues}
    for queue, msgs in sorted((snap.get("samples") or {}).items()):
        names = [n for n in consumers.get(queue, []) if n in confs] or list(confs)
        accepted = set.union(*(content_types(confs[n].get("accept_content")) for n in names))
        bad: dict[str, list[str]] = {}
        for m in msgs:
            ct = m.content_type or "unknown"
            if ct not in accepted and ct != "application/data":
                bad.setdefault(ct, []).append(m.task or "?")
        for ct, tasks in sorted(bad.items()):
            consuming = bool(consumers.get(queue))
            who = ("its consumers do not accept: they will discard them unrun" if consuming
                   else "no live worker accepts: any of them that consumes this queue will "
                   "discard them unrun")
            yield Finding(Severity.CRITICAL if consuming else Severity.WARNING, f"queue {queue}",
                          f"{len(tasks)} of {len(msgs)} sampled messages are {ct}, which {who}",
                          evidence={"content_type": ct, "sampled": len(msgs),
                                    "not_accepted": len(tasks),
                                    "tasks": sorted(set(tasks))[:10],
                                    "workers": names[:10],
                                    "accept_content": sorted(accepted)},
                          hint="Align task_serializer with the workers' accept_content.",
                          commands=[f"celeryctl workers inspect conf -d {quote(names[0])}"])


@check("SER005", "result-serializer-not-accepted", needs=("workers", "app"))
def result_serializer_not_accepted(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    Workers whose `result_serializer` is not accepted by the producers' result decoding
    (`result_accept_content`, else `accept_content`, from `-A`).

    ## Why it matters
    The task runs and stores its result, but every `AsyncResult.get()` in the producers
    raises ContentDisallowed: callers see failures for work that succeeded, and chords never
    complete.

    ## How to fix
    Use one `result_serializer` everywhere (json), listed in `result_accept_content` of
    every process that reads results.
    """
    app = snap.app_settings
    accept = app.get("result_accept_content") or app.get("accept_content") or ["json"]
    accepted = content_types(accept)
    for name, c in snap.worker_confs().items():
        ser = c.get("result_serializer") or "json"
        mime = ALIASES.get(ser, ser)
        if mime not in accepted and mime != "application/data":
            yield Finding(Severity.CRITICAL, f"worker {name}",
                          f"stores results as {ser}, which the producers do not accept: "
                          "AsyncResult.get() raises ContentDisallowed for tasks that succeeded",
                          evidence={"result_serializer": ser,
                                    "producer_result_accept_content": list(accept)},
                          hint="Align result_serializer with result_accept_content.")
