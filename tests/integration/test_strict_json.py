"""Names and data are data; JSON is strict. Hostile names (rich markup, ANSI escapes,
newlines, tabs, unicode, the empty name, markdown table separators) and a Redis
`unacked_index` score of -inf are put in a real Redis (and a real RabbitMQ vhost); every
command with a JSON format must print strict JSON (no NaN/Infinity) holding the exact
strings, and the human output must show the names literally, never fail with
"internal error", and never pass an ESC byte from the data to the terminal."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.conftest import CELERYCTL, ROOT, _cli_env, run_cli

pytestmark = [pytest.mark.redis]

SEP = "\x06\x16"
MARKUP = "q[/]x"                        # rich: "closing tag '[/]' has nothing to close"
SWALLOWED = "q?[x]"                     # rich read `[x]` as a tag and showed `q?`
BOLD = "[bold]boom"
ESC = "esc\x1b[31mred\x1b]0;title\x07"  # SGR colour + OSC window title
NEWLINE = "nl\nq\tt"
UNICODE = "ünï-队列-🚀"
PIPE = "a|b`c*d_"
EMPTY = ""
NAMES = [MARKUP, SWALLOWED, BOLD, ESC, NEWLINE, UNICODE, PIPE]
# "" is also bound (the default exchange's table), but kombu's Redis layout cannot tell an
# empty queue name from none, and celeryctl lists no such queue: its placeholder (`""`) is
# covered by tests/unit/test_render_text.py
TASK = "t[/]x.[bold]task\x1b[2J"        # a task name in a message header
WORKER_QUEUE = "wq[/]y"
WORKER = "w[bold]\x1b[31m@lab"          # no "/" (it names the worker's log file)
CLIENT = "c[/]z"                        # Redis client names cannot hold spaces or newlines
RAW_ESCAPES = ("\x1b[31m", "\x1b]0;", "\x1b[2J", "\x07")
DATA_DB, WORKER_DB = 11, 12


def strict_loads(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity."""
    def no_constants(name):
        raise AssertionError(f"non-strict JSON: {name}")

    return json.loads(text, parse_constant=no_constants)


def run_strict(*args: str, **kw):
    """Run with --format json; stdout must be one strict JSON document."""
    code, out, err, _ = run_cli(*args, "--format", "json", **kw)
    assert "internal error" not in err, err
    assert "Traceback" not in err, err
    try:
        return code, strict_loads(out), err
    except ValueError:
        raise AssertionError(f"not JSON (exit {code}):\n{out}\n--- stderr:\n{err}") from None


def run_human(*args: str, **kw):
    code, out, err, _ = run_cli(*args, **kw)
    assert "internal error" not in err and "MarkupError" not in err, err
    assert "Traceback" not in err, err
    for text in (out, err):  # NO_COLOR, not a terminal: rich itself writes no ESC at all
        assert "\x1b" not in text and "\x07" not in text, repr(text)
    return code, out, err


def _url(redis_server, db: int) -> str:
    return redis_server["url"].rsplit("/", 1)[0] + f"/{db}"


def _envelope(task: str, queue: str, tag: str) -> dict:
    import base64

    body = base64.b64encode(json.dumps([[1, 2], {}, {}]).encode()).decode()
    return {"body": body, "content-encoding": "utf-8", "content-type": "application/json",
            "headers": {"lang": "py", "task": task, "id": tag, "retries": 0, "eta": None,
                        "argsrepr": "(1, 2)", "kwargsrepr": "{}"},
            "properties": {"correlation_id": tag, "delivery_mode": 2, "priority": 0,
                           "body_encoding": "base64", "delivery_tag": tag,
                           "delivery_info": {"exchange": "", "routing_key": queue}}}


def _publish(url: str, queue: str, task: str, n: int = 1) -> None:
    from celery import Celery

    app = Celery(broker=url, set_as_current=False)
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task(task, (i, i), queue=queue, producer=producer)
    app.close()


