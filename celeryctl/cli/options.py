"""Options shared by every read command, and turning them into a Target.

They are accepted both before the subcommand (`celeryctl --broker URL workers`) and after it
(`celeryctl workers --broker URL`); the later one wins.
"""

from __future__ import annotations

from typing import Annotated

import typer

# Shell completion (`celeryctl --install-completion`). These run only when the shell asks for
# candidates (never for --help or a command): each imports what it needs inside, reads at most
# the local profiles file and the check catalogue, never a broker, and never raises — a failure
# means no candidates (the shell then offers file names).

def complete_profile(incomplete: str) -> list[tuple[str, str]]:
    """Profile names from the profiles file ($CELERYCTL_CONFIG or the default path)."""
    try:
        names, default = _profile_names()
    except Exception:  # noqa: BLE001 - completion must never print a traceback into a shell
        return []
    return [(n, "default profile" if n == default else "profile") for n in names
            if n.startswith(incomplete)]


def _profile_names() -> tuple[list[str], str | None]:
    import os
    import sys

    from celeryctl.targets import DEFAULT_CONFIG

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    path = os.path.expanduser(os.environ.get("CELERYCTL_CONFIG") or DEFAULT_CONFIG)
    if not os.path.isfile(path):
        return [], None
    with open(path, "rb") as f:
        data = tomllib.loads(f.read(1 << 20).decode("utf-8"))
    clusters = data.get("clusters")
    if not isinstance(clusters, dict):
        return [], None
    default = data.get("default") if isinstance(data.get("default"), str) else None
    # a name the shell could not insert as one word (whitespace, control characters) is left out
    names = sorted(n for n, v in clusters.items()
                   if isinstance(v, dict) and n and n.isprintable() and not any(
                       ch.isspace() for ch in n))
    return names, default


def complete_check(incomplete: str) -> list[tuple[str, str]]:
    """Check codes and names (`explain CODE|NAME`)."""
    return _check_candidates(incomplete, families=False)


def complete_check_selector(incomplete: str) -> list[tuple[str, str]]:
    """Check codes, names and family prefixes (`doctor --select/--ignore`)."""
    return _check_candidates(incomplete, families=True)


def _check_candidates(incomplete: str, families: bool) -> list[tuple[str, str]]:
    try:
        from celeryctl.checks import FAMILIES, catalogue

        cat = catalogue()
    except Exception:  # noqa: BLE001 - see complete_profile
        return []
    items = [(f, f"family: {FAMILIES[f]}") for f in FAMILIES] if families else []
    items += [(c.code, c.name) for c in cat]
    out = []
    for value, help_text in items:
        if value.startswith(incomplete):
            out.append((value, help_text))
        elif value.lower().startswith(incomplete.lower()):  # "que0" -> "que001": codes are
            out.append((incomplete + value[len(incomplete):], help_text))  # case-insensitive
    out += [(c.name, c.code) for c in cat if c.name.startswith(incomplete.lower())]
    return out


def complete_scenario(incomplete: str) -> list[tuple[str, str]]:
    """The lab's fault scenarios (`lab up --scenario NAME`), with their one-line summary."""
    try:
        from celeryctl.lab.scenarios import SCENARIOS
    except Exception:  # noqa: BLE001 - see complete_profile
        return []
    return [(n, (getattr(s, "summary", "") or "").split("\n")[0][:60])
            for n, s in sorted(SCENARIOS.items()) if n.startswith(incomplete)]


def complete_control_command(incomplete: str) -> list[tuple[str, str]]:
    """`control COMMAND`: the command words, with their arguments."""
    try:
        from celeryctl.actions.control import COMMANDS, SIGNATURES
    except Exception:  # noqa: BLE001 - see complete_profile
        return []
    return [(n, SIGNATURES.get(n) or "no arguments") for n in COMMANDS
            if n.startswith(incomplete.lower())]


