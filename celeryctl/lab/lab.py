"""`celeryctl lab`: a throwaway Celery cluster on loopback, recorded in DIR/state.json so that
`down` stops exactly what `up` started. The test suite's fixtures use the same functions."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from celeryctl.lab import servers as s


def checkout_root(start: Path | None = None) -> Path | None:
    """The celeryctl source checkout containing `start` (default: the current directory):
    the nearest directory, `start` or a parent, whose pyproject.toml names the project
    celeryctl."""
    import re

    try:
        here = (start or Path.cwd()).resolve()
    except OSError:  # the current directory was deleted
        return None
    for d in (here, *here.parents):
        try:
            text = (d / "pyproject.toml").read_text(errors="replace")
        except OSError:
            continue
        m = re.search(r"^\[project\][^\[]*?^name\s*=\s*[\"']([^\"']+)[\"']", text,
                      re.MULTILINE | re.DOTALL)
        if m and m.group(1) == "celeryctl":
            return d
    return None


def resolve_dir(explicit: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Where the lab lives, and why there: `explicit` (--dir); else $CELERYCTL_LAB_DIR; else
    .lab in the celeryctl checkout the current directory is in (where `make demo` keeps its
    lab); else $XDG_STATE_HOME/celeryctl/lab (~/.local/state/celeryctl/lab). One rule for
    `make demo`, every `lab` command and the test suite (which sets CELERYCTL_LAB_DIR)."""
    if explicit:
        return Path(explicit), "given by --dir"
    env = os.environ.get("CELERYCTL_LAB_DIR")
    if env:
        return Path(env), "set by CELERYCTL_LAB_DIR"
    root = checkout_root()
    if root is not None:
        return root / ".lab", "the .lab of the celeryctl checkout you are in"
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "celeryctl" / "lab", "the default outside a celeryctl checkout"


def default_dir() -> Path:
    return resolve_dir()[0]


@dataclass
class LabState:
    dir: str
    broker: str  # redis | rabbitmq
    redis: dict | None = None
    rabbitmq: dict | None = None
    workers: list[dict] = field(default_factory=list)
    scenario: str | None = None
    doctor_args: list[str] = field(default_factory=list)
    extras: list[dict] = field(default_factory=list)  # helper processes a scenario started
    rabbitmq_peers: list[dict] = field(default_factory=list)  # the cluster's other nodes
    # A lab in a private network namespace (scenarios whose servers listen on every
    # interface): its id, and the prefix that runs a command inside it (`nsenter ...`).
    netns: str | None = None
    run_prefix: list[str] = field(default_factory=list)
    sentinels: list[dict] = field(default_factory=list)  # Redis Sentinel in front of redis
    replicas: list[dict] = field(default_factory=list)
    # `up --tls`: the certificates (celeryctl/lab/tls.py LabCerts.as_dict) and whether the
    # servers require client certificates
    tls: dict | None = None
    tls_client_certs: bool = False
    # least-privilege accounts (docs/permissions.md): {"redis"|"rabbitmq": {tier: {user,
    # password_file}}}
    accounts: dict = field(default_factory=dict)

    def doctor_argv(self, *, shell: bool = False) -> list[str]:
        """The scenario's doctor arguments with `{account:BROKER:TIER}` placeholders turned
        into the account's URL (`shell`: its password as $(cat FILE), for printing)."""
        import re

        def expand(arg: str) -> str:
            return re.sub(r"\{account:(\w+):(\w+)\}",
                          lambda m: self.account_url(m.group(1), m.group(2), shell=shell), arg)

        return [expand(a) for a in self.doctor_args]

    def account_url(self, broker: str, tier: str, *, shell: bool = False) -> str:
        """The lab's broker (or management API: broker "api") URL as one of the accounts."""
        from celeryctl.lab.accounts import account_url

        if broker == "redis":
            return account_url(self.redis["info"]["url"], self.accounts["redis"][tier],
                               shell=shell)
        url = self.rabbitmq["info"]["api" if broker == "api" else "url"]
        return account_url(url, self.accounts["rabbitmq"][tier], shell=shell)

    def procs(self) -> list[s.Proc]:
        out = [s.from_dict(x) for x in self.extras]
        out += [s.from_dict(w) for w in self.workers]
        out += [s.from_dict(p) for p in self.rabbitmq_peers]
        out += [s.from_dict(p) for p in self.sentinels + self.replicas]
        out += [s.from_dict(p) for p in (self.redis, self.rabbitmq) if p]
        return out

    @property
    def broker_url(self) -> str | None:
        """The URL clients use (with the lab's password, if it has one: never print it).
        Behind Sentinel: every sentinel, and the master's name (a celeryctl convenience;
        Celery itself takes it from broker_transport_options)."""
        if self.broker == "redis" and self.sentinels:
            return self.sentinel_url + f"?master_name={s.SENTINEL_MASTER}"
        src = self.redis if self.broker == "redis" else self.rabbitmq
        return s.secret_url(src["info"]) if src else None

    @property
    def sentinel_url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{p['info']['port']}/0" for p in self.sentinels)

    @property
    def shell_broker_url(self) -> str | None:
        """The URL to print: a password appears as $(cat FILE), read when the command runs
        (quote it with celeryctl.invocation.shell_word)."""
        if self.broker == "redis" and self.sentinels:
            return self.broker_url
        src = self.redis if self.broker == "redis" else self.rabbitmq
        return s.shell_url(src["info"]).strip('"') if src else None

    @property
    def api_url(self) -> str | None:
        return self.rabbitmq["info"]["api"] if self.rabbitmq else None

    def api_tls_env(self) -> dict[str, str]:
        """The management API's CA (and client certificate, when the lab requires one)."""
        if not self.tls or not self.rabbitmq:
            return {}
        out = {"CELERYCTL_RABBITMQ_API_CA": self.tls["ca"]}
        if self.tls_client_certs:
            out.update(CELERYCTL_RABBITMQ_API_CERT=self.tls["client_cert"],
                       CELERYCTL_RABBITMQ_API_KEY=self.tls["client_key"])
        return out

    def env(self) -> dict[str, str]:
        """Shell words (quoted, a password as $(cat FILE)) to export."""
        from celeryctl.invocation import shell_word

        out = {}
        if self.shell_broker_url:
            out["CELERY_BROKER_URL"] = shell_word(self.shell_broker_url)
        if self.api_url and self.broker == "rabbitmq":
            out["CELERYCTL_RABBITMQ_API"] = shell_word(self.api_url)
            out.update({k: shell_word(v) for k, v in self.api_tls_env().items()})
        return out


