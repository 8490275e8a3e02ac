"""Throwaway real servers and workers on loopback: redis-server, rabbitmq-server with the
management plugin (own node name, data directory, cookie and ports), and Celery workers of the
bundled demo app. Used by `celeryctl lab` and by the test suite's fixtures.

Every process is started in its own session (process group) and recorded with its pid and a
marker from its command line, so `stop` kills exactly what `start` started and never a process
that reused the pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from celeryctl.lab.tls import ServerTLS

RABBIT_BIN_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin")
MARKER_VAR = "CELERYCTL_LAB_PROCESS"


class LabError(Exception):
    pass


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free loopback port *below* the kernel's ephemeral range: a port from that range can
    be taken by any outgoing connection between this check and the server's bind (seen: a
    RabbitMQ node dying with eaddrinuse)."""
    import random

    lo, _hi = _ephemeral_range()
    for _ in range(200):
        port = random.randint(20000, max(20001, lo - 1))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # fall back to the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@dataclass
class Proc:
    kind: str  # redis | rabbitmq | worker
    name: str
    pid: int
    marker: str  # the process start time (/proc/PID/stat field 22) proving identity
    log: str
    info: dict = field(default_factory=dict)

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        started = _start_time(self.pid)
        if started is None:
            return True  # no /proc: trust kill(0)
        if started == "Z":
            return False
        # Identity is the start time: redis-server and Celery rewrite their command line and
        # environ (setproctitle), but a reused pid never has the same start time.
        return started == self.marker

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `timeout`."""
        if not self.alive():
            return
        try:
            pgid = os.getpgid(self.pid)
        except OSError:
            return
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGTERM)
            os.killpg(pgid, signal.SIGCONT)  # a scenario may have paused it (SIGSTOP)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not _group_alive(pgid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(self.pid, os.WNOHANG)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False
    # zombies still count for killpg(0): reap ours, then check /proc for live members
    with contextlib.suppress(ChildProcessError, OSError):
        while os.waitpid(-pgid, os.WNOHANG)[0]:
            pass
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parts = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(parts[2]) == pgid and parts[0] != "Z":
            return True
    return False


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), or "Z" for a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return "Z" if fields[0] == "Z" else fields[19]


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None,
           cwd: str | None = None, fd_limit: int | None = None) -> tuple[int, str]:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env)
    env[MARKER_VAR] = "1"

    def limit() -> None:  # in the child, before exec: `ulimit -n fd_limit`
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True,
                                preexec_fn=limit if fd_limit else None)
    return proc.pid, _start_time(proc.pid) or ""


def redis_binary() -> str | None:
    return shutil.which("redis-server")


def rabbitmq_binary() -> str | None:
    for d in RABBIT_BIN_DIRS:
        p = Path(d) / "rabbitmq-server"
        if p.exists():
            return str(p)
    return shutil.which("rabbitmq-server")


def start_redis(base: Path, *, port: int | None = None, password: str | None = None,
                name: str = "redis", bind_all: bool = False, tls: ServerTLS | None = None,
                extra: list[str] | None = None) -> Proc:
    """`tls`: serve TLS on `port` (`--tls-port`) with the lab's certificates, the plain port
    off (`--port 0`) unless `tls.plain_port`; the URL then is rediss:// with the CA (and the
    client certificate when the server requires one) as query parameters. `extra`: more
    redis-server arguments (a scenario's `--rename-command CONFIG ""`)."""
    binary = redis_binary()
    if not binary:
        raise LabError("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    plain = port if tls is None else (free_port() if tls.plain_port else 0)
    # AOF on: the lab should look like a sane production broker (doctor BRK004 stays quiet)
    # bind_all: every interface (only ever inside a private network namespace, see netns)
    cmd = [binary, "--port", str(plain), "--bind", "* -::*" if bind_all else "127.0.0.1",
           "--save", "", "--appendonly", "yes",
           "--dir", str(d), "--daemonize", "no", "--protected-mode", "no", *(extra or [])]
    if tls is not None:
        cmd += ["--tls-port", str(port), "--tls-cert-file", tls.cert,
                "--tls-key-file", tls.key, "--tls-ca-cert-file", tls.certs.ca,
                "--tls-auth-clients", tls.client_certs]
    if password:
        # 0600 files, never the command line (ps) or celeryctl's output: the URL in the state
        # file has no password; `lab env` reads it with $(cat password_file)
        for fname, text in (("password", password), ("auth.conf", f'requirepass "{password}"\n')):
            f = d / fname
            f.touch(mode=0o600)
            f.write_text(text)
        cmd.insert(1, str(d / "auth.conf"))
    log = d / "redis.log"
    pid, marker = _spawn(cmd, log)
    _wait_or_stop(Proc("redis", name, pid, marker, str(log)), lambda: port_open(port), 10,
                  f"redis-server on port {port}", log)
    info = {"port": port, "url": f"redis://127.0.0.1:{port}/0"}
    if tls is not None:
        info.update(url=f"rediss://127.0.0.1:{port}/0?" + tls.redis_query(), tls=tls.summary(),
                    plain_port=plain or None)
    if password:
        info["password_file"] = str(d / "password")
    return Proc("redis", name, pid, marker, str(log), info)


SENTINEL_MASTER = "celeryctl-lab"


def start_replica(base: Path, master_port: int, *, name: str = "redis-replica",
                  priority: int = 100) -> Proc:
    """A redis-server replicating the lab's master (`REPLICAOF`), in sync when this returns.
    `priority` 0: Sentinel never promotes it."""
    import redis

    proc = start_redis(base, name=name)
    r = redis.Redis(port=proc.info["port"], socket_timeout=5)
    r.config_set("replica-priority", priority)
    r.execute_command("REPLICAOF", "127.0.0.1", master_port)

    def synced() -> bool:
        return r.info("replication").get("master_link_status") == "up"

    _wait_or_stop(proc, synced, 15, f"replica of port {master_port}", Path(proc.log))
    proc.info["replica_of"] = master_port
    return proc


def start_sentinel(base: Path, master_port: int, *, name: str = "sentinel", quorum: int = 2,
                   down_after_ms: int = 1000) -> Proc:
    """A Redis Sentinel (`redis-server CONF --sentinel`) monitoring the lab's master under
    the name SENTINEL_MASTER. It rewrites its own config file, so the file is its own."""
    binary = redis_binary()
    if not binary:
        raise LabError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndaemonize no\nprotected-mode no\ndir {d}\n"
        f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} {quorum}\n"
        f"sentinel down-after-milliseconds {SENTINEL_MASTER} {down_after_ms}\n"
        f"sentinel failover-timeout {SENTINEL_MASTER} 10000\n")
    log = d / "sentinel.log"
    pid, marker = _spawn([binary, str(conf), "--sentinel"], log)
    proc = Proc("sentinel", name, pid, marker, str(log), {"port": port})
    _wait_or_stop(proc, lambda: port_open(port), 10, f"sentinel on port {port}", log)
    return proc


