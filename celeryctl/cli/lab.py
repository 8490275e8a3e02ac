"""`celeryctl lab up|down|status|env`: real local servers and workers for demos and drills."""

from __future__ import annotations

import typer

from celeryctl.cli import options as o

lab_app = typer.Typer(
    help="A throwaway Celery cluster on loopback: redis-server, rabbitmq-server (management "
    "plugin) when asked for or used, and real Celery workers of a bundled demo app.\n\n"
    "Where the lab lives (one rule for `make demo`, every lab command and the tests): "
    "--dir; else $CELERYCTL_LAB_DIR; else .lab in the celeryctl checkout you are in (the "
    "current directory or a parent); else ~/.local/state/celeryctl/lab ($XDG_STATE_HOME). "
    "See docs/lab.md.",
    rich_markup_mode=None, add_completion=False, no_args_is_help=True)

DirOpt = typer.Option(None, "--dir", help="Lab directory [env: CELERYCTL_LAB_DIR; default: "
                      ".lab of the celeryctl checkout you are in, else "
                      "~/.local/state/celeryctl/lab].")


def _where(d: str | None):
    """(lab directory, why there)."""
    from celeryctl.lab.lab import resolve_dir

    return resolve_dir(d)


def _dir(d: str | None):
    return _where(d)[0]


def _err(msg: str) -> None:
    import sys

    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def _no_lab(d: str | None) -> None:
    """The message for a command that found no lab: where it looked and why there."""
    path, why = _where(d)
    _err(f"no lab running in {path} ({why}); `lab up` starts one there, --dir or "
         "CELERYCTL_LAB_DIR names another lab directory")


def _dir_args(d: str | None) -> list[str]:
    """`--dir DIR` for printed lab commands when --dir chose the directory (otherwise the
    same rule finds it again from the same place)."""
    return ["--dir", str(_dir(d).resolve())] if d else []


def _print_state(st, d: str | None = None, dead: frozenset[int] = frozenset()) -> None:
    """The lab's servers, workers and accounts, and commands to try. `dead`: the pids found
    dead (`lab status`): marked DEAD, and no "try:" lines (they would not work)."""
    import shlex

    from celeryctl.invocation import command, shell_word

    def pid(p: dict) -> str:
        return f"pid {p['pid']}" + (", DEAD" if p["pid"] in dead else "")

    typer.echo(f"lab directory: {st.dir}")
    if st.redis:
        typer.echo(f"redis:    {st.redis['info']['url']}   ({pid(st.redis)})")
    if st.rabbitmq:
        i = st.rabbitmq["info"]
        typer.echo(f"rabbitmq: {i['url']}   management API {i['api']}   node {i['node']} "
                   f"({pid(st.rabbitmq)}; user guest)")
        for p in st.rabbitmq_peers:
            typer.echo(f"          cluster peer {p['info']['node']}: {p['info']['url']}   "
                       f"management API {p['info']['api']}   ({pid(p)})")
    for broker, accts in sorted((st.accounts or {}).items()):
        for tier in accts:
            url = shell_word(st.account_url(broker, tier, shell=True))
            extra = (f" --rabbitmq-api {shell_word(st.account_url('api', tier, shell=True))}"
                     if broker == "rabbitmq" else "")
            typer.echo(f"account:  {tier:8s} --broker {url}{extra}")
    names = ", ".join(w["name"] + (f" (Celery {w['info']['celery_version']})"
                                   if (w.get("info") or {}).get("celery_version") else "")
                      + (" (DEAD)" if w["pid"] in dead else "")
                      for w in st.workers) or "none"
    typer.echo(f"workers:  {names} on {st.broker}")
    if st.tls:
        t = st.tls
        typer.echo(f"tls:      CA {t['ca']}; client certificate {t['client_cert']}, key "
                   f"{t['client_key']} ({'required' if st.tls_client_certs else 'not required'}); "
                   f"unrelated CA for drills {t['other_ca']}")
    flags = ["--broker", st.shell_broker_url]
    if st.broker == "rabbitmq" and st.api_url:
        flags += ["--rabbitmq-api", st.api_url]
        if st.tls:
            flags += ["--rabbitmq-api-ca", st.tls["ca"]]
    prefix = list(st.run_prefix)
    if st.broker == "rabbitmq" and st.tls_client_certs:  # the API wants the client cert too
        env = [f"{k}={v}" for k, v in st.api_tls_env().items()
               if k != "CELERYCTL_RABBITMQ_API_CA"]
        prefix = ["env", *env, *prefix] if env else prefix
    if dead:  # the commands below would fail or mislead: `lab status` said what to do
        return
    typer.echo(f"try:      {command('workers', *flags, prefix=prefix)}")
    typer.echo(f"          {command('queues', *flags, prefix=prefix)}")
    env_cmd = command("lab", "env", *_dir_args(d))
    then = command("workers", prefix=st.run_prefix)  # lab env exports the rest
    typer.echo(f"          eval \"$({env_cmd})\"   # then: {then}")
    if st.scenario:
        if "scenario_app" in st.doctor_args:
            prefix = ["env", f"PYTHONPATH={st.dir}", *prefix]
        own = set(st.doctor_args)  # a scenario naming its own --broker (an account) wins
        mine = [w for i in range(0, len(flags), 2) if flags[i] not in own
                for w in flags[i:i + 2]]
        line = command("doctor", *mine, *st.doctor_argv(shell=True), prefix=prefix)
        typer.echo(f"scenario: {st.scenario} — try: {line}")
        if st.run_prefix:
            typer.echo("          (its servers listen on every interface of a private network "
                       f"namespace: `{shlex.join(st.run_prefix)}` runs a command inside it)")
    typer.echo(f"stop it:  {command('lab', 'down', *_dir_args(d))}")


