"""A TCP fault-injection proxy: a real client talks to a real server through it, and it
makes the server look slow, silent or broken. For the lab and the tests only (loopback).

    from celeryctl.lab.faultproxy import FaultProxy

    proxy = FaultProxy("127.0.0.1", redis_port).start()   # listens on 127.0.0.1:proxy.port
    url = f"redis://127.0.0.1:{proxy.port}/0"
    proxy.mode = "trickle"          # switchable at any time, for open connections too
    ...
    proxy.stop()                    # or: with FaultProxy(...) as proxy:

Modes (what the proxy does to the bytes of every connection):

- ``pass``: forwards both ways.
- ``delay``: forwards both ways, each chunk `delay` seconds late (default 0.05).
- ``trickle``: client -> server as is; server -> client one byte every `trickle` seconds
  (default 0.5) — every recv of the client gets a byte in time, so per-recv socket timeouts
  never fire.
- ``blackhole``: accepts and keeps the sockets open, forwards nothing in either direction.
- ``reset``: client -> server as is; forwards `reset_after` bytes (default 0) of the
  server's reply, then resets the client (RST: SO_LINGER 0) and closes the upstream side.

`after_bytes` (default 0): every mode but ``pass`` applies only once the proxy has
forwarded that many bytes from the server, all connections together (`bytes_down`): set it
to `bytes_down` + the size of a handshake and the first connection's handshake passes, then
everything — later replies, later connections — is faulty. The attributes (`mode`, `delay`, `trickle`, `reset_after`, `after_bytes`) can be set at
any time; `connections` counts the connections accepted, `bytes_down` the bytes forwarded
from the server (all connections: a test measures a handshake with it). Threads, one listener and two
pumps per connection, all daemons; `stop()` closes every socket.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time

MODES = ("pass", "delay", "trickle", "blackhole", "reset")
TICK = 0.02  # how often a pump looks at the mode and the stop flag


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, mode: str = "pass", *,
                 delay: float = 0.05, trickle: float = 0.5, reset_after: int = 0,
                 after_bytes: int = 0, listen_host: str = "127.0.0.1",
                 listen_port: int = 0) -> None:
        self.upstream = (upstream_host, int(upstream_port))
        self.mode = mode
        self.delay = delay
        self.trickle = trickle
        self.reset_after = reset_after
        self.after_bytes = after_bytes
        self.connections = 0
        self.bytes_down = 0
        self._listen = (listen_host, listen_port)
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    # --- public -----------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {value!r}")
        self._mode = value

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("FaultProxy not started")
        return self._sock.getsockname()[1]

    def start(self) -> FaultProxy:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(self._listen)
        s.listen(128)
        s.settimeout(TICK * 5)
        self._sock = s
        self._spawn(self._accept_loop, "faultproxy-accept")
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            socks = list(self._open)
            self._open.clear()
        for c in socks:
            _close(c)
        if self._sock is not None:
            _close(self._sock)
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(timeout=2)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- internals --------------------------------------------------------------------
    def _spawn(self, fn, name: str, *args) -> None:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)  # the upstream is down: so is the proxy
                continue
            for s in (client, upstream):
                s.setblocking(True)
                s.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            state = _Conn(client, upstream)
            self._spawn(self._pump, "faultproxy-up", state, client, upstream, False)
            self._spawn(self._pump, "faultproxy-down", state, upstream, client, True)

    def _faulty(self, state: _Conn) -> str:
        mode = self._mode
        if mode != "pass" and self.bytes_down < self.after_bytes:
            return "pass"
        return mode

    def _pump(self, state: _Conn, src: socket.socket, dst: socket.socket,
              downstream: bool) -> None:
        """Move bytes src -> dst as the mode says. `downstream`: server -> client."""
        pending = b""
        reset_sent = 0  # bytes forwarded in reset mode on this connection
        try:
            while not self._stop.is_set() and not state.closed:
                mode = self._faulty(state)
                if mode == "blackhole":
                    time.sleep(TICK)
                    continue
                if not pending:
                    ready, _, _ = select.select([src], [], [], TICK)
                    if not ready:
                        continue
                    data = src.recv(65536)
                    if not data:  # src closed its side: pass the end on
                        _shutdown_write(dst)
                        state.half_closed(self)
                        return
                    pending = data
                    mode = self._faulty(state)
                    if mode == "delay":
                        time.sleep(self.delay)
                if not downstream or mode in ("pass", "delay"):
                    if mode == "blackhole":
                        continue
                    dst.sendall(pending)
                    if downstream:
                        self._count(state, len(pending))
                    pending = b""
                elif mode == "trickle":
                    dst.sendall(pending[:1])
                    self._count(state, 1)
                    pending = pending[1:]
                    self._stop.wait(self.trickle)
                elif mode == "reset":
                    room = max(0, self.reset_after - reset_sent)
                    if room:
                        chunk = pending[:room]
                        dst.sendall(chunk)
                        self._count(state, len(chunk))
                        reset_sent += len(chunk)
                        pending = pending[len(chunk):]
                    if reset_sent >= self.reset_after and pending:
                        state.reset(self)
                        return
        except (OSError, ValueError):  # a socket closed under us (stop, the other pump)
            state.close(self)

    def _count(self, state: _Conn, n: int) -> None:
        state.down_bytes += n
        with self._lock:
            self.bytes_down += n

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open = [s for s in self._open if s not in socks]


class _Conn:
    """One proxied connection: both sockets and how many bytes the server sent on it."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.down_bytes = 0
        self.closed = False
        self._ends = 0
        self._lock = threading.Lock()

    def half_closed(self, proxy: FaultProxy) -> None:
        with self._lock:
            self._ends += 1
            done = self._ends >= 2
        if done:
            self.close(proxy)

    def reset(self, proxy: FaultProxy) -> None:
        self.closed = True
        _reset(self.client)
        _close(self.upstream)
        proxy._forget(self.client, self.upstream)

    def close(self, proxy: FaultProxy) -> None:
        self.closed = True
        _close(self.client)
        _close(self.upstream)
        proxy._forget(self.client, self.upstream)


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST ("connection reset by peer")."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _close(sock)


def _shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
