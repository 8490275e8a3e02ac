"""Write docs/checks/CODE.md for every check: `python -m celeryctl.checks.docs [DIR]`."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from celeryctl.checks import catalogue
    from celeryctl.render.report import render_check_page

    out = Path((argv or sys.argv[1:] or ["docs/checks"])[0])
    out.mkdir(parents=True, exist_ok=True)
    index = ["# Doctor's checks", "", "| code | name | what it finds |", "|---|---|---|"]
    for c in catalogue():
        (out / f"{c.code}.md").write_text(render_check_page(c))
        index.append(f"| [{c.code}]({c.code}.md) | {c.name} | {c.summary} |")
    (out / "README.md").write_text("\n".join(index) + "\n")


if __name__ == "__main__":
    main()
