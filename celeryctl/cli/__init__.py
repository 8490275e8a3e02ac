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
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from celeryctl import __version__

        typer.echo(f"celeryctl {__version__}")
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
                                 help="Print the version and exit."),
) -> None:
    from celeryctl.targets import Flags

    ctx.obj = {"flags": Flags(broker, result_backend, rabbitmq_api, vhost, tuple(queue or ()),
                              timeout, app_, profile, rabbitmq_api_ca), "debug": debug}


from celeryctl.cli import act as _act  # noqa: E402
from celeryctl.cli import control as _control  # noqa: E402
from celeryctl.cli import doctor as _doctor  # noqa: E402
from celeryctl.cli import lab as _lab  # noqa: E402
from celeryctl.cli import read as _read  # noqa: E402
from celeryctl.cli import snapshot as _snapshot  # noqa: E402
from celeryctl.cli import tasks as _tasks  # noqa: E402
from celeryctl.cli import watch as _watch  # noqa: E402

_doctor.register(app)
_read.register(app)
_watch.register(_read.queues_app)
_act.register(app)
_control.register(app)
_snapshot.register(app)
_tasks.register(app)
app.add_typer(_lab.lab_app, name="lab")


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("CELERYCTL_DEBUG") not in (None, "", "0")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and map every outcome to one ExitStatus."""
    args = list(sys.argv[1:] if argv is None else argv)
    code = run(args)
    _exit(code)


def run(args: list[str]) -> int:
    from typer.main import get_command

    debug = _debug_requested(args)
    # --debug is accepted anywhere on the line, not only before the subcommand.
    args = [a for a in args if a != "--debug"]
    command = get_command(app)
    try:
        result = command.main(args=args, prog_name="celeryctl", standalone_mode=False)
        return int(result or 0) if isinstance(result, int) else 0
    except KeyboardInterrupt:
        sys.stderr.write("celeryctl: interrupted\n")
        return 130
    except BaseException as exc:  # noqa: BLE001 - the one place that maps exceptions
        return _handle(exc, debug)


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
