"""`celeryctl queues watch` with 1,000 queues: CPU per refresh and peak memory.

    .venv/bin/python benchmarks/bench_watch.py --broker redis --queues 1000
    .venv/bin/python benchmarks/bench_watch.py --broker rabbitmq --queues 1000

The CPU of one refresh is measured as the difference between two runs of the same command,
`--count 1` and `--count 41` (user + system time of the child, from wait4), divided by 40: the
start-up (imports, connecting, the first discovery) cancels out. Output is the JSON line per
refresh with every queue (the costlier mode: the live screen renders only the rows that fit).
Baseline in the same run: one `celeryctl queues` listing of the same broker.
Targets (issue 5): <= 100 ms of CPU per refresh, peak RSS < 100 MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine  # noqa: E402

BIN = Path(sys.executable).parent
SEP = "\x06\x16"


def run(cmd: list[str]) -> tuple[float, float, int]:
    """(CPU seconds user+system, peak RSS MiB, exit status) of one child."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.stderr.write(p.stderr.read().decode()[-2000:])
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code


def fill_redis(port: int, n: int) -> None:
    import redis

    r = redis.Redis(port=port)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        q = f"queue-{i:05d}"
        pipe.sadd(f"_kombu.binding.{q}", f"{q}{SEP}{SEP}{q}")
        pipe.lpush(q, *[b'{"body": ""}'] * (i % 7 + 1))
        if i % 3 == 0:
            pipe.lpush(f"{q}{SEP}3", b'{"body": ""}')
    pipe.execute()


def fill_rabbit(amqp_port: int, n: int) -> None:
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp_port))
    ch = conn.channel()
    for i in range(n):
        q = f"queue-{i:05d}"
        ch.queue_declare(q, durable=False)
        ch.basic_publish("", q, b"{}")
    conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    ap.add_argument("--queues", type=int, default=1000)
    ap.add_argument("--refreshes", type=int, default=40)
    args = ap.parse_args()
    from celeryctl.lab import servers as s

    base = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    if args.broker == "redis":
        server = s.start_redis(base, name="redis-bench")
        fill_redis(server.info["port"], args.queues)
        target = ["--broker", server.info["url"]]
    else:
        server = s.start_rabbitmq(base, name="rabbit-bench")
        fill_rabbit(server.info["amqp_port"], args.queues)
        target = ["--broker", server.info["url"], "--rabbitmq-api",
                  f"http://guest:guest@127.0.0.1:{server.info['management_port']}"]
        time.sleep(6)  # let the management API's statistics catch up
    try:
        exe = str(BIN / "celeryctl")
        watch = [exe, "queues", "watch", *target, "--interval", "0.1", "--format", "json"]
        base_cpu, base_rss, _ = min(run([exe, "queues", *target, "--format", "json"])
                                    for _ in range(3))
        start_cpu = min(run([exe, "--version"])[0] for _ in range(3))
        one = [run([*watch, "--count", "1"]) for _ in range(3)]
        many = [run([*watch, "--count", str(args.refreshes + 1)]) for _ in range(3)]
        cpu_one = min(x[0] for x in one)
        cpu_many = min(x[0] for x in many)
        per = (cpu_many - cpu_one) / args.refreshes
        rss = max(x[1] for x in many)
        print(f"machine: {machine()}")
        print(f"broker {args.broker}, {args.queues} queues, {args.refreshes} refreshes "
              f"(best of 3)")
        print(f"  celeryctl queues (one listing, baseline): {base_cpu * 1000:.0f} ms CPU, "
              f"{base_rss:.1f} MiB")
        print(f"  watch --count 1: {cpu_one * 1000:.0f} ms CPU; --count "
              f"{args.refreshes + 1}: {cpu_many * 1000:.0f} ms CPU")
        print(f"  CPU per refresh: {per * 1000:.1f} ms (target <= 100 ms) = "
              f"{per / base_cpu:.2f}x one `queues` listing")
        print(f"  peak RSS: {rss:.1f} MiB (target < 100 MB)")
        disc = base_cpu - start_cpu
        print(f"  rediscovery (a `queues` listing minus interpreter start-up, "
              f"{start_cpu * 1000:.0f} ms): ~{disc * 1000:.0f} ms CPU, every --rediscover "
              f"(30 s) = {disc / 15 * 1000:.0f} ms per 2 s refresh on average")
    finally:
        server.stop(timeout=20)


if __name__ == "__main__":
    main()
