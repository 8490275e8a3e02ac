"""Run collectors in parallel under one wall-clock deadline.

Socket timeouts (redis-py `socket_timeout`, requests' read timeout, pika's) bound each
`recv`, not an operation: a server that trickles one byte every half second resets them on
every byte and a read never ends. A DNS lookup can hang, a library can retry. So every read
runs in a daemon thread that is abandoned — not waited for — once the whole-operation
deadline passes; the caller gets an `Observed` error naming the source and the budget
("no answer within 1.0 s"). Daemon threads (not a ThreadPoolExecutor, whose threads are
joined at exit) so an abandoned call can never keep the process alive; one-shot commands
then exit hard (`ABANDONED`, cli/__init__._exit).

A long-running caller (`queues watch`, refresh after refresh) must not pile up abandoned
threads still reading from a trickling server: it gives `cancel`, called once when the task
is abandoned, which shuts the task's sockets down (`shutdown_redis` through the client's
`SocketGuard`; `ManagementAPI.abort`), so the thread fails at once and its connection is
dropped; the next refresh reconnects. `gather` does the same for what it gave up on when it
returns. `run()` is the one-call form (one read, one budget), `call()` the same raising
`NoAnswer`.

Not cancelled: kombu's connections (remote control) — an abandoned broadcast ends when its
own reply window or the library's timeouts end it.
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
# `run`/`call` wait this long past the timeout: the library's own timeouts (socket, pika's
# stack_timeout), which fire at the timeout, say more precisely what happened ("read timed
# out", "did not complete the AMQP handshake") than "no answer within"; the deadline is the
# backstop for what they cannot bound (a trickle, a reply that never comes)
SLACK = 0.25


class Task:
    def __init__(self, name: str, fn: Callable[[], Any], describe: str,
                 cancel: Callable[[], Any] | None = None) -> None:
        self.name = name
        self.describe = describe
        self._fn = fn
        self._cancel = cancel
        self.abandoned = False
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
            self._abandon()
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


    def _abandon(self) -> None:
        """Give up on the call; `cancel` (once, in its own daemon thread: closing a socket
        must not block the caller either) frees what the abandoned thread holds."""
        if self.abandoned:
            return
        self.abandoned = True
        if self._cancel is not None:
            threading.Thread(target=_quietly, args=(self._cancel,), daemon=True,
                             name=f"cancel-{self.name}").start()


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001, S110 - best effort: the call is abandoned anyway
        pass


def spawn(name: str, fn: Callable[[], Any], describe: str | None = None,
          cancel: Callable[[], Any] | None = None) -> Task:
    return Task(name, fn, describe or name, cancel)


def run(name: str, fn: Callable[[], Any], describe: str, timeout: float,
        cancel: Callable[[], Any] | None = None) -> tuple[Observed, bool]:
    """One read under one whole-operation budget (`timeout` + `SLACK`): (the Observed,
    whether it was abandoned — then `cancel` was called and the caller must not reuse the
    connection)."""
    task = spawn(name, fn, describe, cancel)
    obs = task.wait(time.monotonic() + timeout + SLACK)
    return obs, task.abandoned


class NoAnswer(ConnectionError):
    """A call that missed its whole-operation deadline (`call`)."""

    kind = UNREACHABLE


def call(name: str, fn: Callable[[], Any], describe: str, timeout: float,
         cancel: Callable[[], Any] | None = None) -> Any:
    """`run` for code that wants the value or an exception: what `fn` returns or raises,
    or `NoAnswer` ("... no answer within 1.2 s") once `timeout` + `SLACK` passed."""
    task = spawn(name, fn, describe, cancel)
    obs = task.wait(time.monotonic() + timeout + SLACK)
    if task.abandoned:
        raise NoAnswer(obs.error)
    if task.exception is not None:
        raise task.exception
    return task._result


class SocketGuard:
    """The sockets a client opens, so that a caller giving up on it can shut them all down
    (`shut`): a thread blocked reading one wakes with an error. Sockets opened after `shut`
    — a thread that was between connecting and its first read, or that goes on with its next
    command on a fresh connection — are shut down as they open."""

    def __init__(self) -> None:
        import weakref

        self._lock = threading.Lock()
        self._socks: weakref.WeakSet = weakref.WeakSet()
        self.closed = False

    def opened(self, sock: Any) -> None:
        with self._lock:
            if not self.closed:
                self._socks.add(sock)
                return
        _shutdown(sock)

    def shut(self) -> None:
        with self._lock:
            self.closed = True
            socks = list(self._socks)
        for sock in socks:
            _shutdown(sock)


def _shutdown(sock: Any) -> None:
    import socket

    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass


def shutdown_redis(client: Any) -> None:
    """Cancel for a redis-py client made by `collect.redis.redis_client`: shut every socket
    it opened, or will open, down (its `SocketGuard`)."""
    guard = getattr(client, "celeryctl_guard", None)
    if guard is not None:
        guard.shut()
    else:  # not ours: the connections open now
        client.connection_pool.disconnect()


def describe_error(exc: BaseException) -> str:
    """One line, no secrets: what kind of failure, and the library's message."""
    from celeryctl.collect.errors import classify

    return classify(exc)[1]
