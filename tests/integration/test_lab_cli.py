"""`celeryctl lab` as a newcomer meets it: started by its path from a checkout (not on PATH),
every command it prints works when pasted into bash, `down` stops the lab it started, and a
command that finds no lab says where it looked (exit 3, docs/exit-codes.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.redis, pytest.mark.workers]

VENV_CELERYCTL = Path(sys.executable).parent / "celeryctl"


def _env_without_celeryctl_on_path() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "CELERYCTL_"))}
    env["PATH"] = os.pathsep.join(
        d for d in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if d and not (Path(d) / "celeryctl").exists())
    env["CELERYCTL_CONFIG"] = "/nonexistent/celeryctl.toml"
    env["NO_COLOR"] = "1"
    return env


def _checkout(tmp_path: Path) -> Path:
    """A directory that is a celeryctl checkout as far as the lab location rule goes."""
    d = tmp_path / "checkout"
    (d / "sub").mkdir(parents=True)
    (d / "pyproject.toml").write_text('[project]\nname = "celeryctl"\nversion = "0"\n')
    return d


def _bash(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def _printed_commands(out: str) -> dict[str, list[str]]:
    """The commands `lab up` printed: {"try": [...], "stop": [...]}."""
    found: dict[str, list[str]] = {"try": [], "stop": []}
    section = None
    for line in out.splitlines():
        m = re.match(r"^(\w[\w ]*):\s+(.*)$", line)
        if m:
            section = {"try": "try", "stop it": "stop"}.get(m.group(1))
            text = m.group(2)
        elif line.startswith("          ") and section:
            text = line.strip()
        else:
            continue
        if section:
            found[section].append(text)
    return found


def test_printed_commands_work_when_pasted(tmp_path):
    assert VENV_CELERYCTL.exists(), "the tests run from a virtualenv with celeryctl installed"
    env = _env_without_celeryctl_on_path()
    assert _bash("command -v celeryctl", tmp_path, env).returncode != 0
    checkout = _checkout(tmp_path)
    up = subprocess.run([str(VENV_CELERYCTL), "lab", "up", "--workers", "1", "--pool",
                         "threads", "--concurrency", "1"], cwd=checkout, env=env,
                        capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        assert "rabbitmq" not in up.stdout + up.stderr  # started only when used or asked
        assert f"lab directory: {checkout / '.lab'}" in up.stdout
        cmds = _printed_commands(up.stdout)
        assert len(cmds["try"]) == 3 and len(cmds["stop"]) == 1, up.stdout
        for line in cmds["try"]:
            assert line.startswith(str(VENV_CELERYCTL)) or line.startswith("eval "), line
            # `eval "$(... lab env)"   # then: ... workers`: both halves, in one shell
            line = line.replace("   # then: ", "; ")
            for cwd in (checkout, checkout / "sub"):  # from the checkout or inside it
                r = _bash(line, cwd, env)
                assert r.returncode in (0, 1), (line, r.returncode, r.stdout, r.stderr)
                assert "no lab" not in r.stderr and "celery" in r.stdout, (line, r.stdout)
        # status and env, typed by hand from the checkout, find the same lab
        r = _bash(f"'{VENV_CELERYCTL}' lab status", checkout, env)
        assert r.returncode == 0 and str(checkout / ".lab") in r.stdout, r.stderr
        stop = _bash(cmds["stop"][0], checkout, env)
        assert stop.returncode == 0, stop.stderr
        lines = stop.stdout.splitlines()
        assert [ln.split(" (pid")[0] for ln in lines] == ["stopped worker w1@" + os.uname()[1],
                                                           "stopped redis-server"], lines
        # nothing left: every lab command says where it looked, exit 3
        for cmd in ("down", "status", "env"):
            r = _bash(f"'{VENV_CELERYCTL}' lab {cmd}", checkout / "sub", env)
            assert r.returncode == 3, (cmd, r.returncode, r.stderr)
            assert f"no lab running in {checkout / '.lab'}" in r.stderr, r.stderr
            assert "celeryctl checkout" in r.stderr
            assert r.stdout == "" or cmd == "status", r.stdout
    finally:
        subprocess.run([str(VENV_CELERYCTL), "lab", "down", "--dir", str(checkout / ".lab")],
                       env=env, capture_output=True, timeout=60)


def test_lab_dir_outside_a_checkout_is_the_state_dir(tmp_path):
    env = _env_without_celeryctl_on_path()
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    r = _bash(f"'{VENV_CELERYCTL}' lab env", tmp_path, env)
    assert r.returncode == 3 and r.stdout == ""
    assert f"no lab running in {tmp_path / 'state' / 'celeryctl' / 'lab'}" in r.stderr
    env["CELERYCTL_LAB_DIR"] = str(tmp_path / "mine")
    r = _bash(f"'{VENV_CELERYCTL}' lab down", _checkout(tmp_path), env)
    assert r.returncode == 3 and f"no lab running in {tmp_path / 'mine'}" in r.stderr
    assert "CELERYCTL_LAB_DIR" in r.stderr


@pytest.mark.parametrize("scenario,code", [("producer-pickle", "SER002"),
                                           ("redis-acl-inspect", "QUE002")])
def test_scenario_doctor_line_works_when_pasted(tmp_path, scenario, code):
    """The scenario's doctor line: an app on PYTHONPATH, an account whose password is read
    from its file when the command runs (never printed)."""
    env = _env_without_celeryctl_on_path()
    env["CELERYCTL_LAB_DIR"] = str(tmp_path / "lab")
    up = subprocess.run([str(VENV_CELERYCTL), "lab", "up", "--scenario", scenario],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stderr
        line = next(ln for ln in up.stdout.splitlines() if ln.startswith("scenario:"))
        doctor = line.split(" — try: ", 1)[1]
        assert doctor.count("--broker") == 1, doctor
        r = _bash(doctor, tmp_path, env)
        assert r.returncode in (1, 2), (doctor, r.returncode, r.stdout, r.stderr)
        assert code in r.stdout, r.stdout
        # the fixes it suggests name celeryctl as it was run, too
        fixes = [ln.strip()[2:] for ln in r.stdout.splitlines() if ln.startswith("      $ ")]
        assert not [f for f in fixes if f.startswith("celeryctl ")], fixes
        if code == "QUE002":  # -d names a live worker, not a WORKER placeholder
            host = os.uname()[1]
            assert f"{VENV_CELERYCTL} control add-consumer reports -d w1@{host}" in fixes, fixes
        if code == "SER002":  # producers send pickle: the fix never says to accept it
            text = " ".join(r.stdout.split())
            assert 'fix: Switch the producers to json (task_serializer = "json"); do not add ' \
                   "pickle to accept_content" in text, r.stdout
            assert "Add the producers' serializer" not in text, r.stdout
    finally:
        subprocess.run([str(VENV_CELERYCTL), "lab", "down"], env=env, capture_output=True,
                       timeout=60)


def test_status_of_a_broken_lab_says_so_first(tmp_path):
    """Issue 13 follow-up, item 15c: after kill -9 of redis, `lab status` says first that the
    lab is broken and which process died, says to run `lab down` then `lab up`, and prints
    no "try:" commands (they would fail); exit 1."""
    import json
    import signal

    from tests.conftest import run_cli

    d = tmp_path / "lab"
    code, out, err, _ = run_cli("lab", "up", "--workers", "0", "--dir", str(d), timeout=120)
    try:
        assert code == 0, err
        code, out, err, _ = run_cli("lab", "status", "--dir", str(d))
        assert code == 0 and "try:" in out and "BROKEN" not in out, (out, err)
        pid = json.loads((d / "state.json").read_text())["redis"]["pid"]
        os.kill(pid, signal.SIGKILL)
        for _ in range(50):  # reaped by init: gone from the process table
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            import time

            time.sleep(0.1)
        code, out, err, _ = run_cli("lab", "status", "--dir", str(d))
        lines = out.splitlines()
        assert code == 1, (out, err)
        assert lines[0] == f"LAB BROKEN: 1 process is dead — redis-server (pid {pid})", out
        fix = next(i for i, x in enumerate(lines) if x.startswith("fix:"))
        assert "lab down" in lines[fix] and "lab up" in lines[fix + 1], out
        assert fix < next(i for i, x in enumerate(lines) if x.startswith("redis:"))
        assert f"(pid {pid}, DEAD)" in out and "try:" not in out, out
    finally:
        run_cli("lab", "down", "--dir", str(d), timeout=60)