@pytest.fixture(scope="module")
def hostile(redis_server):
    """db 11: queues with hostile names (bound as kombu binds them, each holding messages),
    one message with a hostile task name, an in-flight message whose `unacked_index` score is
    -inf, and a connection with a hostile client name. No worker: nothing restores the
    unacked entry or consumes the messages."""
    import redis

    url = _url(redis_server, DATA_DB)
    r = redis.Redis.from_url(url)
    r.flushdb()
    for name in [*NAMES, EMPTY]:
        r.sadd(f"_kombu.binding.{name}", f"{name}{SEP}{SEP}{name}".encode())
        r.lpush(name, json.dumps(_envelope("celeryctl.lab.demoapp.add", name, f"id-{len(name)}")))
    _publish(url, MARKUP, TASK, 2)
    _publish(url, BOLD, TASK, 1)
    tag = "tag-inf"
    r.hset("unacked", tag, json.dumps([_envelope(TASK, MARKUP, tag), "", MARKUP]))
    r.zadd("unacked_index", {tag: float("-inf")})
    named = redis.Redis.from_url(url)
    named.client_setname(CLIENT)
    named.ping()
    yield url
    named.close()
    r.close()


@pytest.fixture(scope="module")
def hostile_worker(labdir, redis_server):
    """db 12: one real worker whose node name holds markup and an ESC, consuming a queue
    whose name holds markup (plus the -inf unacked entry; the worker may restore it)."""
    import redis

    from celeryctl.lab import servers as s

    url = _url(redis_server, WORKER_DB)
    r = redis.Redis.from_url(url)
    r.flushdb()
    proc = s.start_worker(labdir, url, WORKER, queues=f"{WORKER_QUEUE},celery")
    yield url
    proc.stop()
    r.close()


