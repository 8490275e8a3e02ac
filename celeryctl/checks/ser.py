"""SER: serialization — what producers send vs what workers accept."""

from __future__ import annotations

from collections.abc import Iterator

from celeryctl.checks import Finding, Limits, Severity, check

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
            yield Finding(Severity.WARNING, f"worker {name}", "accepts pickle",
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
    `accept_content`.
    """
    app = snap.app_settings
    ser = app.get("task_serializer") or "json"
    mime = ALIASES.get(ser, ser)
    for name, c in snap.worker_confs().items():
        accepted = content_types(c.get("accept_content"))
        if accepted and mime not in accepted and mime != "application/data":
            yield Finding(Severity.CRITICAL, f"worker {name}",
                          f"producers send {ser} but the worker accepts only "
                          f"{sorted(accepted)}: those tasks are discarded",
                          evidence={"task_serializer": ser,
                                    "accept_content": c.get("accept_content")},
                          hint="Add the producers' serializer to accept_content, or change "
                               "task_serializer.")


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
    sets = {name: sorted(content_types(c.get("accept_content")))
            for name, c in snap.worker_confs().items() if "accept_content" in c}
    if len({tuple(v) for v in sets.values()}) > 1:
        yield Finding(Severity.WARNING, "setting accept_content",
                      "workers accept different content types", evidence={"per_worker": sets},
                      hint="Deploy one accept_content everywhere.")
