"""AMQP 0-9-1 basic properties <-> typed JSON, exactly (purge backups of RabbitMQ messages).

pika cannot be trusted with header values: it decodes a double or a float as an *int*
(truncated) and cannot encode a float at all, and it re-chooses the wire type of every integer.
So purge keeps the exact bytes of each message's content header (`WireProperties`, installed
into pika's frame decoder by `install()`), `props_to_json` decodes them into the typed JSON
below, and restore re-encodes that JSON with `props_from_json` and publishes those bytes as
they are: what a consumer receives after a restore has the properties it had before.

Properties (`properties` in a backup record): only those present, by pika's names —
`content_type`, `content_encoding`, `correlation_id`, `reply_to`, `expiration`, `message_id`,
`type`, `user_id`, `app_id`, `cluster_id` (short strings: a JSON string, or
`{"$t": "bytes", "v": BASE64}` when the octets are not UTF-8), `delivery_mode`, `priority`
(0-255), `timestamp` (integer seconds), `headers` (a field table).

Field-table values (headers, nested tables, arrays):

    JSON string            long string 'S' (UTF-8)
    JSON integer           'I' (signed 32-bit), or 'l' (signed 64-bit) outside that range
    true / false / null    't' / 't' / 'V'
    JSON array / object    field array 'A' / field table 'F'
    {"$t": "float", "v": 1.5}          'd' double ("NaN", "Infinity", "-Infinity" are read
                                       but never published: RabbitMQ rejects them)
    {"$t": "float32", "v": 1.5}        'f' single-precision float
    {"$t": "decimal", "v": "1.230"}    'D' (the digits after the point are its scale)
    {"$t": "bytes", "v": BASE64}       'x' byte array
    {"$t": "timestamp", "v": 1700000000}  'T' (seconds since the epoch, UTC; published only
                                       up to year 9999: pika consumers fail past it)
    {"$t": "int", "v": 5, "amqp": "b"}  an integer of any other wire type (b B u s i L l;
                                       'U' is read, never published: RabbitMQ rejects it)
    {"$t": "string", "v": BASE64}      a long string whose octets are not UTF-8
    {"$t": "table", "v": {...}}        a field table that has a key "$t" of its own

Table keys are JSON strings; octets that are not UTF-8 are kept as U+DC80..U+DCFF
(Python's surrogateescape). One loss: a boolean octet other than 0 or 1 comes back as 1.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import math
import struct
from datetime import datetime
from typing import Any

# (flag bit, pika name, kind) in wire order
_PROPS = ((15, "content_type", "s"), (14, "content_encoding", "s"), (13, "headers", "F"),
          (12, "delivery_mode", "B"), (11, "priority", "B"), (10, "correlation_id", "s"),
          (9, "reply_to", "s"), (8, "expiration", "s"), (7, "message_id", "s"),
          (6, "timestamp", "Q"), (5, "type", "s"), (4, "user_id", "s"), (3, "app_id", "s"),
          (2, "cluster_id", "s"))
NAMES = tuple(n for _, n, _ in _PROPS)

_INTS = {"b": ">b", "B": ">B", "U": ">h", "u": ">H", "s": ">h", "I": ">i", "i": ">I",
         "L": ">q", "l": ">q"}
_SEND_INTS = "bBusiIlL"  # RabbitMQ refuses 'U' (INTERNAL_ERROR); it reads 's' for int16
_MAX_TS = 253402300799  # 9999-12-31T23:59:59Z: pika's consumers (purge's too) fail past it
_I32 = (-(2 ** 31), 2 ** 31 - 1)
_I64 = (-(2 ** 63), 2 ** 63 - 1)


class WireError(ValueError):
    pass


# --- decoding: wire -> typed JSON -----------------------------------------------------------

def props_to_json(raw: bytes) -> dict[str, Any]:
    """The bytes of a content header's properties (flags onwards) -> typed JSON."""
    try:
        flags, off = 0, 0
        words = 0
        while True:
            word = struct.unpack_from(">H", raw, off)[0]
            off += 2
            flags |= (word & 0xFFFE) << (16 * words)
            words += 1
            if not word & 1:
                break
        out: dict[str, Any] = {}
        for bit, name, kind in _PROPS:
            if not flags & (1 << bit):
                continue
            if kind == "s":
                n = raw[off]
                out[name] = _short_json(_take(raw, off + 1, n))
                off += 1 + n
            elif kind == "B":
                out[name] = raw[off]
                off += 1
            elif kind == "Q":
                out[name] = struct.unpack_from(">Q", raw, off)[0]
                off += 8
            else:
                out[name], off = _table(raw, off)
        return out
    except (IndexError, struct.error) as exc:
        raise WireError(f"truncated properties ({exc})") from None


