"""Regenerate the example output in README.md from a real lab.

    python scripts/readme_examples.py           # rewrite README.md's example blocks
    python scripts/readme_examples.py --check   # exit 1 if a block is out of date

A block is the ```console fence between `<!-- example: NAME -->` and `<!-- /example -->`.
Its `$ ` lines are the commands; everything else in it is their output, and is regenerated:
the demo's lab is started exactly as `make demo` starts it (scripts/demo.sh, in a lab
directory of its own so a lab of yours is left alone), then the commands run one after the
other in one bash, from the checkout, in a tmux window 80 columns wide, read back as a person
sees it (stdout and stderr together).

The test suite (tests/integration/test_readme.py) runs the same blocks and fails when the
README's output no longer matches (numbers, ports, ages and column widths aside)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- example: (?P<name>[\w-]+) -->\n```console\n)(?P<body>.*?)(```\n"
                   r"<!-- /example -->)", re.S)
MARK = "@@readme-example"


@dataclass
class Step:
    command: str
    output: str
    code: int


def blocks(text: str) -> list[tuple[str, list[str]]]:
    """(name, commands) of every example block."""
    return [(m["name"], [ln[2:] for ln in m["body"].splitlines() if ln.startswith("$ ")])
            for m in BLOCK.finditer(text)]


def env_for(lab_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CELERY_", "CELERYCTL_"))}
    env.update(NO_COLOR="1", CELERYCTL_LAB_DIR=lab_dir)
    return env


def start_demo(env: dict[str, str]) -> None:
    """The lab as `make demo` leaves it (its own output is not part of any block)."""
    subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   timeout=300)


def stop_demo(env: dict[str, str]) -> None:
    subprocess.run([str(ROOT / ".venv" / "bin" / "celeryctl"), "lab", "down"], cwd=ROOT,
                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=120)


def run(commands: list[str], env: dict[str, str], timeout: float = 300) -> list[Step]:
    """Run the commands in one bash (exports and evals carry over), as pasted into an
    80-column terminal: a tmux window of 80 columns, read back with capture-pane."""
    import shutil
    import time

    if not shutil.which("tmux"):
        raise RuntimeError("tmux is needed (scripts/install-deps.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="celeryctl-tmux-") as tmp:
        lines = []
        for i, cmd in enumerate(commands):
            lines += [f"echo '{MARK} {i}'", cmd, f"echo \"{MARK} {i} rc=$?\""]
        lines.append(f"echo '{MARK} end'")
        script = Path(tmp) / "block.sh"
        script.write_text("\n".join(lines) + "\n")
        conf = Path(tmp) / "tmux.conf"
        conf.write_text("set -g history-limit 50000\nset -g status off\n")
        sock = str(Path(tmp) / "sock")
        tmux = ["tmux", "-S", sock, "-f", str(conf)]
        env = {**env, "TERM": "xterm-256color"}
        env.pop("COLUMNS", None)
        env.pop("LINES", None)
        subprocess.run([*tmux, "new-session", "-d", "-x", "80", "-y", "24",
                        f"bash --norc --noprofile {script}; sleep 600"],
                       cwd=ROOT, env=env, check=True, timeout=30)
        try:
            deadline = time.monotonic() + timeout
            while True:
                text = subprocess.run([*tmux, "capture-pane", "-p", "-S", "-", "-E", "-"],
                                      text=True, capture_output=True, timeout=30).stdout
                if f"{MARK} end" in text:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the block did not finish:\n{text}")
                time.sleep(0.5)
        finally:
            subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30)
    steps = []
    for i, cmd in enumerate(commands):
        m = re.search(rf"^{MARK} {i}\n(.*?)^{MARK} {i} rc=(\d+)$", text, re.S | re.M)
        if not m:
            raise RuntimeError(f"no output for {cmd!r}:\n{text}")
        out = "\n".join(ln.rstrip() for ln in m[1].splitlines()).strip("\n")
        steps.append(Step(cmd, out, int(m[2])))
    return steps


def body(steps: list[Step]) -> str:
    """The block as README shows it: plain spaces (a terminal's no-break spaces, which keep a
    number with its unit, render/text.bind_units, are a terminal matter)."""
    text = "".join(f"$ {s.command}\n" + (s.output + "\n" if s.output else "") for s in steps)
    return text.replace("\u00a0", " ")


def normalise(text: str, host: str | None = None) -> list[str]:
    """What must stay the same: the words, the order of lines and columns, and each line's
    indent (up to 20 columns). Numbers, ports, ages, the host's name and the column widths
    they cause are allowed to differ."""
    host = host or next(iter(re.findall(r"\bw\d+@([\w.-]+)", text)), None)
    lines = []
    for ln in text.splitlines():
        if host:
            ln = ln.replace(host, "HOST")
        ln = re.sub(r"\d+(\.\d+)?", "0", ln)
        ln = re.sub(r"[─━═│┃┏┓┗┛┡┩└┘┌┐├┤┬┴┼╇╈╭╮╰╯]+", " ", ln)
        ln = re.sub(r"\b(seconds?|minutes?|hours?|days?|messages?|workers?|queues?)\b",
                    lambda m: m[1].rstrip("s"), ln)
        words = " ".join(ln.split())
        if words:
            # the indent stays (a wrapped line keeps its hanging indent: that is checked);
            # a table cell's continuation far right moves with the columns' widths
            indent = len(ln) - len(ln.lstrip(" "))
            lines.append(f"{indent if indent < 20 else '>'}|{words}")
    return lines


def generate(text: str) -> tuple[str, dict[str, list[Step]]]:
    """README text with every block's output regenerated from a fresh demo lab."""
    results: dict[str, list[Step]] = {}
    with tempfile.TemporaryDirectory(prefix="celeryctl-readme-") as tmp:
        env = env_for(str(Path(tmp) / "lab"))
        for name, commands in blocks(text):
            start_demo(env)
            try:
                results[name] = run(commands, env)
            finally:
                stop_demo(env)

    def sub(m: re.Match) -> str:
        return m[1] + body(results[m["name"]]) + m[4]

    return BLOCK.sub(sub, text), results


def main() -> int:
    check = "--check" in sys.argv[1:]
    text = README.read_text()
    new, results = generate(text)
    failed = [f"{n}: `{s.command}` exited {s.code}" for n, steps in results.items()
              for s in steps if s.code not in (0, 1, 2)]
    for f in failed:
        print(f, file=sys.stderr)
    if check:
        old = {m["name"]: m["body"] for m in BLOCK.finditer(text)}
        stale = [n for n in old if normalise(old[n]) != normalise(body(results[n]))]
        for n in stale:
            print(f"README.md: example {n!r} is out of date: "
                  "python scripts/readme_examples.py", file=sys.stderr)
        return 1 if stale or failed else 0
    README.write_text(new)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
