"""80 columns first, as a person sees it: the real commands run in a tmux pane of 80x24 and
120x40 against the session's real Redis and workers; what the pane shows is read back
(`tmux capture-pane`, scrollback included). Worker names, queue names, the key numbers and
check codes must be whole on one line, no line wider than the pane, and the hidden-columns
note shown when columns dropped out."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid

import pytest
from rich.cells import cell_len

from tests.conftest import CELERYCTL, ROOT

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is missing (scripts/install-deps.sh installs it)")

SIZES = [(80, 24), (120, 40)]
QUEUE = "t80.reports.monthly-pdf-render"
NOTE = "hidden — widen the terminal or use --wide"


def _publish(url: str, queue: str, n: int) -> None:
    from celery import Celery

    app = Celery(broker=url, set_as_current=False)
    try:
        with app.producer_or_acquire() as producer:
            for i in range(n):
                app.send_task("celeryctl.lab.demoapp.add", (i, i), queue=queue,
                              producer=producer)
    finally:
        app.close()


@pytest.fixture(scope="module")
def backlog(redis_workers):
    """52 messages nobody consumes, in a queue with a long name."""
    import redis

    _publish(redis_workers["url"], QUEUE, 52)
    yield redis_workers
    redis.Redis.from_url(redis_workers["url"]).delete(QUEUE)


def _pane(args: list[str], width: int, height: int, then: str) -> str:
    """A fresh tmux session of width x height running celeryctl `args`, then `then`; its
    name."""
    session = f"c80-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    env = "env -u CELERY_BROKER_URL NO_COLOR=1 CELERYCTL_CONFIG=/nonexistent COLUMNS= LINES="
    cmd = f"cd {ROOT} && {env} {' '.join(CELERYCTL)} {' '.join(args)}; {then}; sleep 600"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(width),
                    "-y", str(height), cmd], check=True)
    return session


def in_tmux(args: list[str], width: int, height: int, tmp_path, timeout: float = 60.0,
            join: bool = False):
    """Run celeryctl in a fresh tmux pane of width x height (a real terminal: stdout is a
    TTY); returns (exit code, the lines the pane shows, scrollback included; `join`: the
    lines the terminal wrapped joined back)."""
    exit_file = tmp_path / f"exit-{uuid.uuid4().hex[:6]}"
    session = _pane(args, width, height, f"echo $? > {exit_file}")
    try:
        subprocess.run(["tmux", "set-option", "-t", session, "history-limit", "5000"],
                       capture_output=True)
        deadline = time.monotonic() + timeout
        while not (exit_file.exists() and exit_file.read_text().strip()):
            assert time.monotonic() < deadline, f"celeryctl {args} did not finish"
            time.sleep(0.2)
        screen = subprocess.run(["tmux", "capture-pane", "-t", session, "-p", "-S", "-",
                                 *(["-J"] if join else [])],
                                capture_output=True, text=True, check=True).stdout
        return int(exit_file.read_text()), screen.rstrip("\n").splitlines()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def _fits(lines: list[str], width: int) -> None:
    for line in lines:
        assert cell_len(line) <= width, f"{cell_len(line)} > {width}: {line!r}"
    assert not any("…" in x for x in lines if not x.startswith(" ")), lines


def _line_with(lines: list[str], word: str) -> str:
    found = [x for x in lines if re.search(rf"(^|\s){re.escape(word)}(\s|$)", x)]
    assert found, f"{word!r} is not whole on any line:\n" + "\n".join(lines)
    return found[0]


@pytest.mark.parametrize("width,height", SIZES)
def test_workers(backlog, tmp_path, width, height):
    code, lines = in_tmux(["workers", "--broker", backlog["url"]], width, height, tmp_path)
    assert code == 0, lines
    _fits(lines, width)
    for name in backlog["names"]:
        tokens = _line_with(lines, name).split()
        # ok, concurrency 2, and active/reserved counts: whole numbers on the worker's line
        assert "yes" in tokens and "2" in tokens, tokens
        assert sum(t.isdigit() for t in tokens) >= 4, tokens
    head = next(x for x in lines if x.split()[:1] == ["worker"])
    for col in ("ok", "conc", "active", "reserved"):
        assert col in head.split()
    if width == 80:
        assert any(NOTE in x for x in lines)
    # rows by name, every run
    rows = [x.split()[0] for x in lines if x.split()[:1] and x.split()[0] in backlog["names"]]
    assert rows == sorted(backlog["names"])


@pytest.mark.parametrize("width,height", SIZES)
def test_workers_wide(backlog, tmp_path, width, height):
    code, lines = in_tmux(["workers", "--wide", "--broker", backlog["url"]], width, height,
                          tmp_path, join=True)
    assert code == 0
    assert not any(NOTE in x for x in lines)
    text = "\n".join(lines)
    for col in ("processed", "prefetch"):
        assert col in text
    for name in backlog["names"]:  # every column, on the worker's one (terminal-wrapped) line
        assert "celery, hipri" in _line_with(lines, name)


@pytest.mark.parametrize("width,height", SIZES)
def test_queues(backlog, tmp_path, width, height):
    code, lines = in_tmux(["queues", "--broker", backlog["url"]], width, height, tmp_path)
    assert code == 0, lines
    _fits(lines, width)
    tokens = _line_with(lines, QUEUE).split()
    assert "52" in tokens and tokens.count("0") >= 2, tokens  # ready, unacked, consumers
    for q in ("celery", "hipri"):
        _line_with(lines, q)
    head = next(x for x in lines if x.split()[:1] == ["queue"])
    for col in ("ready", "unacked", "consumers"):
        assert col in head.split()


@pytest.mark.parametrize("width,height", SIZES)
def test_connections(backlog, tmp_path, width, height):
    code, lines = in_tmux(["connections", "--broker", backlog["url"]], width, height,
                          tmp_path)
    assert code == 0, lines
    _fits(lines, width)
    for name in backlog["names"]:
        _line_with(lines, name)
    addresses = [x.split()[0] for x in lines if re.match(r"^\s*127\.0\.0\.1:\d+\s", x)]
    assert addresses and all(re.fullmatch(r"127\.0\.0\.1:\d+", a) for a in addresses)


@pytest.mark.parametrize("width,height", SIZES)
def test_checks(tmp_path, width, height):
    from celeryctl.checks import catalogue

    code, lines = in_tmux(["checks"], width, height, tmp_path)
    assert code == 0
    for line in lines:
        assert cell_len(line) <= width
    starts = [i for i, x in enumerate(lines) if re.match(r"^\s*[A-Z]+\d{3}\s", x)]
    assert [lines[i].split()[0] for i in starts] == sorted(c.code for c in catalogue())
    for a, b in zip(starts, starts[1:], strict=False):
        assert b - a <= 2, lines[a:b]


@pytest.mark.parametrize("width,height", SIZES)
def test_doctor(backlog, tmp_path, width, height):
    code, lines = in_tmux(["doctor", "--broker", backlog["url"]], width, height, tmp_path)
    assert code in (0, 1, 2), lines
    for line in lines:
        assert cell_len(line) <= width
    findings = [i for i, x in enumerate(lines) if re.match(r"^  [A-Z]+\d{3} ", x)]
    for i in findings:  # a finding's continuation lines are indented, never at column 0
        j = i + 1
        while j < len(lines) and lines[j].strip() and not re.match(r"^  [A-Z]+\d{3} ", lines[j]):
            assert lines[j].startswith("  "), lines[i:j + 1]
            j += 1


@pytest.mark.parametrize("width,height", SIZES)
def test_queues_watch(backlog, tmp_path, width, height):
    """The live screen while it runs (it restores the terminal when it ends): the pane
    read back once a refresh has drawn the backlog's row."""
    session = _pane(["queues", "watch", "--interval", "0.5", "--count", "60", "--broker",
                     backlog["url"]], width, height, "true")
    try:
        deadline = time.monotonic() + 30
        while True:
            lines = subprocess.run(["tmux", "capture-pane", "-t", session, "-p"],
                                   capture_output=True, text=True).stdout.splitlines()
            if any(QUEUE in x for x in lines) and any("celery" in x.split() for x in lines):
                break
            assert time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.3)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    _fits(lines, width)
    assert len(lines) <= height
    assert "52" in _line_with(lines, QUEUE).split()


