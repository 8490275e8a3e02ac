"""Names and data are data (render/text.py, the consoles) and JSON is strict
(render/jsonout.finite/dumps): pure functions and renderers, no server needed."""

from __future__ import annotations

import io
import json
import math

import pytest

from celeryctl.render.jsonout import dumps, finite
from celeryctl.render.text import EMPTY, literal, md, md_code, safe, safe_lines

HOSTILE = ["q[/]x", "q?[x]", "[bold]boom[/bold]", "esc\x1b[31mred\x1b]0;title\x07",
           "nl\nq\tt", "ünï-队列-🚀", "a|b", "\u202eexe.txt", "del\x7f c1\x9b", ""]


def strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"non-strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# --- safe / literal / md ---------------------------------------------------------------

@pytest.mark.parametrize("raw,shown", [
    ("q[/]x", "q[/]x"), ("q?[x]", "q?[x]"), ("[bold]boom", "[bold]boom"),
    ("esc\x1b[31mred", "esc\\x1b[31mred"), ("t\x1b]0;title\x07", "t\\x1b]0;title\\x07"),
    ("nl\nq\tt\r", "nl\\nq\\tt\\r"), ("del\x7f", "del\\x7f"), ("c1\x9b", "c1\\x9b"),
    ("\u202eexe.txt", "\\u202eexe.txt"), ("a\u2028b", "a\\u2028b"),
    ("ünï-队列-🚀", "ünï-队列-🚀"), ("", EMPTY), ("back\\slash", "back\\slash"),
])
def test_safe(raw, shown):
    assert safe(raw) == shown


def test_safe_output_has_no_control_characters():
    for raw in HOSTILE:
        out = safe(raw)
        assert out and not any(ord(ch) < 32 or 0x7f <= ord(ch) <= 0x9f for ch in out), out


def test_safe_non_str_and_safe_lines():
    assert safe(3) == "3"
    assert safe_lines("a\nb\x1b[1m\t") == "a\nb\\x1b[1m\\t"
    assert safe_lines("") == ""


def test_literal_is_never_markup():
    t = literal("q[/]x[bold]y", style="red")
    assert t.plain == "q[/]x[bold]y" and not t.spans
    assert literal("").plain == EMPTY


def test_md_escapes_markdown():
    assert md("a|b") == "a\\|b"
    assert md("q[/]x") == "q\\[/\\]x"
    assert md("*b* _i_ `c` <h> ~s~ &amp; $x$") == \
        "\\*b\\* \\_i\\_ \\`c\\` \\<h\\> \\~s\\~ \\&amp; \\$x\\$"
    assert md("# not a heading") == "\\# not a heading"
    assert md("-x") == "\\-x"
    assert md("nl\nx") == "nl\\\\nx"  # a visible \n; one table row stays one line
    assert md("") == EMPTY


def test_md_code_fence_longer_than_any_backtick_run():
    assert md_code("plain") == "`plain`"
    assert md_code("a`b") == "``a`b``"
    assert md_code("`x``") == "``` `x`` ```"


# --- finite / dumps --------------------------------------------------------------------

def test_finite_replaces_non_finite_floats_everywhere():
    doc = {"a": float("inf"), "b": [1.5, float("-inf"), {"c": float("nan")}],
           "d": (1, float("inf")), float("inf"): "k", "e": "Infinity", "f": None, "g": 2}
    out = finite(doc)
    assert out == {"a": None, "b": [1.5, None, {"c": None}], "d": [1, None], "inf": "k",
                   "e": "Infinity", "f": None, "g": 2}


def test_finite_is_pure_and_shares_what_it_does_not_change():
    inner = {"x": [1.0, 2]}
    doc = {"clean": inner, "bad": [float("-inf")]}
    out = finite(doc)
    assert math.isinf(doc["bad"][0])  # the input is untouched
    assert out["clean"] is inner and out["bad"] == [None]
    clean = {"a": [1, 2.5, "x"], "b": {"c": True}}
    assert finite(clean) is clean
    assert finite(float("nan")) is None and finite(1.0) == 1.0 and finite("s") == "s"


