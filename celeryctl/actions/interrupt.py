"""Interruptions during an action: SIGINT (Ctrl-C), SIGTERM, SIGHUP (a closed terminal).

Inside `Deferred()` a signal does not interrupt the code where it happens to land: it is
recorded, and the action looks at `stop.requested` at its safe points (between chunks, between
batches, between queues), stops there and puts back what it had set aside. Later signals are
recorded too, never acted on: the way out of a stuck put-back is `kill -9`, whose leftovers
docs/purge.md tells how to find and recover. SIGPIPE is left to Python (a closed pipe raises
BrokenPipeError at the next write, which the commands catch).
"""

from __future__ import annotations

import os
import signal
import threading

SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP"))
                if s is not None)


class _Handlers:
    """Install `self._handler` for `self.signals` while inside the `with` block (main thread
    only: Python delivers signals there), and put the previous handlers back after."""

    signals: tuple[int, ...] = SIGNALS

    def __enter__(self):
        self._old: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def _handler(self, signum, frame) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class Deferred(_Handlers):
    """A context manager: record SIGINT/SIGTERM/SIGHUP instead of dying of them."""

    def __init__(self, note: str = "",
                 again: str = "kill -9 would leave messages set aside (docs/purge.md)") -> None:
        self.signal: str | None = None
        self.count = 0
        self._note = note
        self._again = again

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handler(self, signum, _frame) -> None:
        self.count += 1
        if self.signal is None:
            self.signal = signal.Signals(signum).name
            text = f"\n{self.signal}: stopping at the next safe point{self._note}\n"
        else:
            text = (f"\n{signal.Signals(signum).name} again: still stopping safely; "
                    f"{self._again}\n")
        try:
            os.write(2, text.encode())
        except OSError:  # the terminal is gone (SIGHUP): nothing to tell
            pass


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C's KeyboardInterrupt (exit 130) while nothing
    has been changed yet, so the command can say so and audit it."""


class Raising(_Handlers):
    """Outside the deferred region of an action: SIGTERM and SIGHUP raise `Interrupted`
    instead of killing the process silently (SIGINT already raises KeyboardInterrupt)."""

    signals = tuple(s for s in SIGNALS if s != signal.SIGINT)

    def _handler(self, signum, _frame) -> None:
        raise Interrupted(signal.Signals(signum).name)


class Never:
    """A stop flag that is never raised (library callers, tests of the pure parts)."""

    signal = None
    requested = False
