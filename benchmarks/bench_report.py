"""What asking workers for `report` (their versions) costs `workers` and `doctor`: the same
collection with and without it, interleaved in one process on one lab, so only the extra
method differs (no interpreter start-up to hide it in).

  A: gather(workers=WORKER_METHODS)            (celeryctl workers' methods, report included)
  B: the same without "report"
  C: gather(workers=DOCTOR_METHODS, everything doctor reads)   D: C without "report"

With --cli, the same comparison end to end: `celeryctl workers` / `celeryctl doctor` as the
user runs them, in subprocesses, interleaved, against the same commands with "report" taken
out of WORKER_METHODS / DOCTOR_METHODS (patched before the CLI runs).

Targets: in process, at most 15 ms more (the worker builds its bug report, ~1 KB, after the
other replies); end to end, a ratio <= 1.05. (On a mixed-version lab doctor's exit differs by
design: without `report` WRK008 is skipped.)
Run: .venv/bin/python benchmarks/bench_report.py [--runs 30] [--workers 3] [--cli]
     [--celery-versions 5.2,5.3,5.5,5.7] [--broker redis|rabbitmq]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _timing import machine  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--celery-versions", default=None)
    ap.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    ap.add_argument("--cli", action="store_true", help="time the commands end to end")
    args = ap.parse_args()
    from celeryctl.cli.read import WORKER_METHODS
    from celeryctl.collect import gather
    from celeryctl.collect.doctor import DOCTOR_METHODS
    from celeryctl.lab import lab
    from celeryctl.lab.venvs import parse_versions
    from celeryctl.targets import Flags, resolve

    versions = parse_versions(args.celery_versions) if args.celery_versions else None
    d = Path(tempfile.mkdtemp(prefix="celeryctl-bench-"))
    st = lab.up(d, broker=args.broker, workers=args.workers, rabbitmq=args.broker == "rabbitmq",
                pool="prefork", concurrency=2, progress=lambda *_: None,
                celery_versions=versions)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY")}
        env["CELERYCTL_CONFIG"] = "/nonexistent/celeryctl.toml"
        target = resolve(Flags(broker=st.broker_url, rabbitmq_api=st.api_url
                               if args.broker == "rabbitmq" else None), env)
        without = {"workers": tuple(m for m in WORKER_METHODS if m != "report"),
                   "doctor": tuple(m for m in DOCTOR_METHODS if m != "report")}
        cases = {
            "A workers (with report)": lambda: gather(target, workers=WORKER_METHODS),
            "B workers (without)": lambda: gather(target, workers=without["workers"]),
            "C doctor (with report)": lambda: gather(
                target, workers=DOCTOR_METHODS, queues=True, connections=True, server=True),
            "D doctor (without)": lambda: gather(
                target, workers=without["doctor"], queues=True, connections=True, server=True),
        }
        if args.cli:
            return _cli(st, args, env)
        times: dict[str, list[float]] = {k: [] for k in cases}
        n_workers = 0
        for i in range(args.runs + 2):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                g = fn()
                dt = time.perf_counter() - t0
                assert g.workers.ok, g.workers.error
                n_workers = len(g.workers.value.nodes)
                if i >= 2:  # two warm-up rounds
                    times[name].append(dt)
    finally:
        lab.down(d, progress=lambda *_: None)
    med = {k: statistics.median(v) for k, v in times.items()}
    shape = f"Celery {args.celery_versions}" if versions else f"{args.workers} prefork workers"
    print(f"machine: {machine()}; lab: {args.broker}, {shape} ({n_workers} answered); "
          f"{args.runs} interleaved runs")
    for k, v in med.items():
        print(f"  {k:26s} median {v * 1000:7.1f} ms")
    da = (med["A workers (with report)"] - med["B workers (without)"]) * 1000
    dc = (med["C doctor (with report)"] - med["D doctor (without)"]) * 1000
    ok = da <= 15 and dc <= 15
    print(f"report costs workers {da:+.1f} ms, doctor {dc:+.1f} ms (target <= 15 ms): "
          f"{'met' if ok else 'MISSED'}")
    return 0 if ok else 1


RUN = ("import sys, celeryctl.cli.read as r, celeryctl.collect.doctor as d\n"
       "if sys.argv.pop(1) == 'without':\n"
       "    r.WORKER_METHODS = tuple(m for m in r.WORKER_METHODS if m != 'report')\n"
       "    d.DOCTOR_METHODS = tuple(m for m in d.DOCTOR_METHODS if m != 'report')\n"
       "from celeryctl.cli import main\nsys.argv[0] = 'celeryctl'\nmain()\n")


def _cli(st, args, env) -> int:
    from _timing import compare

    flags = ["--broker", st.broker_url]
    if args.broker == "rabbitmq":
        flags += ["--rabbitmq-api", st.api_url]
    ok = True
    print(f"machine: {machine()}; lab: {args.broker}; {args.runs} interleaved runs, end to end")
    for command in ("workers", "doctor"):
        a = [sys.executable, "-c", RUN, "with", command, *flags]
        b = [sys.executable, "-c", RUN, "without", command, *flags]
        r = compare(a, b, args.runs, env=env)
        ok &= r["ratio"] <= 1.05
        print(f"  celeryctl {command:8s} with report {r['a_median_s'] * 1000:7.1f} ms, "
              f"without {r['b_median_s'] * 1000:7.1f} ms: ratio {r['ratio']:.2f} "
              f"(exit {r['a_exit']} / {r['b_exit']})")
    print("target ratio <= 1.05: " + ("met" if ok else "MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