def _take(raw: bytes, off: int, n: int) -> bytes:
    if off + n > len(raw):
        raise IndexError("past the end")
    return raw[off:off + n]


def _short_json(b: bytes) -> Any:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"$t": "bytes", "v": base64.b64encode(b).decode()}


def _table(raw: bytes, off: int) -> tuple[Any, int]:
    size = struct.unpack_from(">I", raw, off)[0]
    off += 4
    end = off + size
    if end > len(raw):
        raise IndexError("table past the end")
    out: dict[str, Any] = {}
    while off < end:
        n = raw[off]
        key = _take(raw, off + 1, n).decode("utf-8", "surrogateescape")
        off += 1 + n
        out[key], off = _value(raw, off)
    if "$t" in out:
        return {"$t": "table", "v": out}, off
    return out, off


def _value(raw: bytes, off: int) -> tuple[Any, int]:
    kind = chr(raw[off])
    off += 1
    if kind in _INTS:
        fmt = _INTS[kind]
        v = struct.unpack_from(fmt, raw, off)[0]
        off += struct.calcsize(fmt)
        default = "I" if _I32[0] <= v <= _I32[1] else "l"
        return (v if kind == default else {"$t": "int", "v": v, "amqp": kind}), off
    if kind == "t":
        return bool(raw[off]), off + 1
    if kind in "fd":
        fmt = ">f" if kind == "f" else ">d"
        v = struct.unpack_from(fmt, raw, off)[0]
        return {"$t": "float32" if kind == "f" else "float", "v": _float_json(v)}, \
            off + struct.calcsize(fmt)
    if kind == "D":
        scale = raw[off]
        v = struct.unpack_from(">i", raw, off + 1)[0]
        return {"$t": "decimal", "v": str(decimal.Decimal(v).scaleb(-scale))}, off + 5
    if kind in "Sx":
        n = struct.unpack_from(">I", raw, off)[0]
        b = _take(raw, off + 4, n)
        off += 4 + n
        if kind == "x":
            return {"$t": "bytes", "v": base64.b64encode(b).decode()}, off
        try:
            return b.decode("utf-8"), off
        except UnicodeDecodeError:
            return {"$t": "string", "v": base64.b64encode(b).decode()}, off
    if kind == "A":
        n = struct.unpack_from(">I", raw, off)[0]
        off += 4
        end = off + n
        if end > len(raw):
            raise IndexError("array past the end")
        items = []
        while off < end:
            v, off = _value(raw, off)
            items.append(v)
        return items, off
    if kind == "T":
        return {"$t": "timestamp", "v": struct.unpack_from(">Q", raw, off)[0]}, off + 8
    if kind == "F":
        return _table(raw, off)
    if kind == "V":
        return None, off
    raise struct.error(f"unknown field type {kind!r}")