@lab_app.command("up")
def up(
    broker: str = typer.Option("redis", "--broker", help="Broker for the workers: redis or "
                               "rabbitmq."),
    workers: int = typer.Option(2, "--workers", "-n", min=0, max=16, help="Number of workers."),
    pool: str = typer.Option("prefork", "--pool", help="prefork, threads or solo."),
    concurrency: int = typer.Option(2, "--concurrency", "-c", min=1, max=16),
    rabbitmq: bool = typer.Option(False, "--rabbitmq/--no-rabbitmq",
                                  help="Also start rabbitmq-server beside a Redis broker "
                                  "(it starts anyway with --broker rabbitmq or a scenario "
                                  "that uses it)."),
    scenario: str | None = typer.Option(None, "--scenario", metavar="NAME",
                                        help="Start a fault scenario (lab scenarios lists "
                                        "them).", autocompletion=o.complete_scenario),
    rabbitmq_nodes: int = typer.Option(1, "--rabbitmq-nodes", min=1, max=5,
                                       help="RabbitMQ nodes, joined in one cluster."),
    sentinels: int = typer.Option(0, "--sentinels", min=0, max=5, help="Put Redis behind "
                                  "this many Sentinels (and one replica); the broker URL "
                                  "becomes sentinel://..."),
    accounts: bool = typer.Option(False, "--accounts", help="Also create the least-privilege "
                                  "accounts of docs/permissions.md (monitor, inspect, "
                                  "operator) on Redis and RabbitMQ."),
    tls: bool = typer.Option(False, "--tls", help="Serve only TLS: rediss://, amqps:// and "
                             "the management API over https, with certificates from a private "
                             "CA the lab makes (the printed URLs carry the CA)."),
    tls_client_certs: bool = typer.Option(False, "--tls-client-certs", help="With --tls "
                                          "(implied): the servers also require a client "
                                          "certificate."),
    celery_versions: str | None = typer.Option(
        None, "--celery-versions", metavar="5.2,5.3,5.5,5.7",
        help="One worker per Celery version (named c52@HOST, ...), run from the lab's "
        "virtualenvs of those releases (built from PyPI on first use; `lab venvs` builds "
        "them up front). Replaces --workers."),
    d: str | None = DirOpt,
) -> None:
    """Start the lab and print the URLs to use."""
    from celeryctl.lab import lab
    from celeryctl.lab.servers import LabError
    from celeryctl.status import UsageError

    if broker not in ("redis", "rabbitmq"):
        raise UsageError(f"--broker must be redis or rabbitmq, got {broker!r}")
    if pool not in ("prefork", "threads", "solo"):
        raise UsageError(f"--pool must be prefork, threads or solo, got {pool!r}")
    versions = None
    if celery_versions is not None:
        from celeryctl.lab.venvs import parse_versions

        if scenario is not None:
            raise UsageError("--celery-versions and --scenario do not combine (a scenario "
                             "names its workers)")
        try:
            versions = parse_versions(celery_versions)
        except LabError as exc:
            raise UsageError(str(exc)) from None
    if scenario is not None:
        from celeryctl.lab.scenarios import SCENARIOS

        if scenario not in SCENARIOS:
            from celeryctl.invocation import command

            raise UsageError(f"no scenario {scenario!r} ({command('lab', 'scenarios')} lists "
                             "them)")
    if (tls or tls_client_certs) and (scenario or sentinels or rabbitmq_nodes > 1):
        raise UsageError("--tls runs a single Redis and a single RabbitMQ node: it does not "
                         "combine with --scenario, --sentinels or --rabbitmq-nodes")
    try:
        st = lab.up(_dir(d), broker=broker, workers=workers, rabbitmq=rabbitmq, pool=pool,
                    concurrency=concurrency, progress=_err, scenario=scenario,
                    rabbitmq_nodes=rabbitmq_nodes, sentinels=sentinels, accounts=accounts,
                    tls=tls, tls_client_certs=tls_client_certs, celery_versions=versions)
    except LabError as exc:
        _err(f"celeryctl: lab: {exc}")
        raise typer.Exit(3) from None
    _print_state(st, d)