@pytest.mark.parametrize("width,height", SIZES)
def test_lab_scenarios(tmp_path, width, height):
    from celeryctl.lab.scenarios import SCENARIOS

    code, lines = in_tmux(["lab", "scenarios"], width, height, tmp_path)
    assert code == 0, lines
    _fits(lines, width)
    names = [x.split()[0] for x in lines if x and not x.startswith(" ") and x.split()
             and x.split()[0] in SCENARIOS]
    assert names == sorted(SCENARIOS), names


# --- review of issue 13: long names, many queues, --wide on the live screen ----------------

LONG_WORKER = "payments-settlement-reconciliation-worker-07@ip-10-12-34-56.eu-west-1" \
              ".compute.internal"
LONG_QUEUE = "payments.settlement.reconciliation.highpriority.eu-west-1"
BULK = [f"bulk-queue-number-{i}" for i in range(1, 31)]


@pytest.fixture(scope="module")
def long_names(labdir, redis_server):
    """The reviewer's lab on a database of its own (db 7 of the session Redis, so the other
    tests' counts are untouched): one worker with a 87-character name consuming a queue with
    a 57-character name and 'q[/]x', and 30 more queues of 1..30 messages (33 in all)."""
    import redis

    from celeryctl.lab import servers as s

    url = redis_server["url"].rsplit("/", 1)[0] + "/7"
    proc = s.start_worker(labdir, url, LONG_WORKER, queues=f"celery,{LONG_QUEUE},q[/]x",
                          pool="threads", concurrency=2)
    try:
        for i, q in enumerate(BULK, 1):
            _publish(url, q, i)
        _publish(url, LONG_QUEUE, 3)
        yield {"url": url}
    finally:
        proc.stop()
        redis.Redis.from_url(url).flushdb()