def wait_sentinels_agree(ports: list[int], replicas: int, timeout: float = 20.0) -> None:
    """Until every sentinel knows the others and the replicas (discovery takes seconds)."""
    import redis

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ok = True
        for p in ports:
            try:
                m = redis.Redis(port=p, socket_timeout=2).execute_command(
                    "SENTINEL", "MASTER", SENTINEL_MASTER)
                m = {(k.decode() if isinstance(k, bytes) else k):
                     (v.decode() if isinstance(v, bytes) else v)
                     for k, v in (m.items() if isinstance(m, dict)
                                  else zip(m[::2], m[1::2], strict=False))}
                ok &= (int(m.get("num-other-sentinels", 0)) == len(ports) - 1
                       and int(m.get("num-slaves", 0)) >= replicas)
            except Exception:  # noqa: BLE001 - not up yet
                ok = False
        if ok:
            return
        time.sleep(0.3)
    raise LabError(f"sentinels on ports {ports} did not discover each other in {timeout:.0f} s")


def secret_url(info: dict) -> str:
    """A lab server's URL with its password (read from its 0600 file) for clients to use."""
    url = info["url"]
    if info.get("password_file"):
        pw = Path(info["password_file"]).read_text()
        url = url.replace("://", f"://:{pw}@", 1)
    return url


