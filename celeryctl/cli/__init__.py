"""celeryctl's command line: thin Typer glue (parse -> collect -> view -> render -> exit).

Only typer and the standard library are imported at module level: `celeryctl --help` must
stay a fraction of `celery --help` (see docs/performance.md). Everything else is imported
inside the command that needs it.
"""

from __future__ import annotations

import os
import sys

import typer

from celeryctl.cli import options as o

app = typer.Typer(
    name="celeryctl",
    help="The diagnostic command line for Celery operators: workers, queues and connections "
    "of a Celery cluster on Redis or RabbitMQ, read safely and fast.\n\n"
    "Exit status: 0 ok, 1 warning, 2 critical, 3 unknown (a source could not be observed), "
    "64 usage error, 130 interrupted.",
    rich_markup_mode=None,
    add_completion=True,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


# (distribution, label): the libraries whose versions matter in a bug report
_VERSIONED = (("celery", "celery"), ("kombu", "kombu"), ("redis", "redis-py"), ("pika", "pika"),
              ("requests", "requests"), ("rich", "rich"), ("typer", "typer"))


def versions() -> dict:
    """celeryctl's version and its libraries', from the installed metadata: nothing is imported
    (fast, and a broken library still shows its version). A missing one is None."""
    import platform
    from importlib import metadata

    from celeryctl import __version__

    packages: dict[str, str | None] = {}
    for dist, _label in _VERSIONED:
        try:
            packages[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            packages[dist] = None
    return {"schema": 1, "celeryctl": __version__, "packages": packages,
            "python": {"version": platform.python_version(),
                       "implementation": platform.python_implementation()}}


def version_text(v: dict) -> str:
    rows = [(label, v["packages"][dist] or "not installed") for dist, label in _VERSIONED]
    rows.append(("Python", f"{v['python']['version']} ({v['python']['implementation']})"))
    width = max(len(label) for label, _ in rows)
    return f"celeryctl {v['celeryctl']}\n" + "".join(f"  {label:<{width}}  {value}\n"
                                                       for label, value in rows)


def _version(ctx: typer.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:  # not while the shell asks for completions
        sys.stdout.write(version_text(versions()))
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    broker: o.Broker = None,
    result_backend: o.Backend = None,
    rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None,
    vhost: o.Vhost = None,
    queue: o.Queue = None,
    timeout: o.Timeout = None,
    app_: o.App = None,
    profile: o.Profile = None,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of failures."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the versions of celeryctl, Celery, kombu, "
                                 "redis-py, pika, ... and exit (as JSON: celeryctl version "
                                 "-f json)."),
) -> None:
    from celeryctl.targets import Flags

    ctx.obj = {"flags": Flags(broker, result_backend, rabbitmq_api, vhost, tuple(queue or ()),
                              timeout, app_, profile, rabbitmq_api_ca), "debug": debug}


def version_cmd(fmt: o.Format = "table") -> None:
    """The versions of celeryctl, Celery, kombu, redis-py, pika, requests, rich, typer and
    Python (as --version; -f json for a JSON document)."""
    v = versions()
    if o.check_format(fmt) == "json":
        import json

        sys.stdout.write(json.dumps(v, indent=2) + "\n")
    else:
        sys.stdout.write(version_text(v))


from celeryctl.cli import act as _act  # noqa: E402
from celeryctl.cli import control as _control  # noqa: E402
from celeryctl.cli import doctor as _doctor  # noqa: E402
from celeryctl.cli import events as _events  # noqa: E402
from celeryctl.cli import lab as _lab  # noqa: E402
from celeryctl.cli import read as _read  # noqa: E402
from celeryctl.cli import snapshot as _snapshot  # noqa: E402
from celeryctl.cli import task as _task  # noqa: E402
from celeryctl.cli import tasks as _tasks  # noqa: E402
from celeryctl.cli import watch as _watch  # noqa: E402

_doctor.register(app)
_read.register(app)
_watch.register(_read.queues_app)
_act.register(app)
_control.register(app)
_events.register(app)
_snapshot.register(app)
app.command("version")(version_cmd)
_tasks.register(app)
_task.register(app)
app.add_typer(_lab.lab_app, name="lab")


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("CELERYCTL_DEBUG") not in (None, "", "0")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and map every outcome to one ExitStatus."""
    args = list(sys.argv[1:] if argv is None else argv)
    code = run(args)
    _exit(code)


# the root's options that take a value (a value is never the subcommand's name)
_VALUED = {"-b", "--broker", "--result-backend", "--rabbitmq-api", "--rabbitmq-api-ca",
           "--vhost", "-Q", "--queue", "-t", "--timeout", "-A", "--app", "--profile"}


def _subcommand(args: list[str]) -> str | None:
    """The first word of `args` that is not a root option or its value: the subcommand (or
    a typo of one), None when there is none (`--help`, `--version`, nothing)."""
    it = iter(args)
    for a in it:
        if a == "--":
            return next(it, None)
        if a in _VALUED:
            next(it, None)
        elif not a.startswith("-"):
            return a
    return None


def _name(info) -> str | None:
    """The name Typer gives a registered command (CommandInfo) or sub-Typer (TyperInfo)."""
    import typer.main as tm

    if getattr(info, "typer_instance", None) is not None:
        return info.name or info.typer_instance.info.name
    return info.name or (tm.get_command_name(info.callback.__name__) if info.callback else None)


def _subcommand_functions(typer_app: typer.Typer) -> set:
    """The functions of every subcommand and sub-group below the root (not the root's own
    callback, nor an option's callback such as --version's)."""
    out = set()
    for c in typer_app.registered_commands:
        out.add(c.callback)
    for g in typer_app.registered_groups:
        sub = g.typer_instance
        if sub.registered_callback:
            out.add(sub.registered_callback.callback)
        out |= _subcommand_functions(sub)
    return out


def build_command(typer_app: typer.Typer = app, args: list[str] | None = None):
    """typer.main.get_command, building only what this command line uses.

    Typer inspects every command function (signature and type hints) to build its options:
    most of what `celeryctl --help` spends after the imports (docs/performance.md). So:
    - each function is read once, not twice (Typer reads it again for its callback);
    - `celeryctl SUBCOMMAND ...`: only that subcommand is built (the group's other entries are
      set aside for the build, and put back);
    - no subcommand (`--help`, `--version`, nothing): the subcommands are built without their
      options — the root's help lists only their names and help texts, and none of them runs.
    `args` None (and shell completion) builds everything. A Typer that reorganised these
    internals builds as usual. tests/unit/test_cli_version_completion.py checks every
    command's help is the full build's."""
    import typer.main as tm

    plain = getattr(tm, "get_params_from_function", None)
    if plain is None:  # pragma: no cover - a Typer that reorganised its internals
        return tm.get_command(typer_app)
    memo: dict = {}
    word = _subcommand(args) if args is not None else "\0all"
    blank = _subcommand_functions(typer_app) if word is None else set()

    def once(func):
        if func not in memo:
            memo[func] = {} if func in blank else plain(func)
        return memo[func]

    cmds, groups = typer_app.registered_commands, typer_app.registered_groups
    if word not in (None, "\0all"):
        only_c = [c for c in cmds if _name(c) == word]
        only_g = [g for g in groups if _name(g) == word]
        if only_c or only_g:  # else a typo: everything, for click's "did you mean"
            typer_app.registered_commands, typer_app.registered_groups = only_c, only_g
    tm.get_params_from_function = once
    try:
        return tm.get_command(typer_app)
    finally:
        tm.get_params_from_function = plain
        typer_app.registered_commands, typer_app.registered_groups = cmds, groups


def run(args: list[str]) -> int:
    if os.environ.get("_CELERYCTL_COMPLETE"):
        _plain_completion_help()
    debug = _debug_requested(args)
    # --debug is accepted anywhere on the line, not only before the subcommand.
    args = [a for a in args if a != "--debug"]
    command = build_command(args=None if os.environ.get("_CELERYCTL_COMPLETE") else args)
    try:
        result = command.main(args=args, prog_name="celeryctl", standalone_mode=False)
        return int(result or 0) if isinstance(result, int) else 0
    except KeyboardInterrupt:
        sys.stderr.write("celeryctl: interrupted\n")
        return 130
    except BaseException as exc:  # noqa: BLE001 - the one place that maps exceptions
        return _handle(exc, debug)


def _plain_completion_help() -> None:
    """The shell asks for completions. Typer passes zsh/fish/PowerShell candidates' help
    through rich markup: "[env: CELERY_BROKER_URL]" would vanish, and rich's wrapping puts the
    end of a long help on a line of its own, which fish offers as a candidate. celeryctl's help
    texts are plain: show them literally, on one line (and without importing rich)."""
    try:
        from typer import _completion_classes
    except ImportError:  # pragma: no cover - a Typer that moved it: its own rendering
        return
    if hasattr(_completion_classes, "_sanitize_help_text"):
        _completion_classes._sanitize_help_text = lambda text: " ".join(str(text).split())


def _handle(exc: BaseException, debug: bool) -> int:
    from celeryctl.render.text import safe_lines  # messages may quote names: no raw ESC
    from celeryctl.status import CeleryctlError, ExitStatus, exit_status_for
    from celeryctl.urls import SECRETS

    name = type(exc).__name__
    if name == "Exit":  # typer/click Exit
        return int(getattr(exc, "exit_code", 0) or 0)
    if name == "Abort":
        sys.stderr.write("celeryctl: aborted\n")
        return int(ExitStatus.INTERRUPTED)
    if name == "NoArgsIsHelpError":  # `celeryctl`, `celeryctl lab`: the help, as a usage error
        sys.stderr.write(exc.format_message().rstrip("\n") + "\n")
        return int(ExitStatus.USAGE)
    if isinstance(exc, SystemExit):
        return int(exc.code or 0) if isinstance(exc.code, int) else 1
    if hasattr(exc, "format_message") and name.endswith(("UsageError", "BadParameter",
                                                          "NoSuchOption", "MissingParameter",
                                                          "BadOptionUsage", "BadArgumentUsage")):
        ctx = getattr(exc, "ctx", None)
        usage = ctx.get_usage() + "\n" if ctx is not None else ""
        sys.stderr.write(f"{usage}celeryctl: error: "
                         f"{safe_lines(SECRETS.scrub(exc.format_message()))}\n")
        return int(ExitStatus.USAGE)
    if debug:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)
    if isinstance(exc, CeleryctlError):
        sys.stderr.write(f"celeryctl: error: {safe_lines(SECRETS.scrub(str(exc)))}\n")
        return int(exit_status_for(exc))
    from celeryctl.collect.errors import FAILED, classify

    kind, text = classify(exc)
    if kind != FAILED:  # refused, rejected or lost: an expected failure, said as such
        sys.stderr.write(f"celeryctl: error: {safe_lines(text)}\n")
        return int(ExitStatus.UNKNOWN)
    sys.stderr.write(f"celeryctl: internal error: {name}: {safe_lines(SECRETS.scrub(str(exc)))}"
                     + ("" if debug else " (run with --debug for the traceback)") + "\n")
    return int(exit_status_for(exc))


def _exit(code: int) -> None:
    """Exit; if a collector thread was abandoned (a hung source), exit hard so no library
    clean-up can block on a dead socket."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass
    if "celeryctl.collect.bounded" in sys.modules:
        from celeryctl.collect.bounded import ABANDONED

        if ABANDONED.is_set():
            os._exit(code)
    sys.exit(code)
