"""The words that run this same celeryctl again when pasted into a shell: `celeryctl` when
that is what PATH finds, else the path it was started by (`.venv/bin/celeryctl`, relative when
under the current directory) or `PYTHON -m celeryctl`. Hints that say "try: ..." use it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def display_path(path: str) -> str:
    """`path` as typed: relative (with a directory part, so no PATH lookup) when under the
    current directory, else absolute; symlinks kept (a venv's python is one)."""
    p = os.path.abspath(path)
    try:
        cwd = os.getcwd()
    except OSError:
        return p
    rel = os.path.relpath(p, cwd)
    if rel.startswith(os.pardir):
        return p
    return rel if os.sep in rel else os.curdir + os.sep + rel


def prog_words(argv0: str | None = None, executable: str | None = None,
               on_path: str | None = None) -> list[str]:
    """How to run celeryctl again (unquoted words). Arguments for tests; by default this
    process's sys.argv[0], sys.executable and `which celeryctl`."""
    argv0 = sys.argv[0] if argv0 is None and sys.argv else (argv0 or "")
    executable = executable or sys.executable
    on_path = on_path if on_path is not None else (shutil.which("celeryctl") or "")
    base = os.path.basename(argv0)
    if base == "celeryctl" and os.path.isfile(argv0):  # the console script
        if on_path and _same(on_path, argv0):
            return ["celeryctl"]
        return [display_path(argv0)]
    if base == "__main__.py":  # python -m celeryctl
        if on_path and os.path.dirname(os.path.abspath(on_path)) == \
                os.path.dirname(os.path.abspath(executable)):
            return ["celeryctl"]  # the same environment's script
        return [display_path(executable), "-m", "celeryctl"]
    return ["celeryctl"]  # embedded (tests' CliRunner): the plain name


def prog() -> str:
    """prog_words() as one shell-quoted string."""
    return shlex.join(prog_words())


_READ = re.compile(r"\$\(cat ([^)]*)\)")

# the characters render/text.safe shows as escapes (C0, DEL, C1, bidi controls, line and
# paragraph separators): a word holding one is written in bash's $'...' quoting instead
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                      "\u2066-\u2069]")
_C_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", "'": "\\'"}


def quote(value: str) -> str:
    """`value` as one shell word that pastes back to exactly `value`: shlex.quote, or, when it
    holds a control character, bash's ANSI-C quoting (`$'esc\\x1b[2Jq'`, `$'a\\u202eb'`):
    printed through safe(), a control character inside '...' would show as a `\\x1b` that
    the shell passes on as four literal characters. (bash, zsh and ksh read $'...'.)"""
    if not _CONTROL.search(value):
        return shlex.quote(value)
    out = []
    for ch in value:
        if ch in _C_NAMED:
            out.append(_C_NAMED[ch])
        elif _CONTROL.match(ch):  # \xHH is one byte: above 0x7f, \uHHHH (UTF-8) instead
            n = ord(ch)
            out.append(f"\\x{n:02x}" if n < 0x80 else f"\\u{n:04x}")
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"


def shell_word(value: str) -> str:
    """`value` as one shell word (`quote`). `$(cat FILE)` in it (a password read when the
    command runs, never printed) stays a command substitution, inside double quotes;
    everything else is literal."""
    if not _READ.search(value):
        return quote(value)
    out, pos = [], 0
    for m in _READ.finditer(value):
        out.append(re.sub(r'([\\"$`])', r"\\\1", value[pos:m.start()]))
        out.append(f"$(cat {shlex.quote(m.group(1))})")
        pos = m.end()
    out.append(re.sub(r'([\\"$`])', r"\\\1", value[pos:]))
    return '"' + "".join(out) + '"'


def command(*args: str, prefix: list[str] | tuple[str, ...] = ()) -> str:
    """A celeryctl command line to print: `prefix` (e.g. `nsenter ...`) and this celeryctl,
    then `args`, each quoted (shell_word)."""
    return " ".join([*(quote(p) for p in prefix), prog(), *(shell_word(a) for a in args)])


def as_typed(cmd: str) -> str:
    """A suggested command line written `celeryctl ...` (a check's fix, a hint), with
    celeryctl named as this run was (prog()), so that it runs when pasted."""
    if cmd == "celeryctl" or cmd.startswith("celeryctl "):
        return prog() + cmd[len("celeryctl"):]
    return cmd
