"""Reading purge backups (pure, no server): any file content gives a plan or a clear
refusal, never an internal error; damaged lines are listed and skipped; control lines and
the end object are exposed; format 1 files still read; AMQP properties round-trip exactly."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import pika.spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celeryctl.actions import amqpwire
from celeryctl.actions.backup import BackupError, inspect_backup, read_messages
from celeryctl.actions.restore import amqp_message, redis_entry, redis_key
from celeryctl.collect.redis import RedisLayout

HEADER = b'{"celeryctl_backup":2,"broker":"redis://h/0","broker_kind":"redis","queues":["q"]}\n'


def _rec(queue="q", raw=b"x", bucket=0) -> bytes:
    return json.dumps({"queue": queue, "bucket": bucket,
                       "raw": base64.b64encode(raw).decode()}).encode() + b"\n"


def _exercise(path):
    """inspect + read + convert every record for both brokers: only the documented errors."""
    try:
        info = inspect_backup(path)
    except BackupError:
        return None
    got = list(read_messages(path))
    assert len(got) == info.count
    assert sum(info.per_queue.values()) == info.count
    lines = [n for n, _ in got]
    assert lines == sorted(lines) and not set(lines) & {n for n, _ in info.bad}
    layout = RedisLayout()
    for _, rec in got:
        redis_key(layout, rec["queue"], rec)
        for queue in (rec["queue"], "elsewhere"):
            try:
                redis_entry(rec, queue)
            except ValueError:
                pass
        try:
            amqp_message(rec, "guest")
        except ValueError:
            pass
    return info


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_random_bytes_never_an_internal_error(tmp_path, data):
    p = tmp_path / "b.jsonl"
    p.write_bytes(data)
    _exercise(p)
    p.write_bytes(HEADER + data)
    info = _exercise(p)
    assert info is not None  # a valid header: always a plan


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids,
                                                              max_size=3), max_leaves=8)
_keys = st.sampled_from(["queue", "bucket", "raw", "body", "body_encoding", "properties",
                         "headers", "priority", "exchange", "routing_key", "end", "count",
                         "celeryctl_marker", "celeryctl_backup", "content_type"])
_objects = st.dictionaries(_keys, _json_values | st.just("eA==") | st.just("q"), max_size=6)
_lines = st.one_of(
    st.binary(max_size=40),
    _objects.map(lambda o: json.dumps(o).encode()),
    st.builds(lambda q, b: _rec(q, b).rstrip(b"\n"), st.text(max_size=4), st.binary(max_size=8)),
    st.just(b'{"end": true, "count": 3, "interrupted": true}'),
    st.just(b'{"celeryctl_marker": "acked", "count": 2}'),
    st.just(b'{"queue": "q", "bucket": null, "body": "eA==", "body_encoding": "base64", '
            b'"properties": {"headers": {"f": {"$t": "float", "v": 1.5}}}}'),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(_lines, max_size=12), st.booleans(), st.sampled_from([1, 2]))
def test_random_lines_after_a_header(tmp_path, lines, final_newline, fmt):
    p = tmp_path / "b.jsonl"
    body = b"\n".join(line.replace(b"\n", b" ") for line in lines)
    header = HEADER.replace(b'"celeryctl_backup":2', f'"celeryctl_backup":{fmt}'.encode())
    p.write_bytes(header + body + (b"\n" if final_newline and lines else b""))
    info = _exercise(p)
    assert info is not None
    # every non-blank line is exactly one of: message, bad, marker, end, (second) header
    nonblank = sum(1 for line in body.split(b"\n") if line.strip())
    others = sum(1 for n in info.notes if n.startswith("line "))  # more headers or end lines
    assert nonblank == info.count + len(info.bad) + len(info.markers) + info.complete + others


def test_damaged_lines_listed_and_intact_records_kept(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_bytes(HEADER + _rec(raw=b"one") + b"not json\n" + b"[1, 2]\n" + b"\xff\xfe\n"
                  + b'{"queue": "q", "bucket": 0}\n' + b'{"queue": 5, "raw": "eA=="}\n'
                  + b'{"queue": "q", "raw": "%%%"}\n'
                  + b'{"celeryctl_marker": "queue", "queue": "q", "token": "t"}\n'
                  + _rec(raw=b"two") + b'{"queue": "q", "bucket": 0, "ra')
    info = inspect_backup(p)
    assert info.count == 2 and info.per_queue == {"q": 2} and not info.complete
    assert [n for n, _ in info.bad] == [3, 4, 5, 6, 7, 8, 11]
    why = dict(info.bad)
    assert why[3] == "not JSON" and why[4] == "not a JSON object"
    assert why[5] == "not valid UTF-8" and why[6] == "a record missing its body"
    assert "queue" in why[7] and "base64" in why[8] and "cut short" in why[11]
    assert info.markers == [(9, {"celeryctl_marker": "queue", "queue": "q", "token": "t"})]
    assert [(n, base64.b64decode(r["raw"])) for n, r in read_messages(p)] == [(2, b"one"),
                                                                               (10, b"two")]
    assert info.damaged


def test_end_line_with_extra_keys_and_lines_after_it(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_bytes(HEADER + _rec(raw=b"a") + b'{"end": true, "count": 1, "interrupted": true}\n'
                  + _rec(raw=b"b") + b'{"celeryctl_marker": "acked", "count": 1}\n')
    info = inspect_backup(p)
    assert info.end == {"end": True, "count": 1, "interrupted": True} and info.complete
    assert info.count == 2 and info.after_end == 1 and not info.damaged
    assert any("after the end line" in n for n in info.notes)
    assert [n for n, _ in read_messages(p)] == [2, 4]
    p.write_bytes(HEADER + _rec(raw=b"a") + b'{"end": true, "count": 3}\n')
    info = inspect_backup(p)
    assert info.missing == 2 and info.damaged and any("2 are missing" in n for n in info.notes)
    p.write_bytes(HEADER + _rec(raw=b"a") + b'{"end": true, "count": 2}\n' + _rec(raw=b"b"))
    info = inspect_backup(p)  # an early end line: nothing missing, the later line restored
    assert info.missing == 0 and not info.damaged and info.after_end == 1 and info.count == 2


def test_not_a_backup_is_refused(tmp_path):
    p = tmp_path / "b.jsonl"
    for content in (b"", b"\n\n", b"hello\n", b'{"celeryctl_backup": 99}\n',
                    b'{"celeryctl_backup": true}\n', _rec()):
        p.write_bytes(content)
        try:
            inspect_backup(p)
        except BackupError as exc:
            assert str(p) in str(exc)
        else:
            raise AssertionError(content)
    try:
        inspect_backup(tmp_path / "missing")
    except BackupError as exc:
        assert "cannot read" in str(exc)


def test_format1_files_still_read(tmp_path):
    """Records written by the format 1 code: decoded Redis envelopes (one with a string
    delivery_info, which crashed restore) and pika-typed AMQP records."""
    p = tmp_path / "b.jsonl"
    lines = [{"celeryctl_backup": 1, "broker_kind": "redis"},
             {"queue": "q", "bucket": 0, "body": "aGk=", "body_encoding": "base64",
              "content_type": "application/json", "content_encoding": "utf-8",
              "headers": {"task": "t"}, "properties": {"delivery_info": "weird",
                                                       "body_encoding": "base64"},
              "priority": None, "exchange": None, "routing_key": None},
             {"queue": "q", "bucket": 3, "raw": base64.b64encode(b"\x00raw").decode()},
             {"queue": "r", "bucket": None, "body": "eA==", "body_encoding": "base64",
              "content_type": "text/plain", "content_encoding": None,
              "headers": {"n": 1, "when": "2024-01-01 00:00:00"},
              "properties": {"headers": {"n": 1}, "delivery_mode": 1, "priority": 2,
                             "content_type": "text/plain"},
              "priority": 2, "exchange": "", "routing_key": "r"},
             {"end": True, "count": 3}]
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    info = inspect_backup(p)
    assert info.count == 3 and not info.bad and info.format == 1
    recs = [r for _, r in read_messages(p)]
    env = json.loads(base64.b64decode(recs[0]["raw"]))
    assert env["properties"]["delivery_info"] == "weird" and env["body"] == "aGk="
    assert redis_entry(recs[0], "q") == base64.b64decode(recs[0]["raw"])
    assert base64.b64decode(recs[1]["raw"]) == b"\x00raw"
    body, wire, _ = amqp_message(recs[2], "guest")
    props = pika.spec.BasicProperties()
    props.decode(wire)
    assert body == b"x" and props.delivery_mode == 1 and props.priority == 2
    assert props.headers == {"n": 1, "when": "2024-01-01 00:00:00"}


# --- amqpwire -------------------------------------------------------------------------------

_table_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1) | st.text(max_size=10)
    | st.builds(lambda v: {"$t": "float", "v": v}, st.floats(allow_nan=False,
                                                              allow_infinity=False))
    | st.builds(lambda v: {"$t": "float32", "v": v}, st.floats(width=32, allow_nan=False,
                                                                allow_infinity=False))
    | st.builds(lambda v, s: {"$t": "decimal", "v": str(__import__("decimal").Decimal(v)
                                                        .scaleb(-s))},
                st.integers(-(2 ** 31), 2 ** 31 - 1), st.integers(0, 9))
    | st.builds(lambda b: {"$t": "bytes", "v": base64.b64encode(b).decode()}, st.binary(max_size=8))
    | st.builds(lambda b: {"$t": "string", "v": base64.b64encode(b).decode()},
                st.just(b"\xff\xfe"))
    | st.builds(lambda v: {"$t": "timestamp", "v": v}, st.integers(0, 253402300799))
    | st.builds(lambda k, v: {"$t": "int", "v": v, "amqp": k}, st.sampled_from("bs"),
                st.integers(-128, 127))
    | st.builds(lambda k, v: {"$t": "int", "v": v, "amqp": k}, st.sampled_from("Bui"),
                st.integers(0, 255))
    | st.builds(lambda v: {"$t": "int", "v": v, "amqp": "l"}, st.integers(-5, 5)),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
        st.text(max_size=5).filter(lambda k: k != "$t" and len(k.encode()) < 256), kids,
        max_size=3),
    max_leaves=10)


def _canonical(v):
    """What props_to_json gives back for a value (a signed byte fitting int32 is 'b' still)."""
    if isinstance(v, dict) and v.get("$t") == "float32":
        import struct

        return {"$t": "float32", "v": struct.unpack(">f", struct.pack(">f", v["v"]))[0]}
    if isinstance(v, dict) and "$t" not in v:
        return {k: _canonical(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_canonical(x) for x in v]
    return v


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6).filter(lambda k: k != "$t"), _table_values,
                       max_size=5),
       st.fixed_dictionaries({}, optional={
           "content_type": st.text(max_size=20), "delivery_mode": st.sampled_from([1, 2]),
           "priority": st.integers(0, 255), "timestamp": st.integers(0, 2 ** 64 - 1),
           "user_id": st.text(max_size=5), "cluster_id": st.text(max_size=5)}))
def test_amqp_properties_round_trip_exactly(headers, props):
    props = {**props, "headers": headers}
    wire = amqpwire.props_from_json(props)
    assert amqpwire.props_to_json(wire) == _canonical(props)
    p = pika.spec.BasicProperties()
    p.decode(wire)  # pika reads what we write
    assert p.delivery_mode == props.get("delivery_mode") and set(p.headers) == set(headers)


def test_pika_values_and_wire_types():
    import datetime
    import decimal

    typed = amqpwire.json_from_python({"d": decimal.Decimal("1.50"), "b": b"\x00", "f": 1.5,
                                       "ts": datetime.datetime(2024, 1, 1,
                                                               tzinfo=datetime.timezone.utc),
                                       "big": 2 ** 40, "$t": "x"})
    assert typed == {"$t": "table", "v": {"d": {"$t": "decimal", "v": "1.50"},
                                          "b": {"$t": "bytes", "v": "AA=="},
                                          "f": {"$t": "float", "v": 1.5},
                                          "ts": {"$t": "timestamp", "v": 1704067200},
                                          "big": 2 ** 40, "$t": "x"}}
    wire = amqpwire.props_from_json({"headers": typed})
    assert amqpwire.props_to_json(wire) == {"headers": typed}
    for bad in ({"headers": {"x": {"$t": "float", "v": "NaN"}}}, {"priority": 256},
                {"headers": {"x": {"$t": "nope", "v": 1}}}, {"headers": {"x": 2 ** 64}},
                {"content_type": "x" * 256}, {"headers": {"x": {"$t": "decimal", "v": "1e99"}}},
                {"headers": {"x": {"$t": "int", "v": 300, "amqp": "b"}}}, {"what": 1},
                {"headers": {"x": "\ud800"}}):
        try:
            amqpwire.props_from_json(bad)
        except amqpwire.WireError:
            continue
        raise AssertionError(bad)


def test_user_id_of_another_user_is_left_out():
    rec = {"queue": "q", "bucket": None, "body": "eA==", "body_encoding": "base64",
           "properties": {"user_id": "alice", "delivery_mode": 1}}
    _, wire, dropped = amqp_message(rec, "guest")
    assert dropped and amqpwire.props_to_json(wire) == {"delivery_mode": 1}
    _, wire, dropped = amqp_message(rec, "alice")
    assert not dropped and amqpwire.props_to_json(wire)["user_id"] == "alice"


def test_record_from_amqp_without_wire_bytes_falls_back_to_pika():
    from celeryctl.actions.backup import record_from_amqp

    props = pika.spec.BasicProperties(headers={"a": b"\x01"}, delivery_mode=2)
    rec = record_from_amqp("q", SimpleNamespace(exchange="", routing_key="q"), props, b"b")
    assert rec["properties"] == {"headers": {"a": {"$t": "bytes", "v": "AQ=="}},
                                 "delivery_mode": 2}


def test_out_of_range_numbers_are_damaged_lines_not_infinity(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_bytes(HEADER + b'{"celeryctl_marker": "x", "n": 1e400}\n' + b'{"queue": NaN}\n'
                  + _rec())
    info = inspect_backup(p)
    assert [n for n, _ in info.bad] == [2, 3] and info.count == 1 and not info.markers


def test_redis_entries_pushed_as_stored_unless_moved_to_another_queue():
    from celeryctl.actions.backup import record_from_redis

    raw = b'{"body": "x", "properties": {"delivery_info": "odd", "k": "\\u00e9"}}'
    rec = record_from_redis("q", 0, raw)
    assert redis_entry(rec, "q") == raw  # never re-serialized
    moved = json.loads(redis_entry(rec, "other"))
    assert moved["properties"]["delivery_info"] == {"exchange": "", "routing_key": "other"}
    assert redis_entry(record_from_redis("q", 0, b"\xffbinary"), "other") == b"\xffbinary"