def complete_choices(*choices: str):
    """Completion for an option that takes one of a few words (--format table|json)."""
    def complete(incomplete: str) -> list[str]:
        return [c for c in choices if c.startswith(incomplete.lower())]
    return complete


H = "Where to look"
Broker = Annotated[str | None, typer.Option(
    "--broker", "-b", metavar="URL", help="Broker URL: redis://, rediss://, amqp://, amqps://, pyamqp://; "
    "';'-separated failover list. [env: CELERY_BROKER_URL]", rich_help_panel=H, show_default=False)]
Backend = Annotated[str | None, typer.Option(
    "--result-backend", metavar="URL", help="Result backend URL. [env: CELERY_RESULT_BACKEND]",
    rich_help_panel=H, show_default=False)]
RabbitAPI = Annotated[str | None, typer.Option(
    "--rabbitmq-api", metavar="URL", help="RabbitMQ management API URL (default: derived from an AMQP broker, "
    "http://HOST:15672 with its credentials). [env: CELERYCTL_RABBITMQ_API]",
    rich_help_panel=H, show_default=False)]
RabbitAPICA = Annotated[str | None, typer.Option(
    "--rabbitmq-api-ca", metavar="FILE", help="CA certificate(s) to verify an https:// management API "
    "with (default: the system's; an API derived from a TLS broker: the broker's CA). "
    "[env: CELERYCTL_RABBITMQ_API_CA]", rich_help_panel=H, show_default=False)]
Vhost = Annotated[str | None, typer.Option(
    "--vhost", metavar="NAME", help="RabbitMQ virtual host (default: from the broker URL).", rich_help_panel=H,
    show_default=False)]
Queue = Annotated[list[str] | None, typer.Option(
    "--queue", "-Q", metavar="NAME", help="A queue to look at (repeatable).", rich_help_panel=H,
    show_default=False)]
Timeout = Annotated[float | None, typer.Option(
    "--timeout", "-t", metavar="SECONDS", help="Seconds to wait for any source (default 2).", rich_help_panel=H,
    show_default=False)]
App = Annotated[str | None, typer.Option(
    "--app", "-A", metavar="MODULE[:ATTR]", help="Celery app MODULE[:ATTR] to read settings from, as `celery -A`.",
    rich_help_panel=H, show_default=False)]
Profile = Annotated[str | None, typer.Option(
    "--profile", metavar="NAME", help="Named cluster from ~/.config/celeryctl/config.toml [env: CELERYCTL_CONFIG].",
    rich_help_panel=H, show_default=False, autocompletion=complete_profile)]
Format = Annotated[str, typer.Option(
    "--format", "-f", metavar="table|json", help="table or json.", rich_help_panel="Output",
    autocompletion=complete_choices("table", "json"))]

Wide = Annotated[bool, typer.Option(
    "--wide", help="Every column, whatever the terminal's width (narrow terminals hide "
    "the less important ones, with a note).", rich_help_panel="Output")]


def collect_flags(ctx: typer.Context, broker, result_backend, rabbitmq_api, vhost, queue,
                  timeout, app, profile, rabbitmq_api_ca=None):
    """Merge root-level options (ctx.obj) with this command's."""
    from celeryctl.targets import Flags

    root = (ctx.obj or {}).get("flags") if ctx is not None else None
    base = root or Flags()
    return Flags(
        broker=broker or base.broker,
        result_backend=result_backend or base.result_backend,
        rabbitmq_api=rabbitmq_api or base.rabbitmq_api,
        vhost=vhost if vhost is not None else base.vhost,
        queues=tuple(queue or ()) or base.queues,
        timeout=timeout if timeout is not None else base.timeout,
        app=app or base.app,
        profile=profile or base.profile,
        rabbitmq_api_ca=rabbitmq_api_ca or base.rabbitmq_api_ca,
    )


def check_format(fmt: str) -> str:
    from celeryctl.status import UsageError

    fmt = fmt.lower()
    if fmt not in ("table", "json"):
        raise UsageError(f"--format must be table or json, got {fmt!r}")
    return fmt
