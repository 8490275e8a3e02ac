"""Run collectors in parallel under one wall-clock deadline.

Socket timeouts bound each call, but a server can still trickle bytes, a DNS lookup can
hang, or a library can retry. So every collector also runs in a daemon thread that is
abandoned — not waited for — once the deadline passes; the caller gets an `Observed` error
naming the source and the budget. Daemon threads (not a ThreadPoolExecutor, whose threads
are joined at exit) so an abandoned call can never keep the process alive.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from celeryctl.collect.errors import UNREACHABLE, classify
from celeryctl.snapshot import Observed

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

    @property
    def exception(self) -> BaseException | None:
        """What the call raised (once done): callers that must tell *which* failure it was
        (a refusal after connecting, say) look at it; everyone else reads `wait()`."""
        return self._exc if self._done.is_set() else None

    def wait(self, deadline: float) -> Observed:
        """The result as an Observed; an error if it failed or missed the deadline."""
        remaining = max(0.0, deadline - time.monotonic())
        if not self._done.wait(remaining):
            ABANDONED.set()
            waited = time.monotonic() - self.started
            return Observed(error=f"{self.describe}: no answer within {waited:.1f} s",
                            elapsed_seconds=waited, kind=UNREACHABLE)
        if self._exc is not None:
            kind, text = classify(self._exc)
            return Observed(error=f"{self.describe}: {text}", elapsed_seconds=self.elapsed,
                            kind=kind)
        result = self._result
        if isinstance(result, Observed):
            if not result.elapsed_seconds:
                result = dataclasses.replace(result, elapsed_seconds=self.elapsed)
            return result
        return Observed(value=result, elapsed_seconds=self.elapsed)


def spawn(name: str, fn: Callable[[], Any], describe: str | None = None) -> Task:
    return Task(name, fn, describe or name)


def describe_error(exc: BaseException) -> str:
    """One line, no secrets: what kind of failure, and the library's message."""
    from celeryctl.collect.errors import classify

    return classify(exc)[1]
