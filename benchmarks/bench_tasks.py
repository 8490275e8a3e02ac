"""`celeryctl tasks` against `celery inspect active` with 16 workers holding 100 reserved tasks
each.

Starts its own redis-server and N real workers on loopback (threads pool, concurrency 1,
prefetch multiplier 101, each consuming a queue of its own), sends each queue one long task
(which blocks the worker) and 100 short ones (prefetched behind it: reserved), then times,
interleaved:
  A: celeryctl tasks --broker URL      (active, reserved, scheduled, registered, conf, report
                                        of every worker, and kombu's unacked entries; returns
                                        when every expected worker replied)
  B: celery -b URL inspect active      (Celery's default 1 s timeout, no early return)
Target: ratio <= 0.6.
Run: .venv/bin/python benchmarks/bench_tasks.py [--runs 11] [--workers 16] [--reserved 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _timing import compare, machine  # noqa: E402

BIN = os.path.dirname(sys.executable)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--reserved", type=int, default=100)
    args = ap.parse_args()
    from celeryctl.lab import servers as s

    d = Path(tempfile.mkdtemp(prefix="celeryctl-bench-tasks-"))
    redis = s.start_redis(d, name="redis-bench")
    procs: list = []
    try:
        url = redis.info["url"]
        env = {"CELERYCTL_LAB_PREFETCH": str(args.reserved + 1)}
        for i in range(args.workers):
            procs.append(s.start_worker(d, url, f"bt{i}@%h", queues=f"bq{i}", pool="threads",
                                        concurrency=1, env=env, wait=False))
        for p in procs:
            log = Path(p.log)
            s._wait_or_stop(p, lambda p=p, log=log: log.exists() and " ready." in
                            log.read_text(errors="replace"), 120, f"worker {p.name}", log)
        code = ("from celeryctl.lab.demoapp import add, sleep\n"
                f"for i in range({args.workers}):\n"
                "    sleep.apply_async((3600,), queue=f'bq{i}')\n"
                f"    for j in range({args.reserved}):\n"
                "        add.apply_async((i, j), queue=f'bq{i}')\n")
        penv = dict(os.environ, CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND="")
        subprocess.run([sys.executable, "-c", code], env=penv, check=True)
        want = args.workers * (args.reserved + 1)
        cmd = [os.path.join(BIN, "celeryctl"), "tasks", "--broker", url, "--format", "json"]
        held = 0
        for _ in range(60):  # until every worker holds its tasks
            out = subprocess.run(cmd, capture_output=True, text=True).stdout
            held = len(json.loads(out).get("tasks") or [])
            if held >= want:
                break
            time.sleep(1)
        cenv = {k: v for k, v in os.environ.items() if not k.startswith("CELERY")}
        a = [os.path.join(BIN, "celeryctl"), "tasks", "--broker", url]
        b = [os.path.join(BIN, "celery"), "-b", url, "inspect", "active"]
        r = compare(a, b, args.runs, env=cenv)
    finally:
        for p in procs:
            p.stop(timeout=5)
        redis.stop()
    print(f"machine: {machine()}; lab: redis, {args.workers} workers (threads, concurrency 1), "
          f"{held} tasks held (1 active + {args.reserved} reserved each)")
    print(f"celeryctl tasks          median {r['a_median_s'] * 1000:7.1f} ms  "
          f"(exit {r['a_exit']})")
    print(f"celery inspect active    median {r['b_median_s'] * 1000:7.1f} ms  "
          f"(exit {r['b_exit']})")
    ok = r["ratio"] <= 0.6 and r["a_exit"] == [0] and r["b_exit"] == [0] and held >= want
    print(f"ratio {r['ratio']:.2f} (target <= 0.60): {'met' if ok else 'MISSED'}  "
          f"[{r['runs']} interleaved runs]")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