def _joined(lines: list[str], first: str, name: str) -> bool:
    """`name` starts on a line whose first cell is `first`'s start, folded or not: the pieces
    of its column joined back give it whole."""
    for i, line in enumerate(lines):
        if name.startswith(first) and first in line:
            col = line.index(first)
            got = line[col:].split()[0]
            j = i + 1
            while got != name and j < len(lines) and lines[j][col:].split()[:1] \
                    and name.startswith(got + lines[j][col:].split()[0]):
                got += lines[j][col:].split()[0]
                j += 1
            if got == name:
                return True
    return False


def _watch_screen(args: list[str], width: int, height: int, until) -> list[str]:
    session = _pane(["queues", "watch", "--interval", "0.5", "--count", "60", *args],
                    width, height, "true")
    try:
        deadline = time.monotonic() + 30
        while True:
            lines = subprocess.run(["tmux", "capture-pane", "-t", session, "-p"],
                                   capture_output=True, text=True).stdout.splitlines()
            if until(lines):
                return lines
            assert time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.3)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def _head(lines: list[str], first: str) -> list[str]:
    return next(x for x in lines if x.split()[:1] == [first]).split()


@pytest.mark.parametrize("width,height", SIZES)
def test_queues_watch_many_queues_all_said(long_names, width, height):
    """33 queues (and the Redis note wrapping at 80): the rows the screen shows plus the
    "... N more queues" line account for every queue, on the screen (defect 2)."""
    lines = _watch_screen(["--sort", "name", "--broker", long_names["url"]], width, height,
                          lambda ls: any("bulk-queue-number-1" in x for x in ls))
    _fits(lines, width)
    assert len(lines) <= height
    shown = [x.split()[0] for x in lines if x.split()[:1] and x.split()[0] in BULK]
    more = [x for x in lines if x.startswith("... ")]
    if height == 24:
        assert more, lines
    total = len(shown) + (int(more[0].split()[1]) if more else 0)
    assert total >= 32, lines  # every queue (celery may be gone: nobody published there)
    for col in ("ready", "unacked", "consumers", "stalled", "net", "drain"):
        assert col in _head(lines, "queue"), lines


