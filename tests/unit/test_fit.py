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


def _folded(lines: list[str], name: str, *numbers, col: int = 0) -> str:
    """The row whose cell in column `col` (a name, folded over several lines or not) reads
    `name` once its lines are joined back; each of `numbers` a whole token on its first
    line. Returns that first line."""
    for i, line in enumerate(lines):
        tokens = line.split()
        if len(tokens) <= col or not name.startswith(tokens[col]):
            continue
        got, j = tokens[col], i + 1
        while got != name and j < len(lines) and len(lines[j].split()) == col + 1 \
                and name.startswith(got + lines[j].split()[col]):
            got += lines[j].split()[col]
            j += 1
        if got == name:
            for n in numbers:
                assert str(n) in tokens, (n, line)
            return line
    raise AssertionError(f"{name!r} not on any row:\n" + "\n".join(lines))


def _watch_row(name: str, ready: int = 12345) -> dict:
    return {"name": name, "ready": ready, "unacked": 7, "consumers": 3, "rate_in": 10.0,
            "rate_out": 2.5, "net_rate": 7.5, "trend": "▁▂▃▅▇", "drain_seconds": None,
            "level": "warning", "stalled": False, "stalled_seconds": 3.0}


WATCH_HEADER = {"cluster": None, "broker": "redis://127.0.0.1:6379/0", "interval": 2.0,
                "workers": 2, "last_good": "12:00:00", "age": None, "stale": None,
                "notes": []}
REDIS_NOTE = ("Redis keeps no per-queue counters: in and out are estimated from the change "
              "of depth between two samples")


@pytest.mark.parametrize("width", WIDTHS)
def test_live_screen(monkeypatch, width):
    from celeryctl.render.live import render_screen

    rows = [{**_watch_row(n), "stalled_seconds": 754.0 if n == "celery" else 3.0,
             "stalled": n == "celery"} for n in QUEUES]
    con, buf = _console(monkeypatch, width)
    con.print(render_screen(rows, WATCH_HEADER, 24, width))
    lines = _lines(buf, width)
    assert "stalled" in "\n".join(lines[:6])  # the column is kept at 80 columns
    for n in QUEUES:  # a long name folds (at 80) rather than hiding the key columns; the
        # stall's length, or "no", stays on the queue's line
        _folded(lines, n, 12345, 7, 3, "+7.5/s", "never", "13m" if n == "celery" else "no")
    head = next(x for x in lines if x.split()[:1] == ["queue"]).split()
    assert {"net", "drain", "unacked", "consumers", "stalled"} <= set(head)
    if width == 120:
        assert {"in", "out"} <= set(head)


@pytest.mark.parametrize("width,height", [(80, 24), (120, 40)])
@pytest.mark.parametrize("wide", [False, True])
def test_live_screen_counts_rows_as_displayed(monkeypatch, width, height, wide):
    """41 queues and a note that wraps at 80: as many rows as the screen shows, and the
    "... N more queues" line on the screen (review of issue 13, defect 2)."""
    from celeryctl.render.live import render_screen

    names = [f"bulk-queue-number-{i}" for i in range(1, 31)] + [
        "celery", "payments.settlement.reconciliation.highpriority.eu-west-1", "q[/]x",
        *[f"extra-{i}" for i in range(8)]]
    rows = [_watch_row(n, 1000 - i) for i, n in enumerate(names)]
    con, buf = _console(monkeypatch, width)
    con.print(render_screen(rows, {**WATCH_HEADER, "notes": [REDIS_NOTE]}, height, width,
                            wide=wide))
    lines = _lines(buf, width)
    assert len(lines) <= height, len(lines)
    more = [x for x in lines if x.startswith("... ")]
    assert len(more) == 1, lines
    shown = [n for n in names if any(x.split()[:1] == [n] for x in lines)]
    assert shown == names[:len(shown)] and len(shown) >= (10 if height == 24 else 25)
    assert int(more[0].split()[1]) == len(names) - len(shown)


