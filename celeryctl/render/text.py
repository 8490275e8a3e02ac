"""Names and data are data: text read from a broker, a worker or a message (queue, task,
worker, vhost and exchange names, errors, reasons) is shown literally.

- `safe(s)`: one line for a terminal: control characters (ESC, newline, tab, DEL, C1, the
  bidirectional overrides, line separators) shown as visible escapes (`\\x1b`, `\\n`, ...),
  never sent raw; the empty string shown as `""`.
- `literal(s)`: `safe(s)` as a rich Text, so rich never reads `[...]` in it as markup.
- `md(s)` / `md_code(s)`: for markdown output (table cells, prose, inline code).

JSON output never goes through these: it keeps the exact string (JSON escapes it).
"""

from __future__ import annotations

import re
from typing import Any

EMPTY = '""'

# C0 controls, DEL, C1 controls; the bidirectional embeddings/overrides/isolates and marks;
# line and paragraph separators: all of these change what a terminal shows or where.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                      "\u2066-\u2069]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028"
                                  "\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_char(m: re.Match) -> str:
    ch = m.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    n = ord(ch)
    return f"\\x{n:02x}" if n <= 0xff else f"\\u{n:04x}"


def safe(s: Any) -> str:
    """`s` as one visible line: control characters escaped, `""` for the empty string."""
    s = s if isinstance(s, str) else str(s)
    if s == "":
        return EMPTY
    return _CONTROL.sub(_escape_char, s)


def safe_lines(s: Any) -> str:
    """Like `safe` but keeps newlines (text celeryctl itself broke into lines); the empty
    string stays empty. What every string printed through celeryctl's consoles gets."""
    s = s if isinstance(s, str) else str(s)
    return _CONTROL_BUT_NEWLINE.sub(_escape_char, s)


# a number and its unit, e.g. "300 s", "1.5 MiB", "80 %": joined by a no-break space in text
# for a terminal, so that wrapping never leaves "300" at a line's end and "s" on the next
_UNITS = ("ms", "s", "min", "h", "d", "%", "B", "KiB", "MiB", "GiB", "TiB", "kB", "KB", "MB",
          "GB", "TB", "second", "seconds", "minute", "minutes", "hour", "hours", "day", "days",
          "byte", "bytes")
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
_NUMBER_UNIT = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)*) (?=(?:" + _UNIT_ALT + r")(?!\w))")
NBSP = "\u00a0"


def bind_units(s: str) -> str:
    """`s` with each number joined to its unit by a no-break space ("300\\u00a0s"). For the
    terminal renderers only: JSON, markdown and the docs keep plain spaces. Rich wraps at a
    no-break space unless told not to: render/console.make_console does (keep_nbsp_whole)."""
    return _NUMBER_UNIT.sub(r"\1" + NBSP, s)


def keep_nbsp_whole() -> None:
    """Make rich's word wrapping treat U+00A0 as part of a word (rich splits words at `\\s`,
    which matches it). Idempotent; a rich without this internal is left as it is (the unit
    tests say so: test_render_text)."""
    try:
        from rich import _wrap
    except ImportError:  # pragma: no cover - rich reorganised
        return
    if isinstance(getattr(_wrap, "re_word", None), re.Pattern):
        _wrap.re_word = _RICH_WORD


_RICH_WORD = re.compile(r"[^\S\u00a0]*[\S\u00a0]+[^\S\u00a0]*")


def literal(s: Any, style: str | None = None):
    """`safe(s)` as rich Text: never parsed as markup."""
    from rich.text import Text

    return Text(safe(s), style=style or "")


# characters markdown reads inline, escaped with a backslash (CommonMark: any ASCII
# punctuation may be): code, emphasis, links, HTML, entities, GFM tables (`|`),
# strikethrough, math; and the ones that start a heading, list or quote at a line start
_MD = re.compile(r"([\\`*_\[\]<>|~&$])")
_MD_START = re.compile(r"^([#+=-])")


def md(s: Any) -> str:
    """`s` for markdown prose or a table cell: control characters escaped and every
    markdown-significant character backslash-escaped, so a name renders as written."""
    return _MD_START.sub(r"\\\1", _MD.sub(r"\\\1", safe(s)))


def md_code(s: Any) -> str:
    """`s` as an inline code span: fenced with more backticks than any run inside it
    (backslashes do not escape inside code). `|` still ends a GFM table cell, so code spans
    are for prose, not table cells."""
    text = safe(s)
    longest = max((len(r) for r in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def buckets(d: dict[str, int] | None) -> str:
    """A Redis queue's ready messages per priority step, one notation everywhere (`purge`,
    `queues`): `p0=9 p3=8 p6=6 p9=2` — "priority step 0: 9 messages", never read as a
    range or a ratio; step then count, lowest step (highest priority
    first consumed) first, empty steps left out; `-` when none holds a message or the
    counts are unknown. JSON keeps the dict itself."""
    if not d:
        return "-"
    shown = [f"p{k}={v}" for k, v in sorted(d.items(), key=lambda kv: _step(kv[0])) if v]
    return " ".join(shown) or "-"


def _step(k: Any) -> tuple[int, str]:
    try:
        return (int(k), "")
    except (TypeError, ValueError):
        return (1 << 30, str(k))