@pytest.mark.parametrize("width,height", SIZES)
def test_queues_watch_wide_never_cuts(long_names, width, height):
    """--wide on the live screen: no name or header cut at the pane's edge (defect 1)."""
    lines = _watch_screen(["--wide", "--sort", "name", "-Q", "bulk-*", "--broker",
                           long_names["url"]], width, height,  # once rates are known
                          lambda ls: any("bulk-queue-number-1 " in x and "/s" in x
                                         for x in ls))
    _fits(lines, width)
    head = _head(lines, "queue")
    for col in ("ready", "unacked", "consumers", "stalled", "net", "drain"):
        assert col in head, lines
    if width == 120:
        assert {"in", "out", "trend"} <= set(head), lines
    for x in lines:
        if x.split()[:1] and x.split()[0].startswith("bulk-"):
            assert x.split()[0] in BULK, x  # whole
            assert {"never", "empty"} & set(x.split()) or re.search(r"\d+[smhd]\b", x), x
            assert "/s" in x


def test_queues_watch_long_name_keeps_the_rates(long_names, tmp_path):
    """`-Q 'pay*'` with a 57-character name at 80 columns: the name folds; the stall, net and
    drain stay (in and out drop at 80 columns for a short name too) (defect 3)."""
    lines = _watch_screen(["-Q", "pay*", "--broker", long_names["url"]], 80, 24,
                          lambda ls: any(x.startswith(" payments") for x in ls))
    _fits(lines, 80)
    head = _head(lines, "queue")
    for col in ("ready", "unacked", "consumers", "stalled", "net", "drain"):
        assert col in head, lines
    assert _joined(lines, "payments", LONG_QUEUE), lines


@pytest.mark.parametrize("width,height", SIZES)
def test_connections_long_worker(long_names, tmp_path, width, height):
    """`connections` with an 87-character worker name: the worker folds (at 80), address,
    idle and worker stay (defect 3)."""
    code, lines = in_tmux(["connections", "--broker", long_names["url"]], width, height,
                          tmp_path)
    assert code == 0, lines
    _fits(lines, width)
    head = _head(lines, "address")
    assert "idle" in head and "worker" in head, lines
    assert _joined(lines, "payments", LONG_WORKER), lines


@pytest.mark.parametrize("width,height", SIZES)
def test_connections_kill_dry_run_long_worker_stable(long_names, tmp_path, width, height):
    """`connections kill --idle-over 0` (a dry run): the worker column stays, and the rows come
    in the same order every run (defect 3, 4)."""
    args = ["connections", "kill", "--idle-over", "0", "--broker", long_names["url"]]
    runs = []
    for _ in range(2):
        code, lines = in_tmux(args, width, height, tmp_path)
        assert code == 0, lines
        _fits(lines, width)
        assert "worker" in _head(lines, "address"), lines
        runs.append([x.split()[0] for x in lines if re.match(r"^\s*127\.0\.0\.1:\d+\s", x)])
    # celeryctl's own connection (and the other tests') differ between runs: the ones in both
    # come in the same order
    both = set(runs[0]) & set(runs[1])
    assert len(both) >= 3
    assert [a for a in runs[0] if a in both] == [a for a in runs[1] if a in both]


@pytest.mark.parametrize("width,height", SIZES)
def test_control_error_reply_is_shown(long_names, tmp_path, width, height):
    """`control pool-grow 1 -d LONG` on a threads pool: the worker answers with an error; the
    result column holding it is shown whatever the worker's name (defect 3)."""
    code, lines = in_tmux(["control", "pool-grow", "1", "-d", LONG_WORKER, "--broker",
                           long_names["url"]], width, height, tmp_path)
    assert code == 2, lines
    _fits(lines, width)
    head = _head(lines, "worker")
    assert "result" in head, lines
    assert _joined(lines, "payments", LONG_WORKER), lines


def test_lab_scenarios_wide(tmp_path):
    code, lines = in_tmux(["lab", "scenarios", "--wide"], 80, 24, tmp_path)
    assert code == 0, lines