@pytest.mark.parametrize("width", WIDTHS)
def test_live_screen_wide_never_cuts(monkeypatch, width):
    """--wide on the live screen: never wider than the terminal, no header or cell cut, never
    worse than the default (review of issue 13, defect 1)."""
    from celeryctl.render.live import render_screen

    names = [f"bulk-queue-number-{i}" for i in range(25, 31)] + ["celery"]
    rows = [{**_watch_row(n, 5), "rate_in": 0.0, "rate_out": 0.0, "net_rate": 0.0}
            for n in names]
    order = ["queue", "ready", "unacked", "consumers", "stalled", "in", "out", "net", "trend",
             "drain"]
    for wide in (False, True):
        con, buf = _console(monkeypatch, width)
        con.print(render_screen(rows, WATCH_HEADER, 24, width, wide=wide))
        lines = _lines(buf, width)
        for n in names:
            _whole(lines, n, 5, 7, 3, "+0.0/s", "never")
        head = next(x for x in lines if x.split()[:1] == ["queue"]).split()
        assert head == [x for x in order if x in head]  # headers whole, in order
        assert {"stalled", "net", "drain"} <= set(head)
        if width == 120:
            assert "trend" in head
        if wide:  # every column, or a note saying the terminal is too narrow even so
            assert head == order or any(
                "hidden — widen the terminal (the live screen is never wider" in x
                for x in lines), lines


def test_live_screen_long_name_keeps_the_key_columns(monkeypatch):
    """`queues watch -Q 'pay*'` with a 57-character name at 80 columns: the name folds; it
    hides no column a short name would not (net and drain stay; review of issue 13, defect
    3)."""
    from celeryctl.render.live import render_screen

    long = "payments.settlement.reconciliation.highpriority.eu-west-1"
    heads = []
    for name in (long, "bulk-queue-number-30"):
        con, buf = _console(monkeypatch, 80)
        con.print(render_screen([_watch_row(name)], WATCH_HEADER, 24, 80))
        lines = _lines(buf, 80)
        _folded(lines, name, 12345, 7, 3, "+7.5/s", "never")
        heads.append(next(x for x in lines if x.split()[:1] == ["queue"]).split())
    assert heads[0] == heads[1]


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


# --- review of issue 13: one long name folds, it never hides a key column ------------------

LONG_WORKER = ("payments-settlement-reconciliation-worker-07@ip-10-12-34-56.eu-west-1"
               ".compute.internal")


def test_fit_folds_the_name_before_dropping_nothing_key():
    cols = [Col("worker", kind="name"), Col("answered"),
            Col("result", kind="wrap", min_width=20), Col("after", 2, kind="wrap")]
    lay = fit(cols, [[LONG_WORKER, "yes", "error: no such queue", "celery"]], 80)
    assert lay.shown == [0, 1, 2] and lay.hidden == 1 and lay.folded
    assert sum(lay.widths) + 2 * len(lay.widths) <= 80


def test_fit_fold_first_keeps_every_column_while_names_fold():
    cols = [Col("queue", kind="name"), num("ready"), Col("trend", 3)]
    rows = [["q" * 40, "5", "▁▂▃"]]
    assert fit(cols, rows, 40).shown == [0, 1]
    lay = fit(cols, rows, 40, fold_first=True)
    assert lay.shown == [0, 1, 2] and lay.folded and lay.widths[0] >= 10


@pytest.mark.parametrize("width", WIDTHS)
def test_connections_long_worker_name_folds(monkeypatch, width):
    from celeryctl.render.tables import render_connections

    rows = [_conn_row(f"127.0.0.1:{40000 + i}", w)
            for i, w in enumerate([LONG_WORKER, *WORKERS])]
    con, buf = _console(monkeypatch, width)
    render_connections(con, rows, "redis")
    lines = _lines(buf, width)
    head = next(x for x in lines if x.split()[:1] == ["address"]).split()
    assert "idle" in head and "worker" in head
    for r in rows:
        line = _whole(lines, r["address"], "3s")
        assert r["worker"].startswith(line.split()[-1])
    # the long one folds: its pieces, joined back, are the name
    start = next(i for i, x in enumerate(lines) if "127.0.0.1:40000" in x)
    pieces = [lines[start].split()[-1]]
    for x in lines[start + 1:]:
        if len(x.split()) != 1:
            break
        pieces.append(x.split()[0])
    assert "".join(pieces) == LONG_WORKER
    assert "…" not in buf.getvalue()


@pytest.mark.parametrize("width", WIDTHS)
def test_control_result_error_is_never_hidden(monkeypatch, width):
    """`control pool-grow 1 -d w1@vm -d LONG`: the worker that did not answer and the error
    stay on screen whatever the worker's name (review of issue 13, defect 3)."""
    from celeryctl.render.actions import render_control_result

    con, buf = _console(monkeypatch, width)
    c = SimpleNamespace(fmt="table", out=con)
    rows = [{"worker": "w1@vm", "answered": True, "ok": True, "targeted": True,
             "result": "ok: pool will grow", "after": "concurrency 3", "took_effect": True},
            {"worker": LONG_WORKER, "answered": False, "ok": False, "targeted": True,
             "result": "no reply within 2.0 s", "after": "-", "took_effect": False}]
    render_control_result(c, SimpleNamespace(command="pool_grow"), rows)
    lines = _lines(buf, width)
    head = next(x for x in lines if x.split()[:1] == ["worker"]).split()
    assert {"answered", "result"} <= set(head)
    assert "no reply within 2.0 s" in buf.getvalue()
    assert "ok: pool will grow" in _whole(lines, "w1@vm", "yes")
    assert "…" not in buf.getvalue()


