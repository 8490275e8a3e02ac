"""80 columns first: every table rendered from view rows at 80 and 120 columns through
celeryctl's own console; the identifying cell and the key numbers are whole on one line, no
line is wider than the screen, and hidden columns are said under the table."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
from rich.cells import cell_len

from celeryctl.render.fit import Col, fit, num

WIDTHS = (80, 120)
WORKERS = ["celery@worker-prod-7f9c6d-abcde", "rw2@buildhost.example.internal", "w3@h"]
QUEUES = ["celery", "reports.monthly.pdf-render.high-priority", "q"]


def _console(monkeypatch, width: int):
    from celeryctl.render.console import make_console

    monkeypatch.setenv("COLUMNS", str(width))
    buf = io.StringIO()
    con = make_console(file=buf)
    con.soft_wrap = False  # as on a terminal: long lines wrap at the width
    return con, buf


def _lines(buf, width: int) -> list[str]:
    lines = buf.getvalue().splitlines()
    for line in lines:
        assert cell_len(line) <= width, f"{cell_len(line)} > {width}: {line!r}"
    return lines


def _whole(lines: list[str], name: str, *numbers) -> str:
    """The one line holding `name` whole, with each of `numbers` as a whole token."""
    found = [x for x in lines if re.search(rf"(^|\s){re.escape(name)}(\s|$)", x)]
    assert found, f"{name!r} not whole on any line:\n" + "\n".join(lines)
    line = found[0]
    tokens = line.split()
    for n in numbers:
        text = str(n)
        if " " in text:
            assert text in line, (text, line)
        else:
            assert text in tokens, (text, line)
    return line


def _note(lines: list[str]) -> int:
    notes = [x for x in lines if "hidden — widen the terminal or use --wide" in x]
    assert len(notes) <= 1
    return int(notes[0].split()[0]) if notes else 0


# --- the layout itself -------------------------------------------------------------------

def test_fit_drops_highest_priority_first_and_counts():
    cols = [Col("name", kind="name"), num("a"), num("b", 1), num("c", 2), num("d", 2)]
    rows = [["x" * 20, "1" * 10, "2" * 10, "3" * 10, "4" * 10]]
    lay = fit(cols, rows, 55)  # 20 + 10 + 10 + 2 * 3 = 46 fits; with c: 58 does not
    assert lay.shown == [0, 1, 2] and lay.hidden == 2  # d (rightmost of 2), then c
    assert lay.note == "2 columns hidden — widen the terminal or use --wide"
    assert fit(cols, rows, 55, wide=True).hidden == 0
    assert fit(cols, rows, 200).hidden == 0 and fit(cols, rows, 200).note is None


def test_fit_folds_only_a_name_wider_than_the_screen():
    cols = [Col("name", kind="name"), num("ready")]
    assert not fit(cols, [["q" * 60, "5"]], 80).folded
    lay = fit(cols, [["q" * 100, "5"]], 80)
    assert lay.folded and sum(lay.widths) + 2 * len(lay.widths) <= 80


def test_wrap_column_keeps_words_whole():
    cols = [Col("name", kind="name"), Col("queues", 1, kind="wrap", min_width=8)]
    lay = fit(cols, [["w", "a, reports.monthly.pdf, b"]], 80)
    assert lay.widths[1] >= len("reports.monthly.pdf,")


# --- each table at 80 and 120 --------------------------------------------------------------

def _worker_row(name: str, ok: bool = True) -> dict:
    return {"name": name, "ok": ok, "celery_version": "5.4.0", "pool": "prefork",
            "concurrency": 16, "active": 12, "reserved": 40, "scheduled": 3,
            "prefetch_count": 64, "processed": 123456, "uptime_seconds": 90000,
            "max_rss_kb": 53248, "queues": ["celery", "hipri", "reports.monthly"],
            "error": None if ok else "expected but did not reply"}


@pytest.mark.parametrize("width", WIDTHS)
def test_workers(monkeypatch, width):
    from celeryctl.render.tables import render_workers

    con, buf = _console(monkeypatch, width)
    render_workers(con, [_worker_row(n) for n in WORKERS])
    lines = _lines(buf, width)
    for n in WORKERS:
        _whole(lines, n, "yes", 16, 12, 40)
    hidden = _note(lines)
    if width == 120:
        assert "52 MiB" in buf.getvalue() and hidden < 5
    else:
        assert hidden >= 5
    assert "…" not in buf.getvalue()


def test_workers_wide_shows_every_column(monkeypatch):
    from celeryctl.render.tables import render_workers

    con, buf = _console(monkeypatch, 80)
    render_workers(con, [_worker_row(n) for n in WORKERS], wide=True)
    out = buf.getvalue()
    assert _note(out.splitlines()) == 0
    for head in ("processed", "prefetch", "sched", "uptime", "celery", "pool"):
        assert head in out
    assert "52 MiB" in out and "123456" in out


def _queue_row(name: str) -> dict:
    return {"name": name, "internal": False, "exists": True, "ready": 12345,
            "buckets": {"0": 9, "3": 8, "6": 6, "9": 2}, "unacked": 7,
            "oldest_unacked_seconds": 400.0, "consumers": 3, "publish_rate": 1.5,
            "deliver_rate": 0.5, "type": "quorum", "error": None}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_queues(monkeypatch, width, broker):
    from celeryctl.render.tables import render_queues

    con, buf = _console(monkeypatch, width)
    render_queues(con, [_queue_row(n) for n in QUEUES], broker)
    lines = _lines(buf, width)
    for n in QUEUES:
        _whole(lines, n, 12345, 7, 3)
    if width == 120:
        assert _note(lines) == 0


def test_queue_name_longer_than_the_screen_folds_never_cut(monkeypatch):
    from celeryctl.render.tables import render_queues

    long = "x" * 90
    con, buf = _console(monkeypatch, 80)
    render_queues(con, [_queue_row(long)], "redis")
    out = buf.getvalue()
    assert "…" not in out and "".join(out.split()).count("x") == 90
    assert _lines(buf, 80) and "12345" in out


@pytest.mark.parametrize("width", WIDTHS)
def test_live_screen(monkeypatch, width):
    from celeryctl.render.live import render_screen

    rows = [{"name": n, "ready": 12345, "unacked": 7, "consumers": 3, "rate_in": 10.0,
             "rate_out": 2.5, "net_rate": 7.5, "trend": "▁▂▃▅▇", "drain_seconds": None,
             "level": "warning", "stalled_seconds": 754.0 if n == "celery" else 3.0,
             "stalled": n == "celery"} for n in QUEUES]
    header = {"cluster": None, "broker": "redis://127.0.0.1:6379/0", "interval": 2.0,
              "workers": 2, "last_good": "12:00:00", "age": None, "stale": None, "notes": []}
    con, buf = _console(monkeypatch, width)
    con.print(render_screen(rows, header, 24, width))
    lines = _lines(buf, width)
    assert "stalled" in "\n".join(lines[:6])  # the column is kept at 80 columns
    for n in QUEUES:  # the stall's length, or "no", stays on the queue's line
        _whole(lines, n, 12345, 7, 3, "13m" if n == "celery" else "no")


def _conn_row(addr: str, worker: str | None) -> dict:
    return {"address": addr, "name": "celery-long-client-name-for-this-connection",
            "role": "worker", "age_seconds": 5000, "idle_seconds": 3, "command": "brpop",
            "db": 0, "heartbeat_seconds": None, "worker": worker, "worker_match": "exact",
            "other_db": False}


@pytest.mark.parametrize("width", WIDTHS)
def test_connections(monkeypatch, width):
    from celeryctl.render.tables import render_connections

    rows = [_conn_row(f"127.0.0.1:{40000 + i}", w) for i, w in enumerate(WORKERS)]
    con, buf = _console(monkeypatch, width)
    render_connections(con, rows, "redis")
    lines = _lines(buf, width)
    for r in rows:
        _whole(lines, r["address"], "3s")
        _whole(lines, r["worker"])


@pytest.mark.parametrize("width", (80, 100, 120))
def test_checks(monkeypatch, capsys, width):
    from celeryctl.checks import catalogue
    from celeryctl.cli.doctor import checks_cmd

    monkeypatch.setenv("COLUMNS", str(width))
    checks_cmd("table")
    out = capsys.readouterr().out
    lines = out.splitlines()
    for line in lines:
        assert cell_len(line) <= width
    starts = [i for i, x in enumerate(lines) if re.match(r"^\s*[A-Z]+\d{3}\s", x)]
    codes = [lines[i].split()[0] for i in starts]
    assert codes == sorted(c.code for c in catalogue())  # every code, whole, by code
    for a, b in zip(starts, starts[1:], strict=False):  # a row is 1-2 lines
        assert b - a <= 2, lines[a:b]
    for line in lines:  # the family never takes 30 columns
        assert "capacity and pool exhaustion" not in line


def test_checks_wide_shows_summaries_whole(monkeypatch, capsys):
    from celeryctl.cli.doctor import checks_cmd

    monkeypatch.setenv("COLUMNS", "80")
    checks_cmd("table", wide=True)
    out = capsys.readouterr().out
    assert "…" not in out and "family" in out


@pytest.mark.parametrize("width", WIDTHS)
def test_control_result(monkeypatch, width):
    from celeryctl.render.actions import render_control_result

    con, buf = _console(monkeypatch, width)
    c = SimpleNamespace(fmt="table", out=con)
    rows = [{"worker": w, "answered": True, "ok": True, "targeted": True,
             "result": "ok: add consumer reports.monthly.pdf-render.high-priority",
             "after": "consuming celery, hipri, reports.monthly", "took_effect": True}
            for w in WORKERS]
    render_control_result(c, SimpleNamespace(command="add_consumer"), rows)
    lines = _lines(buf, width)
    for w in WORKERS:
        _whole(lines, w, "yes")


def _plan_item(q: str):
    sample = SimpleNamespace(task="proj.tasks.render_monthly_report", id="0b9f" * 8)
    return SimpleNamespace(queue=q, ready=12345, buckets={"0": 9, "3": 8}, unacked=7,
                           consumers=3, consumer_workers=tuple(WORKERS), samples=[sample])


@pytest.mark.parametrize("width", WIDTHS)
def test_purge_plan(monkeypatch, width):
    from celeryctl.render.actions import render_plan

    con, buf = _console(monkeypatch, width)
    err = io.StringIO()
    c = SimpleNamespace(fmt="table", out=con, err=con, wide=False)
    plan = SimpleNamespace(broker="redis://127.0.0.1:6379/0", vhost=None, broker_kind="redis",
                           items=[_plan_item(q) for q in QUEUES], total=3 * 12345,
                           refusals=[])
    render_plan(c, plan, backup=None, sampled=True, sample_note=None)
    del err
    lines = _lines(buf, width)
    for q in QUEUES:
        _whole(lines, q, 12345, 7, 3)


@pytest.mark.parametrize("width", WIDTHS)
def test_restore_plan(monkeypatch, width):
    from celeryctl.render.actions import render_restore_plan

    con, buf = _console(monkeypatch, width)
    c = SimpleNamespace(fmt="table", out=con, err=con,
                        target=SimpleNamespace(broker_redacted="redis://127.0.0.1:6379/0"))
    info = SimpleNamespace(count=30, header={"broker": "redis://x", "created": "now"},
                           complete=True, end=None, bad=[], notes=[])
    rows = [{"queue": q, "messages": 10, "ready now": 12345} for q in QUEUES]
    render_restore_plan(c, info, rows, path="backup.jsonl")
    lines = _lines(buf, width)
    for q in QUEUES:
        _whole(lines, q, 10, 12345)


@pytest.mark.parametrize("width", WIDTHS)
def test_kill_plan(monkeypatch, width):
    from celeryctl.render.actions import render_kill_plan

    con, buf = _console(monkeypatch, width)
    conns = [SimpleNamespace(address=f"127.0.0.1:{40000 + i}", name="client-name-" * 3,
                             role="worker", idle_seconds=4000, age_seconds=90000, worker=w)
             for i, w in enumerate(WORKERS)]
    plan = SimpleNamespace(selected=conns[:2], protected=[(conns[2], "a live worker")],
                           refusals=[])
    render_kill_plan(SimpleNamespace(fmt="table", out=con), plan)
    lines = _lines(buf, width)
    for x in conns:
        _whole(lines, x.address, "1.1h")


@pytest.mark.parametrize("width", WIDTHS)
def test_snapshot_diff(monkeypatch, width):
    from celeryctl.render.snapdiff import render_diff

    con, buf = _console(monkeypatch, width)
    render_diff(con, {"seconds_between": 5,
                      "queues": [{"queue": q, "change": "grew", "ready_before": 100,
                                  "ready_after": 12345, "delta": 12245, "consumers_before": 3,
                                  "consumers_after": 0} for q in QUEUES],
                      "workers_gone": [], "workers_new": [],
                      "settings_changed": [{"where": WORKERS[0],
                                            "setting": "worker_prefetch_multiplier",
                                            "before": 4, "after": 1}],
                      "findings_new": [], "findings_resolved": [], "findings_changed": []})
    lines = _lines(buf, width)
    for q in QUEUES:
        _whole(lines, q, 100, 12345, "+12245")
    _whole(lines, "worker_prefetch_multiplier")


def test_doctor_wrapped_lines_keep_their_indent(monkeypatch):
    from celeryctl.checks import Severity
    from celeryctl.render.report import render_report_table

    finding = SimpleNamespace(
        code="SER004", name="pickle-accepted", subject="celery",
        message="5 of 5 sampled messages are application/x-python-serialize " * 3,
        severity=Severity.WARNING, evidence={"content_types": ["application/json"] * 8},
        hint="set accept_content to ['json'] on every worker and producer " * 3,
        commands=["celeryctl queues -Q celery"])
    counts = {"critical": 0, "warning": 1, "info": 0}
    report = SimpleNamespace(
        findings=[finding], partial=[], skipped=[], ran=[1, 2], incomplete=False,
        missing=[], unobserved=[], counts=lambda: counts,
        worst=lambda: Severity.WARNING)
    con, buf = _console(monkeypatch, 80)
    render_report_table(con, report, [])
    lines = _lines(buf, 80)
    start = next(i for i, x in enumerate(lines) if x.startswith("  SER004 "))
    block = lines[start:]
    assert len(block) > 6  # it wrapped
    for line in block[1:]:
        if not line.strip():
            continue
        assert line.startswith("         ") or line.startswith("      "), line
    ev = next(i for i, x in enumerate(block) if "evidence:" in x)
    assert block[ev + 1].startswith(" " * len("      evidence: ")), block[ev + 1]
    fix = next(i for i, x in enumerate(block) if "fix:" in x)
    assert block[fix + 1].startswith(" " * len("      fix: ")), block[fix + 1]
    msg = block[1]
    assert msg.startswith(" " * len("  SER004 ")) and not msg.startswith(" " * 10)
