"""JSON output: `{"schema": 1, <kind>: [...], "sources": [...], ...}`, stable keys;
indented up to 1,000 rows, one compact line above.

Strict JSON everywhere (output and snapshot files): `dumps` turns every non-finite float
(a Redis score of -inf, an age computed from it, NaN) into null first (`finite`), and then
encodes with allow_nan=False, so `NaN`/`Infinity` can never appear. Strings are kept exactly
(JSON escapes control characters)."""

from __future__ import annotations

import json
import math
from typing import Any

from celeryctl.snapshot import SCHEMA


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float (inf, -inf, nan) replaced by None, through dicts,
    lists and tuples (a non-finite float dict key becomes its string). Pure: `obj` is never
    changed; the same object comes back when it holds no non-finite float."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        out = None
        for i, (k, v) in enumerate(obj.items()):
            k2 = str(k) if isinstance(k, float) and not math.isfinite(k) else k
            v2 = finite(v) if isinstance(v, (float, dict, list, tuple)) else v
            if out is None and (k2 is not k or v2 is not v):
                out = dict(list(obj.items())[:i])
            if out is not None:
                out[k2] = v2
        return obj if out is None else out
    if isinstance(obj, (list, tuple)):
        items = None
        for i, v in enumerate(obj):
            v2 = finite(v) if isinstance(v, (float, dict, list, tuple)) else v
            if items is None and v2 is not v:
                items = list(obj[:i])
            if items is not None:
                items.append(v2)
        return obj if items is None else items
    return obj


def dumps(obj: Any, **kw: Any) -> str:
    """json.dumps, strict: no NaN/Infinity ever (they become null); what JSON cannot encode
    by itself as its str."""
    kw.setdefault("default", str)
    return json.dumps(finite(obj), allow_nan=False, **kw)


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
    out.write(dumps(doc, indent=None if big else 2, sort_keys=False) + "\n")