def shell_url(info: dict) -> str:
    """The URL as a shell word that reads the password at run time: `"redis://:$(cat F)@..."`."""
    url = info["url"]
    if info.get("password_file"):
        url = url.replace("://", f"://:$(cat {info['password_file']})@", 1)
    return f'"{url}"'


def start_rabbitmq(base: Path, *, name: str = "rabbitmq", timeout: float = 90.0,
                   attempts: int = 3, fd_limit: int | None = None, cookie: str | None = None,
                   net_ticktime: int | None = None, bind_all: bool = False,
                   tls: ServerTLS | None = None) -> Proc:
    """Start a node; if it dies during boot (a port taken meanwhile), retry on new ports.
    `fd_limit` starts it under `ulimit -n fd_limit` (a node short of file descriptors);
    `cookie` and `net_ticktime` are for clusters (nodes share the cookie; a short tick time
    makes a paused node count as gone within seconds). `tls`: AMQP over TLS (amqps://) and
    the management API over https, with no plain listener."""
    last: LabError | None = None
    for _ in range(attempts):
        try:
            return _start_rabbitmq_once(base, name=name, timeout=timeout, fd_limit=fd_limit,
                                        cookie=cookie, net_ticktime=net_ticktime,
                                        bind_all=bind_all, tls=tls)
        except LabError as exc:
            last = exc
            shutil.rmtree(base / name, ignore_errors=True)
    assert last is not None
    raise last