def state_path(d: Path) -> Path:
    return d / "state.json"


def load(d: Path) -> LabState | None:
    """The lab's state, tolerating fields written by another celeryctl version (a lab started
    by a newer or older celeryctl must still be stoppable)."""
    import dataclasses

    try:
        data = json.loads(state_path(d).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "dir" not in data or "broker" not in data:
        return None
    known = {f.name for f in dataclasses.fields(LabState)}
    return LabState(**{k: v for k, v in data.items() if k in known})


def save(st: LabState) -> None:
    p = state_path(Path(st.dir))
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(st.__dict__, indent=2))
    tmp.replace(p)


def up(d: Path, *, broker: str = "redis", workers: int = 2, rabbitmq: bool = False,
       pool: str = "prefork", concurrency: int = 2, progress=print,
       scenario: str | None = None, rabbitmq_nodes: int = 1, sentinels: int = 0,
       accounts: bool = False, tls: bool = False, tls_client_certs: bool = False,
       celery_versions: list[str] | None = None) -> LabState:
    """Start servers and workers. `accounts`: also create the least-privilege accounts of
    docs/permissions.md. `tls`: Redis and RabbitMQ serve only TLS (rediss://, amqps://, https
    management API) with certificates the lab makes in DIR/tls; `tls_client_certs`: they
    also require a client certificate (the lab's, in the printed URLs). `celery_versions`:
    one worker per Celery version (from the lab's virtualenvs of older releases) instead of
    `workers` workers. `rabbitmq`: also start RabbitMQ beside a Redis broker (it starts
    anyway for a RabbitMQ broker or a scenario that needs it)."""
    from celeryctl.invocation import command
    from celeryctl.lab.scenarios import SCENARIOS, ScenarioContext, WorkerSpec, version_workers

    tls = tls or tls_client_certs
    if tls and (scenario or sentinels or rabbitmq_nodes > 1):
        raise s.LabError("--tls runs a single Redis and a single RabbitMQ node: it does not "
                         "combine with --scenario, --sentinels or --rabbitmq-nodes (the "
                         "TLS scenarios set it up themselves)")

    spec = None
    if scenario is not None:
        spec = SCENARIOS.get(scenario)
        if spec is None:
            raise s.LabError(f"no scenario {scenario!r} ({command('lab', 'scenarios')} lists "
                             "them)")
        tls = spec.tls or spec.tls_client_certs
        tls_client_certs = spec.tls_client_certs
        broker = spec.broker
        rabbitmq_nodes = max(rabbitmq_nodes, spec.rabbitmq_nodes)
        sentinels = max(sentinels, spec.sentinels)
        if spec.exposed and not s.in_private_network():
            return _up_in_private_network(d, spec.name, progress, rabbitmq=rabbitmq)
    specs = list(spec.workers) if spec else (
        list(version_workers(celery_versions, pool=pool, concurrency=concurrency))
        if celery_versions else
        [WorkerSpec(f"w{i}@%h", pool=pool, concurrency=concurrency)
         for i in range(1, workers + 1)])
    existing = load(d)
    if existing and any(p.alive() for p in existing.procs()):
        raise s.LabError(f"a lab is already running from {d} (first: "
                         f"{command('lab', 'down', '--dir', str(d))})")
    if existing:
        down(d, progress=lambda *_: None)
    d.mkdir(parents=True, exist_ok=True)
    st = LabState(dir=str(d.resolve()), broker=broker, scenario=scenario)
    # Older Celery virtualenvs first: a build failure (no index) stops before any server
    from celeryctl.lab import venvs

    for v in dict.fromkeys(w.celery_version for w in specs if w.celery_version):
        venvs.ensure(v, progress=progress)
    exposed = spec is not None and spec.exposed
    if exposed:
        s.bring_loopback_up()
        st.netns = s.netns_id()
    server_tls = None
    try:
        if tls:
            from celeryctl.lab.tls import ServerTLS, make_certs

            progress("making TLS certificates (a private CA, server and client) ...")
            certs = make_certs(d / "tls")
            server_tls = ServerTLS(certs, client_certs="yes" if tls_client_certs else "no")
            st.tls, st.tls_client_certs = certs.as_dict(), tls_client_certs
            save(st)
        if s.redis_binary():
            progress("starting redis-server" + (" (TLS only)" if tls else "") + " ...")
            st.redis = s.to_dict(s.start_redis(d, bind_all=exposed, tls=server_tls,
                                               password=spec.redis_password if spec else None,
                                               extra=list(spec.redis_args) if spec else None))
            if exposed:
                st.run_prefix = s.nsenter_prefix(st.redis["pid"])
            save(st)
            if sentinels and broker == "redis":
                _start_sentinels(st, d, sentinels, spec, progress)
        elif broker == "redis":
            raise s.LabError("redis-server is not installed (apt-get install redis-server)")
        if rabbitmq or broker == "rabbitmq" or (spec is not None and spec.needs_rabbitmq):
            if s.rabbitmq_binary() and rabbitmq_nodes > 1:
                progress(f"starting a {rabbitmq_nodes}-node RabbitMQ cluster (about "
                         f"{6 * rabbitmq_nodes} seconds) ...")
                nodes = s.start_rabbitmq_cluster(
                    d, rabbitmq_nodes, net_ticktime=spec.net_ticktime if spec else None)
                st.rabbitmq = s.to_dict(nodes[0])
                st.rabbitmq_peers = [s.to_dict(n) for n in nodes[1:]]
                save(st)
            elif s.rabbitmq_binary():
                progress("starting rabbitmq-server with the management plugin"
                         + (" (amqps and https only)" if tls else "") + " (a few seconds) ...")
                st.rabbitmq = s.to_dict(s.start_rabbitmq(
                    d, fd_limit=spec.rabbitmq_fd_limit if spec else None, bind_all=exposed,
                    tls=server_tls))
                save(st)
            elif broker == "rabbitmq":
                raise s.LabError("rabbitmq-server is not installed "
                                 "(apt-get install rabbitmq-server)")
            else:
                progress("rabbitmq-server not installed: lab runs without it")
        if accounts or (spec is not None and spec.accounts):
            from celeryctl.lab import accounts as acc

            progress("creating the least-privilege accounts (docs/permissions.md) ...")
            if st.redis:
                st.accounts["redis"] = acc.create_redis_accounts(
                    d, s.secret_url(st.redis["info"]))
            if st.rabbitmq:
                st.accounts["rabbitmq"] = acc.create_rabbit_accounts(
                    d, st.rabbitmq["info"]["api"])
            save(st)
        url = st.broker_url
        assert url is not None
        worker_env: dict[str, str] = {}
        if st.sentinels:  # Celery takes the master's name from its transport options
            worker_env["CELERYCTL_LAB_MASTER_NAME"] = s.SENTINEL_MASTER
        for w in specs:
            release = f"Celery {venvs.SPECS[w.celery_version].celery}, " \
                if w.celery_version else ""
            progress(f"starting worker {s.expand_node_name(w.name)} ({release}{w.pool}, concurrency "
                     f"{w.concurrency}) on {broker} ...")
            # `{redis}` in a worker's environment: this lab's Redis (scheme, host, port)
            redis_base = s.secret_url(st.redis["info"]).rsplit("/", 1)[0] if st.redis else ""
            # the lab's tasks carry time limits unless the scenario says otherwise
            env = {"CELERYCTL_LAB_TIME_LIMITS": "1"}
            env.update({k: v.replace("{redis}", redis_base) for k, v in w.env.items()})
            env.update(worker_env)
            wurl = st.sentinel_url if st.sentinels else url
            if w.db is not None and st.broker == "redis":  # another app's database
                wurl = s.secret_url(st.redis["info"]).rsplit("/", 1)[0] + f"/{w.db}"
            st.workers.append(s.to_dict(s.start_worker(d, wurl, w.name, pool=w.pool,
                                                       concurrency=w.concurrency,
                                                       queues=w.queues, env=env,
                                                       celery_version=w.celery_version)))
            save(st)
        if spec is not None and spec.app is not None:
            (d / "scenario_app.py").write_text(spec.app.replace("{broker}", url))
            st.doctor_args += ["-A", "scenario_app"]
            save(st)
        if spec is not None and spec.prepare is not None:
            progress(f"scenario {spec.name}: {spec.summary}")

            def stop_redis() -> None:
                if st.redis:
                    s.from_dict(st.redis).stop()

            def spawn(name: str, cmd: list[str]) -> None:
                st.extras.append(s.to_dict(s.start_helper(d, name, cmd)))
                save(st)

            ctx = ScenarioContext(broker_url=url, redis_url=s.secret_url(st.redis["info"])
                                  if st.redis else None, api_url=st.api_url,
                                  amqp_url=st.rabbitmq["info"]["url"] if st.rabbitmq else None,
                                  stop_redis=stop_redis,
                                  worker_pids=[w["pid"] for w in st.workers], spawn=spawn,
                                  rabbitmq_nodes=[p["info"] for p in
                                                  ([st.rabbitmq] if st.rabbitmq else [])
                                                  + st.rabbitmq_peers],
                                  rabbitmq_pids=[p["pid"] for p in st.rabbitmq_peers],
                                  redis_pid=st.redis["pid"] if st.redis else None,
                                  sentinel_pids=[p["pid"] for p in st.sentinels],
                                  sentinel_ports=[p["info"]["port"] for p in st.sentinels],
                                  lab=st)
            spec.prepare(ctx)
            st.doctor_args += list(ctx.doctor_args)
            save(st)
    except BaseException:
        down(d, progress=lambda *_: None)
        raise
    return st