def test_dumps_is_strict_json():
    text = dumps({"score": float("-inf"), "age": float("inf"), "r": float("nan"),
                  "name": "esc\x1b[31m", "obj": object})
    doc = strict_loads(text)
    assert doc["score"] is None and doc["age"] is None and doc["r"] is None
    assert doc["name"] == "esc\x1b[31m"  # the exact string, JSON-escaped
    assert "\x1b" not in text  # JSON escapes control characters itself
    assert doc["obj"] == str(object)


# --- renderers through celeryctl's consoles --------------------------------------------

def _console():
    from celeryctl.render.console import make_console

    buf = io.StringIO()
    return make_console(file=buf), buf


def _queue_row(name: str) -> dict:
    return {"name": name, "internal": False, "exists": True, "ready": 3, "buckets": {"0": 3},
            "unacked": 1, "oldest_unacked_seconds": float("inf"), "consumers": 0,
            "publish_rate": None, "deliver_rate": None, "type": "classic", "error": None}


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_render_queues_literal(broker):
    from celeryctl.render.tables import render_queues

    con, buf = _console()
    render_queues(con, [_queue_row(n) for n in HOSTILE], broker)
    out = buf.getvalue()
    assert "\x1b" not in out and "\x07" not in out
    for name in HOSTILE:
        assert safe(name) in out, name


def test_console_prints_strings_literally():
    con, buf = _console()
    con.print("queue q[/]x [bold]y\x1b[31m")
    con.print("[dim]own[/]", markup=True)
    out = buf.getvalue()
    assert out.splitlines() == ["queue q[/]x [bold]y\\x1b[31m", "own"]


def test_render_screen_literal():
    from celeryctl.render.console import make_console
    from celeryctl.render.live import render_screen

    rows = [{"name": n, "ready": 1, "unacked": 0, "consumers": 0, "rate_in": None,
             "rate_out": None, "net_rate": None, "trend": "", "drain_seconds": None,
             "level": "critical"} for n in HOSTILE]
    header = {"cluster": "prod[/]", "broker": "redis://h[/]/0", "interval": 2.0,
              "workers": None, "workers_note": "no reply from w[/]\x1b[2J",
              "last_good": None, "age": None, "stale": "timeout [/] \x1b]0;x\x07",
              "notes": ["note [bold]n\x1b[1m"]}
    buf = io.StringIO()
    con = make_console(file=buf)
    con.print(render_screen(rows, header, 80))
    out = buf.getvalue()
    assert "\x1b" not in out and "\x07" not in out
    for name in HOSTILE:
        assert safe(name) in out, name
    for text in ("prod[/]", "redis://h[/]/0", "no reply from w[/]\\x1b[2J",
                 "timeout [/] \\x1b]0;x\\x07", "note [bold]n\\x1b[1m"):
        assert text in out, text


def test_render_control_result_literal():
    from types import SimpleNamespace

    from celeryctl.render.actions import render_control_result

    con, buf = _console()
    c = SimpleNamespace(fmt="table", out=con)
    plan = SimpleNamespace(command="add_consumer")
    rows = [{"worker": "w[/]\x1b[31m@h", "answered": False, "ok": False, "targeted": True,
             "result": "error [bold]x", "after": "q[/]", "took_effect": False}]
    render_control_result(c, plan, rows)
    out = buf.getvalue()
    assert "w[/]\\x1b[31m@h" in out and "error [bold]x" in out and "q[/]" in out
    assert "\x1b" not in out


def test_render_diff_literal():
    from celeryctl.render.snapdiff import render_diff

    con, buf = _console()
    render_diff(con, {"seconds_between": 5,
                      "queues": [{"queue": "q[/]x\n", "change": "grew", "ready_before": 1,
                                  "ready_after": 2, "delta": 1, "consumers_before": 0,
                                  "consumers_after": 0}],
                      "workers_gone": ["w[/]"], "workers_new": [],
                      "settings_changed": [{"where": "w[/]", "setting": "s[b]",
                                            "before": 1, "after": "[/]"}],
                      "findings_new": [], "findings_resolved": [], "findings_changed": []})
    out = buf.getvalue()
    assert "q[/]x\\n" in out and "workers gone: w[/]" in out and "'[/]'" in out
    assert "\\[" not in out  # no rich escape left visible


