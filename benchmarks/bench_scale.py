"""Scale: many queues, many connections.

    .venv/bin/python benchmarks/bench_scale.py redis-queues      # 100 vs 10,000 queues
    .venv/bin/python benchmarks/bench_scale.py rabbitmq-queues   # 3,000 queues
    .venv/bin/python benchmarks/bench_scale.py redis-clients     # 5,000 clients

redis-queues: one redis-server and two real workers; `celeryctl queues` and `celeryctl doctor`
timed (wall, median of 5, and peak RSS from wait4) with 100 queues, then again with 10,000
queues holding 500,000 messages (50 each, in priority sub-lists too). Targets (issue 7):
wall(10,000) <= 3x wall(100), peak RSS <= 200 MB; every queue listed with its exact depth.
rabbitmq-queues: 3,000 declared queues (one message each): every one listed, wall and RSS.
redis-clients: 5,000 open client connections: CLIENT LIST fetched and parsed, attributed to
workers, and the CON checks run — timed in-process (target: well under a second).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine  # noqa: E402

BIN = Path(sys.executable).parent
EXE = str(BIN / "celeryctl")
SEP = "\x06\x16"
ENVELOPE = json.dumps({
    "body": "W1sxLCAyXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbH1d", "content-encoding": "utf-8",
    "content-type": "application/json", "headers": {"lang": "py", "task": "bench.add",
                                                    "id": "x", "retries": 0},
    "properties": {"delivery_mode": 2, "priority": 0, "body_encoding": "base64",
                   "delivery_info": {"exchange": "", "routing_key": "q"}}}).encode()


def run(cmd: list[str]) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MiB, exit status, stdout) of one child."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read().decode()
    _, status, usage = os.wait4(p.pid, 0)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(
        status), out


def measure(cmd: list[str], n: int = 5) -> dict:
    runs = [run(cmd) for _ in range(n)]
    return {"wall": statistics.median(r[0] for r in runs), "rss": max(r[1] for r in runs),
            "exit": sorted({r[2] for r in runs}), "out": runs[-1][3]}


def fill_redis(port: int, start: int, count: int, per_queue: int) -> None:
    import redis

    r = redis.Redis(port=port)
    pipe = r.pipeline(transaction=False)
    for i in range(start, start + count):
        q = f"queue-{i:05d}"
        pipe.sadd(f"_kombu.binding.{q}", f"{q}{SEP}{SEP}{q}")
        head = per_queue // 5
        if per_queue:
            pipe.lpush(q, *[ENVELOPE] * (per_queue - head))
            pipe.lpush(f"{q}{SEP}3", *[ENVELOPE] * head)
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()


def redis_queues() -> None:
    from celeryctl.lab import servers as s

    base = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    server = s.start_redis(base, name="redis-scale")
    url = server.info["url"]
    workers = [s.start_worker(base, url, f"bw{i}@%h", queues="celery", pool="threads")
               for i in (1, 2)]
    try:
        results = {}
        fill_redis(server.info["port"], 0, 100, 50)
        for n, extra in ((100, 0), (10_000, 9_900)):
            if extra:
                fill_redis(server.info["port"], 100, extra, 50)
            q = measure([EXE, "queues", "--broker", url, "--format", "json"])
            d = measure([EXE, "doctor", "--broker", url, "--format", "json"], n=3)
            doc = json.loads(q["out"])
            listed = [x for x in doc["queues"] if x["name"].startswith("queue-")]
            results[n] = (q, d, len(listed), sum(x["ready"] for x in listed))
        print(f"machine: {machine()}; redis-server, 2 workers")
        for n, (q, d, count, total) in results.items():
            print(f"  {n:6d} queues: listed {count}, {total} messages; queues "
                  f"{q['wall'] * 1000:.0f} ms, {q['rss']:.1f} MiB; doctor {d['wall'] * 1000:.0f}"
                  f" ms, {d['rss']:.1f} MiB (exit {q['exit']}/{d['exit']})")
        for name, i in (("queues", 0), ("doctor", 1)):
            ratio = results[10_000][i]["wall"] / results[100][i]["wall"]
            print(f"  {name}: wall(10,000) / wall(100) = {ratio:.2f} (target <= 3), peak RSS "
                  f"{results[10_000][i]['rss']:.1f} MiB (target <= 200)")
    finally:
        for w in workers:
            w.stop()
        server.stop()


def rabbitmq_queues(n: int = 3000) -> None:
    import pika

    from celeryctl.lab import servers as s

    base = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    node = s.start_rabbitmq(base, name="rabbit-scale")
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1",
                                                                 node.info["amqp_port"]))
        ch = conn.channel()
        for i in range(n):
            ch.queue_declare(f"queue-{i:05d}")
            ch.basic_publish("", f"queue-{i:05d}", b"{}")
        conn.close()
        time.sleep(7)  # the management API's statistics
        api = f"http://guest:guest@127.0.0.1:{node.info['management_port']}"
        args = ["--broker", node.info["url"], "--rabbitmq-api", api, "--format", "json"]
        q = measure([EXE, "queues", *args])
        d = measure([EXE, "doctor", *args], n=3)
        listed = [x for x in json.loads(q["out"])["queues"] if x["name"].startswith("queue-")]
        print(f"machine: {machine()}; rabbitmq-server, {n} queues")
        print(f"  listed {len(listed)}, {sum(x['ready'] or 0 for x in listed)} messages; queues "
              f"{q['wall'] * 1000:.0f} ms, {q['rss']:.1f} MiB; doctor {d['wall'] * 1000:.0f} ms,"
              f" {d['rss']:.1f} MiB")
    finally:
        node.stop(timeout=20)


def redis_clients(n: int = 5000) -> None:
    import redis

    from celeryctl.checks import Limits, run_checks, select_checks
    from celeryctl.collect.redis import collect_clients, redis_client
    from celeryctl.lab import servers as s
    from celeryctl.snapshot import Observed, Snapshot, WorkerNode, WorkersView
    from celeryctl.urls import parse_endpoint
    from celeryctl.views import attribute_connections

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
    base = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    server = s.start_redis(base, name="redis-clients")
    conns = []
    try:
        for _ in range(n):
            c = redis.Redis(port=server.info["port"], single_connection_client=True)
            c.ping()
            conns.append(c)
        client = redis_client(parse_endpoint(server.info["url"]), 5.0)
        t0 = time.perf_counter()
        clients = collect_clients(client)
        t1 = time.perf_counter()
        # two workers on this host: every client is matched against them (the costly path)
        view = WorkersView(nodes=(WorkerNode("b1@localhost", {"ping": {"ok": "pong"}}),
                                  WorkerNode("b2@localhost", {"ping": {"ok": "pong"}})),
                           methods=("ping",), expected=("b1@localhost", "b2@localhost"))
        attributed = attribute_connections(clients, view, {"localhost": ["127.0.0.1"]}, {})
        snap = Snapshot(broker_kind="redis", target={}, parts={
            "connections": Observed(attributed), "workers": Observed(view)})
        checks = select_checks(["CON"], None)
        report = run_checks(snap, Limits(), checks)
        t2 = time.perf_counter()
        print(f"machine: {machine()}; redis-server with {len(clients)} clients")
        print(f"  CLIENT LIST fetched and parsed: {(t1 - t0) * 1000:.0f} ms; attributed and "
              f"CON checks ({len(report.ran)} ran): {(t2 - t1) * 1000:.0f} ms; total "
              f"{(t2 - t0) * 1000:.0f} ms (target: well under 1 s)")
    finally:
        for c in conns:
            c.close()
        server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("redis-queues", "rabbitmq-queues", "redis-clients"))
    a = ap.parse_args()
    {"redis-queues": redis_queues, "rabbitmq-queues": rabbitmq_queues,
     "redis-clients": redis_clients}[a.what]()
