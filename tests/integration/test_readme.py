"""The README's "first five minutes" as a newcomer runs it: the demo's lab started as
`make demo` starts it, then every command of the block pasted into bash from the checkout.
Each must work (no "command not found", no "no lab", no usage error), and print what the
README shows, numbers and ages aside — regenerate with `python scripts/readme_examples.py`."""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.redis, pytest.mark.workers]


def _examples():
    spec = importlib.util.spec_from_file_location("readme_examples",
                                                  ROOT / "scripts" / "readme_examples.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["readme_examples"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_readme_first_five_minutes_runs_as_written(tmp_path):
    ex = _examples()
    text = (ROOT / "README.md").read_text()
    blocks = dict(ex.blocks(text))
    assert "first-five-minutes" in blocks and len(blocks["first-five-minutes"]) >= 4
    shown = {m["name"]: m["body"] for m in ex.BLOCK.finditer(text)}
    env = ex.env_for(str(tmp_path / "lab"))
    for name, commands in blocks.items():
        ex.start_demo(env)
        try:
            steps = ex.run(commands, env)
        finally:
            ex.stop_demo(env)
        for s in steps:
            assert s.code in (0, 1, 2), f"`{s.command}` exited {s.code}:\n{s.output}"
            assert "Traceback" not in s.output and "no lab" not in s.output, s.output
            assert all(len(ln) <= 80 for ln in s.output.splitlines()), s.output
        assert ex.normalise(shown[name]) == ex.normalise(ex.body(steps)), (
            f"README.md example {name!r} is out of date: python scripts/readme_examples.py")


def test_readme_links_resolve_inside_the_repository():
    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (ROOT / target).resolve().is_relative_to(ROOT), target
        assert (ROOT / target).exists(), target


def test_command_reference_covers_every_command():
    import typer.main

    from celeryctl.cli import app

    doc = (ROOT / "docs" / "commands.md").read_text()
    group = typer.main.get_command(app)

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            yield (*path, name)
            yield from walk(sub, (*path, name))

    missing = [" ".join(p) for p in walk(group, ()) if " ".join(p) not in doc]
    assert not missing, f"docs/commands.md does not describe: {missing}"


def test_make_demo_next_steps_work_when_pasted(tmp_path):
    """The lines `make demo` ends with (scripts/demo.sh, which the Makefile runs after the
    install), pasted into bash from the checkout as printed."""
    import subprocess

    ex = _examples()
    env = ex.env_for(str(tmp_path / "lab"))
    try:
        p = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env,
                           text=True, capture_output=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert "QUE002" in p.stdout  # the demo's doctor finds something real
        assert "rabbitmq" not in (p.stdout + p.stderr).lower()  # the demo is Redis only
        nxt = p.stdout.split("Next, from this directory:\n", 1)[1]
        commands = [ln.split("#")[0].strip() for ln in nxt.splitlines() if ln.strip()]
        r = subprocess.run(["bash", "-c", "\n".join(commands)], cwd=ROOT, env=env,
                           text=True, capture_output=True, timeout=300)
        assert r.returncode == 0, (r.stdout, r.stderr)  # the last one: lab down
        assert "QUE002" in r.stdout and "stopped worker" in r.stdout + r.stderr, r
    finally:
        ex.stop_demo(env)