def test_json_line_strict():
    from celeryctl.render.live import json_line

    rows = [{"name": "q[/]\x1b", "ready": 1, "unacked": 0, "consumers": 0,
             "rate_in": float("nan"), "rate_out": None, "net_rate": float("inf"),
             "drain_seconds": float("-inf")}]
    doc = strict_loads(json_line(rows, [], stale=False, workers=1, now=0))
    assert doc["queues"][0]["name"] == "q[/]\x1b"
    assert doc["queues"][0]["net_rate"] is None and doc["queues"][0]["rate_in"] is None


def test_human_seconds_non_finite():
    from celeryctl.views import human_seconds

    assert human_seconds(float("inf")) == "?" and human_seconds(float("nan")) == "?"
    assert human_seconds(5) == "5s"


# --- numbers stay with their units (issue 13 follow-up, item 6) -----------------------------

def test_bind_units_joins_numbers_and_units_only():
    from celeryctl.render.text import NBSP, bind_units

    assert bind_units("idle for 300 s (timeout)") == f"idle for 300{NBSP}s (timeout)"
    assert bind_units("at or above 80 % of maxmemory, 1.5 MiB, 2 min, 12,000 B") == \
        f"at or above 80{NBSP}% of maxmemory, 1.5{NBSP}MiB, 2{NBSP}min, 12,000{NBSP}B"
    # counts of things and numbers inside words are left alone
    for plain in ("3 workers", "10 sentinels", "v1.2 s", "a3 s", "2 sets", "4 hosts"):
        assert bind_units(plain) == plain


def test_rich_does_not_wrap_at_a_no_break_space():
    """bind_units is only worth it if rich keeps "300\u00a0s" on one line: make_console sets
    that up (render/text.keep_nbsp_whole); a rich release that changes its wrapping fails
    here."""
    con, buf = _console()
    con.soft_wrap = False
    for width in range(14, 24):
        con.width = width
        con.print("aaaa bbbb ccc 300\u00a0s (timeout) dddd")
    for line in buf.getvalue().splitlines():
        assert not line.rstrip().endswith("300") and not line.startswith("s "), line


def _doctor_text(width: int, monkeypatch) -> str:
    from celeryctl.checks import Limits, run_checks, select_checks
    from celeryctl.render.report import render_report_table
    from tests.unit.test_check_messages import CASES

    report = run_checks(CASES["BRK006"][0](), Limits(), select_checks(["BRK006"], None))
    con, buf = _console()
    con.soft_wrap = False
    con.width = width
    render_report_table(con, report, [])
    return buf.getvalue()


def test_doctor_never_splits_a_number_from_its_unit(monkeypatch):
    """`Redis closes clients idle for 5` / `s (timeout)` at some width: never, at any."""
    for width in range(40, 101):
        out = _doctor_text(width, monkeypatch)
        lines = out.splitlines()
        assert "5\u00a0s (timeout)" in out.replace("\n", " ") or any(
            x.rstrip().endswith("5\u00a0s") for x in lines), out
        for a, b in zip(lines, lines[1:], strict=False):
            assert not (a.rstrip().endswith(" 5") and b.lstrip().startswith("s ")), (a, b)


def test_json_and_markdown_keep_plain_spaces():
    from celeryctl.checks import Limits, run_checks, select_checks
    from celeryctl.render.report import render_report_json, render_report_markdown
    from tests.unit.test_check_messages import CASES

    report = run_checks(CASES["BRK006"][0](), Limits(), select_checks(["BRK006"], None))
    for render in (lambda b: render_report_json(b, report, [], {}, 0.1),
                   lambda b: render_report_markdown(b, report, [], {})):
        buf = io.StringIO()
        render(buf)
        assert "idle for 5 s (timeout)" in buf.getvalue()
        assert "\u00a0" not in buf.getvalue()