def _float_json(v: float) -> Any:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def json_from_python(value: Any) -> Any:
    """A value as pika (or a kombu JSON envelope) gives it -> typed JSON, choosing the wire
    type pika would (what a restore across brokers, or a record without its wire bytes, has)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not _I64[0] <= value <= _I64[1]:
            raise WireError(f"integer {value} does not fit an AMQP field (64-bit)")
        return value
    if isinstance(value, float):
        return {"$t": "float", "v": _float_json(value)}
    if isinstance(value, decimal.Decimal):
        return {"$t": "decimal", "v": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"$t": "bytes", "v": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime):
        import calendar

        return {"$t": "timestamp", "v": calendar.timegm(value.utctimetuple())}
    if isinstance(value, dict):
        t = {str(k) if not isinstance(k, bytes) else k.decode("utf-8", "surrogateescape"):
             json_from_python(v) for k, v in value.items()}
        return {"$t": "table", "v": t} if "$t" in t else t
    if isinstance(value, (list, tuple)):
        return [json_from_python(v) for v in value]
    raise WireError(f"{type(value).__name__} is not an AMQP field value")


def props_from_pika(props: Any) -> dict[str, Any]:
    """pika's decoded BasicProperties -> typed JSON (lossy where pika is: floats). Used only
    when the wire bytes were not kept."""
    out: dict[str, Any] = {}
    for name in NAMES:
        v = getattr(props, name, None)
        if v is None:
            continue
        if name == "headers":
            out[name] = json_from_python(dict(v))
        elif isinstance(v, bytes):
            out[name] = _short_json(v)
        else:
            out[name] = v
    return out


# --- encoding: typed JSON -> wire -----------------------------------------------------------

def props_from_json(props: Any) -> bytes:
    """Typed JSON properties -> the exact bytes of a content header's properties. Raises
    WireError (a ValueError) saying what is wrong with them."""
    if not isinstance(props, dict):
        raise WireError("properties are not an object")
    unknown = set(props) - set(NAMES)
    if unknown:
        raise WireError(f"unknown properties: {', '.join(sorted(map(str, unknown)))}")
    flags, pieces = 0, []
    for bit, name, kind in _PROPS:
        if name not in props or props[name] is None:
            continue
        v = props[name]
        flags |= 1 << bit
        if kind == "s":
            b = _short_bytes(v, name)
            pieces += [bytes([len(b)]), b]
        elif kind in "BQ":
            top = 255 if kind == "B" else 2 ** 64 - 1
            if not _is_int(v) or not 0 <= v <= top:
                raise WireError(f"{name} must be an integer 0..{top}")
            pieces.append(struct.pack(">" + kind, v))
        else:
            pieces.append(_enc_table(v, name))
    return struct.pack(">H", flags) + b"".join(pieces)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _b64(v: Any, what: str) -> bytes:
    if not isinstance(v, str):
        raise WireError(f"{what}: base64 text expected")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise WireError(f"{what}: not base64") from None


def _utf8(s: str, what: str) -> bytes:
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise WireError(f"{what}: not encodable as UTF-8 (a lone surrogate)") from None


def _short_bytes(v: Any, what: str) -> bytes:
    if isinstance(v, str):
        b = _utf8(v, what)
    elif isinstance(v, dict) and v.get("$t") == "bytes" and set(v) == {"$t", "v"}:
        b = _b64(v["v"], what)
    else:
        raise WireError(f"{what} must be a string")
    if len(b) > 255:
        raise WireError(f"{what} is longer than 255 bytes")
    return b


def _enc_table(v: Any, what: str) -> bytes:
    if isinstance(v, dict) and "$t" in v:
        if v.get("$t") != "table" or set(v) != {"$t", "v"} or not isinstance(v["v"], dict):
            raise WireError(f"{what}: a field table expected")
        v = v["v"]
    if not isinstance(v, dict):
        raise WireError(f"{what}: a field table expected")
    parts = []
    for k, x in v.items():
        kb = _short_bytes(k, f"{what}: key") if isinstance(k, str) else None
        if kb is None:
            raise WireError(f"{what}: a key is not a string")
        parts += [bytes([len(kb)]), kb, _enc_value(x, f"{what}.{k}")]
    body = b"".join(parts)
    return struct.pack(">I", len(body)) + body


def _enc_value(v: Any, what: str) -> bytes:
    if v is None:
        return b"V"
    if isinstance(v, bool):
        return b"t" + bytes([int(v)])
    if isinstance(v, str):
        b = _utf8(v, what)
        return b"S" + struct.pack(">I", len(b)) + b
    if _is_int(v):
        if _I32[0] <= v <= _I32[1]:
            return b"I" + struct.pack(">i", v)
        if _I64[0] <= v <= _I64[1]:
            return b"l" + struct.pack(">q", v)
        raise WireError(f"{what}: integer out of the 64-bit range")
    if isinstance(v, list):
        body = b"".join(_enc_value(x, what) for x in v)
        return b"A" + struct.pack(">I", len(body)) + body
    if not isinstance(v, dict):
        raise WireError(f"{what}: {type(v).__name__} is not a field value")
    if "$t" not in v:
        return b"F" + _enc_table(v, what)
    t, x = v.get("$t"), v.get("v")
    extra = set(v) - {"$t", "v", "amqp"} or ("amqp" in v and t != "int")
    if extra or "v" not in v:
        raise WireError(f"{what}: a typed value is {{\"$t\", \"v\"}}")
    if t == "table":
        return b"F" + _enc_table(v, what)
    if t in ("float", "float32"):
        f = _float(x, what)
        if not math.isfinite(f):  # RabbitMQ closes the connection (INTERNAL_ERROR)
            raise WireError(f"{what}: RabbitMQ does not accept a non-finite float")
        fmt = ">d" if t == "float" else ">f"
        try:
            return (b"d" if t == "float" else b"f") + struct.pack(fmt, f)
        except (OverflowError, struct.error):
            raise WireError(f"{what}: out of the float32 range") from None
    if t == "decimal":
        return b"D" + _decimal(x, what)
    if t == "bytes":
        b = _b64(x, what)
        return b"x" + struct.pack(">I", len(b)) + b
    if t == "string":
        b = _b64(x, what)
        return b"S" + struct.pack(">I", len(b)) + b
    if t == "timestamp":
        if not _is_int(x) or not 0 <= x <= _MAX_TS:
            raise WireError(f"{what}: a timestamp is an integer of seconds up to year 9999")
        return b"T" + struct.pack(">Q", x)
    if t == "int":
        kind = v.get("amqp", "I")
        if not isinstance(kind, str) or kind not in _SEND_INTS or not _is_int(x):
            raise WireError(f"{what}: an int of wire type one of {_SEND_INTS}")
        try:
            return kind.encode() + struct.pack(_INTS[kind], x)
        except struct.error:
            raise WireError(f"{what}: {x} does not fit wire type {kind!r}") from None
    raise WireError(f"{what}: unknown type {t!r}")


def _float(x: Any, what: str) -> float:
    if isinstance(x, str) and x in ("NaN", "Infinity", "-Infinity"):
        return float(x.replace("Infinity", "inf"))
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        try:
            return float(x)
        except OverflowError:
            raise WireError(f"{what}: out of the float range") from None
    raise WireError(f"{what}: a float is a number")


def _decimal(x: Any, what: str) -> bytes:
    if not isinstance(x, str) or len(x) > 64:
        raise WireError(f"{what}: a decimal is a string")
    try:
        d = decimal.Decimal(x)
    except decimal.InvalidOperation:
        raise WireError(f"{what}: not a decimal") from None
    if not d.is_finite():
        raise WireError(f"{what}: not a finite decimal")
    sign, digits, exp = d.as_tuple()
    if not isinstance(exp, int) or exp > 9 or len(digits) > 12:
        raise WireError(f"{what}: {x} does not fit an AMQP decimal")
    scale = -exp if exp < 0 else 0
    raw = int("".join(map(str, digits)) or "0") * (10 ** exp if exp > 0 else 1)
    raw = -raw if sign else raw
    if scale > 255 or not _I32[0] <= raw <= _I32[1]:
        raise WireError(f"{what}: {x} does not fit an AMQP decimal")
    return struct.pack(">Bi", scale, raw)


# --- typed JSON -> plain JSON (a RabbitMQ message restored to Redis) -------------------------

def plain(v: Any) -> Any:
    """Typed JSON -> the nearest plain JSON value (floats stay floats; decimals, bytes,
    non-finite floats become strings; timestamps integers)."""
    if isinstance(v, list):
        return [plain(x) for x in v]
    if not isinstance(v, dict):
        return v
    if "$t" not in v:
        return {k: plain(x) for k, x in v.items()}
    t, x = v.get("$t"), v.get("v")
    if t == "table" and isinstance(x, dict):
        return {k: plain(y) for k, y in x.items()}
    if t in ("float", "float32") and isinstance(x, (int, float)):
        return float(x)
    return x


# --- pika glue ------------------------------------------------------------------------------

_WIRE_CLASS: Any = None


def wire_properties_class() -> Any:
    """pika's BasicProperties that remember the exact bytes they were decoded from (`.wire`)
    and, given `wire`, publish exactly those bytes."""
    global _WIRE_CLASS
    if _WIRE_CLASS is None:
        from pika import spec

        class WireProperties(spec.BasicProperties):
            wire: bytes | None = None

            def decode(self, encoded, offset=0):
                self.wire = bytes(encoded[offset:])
                return super().decode(encoded, offset)

            def encode(self):
                if self.wire is not None:
                    return [self.wire]
                return super().encode()

        _WIRE_CLASS = WireProperties
    return _WIRE_CLASS


def install() -> None:
    """Make pika keep the wire bytes of every content header it decodes (from now on, in
    this process). Harmless otherwise: the properties decode as before."""
    from pika import spec

    spec.props[spec.BasicProperties.INDEX] = wire_properties_class()


def publishable(raw: bytes) -> Any:
    """Properties for basic_publish that send `raw` unchanged."""
    p = wire_properties_class()()
    p.wire = raw
    return p
