"""`celeryctl task ID` on a Redis queue of N messages (default 100,000): the id at the end
of the queue (the last a worker would reach) and an id that is absent (the whole queue is
read). Each run must return within --timeout (plus the interpreter's start) and say how far
it searched. Starts its own redis-server on a free loopback port (no worker: remote control
has no pidbox binding to wait for, and returns at once).

    .venv/bin/python benchmarks/bench_task_lookup.py --messages 100000 --runs 5 --timeout 10
    .venv/bin/python benchmarks/bench_task_lookup.py --messages 100000 --runs 3 --timeout 1

With a --timeout too short for the whole queue, the answer still comes within it, and says
"stopped after N of M messages ...: --timeout".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine  # noqa: E402

BIN = Path(sys.executable).parent
BODY = "W1sxLCAyXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbH1d"


def envelope(tid: str, queue: str) -> str:
    return json.dumps({
        "body": BODY, "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"lang": "py", "task": "bench.add", "id": tid, "retries": 0,
                    "root_id": tid, "parent_id": None, "argsrepr": "(1, 2)",
                    "kwargsrepr": "{}", "origin": "gen1@bench", "eta": None,
                    "expires": None, "group": None, "timelimit": [None, None]},
        "properties": {"correlation_id": tid, "reply_to": "c0ffee", "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": queue},
                       "priority": 0, "body_encoding": "base64", "delivery_tag": tid}})


def fill(url: str, queue: str, n: int, last_id: str) -> None:
    """n-1 messages, then `last_id`: pushed last, so consumed last (position n of n)."""
    import redis

    r = redis.Redis.from_url(url)
    pipe = r.pipeline(transaction=False)
    for i in range(n - 1):
        pipe.lpush(queue, envelope(f"id-{i:08d}", queue))
        if i % 5000 == 4999:
            pipe.execute()
    pipe.lpush(queue, envelope(last_id, queue))
    pipe.execute()
    # the binding a Celery producer declares, so the queue is discovered
    r.sadd("_kombu.binding." + queue, f"{queue}\x06\x16\x06\x16{queue}")


def one(url: str, tid: str, timeout: float) -> tuple[float, int, dict]:
    cmd = [str(BIN / "celeryctl"), "task", tid, "--broker", url, "--timeout", str(timeout),
           "--format", "json"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    return wall, p.returncode, json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()

    from celeryctl.lab import servers as s

    with tempfile.TemporaryDirectory() as tmp:
        proc = s.start_redis(Path(tmp), name="bench-task")
        try:
            url = proc.info["url"]
            t0 = time.perf_counter()
            fill(url, "bench", args.messages, "needle-at-the-end")
            print(f"filled {args.messages:,} messages in {time.perf_counter() - t0:.1f} s")
            idle = [one(url, "x", 0.01)[0] for _ in range(2)]  # start-up alone, roughly
            for label, tid in (("id at the end", "needle-at-the-end"),
                               ("id absent", "no-such-id")):
                walls, last = [], None
                for _ in range(args.runs):
                    wall, code, doc = one(url, tid, args.timeout)
                    walls.append(wall)
                    last = (code, doc)
                code, doc = last
                t = doc["tasks"][0]
                print(f"{label}: median {statistics.median(walls):.2f} s, max "
                      f"{max(walls):.2f} s (--timeout {args.timeout:g}); exit {code}; "
                      f"{t['state']}: {t['verdict']}; {doc['searched']}")
            print(f"process start-up, broker unreachable-free run (--timeout 0.01): "
                  f"{statistics.median(idle):.2f} s")
            print(f"machine: {machine()}")
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