def _conn(address: str, worker: str | None, idle: float = 4000):
    from celeryctl.snapshot import Connection

    return Connection(broker="redis", address=address, id=address, name="client",
                      idle_seconds=idle, age_seconds=90000, role="pool", worker=worker)


def test_kill_plan_order_is_stable():
    """Worker, then address (port as a number), whatever order the broker listed them in
    (review of issue 13, defect 4)."""
    import random

    from celeryctl.actions.kill import KillFilters, plan_kill

    conns = [_conn("127.0.0.1:5001", "b@h"), _conn("127.0.0.1:40000", "b@h"),
             _conn("127.0.0.1:6000", "a@h"), _conn("127.0.0.1:7000", None),
             _conn("127.0.0.1:1000", None)]
    want = ["127.0.0.1:6000", "127.0.0.1:5001", "127.0.0.1:40000", "127.0.0.1:1000",
            "127.0.0.1:7000"]
    f = KillFilters(idle_over=30.0)
    for seed in range(5):
        random.Random(seed).shuffle(conns)
        assert [c.address for c in plan_kill(conns, f).selected] == want


@pytest.mark.parametrize("width", WIDTHS)
def test_kill_plan_long_worker_keeps_the_worker_column(monkeypatch, width):
    from celeryctl.render.actions import render_kill_plan

    con, buf = _console(monkeypatch, width)
    conns = [SimpleNamespace(address=f"127.0.0.1:{40000 + i}", name="client-name-" * 3,
                             role="worker", idle_seconds=4000, age_seconds=90000, worker=w)
             for i, w in enumerate([LONG_WORKER, *WORKERS])]
    plan = SimpleNamespace(selected=conns, protected=[], refusals=[])
    render_kill_plan(SimpleNamespace(fmt="table", out=con), plan)
    lines = _lines(buf, width)
    head = next(x for x in lines if x.split()[:1] == ["address"]).split()
    assert {"idle", "worker", "action"} <= set(head)
    for w in WORKERS:
        _whole(lines, w)
    start = next(i for i, x in enumerate(lines) if "127.0.0.1:40000" in x)
    assert lines[start].split()[-1] == "close"
    if width == 80:  # folded, joined back whole
        assert lines[start].split()[-2] + lines[start + 1].split()[0] == LONG_WORKER
    else:
        assert lines[start].split()[-2] == LONG_WORKER


@pytest.mark.parametrize("width", (80, 100, 120))
def test_checks_drop_family_before_cutting(monkeypatch, capsys, width):
    """`checks`: the family (the code's prefix, spelled out) drops out before a description is
    cut with … (review of issue 13, defect 15d)."""
    from celeryctl.cli.doctor import checks_cmd

    monkeypatch.setenv("COLUMNS", str(width))
    checks_cmd("table")
    out = capsys.readouterr().out
    head = next(x for x in out.splitlines() if x.split()[:1] == ["code"]).split()
    if "…" in out:
        assert "family" not in head, out
    assert "what" in head and "code" in head


def test_rewrap_markdown_to_the_width():
    from celeryctl.render.report import rewrap_markdown

    text = ("# CODE001 a-check\n\nFamily: QUE. Needs: queues.\n\n## What it finds\n"
            + "word " * 40 + "\nmore words on a next line\n\n"
            + "- a list item " + "long " * 30 + "\n\n```\ncode block line that is long "
            + "x" * 80 + "\n```\n\n    indented code " + "y" * 80 + "\n")
    out = rewrap_markdown(text, 60)
    lines = out.split("\n")
    for line in lines:
        if "x" * 80 not in line and "y" * 80 not in line:
            assert len(line) <= 60, line
    assert lines[0] == "# CODE001 a-check" and out.endswith("\n")
    assert "code block line that is long " + "x" * 80 in lines
    assert "    indented code " + "y" * 80 in lines
    item = next(i for i, x in enumerate(lines) if x.startswith("- a list item"))
    assert lines[item + 1].startswith("  long")
    assert " ".join(out.split()) == " ".join(text.split())