@lab_app.command("down")
def down(d: str | None = DirOpt) -> None:
    """Stop exactly what `lab up` started.

    One line per process stopped. Exit 0 stopped (or every process had already exited: the
    lab's state is cleared), 3 no lab in the lab directory (the message says where it
    looked)."""
    from celeryctl.lab import lab

    stopped = lab.down(_dir(d), progress=typer.echo)
    if stopped is None:
        _no_lab(d)
        raise typer.Exit(3)
    if not stopped:
        typer.echo(f"lab in {_dir(d)}: no process was still running; its state is cleared")


@lab_app.command("status")
def status(d: str | None = DirOpt) -> None:
    """What the lab is running.

    Exit 0 all up, 1 some process died (said first, with what to do), 3 no lab in the lab directory (the message says
    where it looked)."""
    from celeryctl.lab import lab

    st = lab.load(_dir(d))
    if st is None:
        _no_lab(d)
        raise typer.Exit(3)
    dead = [p for p in st.procs() if not p.alive()]
    if not dead:
        _print_state(st, d)
        raise typer.Exit(0)
    from celeryctl.checks import count, verb
    from celeryctl.invocation import command

    # said first: the lab is broken, what died, and what to do (issue 13 follow-up, 15c)
    typer.echo(f"LAB BROKEN: {count(len(dead), 'process', 'processes')} "
               f"{verb(len(dead), 'is', 'are')} dead — "
               + ", ".join(f"{lab.label(p)} (pid {p.pid})" for p in dead))
    for p in dead:
        typer.echo(f"  {lab.label(p)}: log {p.log}")
    up = ["lab", "up", *(["--scenario", st.scenario] if st.scenario else
                         ["--broker", st.broker] if st.broker != "redis" else []),
          *_dir_args(d)]
    typer.echo(f"fix:      {command('lab', 'down', *_dir_args(d))}")
    typer.echo(f"          then {command(*up)}   (with the options it was started with)")
    typer.echo("")
    typer.echo("what it was running:")
    _print_state(st, d, dead=frozenset(p.pid for p in dead))
    raise typer.Exit(1)


@lab_app.command("env")
def env(d: str | None = DirOpt) -> None:
    """Shell exports pointing celeryctl (and celery) at the lab.

    Use: eval "$(celeryctl lab env)". Exit 0, or 3 no lab in the lab directory (nothing on
    stdout; the message says where it looked)."""
    from celeryctl.lab import lab

    st = lab.load(_dir(d))
    if st is None:
        _no_lab(d)
        raise typer.Exit(3)
    for k, v in st.env().items():
        typer.echo(f"export {k}={v}")


