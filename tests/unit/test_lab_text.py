"""The lab's location rule, the commands it prints (quoted, pasteable) and `lab scenarios`
at 80 columns: pure functions, no servers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from celeryctl.cli.lab import scenario_table
from celeryctl.invocation import as_typed, prog, prog_words, shell_word
from celeryctl.lab import lab
from celeryctl.lab.scenarios import SCENARIOS
from celeryctl.lab.servers import Proc


def _project(d: Path, name: str) -> Path:
    (d / "a" / "b").mkdir(parents=True)
    (d / "pyproject.toml").write_text(f'[build-system]\nrequires = []\n\n[project]\n'
                                      f'name = "{name}"\nversion = "1"\n')
    return d


def test_lab_dir_rule(tmp_path, monkeypatch):
    monkeypatch.delenv("CELERYCTL_LAB_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    checkout = _project(tmp_path / "co", "celeryctl")
    other = _project(tmp_path / "other", "not-celeryctl")
    monkeypatch.chdir(checkout / "a" / "b")  # inside a checkout: its .lab
    assert lab.resolve_dir()[0] == checkout.resolve() / ".lab"
    assert "checkout" in lab.resolve_dir()[1]
    monkeypatch.chdir(other / "a")  # another project: the state directory
    assert lab.resolve_dir()[0] == tmp_path / "state" / "celeryctl" / "lab"
    monkeypatch.setenv("CELERYCTL_LAB_DIR", str(tmp_path / "env"))  # the variable wins
    monkeypatch.chdir(checkout)
    assert lab.resolve_dir() == (tmp_path / "env", "set by CELERYCTL_LAB_DIR")
    assert lab.resolve_dir(tmp_path / "flag")[0] == tmp_path / "flag"  # --dir wins over all


def test_prog_words(tmp_path, monkeypatch):
    bin_ = tmp_path / "venv" / "bin"
    bin_.mkdir(parents=True)
    script, python = bin_ / "celeryctl", bin_ / "python"
    script.write_text("#!/bin/sh\n")
    python.write_text("")
    monkeypatch.chdir(tmp_path)
    # not on PATH: the path it was run by, relative when under the current directory
    assert prog_words(str(script), str(python), on_path="") == ["venv/bin/celeryctl"]
    monkeypatch.chdir(tmp_path / "venv" / "bin")
    assert prog_words(str(script), str(python), on_path="") == ["./celeryctl"]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # not under it: absolute
    assert prog_words(str(script), str(python), on_path="") == [str(script)]
    # PATH finds this same script: the plain name; another celeryctl: the path
    assert prog_words(str(script), str(python), on_path=str(script)) == ["celeryctl"]
    assert prog_words(str(script), str(python), on_path="/usr/bin/true") == [str(script)]
    # python -m celeryctl
    main = "/x/celeryctl/__main__.py"
    assert prog_words(main, str(python), on_path="") == [str(python), "-m", "celeryctl"]
    assert prog_words(main, str(python), on_path=str(script)) == ["celeryctl"]


@pytest.mark.parametrize("value", [
    "redis://127.0.0.1:1/0", "it's \"quoted\" $HOME `x` \\ ;|&",
    "redis://u:$(cat /tmp/dir with space/pw)@h:1/0", "a$(cat /p/it's)b$(cat /q)c\"$d",
])
def test_shell_word_round_trips_through_bash(tmp_path, value):
    files = {"/tmp/dir with space/pw": "S1", "/p/it's": "S2", "/q": "S3"}
    expected = value
    for path, secret in files.items():
        expected = expected.replace(f"$(cat {path})", secret)
    script = shell_word(value)
    for path in files:  # run with the files at paths under tmp_path
        script = script.replace(path.replace("'", "'\"'\"'"), str(tmp_path) + path.replace(
            "'", "'\"'\"'"))
        (tmp_path / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.lstrip("/")).write_text(files[path])
    out = subprocess.run(["bash", "-c", f"printf %s {script}"], capture_output=True,
                         text=True, check=True).stdout
    assert out == expected, script


@pytest.mark.parametrize("width", [60, 80, 120])
def test_lab_scenarios_table_fits(width):
    ordered = sorted(SCENARIOS.values(), key=lambda s: s.name)
    lines = scenario_table(ordered, width)
    assert all(len(ln) <= width for ln in lines), max(lines, key=len)
    assert lines[0].split() == ["NAME", "BROKER", "DOCTOR", "FINDS"]
    col = lines[0].index("BROKER")
    rows = [ln for ln in lines[1:] if not ln.startswith(" ")]
    assert [r.split()[0] for r in rows] == sorted(SCENARIOS)  # stable: by name, once each
    assert all(r[col:].split()[0] in ("redis", "rabbitmq") for r in rows)  # aligned
    for ln in lines[1:]:  # wrapped text keeps its indent
        if ln.startswith(" "):
            assert ln.startswith("    ") and ln.strip(), ln
    text = " ".join(ln.strip() for ln in lines)
    for s in ordered:
        assert " ".join(s.summary.split()) in text


def test_lab_process_named_once():
    def p(kind, name):
        return Proc(kind, name, 1, "", "")

    assert lab.label(p("redis", "redis")) == "redis-server"
    assert lab.label(p("rabbitmq", "rabbitmq-2")) == "rabbitmq-2"
    assert lab.label(p("worker", "w1@h")) == "worker w1@h"
    assert lab.label(p("sentinel", "sentinel1")) == "sentinel1"
    assert lab.label(p("helper", "producer")) == "helper producer"


def test_suggested_commands_name_celeryctl_as_run():
    assert as_typed("celeryctl workers -d 'a b'") == prog() + " workers -d 'a b'"
    assert as_typed("celery -A proj worker") == "celery -A proj worker"
    assert as_typed("celeryctlx") == "celeryctlx"


@pytest.mark.parametrize("value", ["esc\x1b[2Jq", "it's \\ \x07", "bidi\u202eq\u0085",
                                   "nl\nq\tt", "plain", "a b", "q[/]x"])
def test_quote_pastes_back_in_bash(value):
    """Issue 13 follow-up, item 14: a word with a control character is written $'...', which
    bash reads back to the exact value; printed through safe(), it is unchanged."""
    import shutil
    import subprocess

    from celeryctl.invocation import quote, shell_word
    from celeryctl.render.text import safe

    q = quote(value)
    assert shell_word(value) == q and safe(q) == q
    assert q.startswith("$'") == any(c in value for c in "\x1b\x07\u202e\u0085\n\t")
    if shutil.which("bash"):
        out = subprocess.run(["bash", "-c", f"printf %s {q}"], capture_output=True,
                             env={"LC_ALL": "C.UTF-8"}).stdout
        assert out.decode() == value