def _start_sentinels(st: LabState, d: Path, n: int, spec, progress) -> None:
    """One replica and `n` sentinels watching the lab's Redis."""
    master = st.redis["info"]["port"]
    progress(f"starting a replica and {n} sentinels ...")
    st.replicas.append(s.to_dict(s.start_replica(
        d, master, priority=spec.replica_priority if spec else 100)))
    save(st)
    for i in range(n):
        st.sentinels.append(s.to_dict(s.start_sentinel(
            d, master, name=f"sentinel{i + 1}",
            quorum=spec.sentinel_quorum if spec else min(2, n))))
        save(st)
    s.wait_sentinels_agree([p["info"]["port"] for p in st.sentinels], replicas=1)


def _up_in_private_network(d: Path, scenario: str, progress, *, rabbitmq: bool) -> LabState:
    """Re-run `lab up` inside a new network namespace (`unshare --net`): its servers listen
    on every interface of a namespace whose only interface is its own loopback."""
    import subprocess
    import sys

    progress(f"scenario {scenario}: its servers listen on every interface, so the lab runs "
             "in a private network namespace")
    cmd = [*s.unshare_prefix(), sys.executable, "-m", "celeryctl", "lab", "up",
           "--scenario", scenario, "--dir", str(d),
           "--rabbitmq" if rabbitmq else "--no-rabbitmq"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env,
                       cwd=os.getcwd(), timeout=300)
    st = load(d)
    if r.returncode != 0 or st is None:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-8:])
        raise s.LabError(f"lab up in a private network namespace failed "
                         f"(exit {r.returncode}):\n{tail}")
    return st


def label(p: s.Proc) -> str:
    """A lab process named once: `redis-server`, `rabbitmq-2`, `worker w1@host`,
    `sentinel1`, `helper producer`."""
    if p.name == p.kind and p.kind in ("redis", "rabbitmq"):
        return f"{p.kind}-server"
    return p.name if p.kind in p.name else f"{p.kind} {p.name}"


def down(d: Path, progress=print) -> list[str] | None:
    """Stop what `up` started in `d`; `progress` gets one line per process stopped. The
    labels of the processes stopped ([] when none was still running), None when `d` holds
    no lab."""
    st = load(d)
    if st is None:
        return None
    stopped = []
    # workers first, so they do not reconnect-loop against stopped servers
    for p in st.procs():
        if p.alive():
            p.stop()
            stopped.append(label(p))
            progress(f"stopped {label(p)} (pid {p.pid})")
    if st.netns:
        s.kill_namespace(st.netns)
    for sub in ("redis", "tls", "accounts", *(p["name"] for p in [st.rabbitmq, *st.rabbitmq_peers,
                                                      *st.sentinels, *st.replicas] if p)):
        shutil.rmtree(Path(st.dir) / sub, ignore_errors=True)
    state_path(d).unlink(missing_ok=True)
    return stopped
