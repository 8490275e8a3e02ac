"""Run collectors in parallel under one wall-clock deadline.

Socket timeouts bound each call, but a server can still trickle bytes, a DNS lookup can
hang, or a library can retry. So every collector also runs in a daemon thread that is
abandoned — not waited for — once the deadline passes; the caller gets an `Observed` error
naming the source and the budget. Daemon threads (not a ThreadPoolExecutor, whose threads
are joined at exit) so an abandoned call can never keep the process alive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from celeryctl.snapshot import Observed
from celeryctl.urls import SECRETS

ABANDONED = threading.Event()  # set when any thread was left running: the CLI exits hard


class Task:
    def __init__(self, name: str, fn: Callable[[], Any], describe: str) -> None:
        self.name = name
        self.describe = describe
        self._fn = fn
        self._done = threading.Event()
        self._result: Any = None
        self._exc: BaseException | None = None
        self.started = time.monotonic()
        self.elapsed = 0.0
        self._thread = threading.Thread(target=self._run, name=f"collect-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._fn()
        except BaseException as exc:  # noqa: BLE001 - reported, never raised in the thread
            self._exc = exc
        finally:
            self.elapsed = time.monotonic() - self.started
            self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, deadline: float) -> Observed:
        """The result as an Observed; an error if it failed or missed the deadline."""
        remaining = max(0.0, deadline - time.monotonic())
        if not self._done.wait(remaining):
            ABANDONED.set()
            waited = time.monotonic() - self.started
            return Observed(error=f"{self.describe}: no answer within {waited:.1f} s",
                            elapsed_seconds=waited)
        if self._exc is not None:
            return Observed(error=f"{self.describe}: {describe_error(self._exc)}",
                            elapsed_seconds=self.elapsed)
        result = self._result
        if isinstance(result, Observed):
            if not result.elapsed_seconds:
                result = Observed(result.value, result.error, result.source, self.elapsed,
                                  result.notes)
            return result
        return Observed(value=result, elapsed_seconds=self.elapsed)


def spawn(name: str, fn: Callable[[], Any], describe: str | None = None) -> Task:
    return Task(name, fn, describe or name)


def describe_error(exc: BaseException) -> str:
    """One line, no secrets: the exception class family and its message."""
    # TLS handshake failures first: their text would otherwise read as a generic network
    # error, and each needs its own fix (CA, host name, client certificate)
    from celeryctl.collect.tls_errors import describe_tls_error

    tls = describe_tls_error(exc)
    if tls is not None:
        return tls
    text = str(exc).strip() or type(exc).__name__
    # Unwrap the noisy prefixes libraries put in front of errno texts.
    text = " ".join(text.split())
    lowered = text.lower()
    cls = type(exc).__name__
    if "authentication required" in lowered or "noauth" in lowered:
        summary = "authentication required (the server has a password; none was given)"
    elif cls == "AuthenticationError" or "invalid username-password" in lowered or \
            "wrongpass" in lowered:
        summary = "authentication failed (wrong user name or password)"
    elif "refused" in lowered:
        summary = "connection refused"
    elif "timed out" in lowered or "timeout" in lowered:
        summary = "timed out"
    elif "name or service not known" in lowered or "nodename nor servname" in lowered:
        summary = "host name does not resolve"
    elif "access_refused" in lowered or "access refused" in lowered:
        summary = "authentication failed (wrong user name or password)"
    else:
        summary = None
    text = SECRETS.scrub(text)
    if len(text) > 300:
        text = text[:297] + "..."
    if summary is None or summary.split(" (")[0] in lowered:
        return text
    return f"{summary}: {text}"
