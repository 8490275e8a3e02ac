"""Local socket owners: which process on *this* machine holds a TCP connection.

When a broker client's peer address is on this host (the lab, a single-box deployment, a
sidecar), the peer port identifies the socket in /proc/net/tcp{,6}; its inode identifies the
process through /proc/PID/fd. That names the worker exactly (its main pid or a pool child, both
in `inspect stats`), where matching by host address can only say "one of these workers".
Linux only; silently empty where /proc is not readable.
"""

from __future__ import annotations

import os
from pathlib import Path


def local_socket_pids(ports: set[int]) -> dict[int, int]:
    """Local TCP port -> pid owning that socket, for the given ports."""
    inode_port: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            try:
                port = int(parts[1].rsplit(":", 1)[1], 16)
            except (IndexError, ValueError):
                continue
            if port in ports and parts[9] != "0":
                inode_port[parts[9]] = port
    if not inode_port:
        return {}
    out: dict[int, int] = {}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = os.listdir(pid_dir / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(pid_dir / "fd" / fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                port = inode_port.get(target[8:-1])
                if port is not None:
                    out.setdefault(port, int(pid_dir.name))
    return out


def local_addresses() -> set[str]:
    """Addresses that mean "this machine": loopback plus this host's own addresses."""
    import socket

    addrs = {"127.0.0.1", "::1"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            addrs.add(str(info[4][0]))
    except OSError:
        pass
    return addrs
