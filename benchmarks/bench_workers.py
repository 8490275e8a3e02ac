"""`celeryctl workers` (or `doctor`) against `celery inspect ping` on a lab with every worker
answering.

Starts its own lab (redis-server + N real prefork workers on loopback), then times, interleaved:
  A: celeryctl workers --broker URL           (ping, stats, active, reserved, scheduled,
                                               active_queues; returns when all expected replied)
  B: celery -b URL inspect ping               (Celery's default 1 s timeout, no early return)
Target: ratio <= 0.6 for workers, <= 1.0 for doctor (every source: workers with conf, queues,
connections, server, backend).
Run: .venv/bin/python benchmarks/bench_workers.py [--runs 15] [--workers 3] [--command doctor]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _timing import compare, machine  # noqa: E402

BIN = os.path.dirname(sys.executable)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    ap.add_argument("--command", choices=("workers", "doctor"), default="workers")
    args = ap.parse_args()
    from celeryctl.lab import lab

    d = Path(tempfile.mkdtemp(prefix="celeryctl-bench-"))
    st = lab.up(d, broker=args.broker, workers=args.workers, rabbitmq=args.broker == "rabbitmq",
                pool="prefork", concurrency=2, progress=lambda *_: None)
    try:
        url = st.broker_url
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY")}
        a = [os.path.join(BIN, "celeryctl"), args.command, "--broker", url]
        if args.broker == "rabbitmq":
            a += ["--rabbitmq-api", st.api_url]
        b = [os.path.join(BIN, "celery"), "-b", url, "inspect", "ping"]
        r = compare(a, b, args.runs, env=env)
    finally:
        lab.down(d, progress=lambda *_: None)
    print(f"machine: {machine()}; lab: {args.broker}, {args.workers} prefork workers")
    print(f"celeryctl {args.command:14s} median {r['a_median_s'] * 1000:7.1f} ms  "
          f"(exit {r['a_exit']})")
    print(f"celery inspect ping      median {r['b_median_s'] * 1000:7.1f} ms  "
          f"(exit {r['b_exit']})")
    target = 0.6 if args.command == "workers" else 1.0
    ok = r["ratio"] <= target and r["a_exit"] == [0] and r["b_exit"] == [0]
    print(f"ratio {r['ratio']:.2f} (target <= {target:.2f}): {'met' if ok else 'MISSED'}  "
          f"[{r['runs']} interleaved runs]")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