@lab_app.command("venvs")
def venvs(
    versions: str = typer.Option(",".join(["5.2", "5.3", "5.5", "5.7"]), "--versions",
                                 metavar="5.2,5.3,...", help="Celery versions to build."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild even when valid."),
    check: bool = typer.Option(False, "--check", help="Only report whether each is built "
                               "(exit 1 if one is not); build nothing."),
    timeout: float = typer.Option(300.0, "--timeout", min=10, help="Seconds allowed per "
                                  "version's build."),
) -> None:
    """Build (or check) the virtualenvs of older Celery versions that `lab up
    --celery-versions` and the mixed-version scenarios run workers from. Exit 0 all ready,
    1 (--check) some not built, 3 a build failed (e.g. the package index is unreachable)."""
    import time

    from celeryctl.lab import venvs as v
    from celeryctl.lab.servers import LabError
    from celeryctl.status import UsageError

    try:
        chosen = v.parse_versions(versions)
    except LabError as exc:
        raise UsageError(str(exc)) from None
    missing = 0
    for ver in chosen:
        was_valid = v.is_valid(ver)
        if check:
            d = v.describe(ver)
            missing += not d["valid"]
            typer.echo(f"celery {d['celery']:6s} kombu {d['kombu']:6s} "
                       f"{'ready' if d['valid'] else 'NOT BUILT':9s} {d['path']}")
            continue
        t0 = time.monotonic()
        try:
            v.ensure(ver, progress=_err, timeout=timeout, rebuild=rebuild)
        except LabError as exc:
            _err(f"celeryctl: lab venvs: {exc}")
            raise typer.Exit(3) from None
        d = v.describe(ver)
        how = ("reused" if was_valid and not rebuild
               else f"built in {time.monotonic() - t0:.1f} s")
        typer.echo(f"celery {d['celery']:6s} kombu {d['kombu']:6s} {how:16s} {d['path']}")
    raise typer.Exit(1 if missing else 0)


def scenario_table(scenarios, width: int) -> list[str]:
    """`lab scenarios` as text lines of at most `width` columns (minimum 60): NAME, BROKER
    and what doctor must find on one row, the summary wrapped below it, indented."""
    import textwrap

    width = max(width, 60)
    name_w = max([len("NAME"), *(len(s.name) for s in scenarios)])
    broker_w = len("rabbitmq")
    finds_at = name_w + 2 + broker_w + 2
    lines = [f"{'NAME':{name_w}}  {'BROKER':{broker_w}}  DOCTOR FINDS"]
    for s in scenarios:
        finds = textwrap.wrap(", ".join(s.expects) or "nothing", max(width - finds_at, 12),
                              break_on_hyphens=False) or [""]
        lines.append(f"{s.name:{name_w}}  {s.broker:{broker_w}}  {finds[0]}".rstrip())
        lines += [" " * finds_at + more for more in finds[1:]]
        lines += textwrap.wrap(s.summary, width, initial_indent="    ",
                               subsequent_indent="    ", break_on_hyphens=False)
    return lines


@lab_app.command("scenarios")
def scenarios(fmt: str = typer.Option("table", "--format", "-f", metavar="table|json"),
              wide: o.Wide = False) -> None:
    """The fault scenarios `lab up --scenario NAME` can start.

    By name, with the broker and what doctor must find in each (--wide: each on unwrapped
    lines)."""
    import json
    import shutil

    from celeryctl.cli.options import check_format
    from celeryctl.lab.scenarios import SCENARIOS

    ordered = sorted(SCENARIOS.values(), key=lambda s: s.name)
    if check_format(fmt) == "json":
        typer.echo(json.dumps({"scenarios": [
            {"name": s.name, "summary": s.summary, "broker": s.broker, "expects": list(s.expects)}
            for s in ordered]}, indent=2))
        return
    width = shutil.get_terminal_size((80, 24)).columns
    for line in scenario_table(ordered, 10_000 if wide else width):
        typer.echo(line)


@lab_app.command("proxy")
def proxy(
    to: str = typer.Option(..., "--to", metavar="HOST:PORT", help="The server to forward to."),
    mode: str = typer.Option("pass", "--mode", metavar="MODE",
                             help="pass, delay, trickle, blackhole or reset."),
    port: int = typer.Option(0, "--port", min=0, max=65535,
                             help="Port to listen on, on 127.0.0.1 (default: a free one)."),
    delay: float = typer.Option(0.05, "--delay", min=0.0, metavar="SECONDS",
                                help="delay: latency added to each chunk."),
    trickle: float = typer.Option(0.5, "--trickle", min=0.0, metavar="SECONDS",
                                  help="trickle: seconds between the server's bytes."),
    reset_after: int = typer.Option(0, "--reset-after", min=0, metavar="BYTES",
                                    help="reset: bytes of the server's reply let through."),
) -> None:
    """A TCP fault-injection proxy (drills: a slow, silent or resetting broker). Listens on
    127.0.0.1 and forwards to HOST:PORT; type a mode name and Enter to switch modes while it
    runs. Ctrl-C stops it (exit 130). Modes: pass; delay (each chunk late); trickle (the
    server's reply one byte at a time: per-recv timeouts never fire); blackhole (accept,
    answer nothing); reset (RST after --reset-after bytes of the reply)."""
    import sys

    from celeryctl.lab.faultproxy import MODES, FaultProxy
    from celeryctl.status import UsageError

    host, _, p = to.rpartition(":")
    if not host or not p.isdigit() or not 0 < int(p) < 65536:
        raise UsageError(f"--to must be HOST:PORT, got {to!r}")
    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    fp = FaultProxy(host.strip("[]"), int(p), mode, delay=delay, trickle=trickle,
                    reset_after=reset_after, listen_port=port)
    try:
        fp.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    typer.echo(f"listening on 127.0.0.1:{fp.port} -> {to}, mode {fp.mode}")
    sys.stdout.flush()
    try:
        for line in sys.stdin:
            word = line.strip()
            if not word:
                continue
            if word not in MODES:
                _err(f"unknown mode {word!r}: {', '.join(MODES)}")
                continue
            fp.mode = word
            typer.echo(f"mode {word}")
            sys.stdout.flush()
        import threading

        threading.Event().wait()  # stdin closed: run until Ctrl-C
    finally:
        fp.stop()
