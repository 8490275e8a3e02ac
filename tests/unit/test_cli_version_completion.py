"""`celeryctl --version` / `celeryctl version` and shell completion (issue 13 item 5).

Completion is exercised as the shell does it: the CLI runs in a subprocess with the variables
the completion scripts set (_CELERYCTL_COMPLETE, COMP_WORDS/COMP_CWORD for bash,
_TYPER_COMPLETE_ARGS for zsh and fish), and once through bash itself with the script that
`--show-completion` prints. No broker is involved: a listening socket named as the broker
checks that completion never connects.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from importlib import metadata

import pytest

from tests.conftest import CELERYCTL, ROOT, _cli_env, run_cli

PROFILES = """\
default = "staging"

[clusters.prod]
broker = "redis://:s3cret@127.0.0.1:{port}/0"

[clusters.staging]
broker = "redis://127.0.0.1:{port}/1"

[clusters."two words"]
broker = "redis://127.0.0.1:{port}/2"
"""


@pytest.fixture
def listener():
    """A TCP port nobody but this test listens on: named as the broker, it must see no
    connection from completion."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.setblocking(False)
    yield s
    s.close()


def assert_no_connection(s: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        s.accept()[0].close()


@pytest.fixture
def comp_env(tmp_path, listener):
    port = listener.getsockname()[1]
    cfg = tmp_path / "celeryctl.toml"
    cfg.write_text(PROFILES.format(port=port))
    return {"CELERYCTL_CONFIG": str(cfg), "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0"}


def complete(shell: str, line: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Ask for the candidates at the end of `line`, as the `shell` completion script does."""
    e = _cli_env({**env, "_CELERYCTL_COMPLETE": f"complete_{shell}"})
    if shell == "bash":
        words = line.split()
        if line.endswith(" "):
            words.append("")
        e.update(COMP_WORDS=" ".join(words), COMP_CWORD=str(len(words) - 1))
    else:
        e["_TYPER_COMPLETE_ARGS"] = line
        if shell == "fish":
            e["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    p = subprocess.run(CELERYCTL, capture_output=True, text=True, env=e, timeout=30,
                       cwd=str(ROOT))
    assert p.returncode == 0 and p.stderr == "", (p.returncode, p.stderr)
    return p


def bash(line: str, env: dict[str, str]) -> list[str]:
    return complete("bash", line, env).stdout.splitlines()


# --- version -----------------------------------------------------------------------------

LIBS = {"celery": "celery", "kombu": "kombu", "redis": "redis-py", "pika": "pika",
        "requests": "requests", "rich": "rich", "typer": "typer"}


def test_version_names_celeryctl_and_its_libraries():
    from celeryctl import __version__

    code, out, err, _ = run_cli("--version")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"celeryctl {__version__}"
    rows = dict(line.split(None, 1) for line in lines[1:])
    for dist, label in LIBS.items():
        assert rows[label] == metadata.version(dist)
    v = sys.version_info
    assert rows["Python"].startswith(f"{v.major}.{v.minor}.{v.micro} (")
    # eager: wins over a subcommand, which then never runs (no broker is needed)
    assert run_cli("--version", "workers")[:2] == (0, out)


def test_version_does_not_import_the_libraries():
    """Versions come from the installed metadata: --version stays as fast as --help."""
    code = ("import sys; from celeryctl.cli import run; rc = run(['--version']); "
            "heavy = [m for m in ('celery', 'kombu', 'redis', 'pika', 'requests', 'rich') "
            "if m in sys.modules]; print(rc, heavy, file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, env=_cli_env(None))
    assert p.stderr.strip() == "0 []"


def test_version_json():
    from celeryctl import __version__

    code, out, err, _ = run_cli("version", "--format", "json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["schema"] == 1 and doc["celeryctl"] == __version__
    assert doc["packages"] == {d: metadata.version(d) for d in LIBS}
    assert doc["python"]["version"].startswith(f"{sys.version_info.major}.")
    assert run_cli("version")[1] == run_cli("--version")[1]
    code, out, err, _ = run_cli("version", "-f", "yaml")
    assert code == 64 and "--format must be table or json" in err and "Traceback" not in err


def test_version_text_for_a_missing_library():
    from celeryctl.cli import version_text, versions

    v = versions()
    v["packages"]["pika"] = None
    assert "  pika      not installed\n" in version_text(v)


# --- completion ----------------------------------------------------------------------------

def test_completes_subcommands_and_options(comp_env, listener):
    top = bash("celeryctl ", comp_env)
    for cmd in ("doctor", "workers", "queues", "connections", "explain", "checks", "purge",
                "snapshot", "lab", "version"):
        assert cmd in top
    assert bash("celeryctl wo", comp_env) == ["workers"]
    assert bash("celeryctl queues w", comp_env) == ["watch"]
    assert "--select" in bash("celeryctl doctor --se", comp_env)
    assert {"--install-completion", "--show-completion", "--version"} <= set(
        bash("celeryctl --", comp_env))
    assert bash("celeryctl workers --format ", comp_env) == ["table", "json"]
    assert bash("celeryctl doctor -f m", comp_env) == ["markdown"]
    assert bash("celeryctl doctor --fail-on c", comp_env) == ["critical"]
    assert_no_connection(listener)


def test_completes_check_codes(comp_env, listener):
    from celeryctl.checks import catalogue

    codes = [c.code for c in catalogue()]
    assert "QUE001" in bash("celeryctl explain QUE", comp_env)
    assert bash("celeryctl explain QUE", comp_env) == [c for c in codes if c.startswith("QUE")]
    assert bash("celeryctl explain QUE00", comp_env)[0] == "QUE001"
    assert "que001" in bash("celeryctl explain que00", comp_env)  # codes are case-insensitive
    assert "queue-backlog" in bash("celeryctl explain queue-b", comp_env)  # and names
    everything = bash("celeryctl explain ", comp_env)
    assert set(codes) <= set(everything) and "QUE" not in everything
    # --select / --ignore also take family prefixes
    sel = bash("celeryctl doctor --select QUE", comp_env)
    assert sel[0] == "QUE" and "QUE001" in sel
    assert "SER004" in bash("celeryctl doctor --ignore SER", comp_env)
    # every candidate is accepted by the command it completes
    code, out, err, _ = run_cli("explain", bash("celeryctl explain que00", comp_env)[0])
    assert code == 0, err
    assert_no_connection(listener)


def test_completes_profile_names(comp_env, listener):
    assert bash("celeryctl --profile ", comp_env) == ["prod", "staging"]  # "two words": left out
    assert bash("celeryctl workers --profile p", comp_env) == ["prod"]
    assert bash("celeryctl doctor --profile st", comp_env) == ["staging"]
    assert bash("celeryctl queues --profile ", comp_env) == ["prod", "staging"]
    assert_no_connection(listener)


def test_completes_lab_scenarios(comp_env, listener):
    from celeryctl.lab.scenarios import SCENARIOS

    got = bash("celeryctl lab up --scenario back", comp_env)
    assert got == sorted(n for n in SCENARIOS if n.startswith("back")) and got
    assert_no_connection(listener)


def test_completes_control_commands(comp_env, listener):
    """`celeryctl control <TAB>`: the command words (issue 13 follow-up, item 15b)."""
    from celeryctl.actions.control import COMMANDS

    assert bash("celeryctl control ", comp_env) == list(COMMANDS)
    assert bash("celeryctl control add", comp_env) == ["add-consumer"]
    assert bash("celeryctl control pool-", comp_env) == ["pool-grow", "pool-shrink"]
    # every candidate is one control accepts
    from celeryctl.actions.control import parse_command

    parse_command(bash("celeryctl control add", comp_env)[0], ["q"])
    assert_no_connection(listener)


@pytest.mark.parametrize("content", [None, "", "not [toml", "clusters = 3", "[clusters]\nx = 1",
                                     "\x00\xff"])
def test_profile_completion_never_fails(tmp_path, content):
    """No file, an empty or broken one: no candidates, no traceback (stderr would land in the
    shell), exit 0."""
    cfg = tmp_path / "c.toml"
    if content is not None:
        cfg.write_bytes(content.encode("latin-1"))
    assert complete("bash", "celeryctl --profile ", {"CELERYCTL_CONFIG": str(cfg)}).stdout.strip() == ""


def test_zsh_and_fish_formats(comp_env, listener):
    z = complete("zsh", "celeryctl --profile ", comp_env).stdout
    assert z.startswith("_arguments") and '"prod":"profile"' in z
    assert '"staging":"default profile"' in z
    f = complete("fish", "celeryctl explain SER00", comp_env).stdout.splitlines()
    assert "SER004\tqueued-content-not-accepted" in f
    # option help is shown literally and on one line: fish reads every line as a candidate
    f = complete("fish", "celeryctl doctor --bro", comp_env).stdout.splitlines()
    assert len(f) == 1 and f[0].startswith("--broker\tBroker URL: redis://")
    assert f[0].endswith("[env: CELERY_BROKER_URL]")
    assert_no_connection(listener)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_script_completes_through_bash(tmp_path, comp_env, listener):
    """--show-completion / --install-completion from bash give the bash script; sourced by a
    real bash, it produces the candidates (COMPREPLY) for a check code, a profile and a
    subcommand."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "celeryctl"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m celeryctl "$@"\n')
    exe.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    env = _cli_env({**comp_env, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
                    "HOME": str(home)})
    env.pop("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", None)

    def in_bash(cmd: str) -> str:  # "; true": bash stays the parent the shell is detected from
        return subprocess.run(["bash", "--norc", "--noprofile", "-c", f"{cmd}; true"], env=env,
                              capture_output=True, text=True, timeout=30, check=True).stdout

    script = in_bash("celeryctl --show-completion")
    assert "complete -o default -F _celeryctl_completion celeryctl" in script
    assert in_bash("_CELERYCTL_COMPLETE=source_bash celeryctl").strip() == script.strip()
    assert "bash completion installed" in in_bash("celeryctl --install-completion")
    installed = home / ".bash_completions" / "celeryctl.sh"
    assert installed.read_text().strip() == script.strip()
    assert f"source '{installed}'" in (home / ".bashrc").read_text()
    (tmp_path / "comp.bash").write_text(script)
    probe = ('source "$1"\n'
             'ask() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=();\n'
             '  _celeryctl_completion celeryctl; echo "${COMPREPLY[*]}"; }\n'
             'ask celeryctl explain QUE00\n'
             'ask celeryctl --profile st\n'
             'ask celeryctl snap\n')
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", probe, "probe",
                        str(tmp_path / "comp.bash")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split()[0] == "QUE001" and all(w.startswith("QUE00") for w in
                                                    lines[0].split())
    assert lines[1:] == ["staging", "snapshot"]
    assert_no_connection(listener)


# --- building the command tree ---------------------------------------------------------------

def _plain(v) -> str:
    """A parameter attribute as text, an object by its attributes rather than its address."""
    import re

    if hasattr(v, "__dict__") and not callable(v):
        return f"{type(v).__name__}({ {k: _plain(x) for k, x in sorted(vars(v).items())} })"
    return re.sub(r" at 0x[0-9a-f]+", "", repr(v))


def _tree(root):
    """Every command's parameters and --help text, by command path."""
    import contextlib
    import io

    out = {}

    def walk(cmd, path):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.suppress(BaseException):
            root.main([*path, "--help"], prog_name="celeryctl", standalone_mode=False)
        params = [{k: _plain(v) for k, v in sorted(vars(p).items())
                   if k not in ("callback", "_custom_shell_complete", "_runtime_param")}
                  for p in cmd.params]
        out[path] = (params, buf.getvalue())
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, (*path, name))

    walk(root, ())
    return out


def test_build_command_matches_typers_own_build():
    """build_command memoizes Typer's reading of function parameters for speed: the result
    must be the command tree Typer builds itself, command for command."""
    from typer.main import get_command

    from celeryctl.cli import app, build_command

    ours, typers = _tree(build_command()), _tree(get_command(app))
    assert len(ours) > 20 and ours.keys() == typers.keys()
    for path in ours:
        assert ours[path] == typers[path], path
        assert "Usage: celeryctl" in ours[path][1], path


def test_each_command_line_builds_what_typer_builds():
    """build_command(args) builds only the subcommand the line names (nothing but names and
    help texts when it names none): what that line sees — the command's options and every
    --help on its path — is Typer's own full build."""
    from typer.main import get_command

    from celeryctl.cli import app, build_command

    typers = _tree(get_command(app))
    for path in typers:
        ours = _tree(build_command(args=[*path[:1], "--help"]))
        assert ours[path] == typers[path], path
    lite = _tree(build_command(args=["--help"]))
    assert lite[()] == typers[()]  # the root: its options and its list of commands
    # a typo still gets click's suggestion, from every command's name
    full = build_command(args=["wrokers"])
    assert sorted(full.commands) == sorted(p[0] for p in typers if len(p) == 1)


@pytest.mark.parametrize("args", [(), ("lab",)])
def test_no_subcommand_prints_the_help_as_a_usage_error(args):
    """`celeryctl` alone used to say "error: timed out: Usage: ..." with exit 3."""
    code, out, err, _ = run_cli(*args)
    assert code == 64 and out == ""
    assert err.startswith(f"Usage: celeryctl {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND")
    assert "Commands:" in err and "error" not in err.splitlines()[0]
