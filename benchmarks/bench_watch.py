"""`celeryctl queues watch` with 1,000 queues: CPU per refresh and peak memory.

    .venv/bin/python benchmarks/bench_watch.py --broker redis --queues 1000
    .venv/bin/python benchmarks/bench_watch.py --broker redis --queues 1000 --consumed
    .venv/bin/python benchmarks/bench_watch.py --broker rabbitmq --queues 1000

`--consumed` (Redis): a real worker consumes all the queues (prefetch 1, acks_late, its one
pool process busy on a long task, so it takes nothing else), the queues hold real Celery
messages, and every refresh also reads the head (`LRANGE key -1 -1`) of every priority sub-list
of every queue for stall detection — the costliest case.

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


def fill_redis_consumed(base: Path, url: str, port: int, n: int):
    """Real Celery messages in n queues that one busy real worker consumes. -> the worker."""
    import redis
    from celery import Celery

    from celeryctl.lab import servers as s

    names = [f"queue-{i:05d}" for i in range(n)]
    worker = s.start_worker(base, url, "bench-busy@%h", queues=",".join(names), concurrency=1,
                            env={"CELERYCTL_LAB_PREFETCH": "1", "CELERYCTL_LAB_ACKS_LATE": "1"},
                            timeout=120)
    app = Celery(broker=url, set_as_current=False)
    r = redis.Redis(port=port)
    try:
        app.send_task("celeryctl.lab.demoapp.sleep", (3600,), queue=names[0])
        deadline = time.monotonic() + 60
        while r.llen(names[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        with app.producer_or_acquire() as producer:
            for i, q in enumerate(names):
                for _ in range(i % 7 + 1):
                    app.send_task("celeryctl.lab.demoapp.add", (i, i), queue=q,
                                  producer=producer)
                if i % 3 == 0:
                    app.send_task("celeryctl.lab.demoapp.add", (i, i), queue=q, priority=3,
                                  producer=producer)
    except BaseException:
        worker.stop(timeout=3)
        raise
    finally:
        app.close()
    return worker


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
    ap.add_argument("--consumed", action="store_true",
                    help="Redis: a real busy worker consumes every queue (heads read too)")
    args = ap.parse_args()
    from celeryctl.lab import servers as s

    base = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    worker = None
    if args.broker == "redis":
        server = s.start_redis(base, name="redis-bench")
        if args.consumed:
            worker = fill_redis_consumed(base, server.info["url"], server.info["port"],
                                         args.queues)
        else:
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
        print(f"broker {args.broker}, {args.queues} queues"
              f"{' consumed by a busy worker (heads read)' if worker else ''}, "
              f"{args.refreshes} refreshes (best of 3)")
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
        if worker is not None:
            worker.stop(timeout=3)
        server.stop(timeout=20)


if __name__ == "__main__":
    main()
