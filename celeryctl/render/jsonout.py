"""JSON output: `{"schema": 1, <kind>: [...], "sources": [...], ...}`, stable keys."""

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
    out.write(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
