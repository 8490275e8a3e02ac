"""JSON output: `{"schema": 1, <kind>: [...], "sources": [...], ...}`, stable keys;
indented up to 1,000 rows, one compact line above."""

from __future__ import annotations

import json
from typing import Any

from celeryctl.snapshot import SCHEMA


def render_json(out, kind: str, rows: Any, *, sources: list, target: dict | None = None,
                notes: list[str] | None = None, **extra: Any) -> None:
    doc: dict[str, Any] = {"schema": SCHEMA, kind: rows}
    doc.update(extra)
    doc["sources"] = [s.to_dict() for s in sources]
    if target is not None:
        doc["target"] = target
    doc["notes"] = list(notes or [])
    # indented for people up to 1,000 rows; above, compact: `indent` forces the pure-Python
    # encoder, which was most of the time of `queues` at 10,000 queues (docs/performance.md)
    big = isinstance(rows, list) and len(rows) > 1000
    out.write(json.dumps(doc, indent=None if big else 2, sort_keys=False, default=str) + "\n")
