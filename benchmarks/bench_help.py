"""`celeryctl --help` against `celery --help`, interleaved, medians and their ratio.

Target: ratio <= 0.3 (celeryctl imports lazily: the CLI module loads only typer).
Run: .venv/bin/python benchmarks/bench_help.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _timing import compare, machine  # noqa: E402

BIN = os.path.dirname(sys.executable)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    r = compare([os.path.join(BIN, "celeryctl"), "--help"],
                [os.path.join(BIN, "celery"), "--help"], args.runs)
    print(f"machine: {machine()}")
    print(f"celeryctl --help  median {r['a_median_s'] * 1000:7.1f} ms  (exit {r['a_exit']})")
    print(f"celery --help     median {r['b_median_s'] * 1000:7.1f} ms  (exit {r['b_exit']})")
    ok = r["ratio"] <= 0.3
    print(f"ratio {r['ratio']:.2f} (target <= 0.30): {'met' if ok else 'MISSED'}  "
          f"[{r['runs']} interleaved runs]")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
