"""Write docs/checks/CODE.md for every check: `python -m celeryctl.checks.docs [DIR]`."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from celeryctl.checks import catalogue
    from celeryctl.render.report import render_check_page

    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]) or len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python -m celeryctl.checks.docs [DIR]  (default docs/checks)",
              file=sys.stdout if args[:1] in (["-h"], ["--help"]) else sys.stderr)
        raise SystemExit(0 if args[:1] in (["-h"], ["--help"]) else 64)
    out = Path((args or ["docs/checks"])[0])
    out.mkdir(parents=True, exist_ok=True)
    index = ["# Doctor's checks", "", "| code | name | what it finds |", "|---|---|---|"]
    for c in catalogue():
        (out / f"{c.code}.md").write_text(render_check_page(c))
        index.append(f"| [{c.code}]({c.code}.md) | {c.name} | {c.summary} |")
    (out / "README.md").write_text("\n".join(index) + "\n")


if __name__ == "__main__":
    main()
