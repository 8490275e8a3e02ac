"""Shared timing helpers: interleaved runs (A, B, A, B, ...) so both commands see the same
machine load, medians, and a ratio measured in one run."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time


def time_cmd(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0, p.returncode


def compare(a: list[str], b: list[str], runs: int, env: dict[str, str] | None = None,
            warmup: int = 2) -> dict:
    for _ in range(warmup):
        time_cmd(a, env)
        time_cmd(b, env)
    ta, tb, codes_a, codes_b = [], [], set(), set()
    for _ in range(runs):
        x, ca = time_cmd(a, env)
        y, cb = time_cmd(b, env)
        ta.append(x)
        tb.append(y)
        codes_a.add(ca)
        codes_b.add(cb)
    ma, mb = statistics.median(ta), statistics.median(tb)
    return {"a_median_s": ma, "b_median_s": mb, "ratio": ma / mb, "runs": runs,
            "a_exit": sorted(codes_a), "b_exit": sorted(codes_b)}


def machine() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}, " \
           f"{os.cpu_count()} cores, {platform.machine()}"