def _rabbit_env(d: Path, node: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOME=str(d), RABBITMQ_NODENAME=node, RABBITMQ_CONFIG_FILE=str(d / "rabbitmq.conf"),
        RABBITMQ_MNESIA_BASE=str(d / "mnesia"), RABBITMQ_LOG_BASE=str(d / "log"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
        RABBITMQ_PID_FILE=str(d / "pid"), RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
    )
    return env


def rabbitmqctl(info: dict, *args: str, timeout: float = 60.0) -> str:
    """Run `rabbitmqctl -n NODE ARGS` against a lab node (its HOME holds the cookie)."""
    binary = str(Path(rabbitmq_binary() or "rabbitmq-server").with_name("rabbitmqctl"))
    d = Path(info["dir"])
    env = _rabbit_env(d, info["node"])
    r = subprocess.run([binary, "-n", info["node"], *args], env=env, cwd=str(d),
                       capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise LabError(f"rabbitmqctl {' '.join(args)} failed: {(r.stderr or r.stdout).strip()}")
    return r.stdout


def start_rabbitmq_cluster(base: Path, nodes: int = 2, *, net_ticktime: int | None = None,
                           timeout: float = 90.0) -> list[Proc]:
    """`nodes` RabbitMQ nodes joined in one cluster (the first is the seed)."""
    import secrets

    cookie = secrets.token_hex(16).upper()
    procs: list[Proc] = []
    try:
        for i in range(nodes):
            name = "rabbitmq" if i == 0 else f"rabbitmq-{i + 1}"
            procs.append(start_rabbitmq(base, name=name, timeout=timeout, cookie=cookie,
                                        net_ticktime=net_ticktime))
        for p in procs[1:]:
            rabbitmqctl(p.info, "stop_app")
            rabbitmqctl(p.info, "join_cluster", procs[0].info["node"])
            rabbitmqctl(p.info, "start_app")
        for p in procs:
            rabbitmqctl(p.info, "await_startup")
    except BaseException:
        for p in procs:
            p.stop(timeout=5)
        raise
    return procs


def _start_rabbitmq_once(base: Path, *, name: str, timeout: float,
                         fd_limit: int | None = None, cookie: str | None = None,
                         net_ticktime: int | None = None, bind_all: bool = False,
                         tls: ServerTLS | None = None) -> Proc:
    binary = rabbitmq_binary()
    if not binary:
        raise LabError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    amqp, mgmt, dist = free_port(), free_port(), free_port()
    d = (base / name).resolve()
    for sub in ("mnesia", "log"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "enabled_plugins").write_text("[rabbitmq_management].\n")
    listen = str(amqp) if bind_all else f"127.0.0.1:{amqp}"  # bind_all: see netns below
    if tls is None:
        listeners = (f"listeners.tcp.default = {listen}\n"
                     f"management.tcp.port = {mgmt}\n"
                     f"management.tcp.ip = 127.0.0.1\n")
    else:
        listeners = _rabbit_tls_conf(tls, d, listen, mgmt)
    (d / "rabbitmq.conf").write_text(
        listeners +
        "collect_statistics_interval = 500\n"
        "loopback_users = none\n"
    )
    node = f"celeryctl{amqp}@localhost"
    env = _rabbit_env(d, node)
    env["RABBITMQ_DIST_PORT"] = str(dist)
    (d / "rabbitmq-env.conf").write_text("")
    if cookie:  # Erlang reads $HOME/.erlang.cookie, and insists on its mode
        c = d / ".erlang.cookie"
        c.unlink(missing_ok=True)
        c.write_text(cookie)
        c.chmod(0o400)
    if net_ticktime:
        (d / "advanced.config").write_text(
            f"[{{kernel, [{{net_ticktime, {int(net_ticktime)}}}]}}].\n")
        env["RABBITMQ_ADVANCED_CONFIG_FILE"] = str(d / "advanced.config")
    log = d / "server.log"
    pid, marker = _spawn([binary], log, env=env, cwd=str(d), fd_limit=fd_limit)
    info = {"amqp_port": amqp, "management_port": mgmt, "node": node, "dir": str(d),
            # no userinfo: every client defaults to RabbitMQ's guest/guest
            "url": f"amqp://127.0.0.1:{amqp}//",
            "api": f"http://127.0.0.1:{mgmt}"}
    if tls is not None:
        # the ssl_* query parameters are celeryctl's (kombu hands them to py-amqp, which
        # rejects them): lab workers get the same settings as broker_use_ssl instead
        info.update(url=f"amqps://127.0.0.1:{amqp}//?" + tls.redis_query(),
                    api=f"https://127.0.0.1:{mgmt}", tls=tls.summary())
    proc = Proc("rabbitmq", name, pid, marker, str(log), info)

    def ready() -> bool:
        if not proc.alive():
            raise LabError(f"rabbitmq-server exited during start-up; see {log} and {d / 'log'}")
        # both listeners: the management one can be up while AMQP fails to bind
        return port_open(amqp) and _http_ok(f"{info['api']}/api/overview", tls)

    _wait_or_stop(proc, ready, timeout, f"rabbitmq-server (management on {mgmt})", log)
    return proc


# A private network namespace (scenarios whose servers listen on every interface: inside one,
# "every interface" is a loopback device nobody else can reach).

def netns_id(pid: int | str = "self") -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def in_private_network() -> bool:
    """True when this process's network namespace has no interface but `lo`."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def bring_loopback_up() -> None:
    """`ip link set lo up`, without needing iproute2 (SIOCGIFFLAGS / SIOCSIFFLAGS)."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, 0x8913, req)[:18])[1]
        if not flags & 0x1:
            fcntl.ioctl(sock, 0x8914, struct.pack("16sH", b"lo", flags | 0x1))


def unshare_prefix() -> list[str]:
    """The command prefix that runs a program in a new network namespace of its own."""
    binary = shutil.which("unshare")
    if not binary:
        raise LabError("this scenario needs `unshare` (util-linux) for a private network")
    return [binary, "--net"] if os.geteuid() == 0 else [binary, "--map-root-user", "--net"]


def nsenter_prefix(pid: int) -> list[str]:
    """The command prefix that runs a program in the network namespace of `pid`."""
    if os.geteuid() == 0:
        return ["nsenter", "-t", str(pid), "-n", "--"]
    return ["nsenter", "-t", str(pid), "-U", "-n", "--preserve-credentials", "--"]


def kill_namespace(ns: str) -> None:
    """SIGKILL what is left in a lab's private network namespace (epmd, which RabbitMQ
    daemonizes): nothing else can be in it, the lab created it."""
    me = os.getpid()
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid != me and netns_id(pid) == ns:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _http_ok(url: str, tls: ServerTLS | None = None) -> bool:
    import base64
    import urllib.request

    req = urllib.request.Request(url, headers={
        "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    context = None
    if tls is not None:
        import ssl

        context = ssl.create_default_context(cafile=tls.certs.ca)
        context.load_cert_chain(tls.certs.client_cert, tls.certs.client_key)
    try:
        with urllib.request.urlopen(req, timeout=1, context=context) as resp:  # noqa: S310
            return resp.status == 200
    except OSError:
        return False


def _rabbit_tls_conf(tls: ServerTLS, d: Path, listen: str, mgmt: int) -> str:
    """rabbitmq.conf lines: no plain listener; AMQP over TLS (`listeners.ssl.default`,
    `ssl_options.*`) and the management plugin over https (`management.ssl.*`), both checking
    a client certificate when one is given and, with `client_certs == "yes"`, requiring it.
    The node reads its own copy of the key (0600, owned by `rabbitmq` when run as root: the
    Debian wrapper drops privileges to that user)."""
    from celeryctl.lab.tls import server_key_for

    key = server_key_for(tls.certs, d / "tls", owner="rabbitmq") if tls.server_key is None \
        else tls.key
    required = "true" if tls.requires_client_cert else "false"
    lines = ["listeners.tcp = none", f"listeners.ssl.default = {listen}"]
    for prefix in ("ssl_options", "management.ssl"):
        lines += [f"{prefix}.cacertfile = {tls.certs.ca}", f"{prefix}.certfile = {tls.cert}",
                  f"{prefix}.keyfile = {key}", f"{prefix}.verify = verify_peer",
                  f"{prefix}.fail_if_no_peer_cert = {required}"]
    lines += [f"management.ssl.port = {mgmt}", "management.ssl.ip = 127.0.0.1"]
    return "\n".join(lines) + "\n"


def expand_node_name(name: str) -> str:
    """`w1@%h` -> `w1@<hostname>`, as Celery expands it."""
    return name.replace("%h", socket.gethostname())


def start_worker(base: Path, broker_url: str, name: str, *, queues: str = "celery,hipri,slow",
                 pool: str = "threads", concurrency: int = 2, env: dict[str, str] | None = None,
                 backend: str | None = None, extra: list[str] | None = None,
                 wait: bool = True, timeout: float = 30.0,
                 celery_version: str | None = None, progress=lambda _m: None) -> Proc:
    """A real `celery worker` of the demo app, logging to `base/workers/<name>.log`.

    `celery_version` ("5.2", "5.3", "5.5", "5.7"): run it with that Celery release, from its
    lab virtualenv (built on first use, see `celeryctl.lab.venvs`); None: celeryctl's own."""
    name = expand_node_name(name)
    log = base / "workers" / f"{name.replace('@', '_')}.log"
    if log.exists():
        log.unlink()
    python = sys.executable
    wenv = dict(os.environ)
    if celery_version is not None:
        from celeryctl.lab import venvs

        python = venvs.python_for(celery_version, progress=progress)
        # The old Celery must import the demo app and nothing of celeryctl's environment:
        # a path holding only the celeryctl package (never a site-packages with a newer
        # Celery in it), no user site-packages.
        path = [str(package_path(base))]
        if (env or {}).get("PYTHONPATH"):
            path.append(env["PYTHONPATH"])
        wenv.pop("PYTHONHOME", None)
        wenv["PYTHONNOUSERSITE"] = "1"
        wenv.update(env or {})
        wenv["PYTHONPATH"] = os.pathsep.join(path)
    else:
        wenv.update(env or {})
    wenv["CELERY_BROKER_URL"] = broker_url
    if backend is not None or "CELERY_RESULT_BACKEND" not in (env or {}):
        wenv["CELERY_RESULT_BACKEND"] = backend or ""
    wenv["PYTHONUNBUFFERED"] = "1"
    cmd = [python, "-m", "celery", "-A", "celeryctl.lab.demoapp", "worker", "-n", name,
           "-P", pool, "-c", str(concurrency), "-Q", queues, "-l", "INFO",
           "--without-mingle", "--without-gossip", *(extra or [])]
    pid, marker = _spawn(cmd, log, env=wenv)
    info = {"queues": queues, "pool": pool}
    if celery_version is not None:
        info["celery_version"] = celery_version
    proc = Proc("worker", name, pid, marker, str(log), info)
    if wait:
        def ready() -> bool:
            if not proc.alive():
                raise LabError(f"worker {name} exited during start-up; see {log}")
            try:
                return " ready." in log.read_text(errors="replace")
            except OSError:
                return False

        _wait_or_stop(proc, ready, timeout, f"worker {name}", log)
    return proc


def package_path(base: Path) -> Path:
    """A directory holding only a `celeryctl` link to this celeryctl package, for the
    PYTHONPATH of workers run by another Python environment (an older Celery's virtualenv).
    Per lab directory: the link always names the checkout that started the lab."""
    import celeryctl

    pkg = Path(celeryctl.__file__).resolve().parent
    d = base / "pythonpath"
    d.mkdir(parents=True, exist_ok=True)
    link = d / "celeryctl"
    if not (link.is_symlink() and Path(os.readlink(link)) == pkg):
        tmp = d / f".celeryctl.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(pkg, target_is_directory=True)
        tmp.replace(link)
    return d


def start_helper(base: Path, name: str, cmd: list[str]) -> Proc:
    """A scenario's helper process (a stray subscriber, a second consumer...), recorded like
    every lab process so `lab down` stops it."""
    log = base / "helpers" / f"{name}.log"
    pid, marker = _spawn(cmd, log)
    time.sleep(0.3)
    proc = Proc("helper", name, pid, marker, str(log))
    if not proc.alive():
        raise LabError(f"helper {name} exited at once; see {log}")
    return proc


def _wait_or_stop(proc: Proc, cond, timeout: float, what: str, log: Path) -> None:
    """Wait for readiness; a process that fails to become ready is stopped, never left."""
    try:
        _wait(cond, timeout, what, log)
    except BaseException:
        proc.stop(timeout=5)
        raise


def _wait(cond, timeout: float, what: str, log: Path) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    tail = ""
    with contextlib.suppress(OSError):
        tail = "\n".join(Path(log).read_text(errors="replace").splitlines()[-15:])
    raise LabError(f"{what} not ready after {timeout:.0f} s; last lines of {log}:\n{tail}")


def to_dict(p: Proc) -> dict:
    return asdict(p)


def from_dict(d: dict) -> Proc:
    import dataclasses

    known = {f.name for f in dataclasses.fields(Proc)}
    return Proc(**{k: v for k, v in d.items() if k in known})