def _poison(url: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    r.hset("unacked", "tag-inf", json.dumps([_envelope(TASK, WORKER_QUEUE, "tag-inf"), "",
                                             WORKER_QUEUE]))
    r.zadd("unacked_index", {"tag-inf": float("-inf")})
    r.close()


# --- strict JSON, exact strings -----------------------------------------------------------

def test_queues_json_is_strict_and_exact(hostile):
    for extra in ((), ("--all",)):
        code, doc, err = run_strict("queues", "--broker", hostile, *extra)
        names = {q["name"] for q in doc["queues"]}
        assert set(NAMES) <= names, names
        assert doc["redis_unacked"]["total"] == 1
        # -inf score: an age that is no number is null, never Infinity
        assert doc["redis_unacked"]["oldest_seconds"] is None


def test_queues_named_with_Q_json(hostile):
    code, doc, err = run_strict("queues", "--broker", hostile, "-Q", MARKUP, "-Q", ESC)
    assert {q["name"] for q in doc["queues"]} == {MARKUP, ESC}


def test_doctor_json_markdown_prometheus(hostile):
    code, doc, err = run_strict("doctor", "--broker", hostile)
    assert code in (0, 1, 2), err
    subjects = {f["subject"] for f in doc["findings"]}
    assert {f"queue {n}" for n in (MARKUP, ESC, NEWLINE)} <= subjects, subjects  # exact
    commands = {c for f in doc["findings"] for c in f["commands"]}
    # a command to copy names the queue shell-quoted: `a|b` is no pipe
    assert "celeryctl control add-consumer 'a|b`c*d_' -d WORKER" in commands, commands
    code, out, err = run_human("doctor", "--broker", hostile, "--format", "markdown")
    rows = [x for x in out.splitlines() if x.startswith("| ") and not x.startswith("|---")]
    assert len(rows) > 1
    for line in rows:  # every table row keeps its four cells, whatever the names
        assert len(_split_md_row(line)) == 4, line
    assert "q\\[/\\]x" in out  # escaped for markdown: renders as q[/]x
    # Prometheus: the exposition format escapes \\, " and \n; other control characters are
    # written as visible text first (no raw terminal escape in a .prom file)
    code, out, err, _ = run_cli("doctor", "--broker", hostile, "--format", "prometheus")
    assert "internal error" not in err, err
    assert 'queue="nl\\nq\\\\tt"' in out and 'queue="q[/]x"' in out
    assert "\x1b" not in out and "\\\\x1b" in out


def _split_md_row(line: str) -> list[str]:
    cells, cur, i = [], "", 1
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            cur += line[i:i + 2]
            i += 2
            continue
        if ch == "|":
            cells.append(cur.strip())
            cur = ""
        else:
            cur += ch
        i += 1
    return cells


def test_connections_and_kill_dry_run_json(hostile):
    code, doc, err = run_strict("connections", "--broker", hostile)
    assert CLIENT in {c["name"] for c in doc["connections"]}
    code, doc, err = run_strict("connections", "kill", "--name", "c*", "--broker", hostile)
    assert code == 0, err
    assert CLIENT in {c["name"] for c in doc["close"]}
    assert doc["connections"] is None  # a dry run closed nothing
    code, out, err = run_human("connections", "kill", "--name", "c*", "--broker", hostile)
    assert code == 0 and CLIENT in out, err
    code, out, err = run_human("connections", "--broker", hostile)
    assert CLIENT in out


def test_purge_dry_run_json(hostile):
    code, doc, err = run_strict("purge", *NAMES, "--broker", hostile)
    assert code == 0, err
    plan = doc["plan"]
    assert {q["queue"] for q in plan["queues"]} == set(NAMES)
    tasks = {s["task"] for q in plan["queues"] for s in q["first"]}
    assert TASK in tasks
    assert doc["result"] is None


def test_snapshot_save_show_diff_strict(hostile, tmp_path):
    files = []
    for name in ("a.json", "b.json.gz"):
        path = tmp_path / name
        code, out, err, _ = run_cli("snapshot", "-o", str(path), "--broker", hostile)
        assert code == 0 and "internal error" not in err, err
        raw = path.read_bytes()
        if name.endswith(".gz"):
            import gzip

            raw = gzip.decompress(raw)
        doc = strict_loads(raw.decode("utf-8"))
        assert MARKUP in json.dumps(doc, ensure_ascii=False)
        files.append(path)
    code, doc, err = run_strict("doctor", "--from", str(files[0]))
    assert "findings" in doc
    code, doc, err = run_strict("snapshot", "diff", str(files[0]), str(files[1]))
    assert doc["kind"] == "snapshot-diff"
    run_human("snapshot", "diff", str(files[0]), str(files[1]))
    run_human("doctor", "--from", str(files[0]))


def test_snapshot_with_infinity_from_an_older_version_gives_strict_output(hostile, tmp_path):
    """A snapshot file written before this fix (with Infinity in it) still loads; what
    celeryctl prints from it is strict."""
    path = tmp_path / "a.json"
    code, out, err, _ = run_cli("snapshot", "-o", str(path), "--broker", hostile)
    assert code == 0, err
    text = json.dumps(json.loads(path.read_text()))
    assert '"oldest_seconds": null' in text  # written as null, not Infinity
    old = tmp_path / "old.json"
    old.write_text(text.replace('"oldest_seconds": null', '"oldest_seconds": Infinity'))
    code, doc, err = run_strict("doctor", "--from", str(old))
    code, doc, err = run_strict("snapshot", "diff", str(old), str(path))


def test_watch_json_lines_strict(hostile):
    code, out, err, _ = run_cli("queues", "watch", "--count", "2", "--interval", "0.2",
                                "--broker", hostile, "--format", "json")
    assert code == 0, err
    lines = [x for x in out.splitlines() if x.strip()]
    assert len(lines) == 2
    for line in lines:
        doc = strict_loads(line)
        assert set(NAMES) <= {q["name"] for q in doc["queues"]}


def test_static_commands_json(hostile):
    code, doc, err = run_strict("checks")
    assert doc["checks"]
    code, doc, err = run_strict("lab", "scenarios")
    assert doc["scenarios"]
    code, out, err, _ = run_cli("explain", "QUE001")
    assert code == 0 and out.startswith("# QUE001")


def test_restore_dry_run_json(hostile, tmp_path):
    """A backup of a hostile queue (purge --backup), then restore's dry run."""
    import redis

    name = "rq[/]x\x1b[31m"
    r = redis.Redis.from_url(hostile)
    r.sadd(f"_kombu.binding.{name}", f"{name}{SEP}{SEP}{name}".encode())
    r.close()
    _publish(hostile, name, TASK, 3)
    backup = tmp_path / "b.jsonl"
    code, out, err, _ = run_cli("purge", name, "--broker", hostile, "--confirm", "--yes",
                                "--backup", str(backup), "--audit-log",
                                str(tmp_path / "audit.log"))
    assert code == 0, err
    code, doc, err = run_strict("restore", str(backup), "--broker", hostile)
    assert code == 0, err
    assert json.dumps(name) in json.dumps(doc)
    assert doc["result"] is None
    code, out, err = run_human("restore", str(backup), "--broker", hostile)
    assert "rq[/]x\\x1b[31m" in out


def test_workers_control_inspect_json(hostile_worker):
    url = hostile_worker
    _poison(url)
    code, doc, err = run_strict("workers", "--broker", url)
    names = [w["name"] for w in doc["workers"]]
    assert len(names) == 1 and names[0].startswith("w[bold]\x1b[31m@"), names
    node = names[0]
    assert WORKER_QUEUE in doc["workers"][0]["queues"]
    code, doc, err = run_strict("workers", "inspect", "queues", "--broker", url)
    assert doc["replies"][0]["name"] == node
    code, doc, err = run_strict("queues", "--broker", url)
    assert WORKER_QUEUE in {q["name"] for q in doc["queues"]}
    code, doc, err = run_strict("doctor", "--broker", url)
    code, doc, err = run_strict("connections", "--broker", url)
    assert node in {c["worker"] for c in doc["connections"]}
    code, doc, err = run_strict("control", "add-consumer", MARKUP, "-d", node, "--dry-run",
                                "--broker", url)
    assert code == 0, err
    assert doc["destination"] == [node] and doc["sent"] is False
    code, doc, err = run_strict("control", "rate-limit", TASK, "10/s", "-d", node,
                                "--dry-run", "--broker", url)
    assert code == 0, err
    code, doc, err = run_strict("purge", WORKER_QUEUE, "--broker", url)  # refused: consumed
    assert code == 64 and any(node in r for r in doc["plan"]["refusals"]), doc
    assert doc["result"] is None
    code, doc, err = run_strict("connections", "kill", "--idle-over", "0", "--broker", url)
    assert code == 0, err


def test_workers_human_output_literal(hostile_worker):
    url = hostile_worker
    shown = "w[bold]\\x1b[31m@"
    code, out, err = run_human("workers", "--broker", url)
    assert shown in out and WORKER_QUEUE in out
    code, out, err = run_human("workers", "inspect", "queues", "--broker", url)
    assert shown in out
    code, out, err = run_human("queues", "--broker", url)
    assert WORKER_QUEUE in out
    code, out, err = run_human("connections", "--broker", url)
    assert shown in out
    code, out, err = run_human("doctor", "--broker", url)
    code, out, err = run_human("purge", WORKER_QUEUE, "--broker", url)
    assert code == 64 and shown in err, err  # refused: the worker consumes it
    node = strict_loads(run_cli("workers", "--broker", url, "--format", "json")[1]
                        )["workers"][0]["name"]
    code, out, err = run_human("control", "add-consumer", MARKUP, "-d", node, "--dry-run",
                               "--broker", url)
    assert code == 0, err
    assert MARKUP in out and shown in out
    code, out, err = run_human("connections", "kill", "--idle-over", "0", "--broker", url)
    assert code == 0, err


# --- human output: literal, no raw escapes ------------------------------------------------

SHOWN = {MARKUP: "q[/]x", SWALLOWED: "q?[x]", BOLD: "[bold]boom",
         ESC: "esc\\x1b[31mred\\x1b]0;title\\x07", NEWLINE: "nl\\nq\\tt", UNICODE: UNICODE,
         PIPE: PIPE}


def test_queues_table_literal(hostile):
    code, out, err = run_human("queues", "--broker", hostile)
    assert code == 0, err
    for name, shown in SHOWN.items():
        assert shown in out, (name, out)
    assert "?" in out  # the in-flight age from a -inf score: unknown, not "infd"


def test_purge_dry_run_table_literal(hostile):
    code, out, err = run_human("purge", *NAMES, "--broker", hostile)
    assert code == 0, err
    for name, shown in SHOWN.items():
        assert shown in out, (name, out)
    assert "t[/]x.[bold]task\\x1b[2J" in out


def test_doctor_table_literal(hostile):
    code, out, err = run_human("doctor", "--broker", hostile)
    assert code in (0, 1, 2, 3)
    assert "q[/]x" in out or "q[/]x" in err


def _run_pty(*args: str, cols: int = 220, rows: int = 60, timeout: float = 30.0) -> bytes:
    """Run with stdout on a pseudo-terminal (`queues watch` draws its screen only there)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = _cli_env({"COLUMNS": str(cols), "LINES": str(rows), "TERM": "xterm"})
    try:
        p = subprocess.Popen([*CELERYCTL, *args], stdin=subprocess.DEVNULL, stdout=slave,
                             stderr=subprocess.PIPE, env=env, cwd=str(ROOT))
        os.close(slave)
        slave = -1
        chunks = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        p.wait(timeout=10)
        err = p.stderr.read().decode()
        assert p.returncode == 0 and "internal error" not in err, (p.returncode, err)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return b"".join(chunks)


def test_watch_screen_literal(hostile):
    screen = _run_pty("queues", "watch", "--count", "1", "--broker", hostile).decode()
    for name, shown in SHOWN.items():
        if name in (NEWLINE,):
            continue
        assert shown in screen, (name, screen)
    assert "nl\\nq\\tt" in screen
    for raw in RAW_ESCAPES:  # rich draws with ESC sequences itself, never these from data
        assert raw not in screen, raw


# --- RabbitMQ: the management API's names -------------------------------------------------

@pytest.mark.rabbitmq
def test_rabbitmq_hostile_queue_names(rabbit, vhost):
    import pika

    # no newline: RabbitMQ never answers a queue.declare of a name holding one
    names = [MARKUP, SWALLOWED, BOLD, ESC, UNICODE, PIPE]
    params = pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{rabbit['amqp_port']}/{vhost}"
                                "?socket_timeout=10&blocked_connection_timeout=10")
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    for name in names:
        ch.queue_declare(queue=name, durable=True)
    ch.basic_publish("", MARKUP, b"[[1, 2], {}, {}]", pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8",
        headers={"task": TASK, "id": "x1", "lang": "py"}))
    conn.close()
    url = f"amqp://guest:guest@127.0.0.1:{rabbit['amqp_port']}/{vhost}"
    target = ("--broker", url, "--rabbitmq-api", f"http://127.0.0.1:{rabbit['management_port']}")

    seen: list = []

    def listed():
        code, doc, err = run_strict("queues", *target)
        seen[:] = [code, {q["name"] for q in (doc["queues"] or [])}, err]
        return set(names) <= seen[1]

    from tests.conftest import wait_for

    assert wait_for(listed, timeout=20), seen
    code, doc, err = run_strict("purge", *names, *target)
    assert {q["queue"] for q in doc["plan"]["queues"]} == set(names)
    code, doc, err = run_strict("doctor", *target)
    code, out, err = run_human("queues", *target)
    for name in names:
        assert SHOWN[name] in out, (name, out)
    code, out, err = run_human("purge", *names, *target)
    for name in names:
        assert SHOWN[name] in out, (name, out)
    run_human("doctor", *target)
    run_human("doctor", *target, "--format", "markdown")


@pytest.mark.rabbitmq
def test_rabbitmq_hostile_vhost_name(rabbit):
    """A vhost named with markup and a slash: shown literally, JSON exact."""
    from urllib.parse import quote

    import requests

    name = "v[bold]/x[/]"
    api = f"http://127.0.0.1:{rabbit['management_port']}"
    auth = ("guest", "guest")
    requests.put(f"{api}/api/vhosts/{quote(name, safe='')}", auth=auth,
                 timeout=5).raise_for_status()
    try:
        requests.put(f"{api}/api/permissions/{quote(name, safe='')}/guest", auth=auth,
                     timeout=5, json={"configure": ".*", "write": ".*", "read": ".*"}
                     ).raise_for_status()
        requests.put(f"{api}/api/queues/{quote(name, safe='')}/{quote(MARKUP, safe='')}",
                     auth=auth, timeout=5, json={"durable": True}).raise_for_status()
        target = ("--broker", f"amqp://guest:guest@127.0.0.1:{rabbit['amqp_port']}/"
                  f"{quote(name, safe='')}", "--rabbitmq-api", api)
        code, doc, err = run_strict("queues", *target)
        assert MARKUP in {q["name"] for q in doc["queues"] or []}, (code, err)
        assert doc["target"]["vhost"] == name
        code, out, err = run_human("queues", *target)
        assert MARKUP in out, out
        code, doc, err = run_strict("purge", MARKUP, *target)
        assert doc["plan"]["vhost"] == name
        code, out, err = run_human("purge", MARKUP, *target)
        assert f"vhost {name}" in out, out
    finally:
        requests.delete(f"{api}/api/vhosts/{quote(name, safe='')}", auth=auth, timeout=5)


def test_doctor_fix_command_pastes_back_exactly(hostile_worker):
    """Issue 13 follow-up, item 14: a fix command for a queue whose name holds an ESC is
    written in bash's $'...' quoting (inside '...' the shown `\\x1b` would reach celeryctl as
    four characters), and `-d` names the live worker, itself quoted. The printed line, pasted
    into bash, reaches the same queue and worker (a dry run of control add-consumer)."""
    import redis

    url = hostile_worker
    idle = "idle\x1b[2Jq"
    r = redis.Redis.from_url(url)
    r.sadd(f"_kombu.binding.{idle}", f"{idle}{SEP}{SEP}{idle}".encode())
    r.lpush(idle, json.dumps(_envelope("celeryctl.lab.demoapp.add", idle, "id-idle")))
    try:
        node = strict_loads(run_cli("workers", "--broker", url, "--format", "json")[1]
                            )["workers"][0]["name"]
        code, out, err = run_human("doctor", "--broker", url, env={"COLUMNS": "1000"})
        [line] = [x for x in out.splitlines() if "add-consumer" in x and "idle" in x]
        cmd = line.split("$ ", 1)[1].strip()
        assert "$'idle\\x1b[2Jq'" in cmd and "WORKER" not in cmd, cmd
        assert "-d $'w[bold]\\x1b[31m@" in cmd, cmd
        p = subprocess.run(["bash", "-c", f"{cmd} --dry-run --format json --broker {url}"],
                           capture_output=True, text=True, env=_cli_env(None), cwd=str(ROOT),
                           timeout=60)
        assert p.returncode == 0, p.stderr
        doc = strict_loads(p.stdout)
        assert doc["destination"] == [node], doc
        assert doc["arguments"]["queue"] == idle, doc
    finally:
        r.delete(idle, f"_kombu.binding.{idle}")
        r.close()
