"""Purge with backup, then restore, of N messages (default 100,000) on the lab, with the wall
time and the peak RSS of the celeryctl process (memory must stay bounded: both stream).

    .venv/bin/python benchmarks/bench_purge.py --broker redis --messages 100000
    .venv/bin/python benchmarks/bench_purge.py --broker rabbitmq --messages 100000

Baseline in the same run: `celery purge -f -Q QUEUE` (no backup, no restore) on the same
queue size, and the peak RSS of `celeryctl --version` (the interpreter and imports alone).
`--previous PATH` also runs another build's `celeryctl` executable (e.g. the release before
a change, installed in its own virtualenv) on the same lab and prints the ratios: the
interruption-safe purge must stay within 2x of the one before it (issue 12).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine  # noqa: E402

BIN = Path(sys.executable).parent


def run(cmd: list[str], env=None) -> tuple[float, int, float]:
    """Wall seconds, exit status, peak RSS (MiB) of that one child (wait4)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode not in (0,):
        sys.stderr.write(p.stderr.read().decode()[-2000:])
    return wall, p.returncode, usage.ru_maxrss / 1024


def fill_redis(url: str, queue: str, n: int) -> None:
    import redis

    r = redis.Redis.from_url(url)
    body = "W1sxLCAyXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbH1d"
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        env = {"body": body, "content-encoding": "utf-8", "content-type": "application/json",
               "headers": {"lang": "py", "task": "bench.add", "id": f"id-{i}", "retries": 0},
               "properties": {"correlation_id": f"id-{i}", "delivery_mode": 2,
                              "delivery_info": {"exchange": "", "routing_key": queue},
                              "priority": 0, "body_encoding": "base64",
                              "delivery_tag": f"tag-{i}"}}
        pipe.lpush(queue, json.dumps(env))
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def fill_rabbit(amqp_port: int, queue: str, n: int) -> None:
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp_port))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True)
    props = pika.BasicProperties(content_type="application/json", content_encoding="utf-8",
                                 delivery_mode=2, headers={"task": "bench.add"})
    for _ in range(n):
        ch.basic_publish("", queue, b'[[1, 2], {}, {"callbacks": null}]', props)
    conn.close()


def api_caught_up(api: str, queue: str, n: int, timeout: float = 30.0) -> None:
    import requests

    from celeryctl.urls import parse_http

    ep = parse_http(api)
    base = f"{ep.scheme}://{ep.host}:{ep.port}/api"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = requests.get(f"{base}/queues/%2F/{queue}", auth=(ep.username or "guest",
                                                             ep.password or "guest"), timeout=5)
        if r.ok and r.json().get("messages_ready") == n:
            return
        time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--previous", metavar="PATH", help="another build's celeryctl executable")
    args = ap.parse_args()
    from celeryctl.lab import lab

    d = Path(tempfile.mkdtemp(prefix="celeryctl-bench-purge-"))
    st = lab.up(d, broker=args.broker, workers=0, rabbitmq=args.broker == "rabbitmq",
                progress=lambda *_: None)
    try:
        url = st.broker_url
        extra = ["--rabbitmq-api", st.api_url] if args.broker == "rabbitmq" else []
        env = {**os.environ, "CELERYCTL_CONFIG": "/nonexistent"}
        fill = (lambda q: fill_redis(url, q, args.messages)) if args.broker == "redis" else \
            (lambda q: fill_rabbit(st.rabbitmq["info"]["amqp_port"], q, args.messages))
        ctl = [str(BIN / "celeryctl")]
        _, _, base_rss = run([*ctl, "--version"], env)

        def round_trip(exe: list[str], tag: str):
            fill("bench")
            if args.broker == "rabbitmq":
                # builds before issue 12 planned from the management API's counters, which
                # lag by its statistics interval: let them catch up, so both builds purge
                # the whole queue (the new one reads the broker's own count)
                api_caught_up(st.api_url, "bench", args.messages)
            backup = d / f"backup-{tag}.jsonl"
            t_p, c_p, rss_p = run([*exe, "purge", "bench", "--broker", url, *extra,
                                   "--confirm", "--yes", "--backup", str(backup),
                                   "--audit-log", str(d / "audit.log")], env)
            t_r, c_r, rss_r = run([*exe, "restore", str(backup), "--broker", url,
                                   *extra, "--confirm", "--yes",
                                   "--audit-log", str(d / "audit.log")], env)
            if args.broker == "redis":  # empty the queue for the next round
                import redis

                redis.Redis.from_url(url).delete("bench")
            else:
                import pika

                conn = pika.BlockingConnection(pika.ConnectionParameters(
                    "127.0.0.1", st.rabbitmq["info"]["amqp_port"]))
                conn.channel().queue_purge("bench")
                conn.close()
            return backup, t_p, c_p, rss_p, t_r, c_r, rss_r

        prev = round_trip([args.previous], "previous") if args.previous else None
        backup, t_purge, c1, rss_purge, t_restore, c2, rss_restore = round_trip(ctl, "new")
        fill("bench2")
        t_celery, c3, rss_celery = run([str(BIN / "celery"), "-b", url, "purge", "-f", "-Q",
                                        "bench2"], env)
        size = backup.stat().st_size / 2**20
        print(f"machine: {machine()}; lab: {args.broker}; {args.messages} messages; "
              f"backup {size:.1f} MiB")
        print(f"celeryctl purge --backup   {t_purge:6.2f} s  peak RSS {rss_purge:6.1f} MiB  "
              f"(exit {c1})")
        print(f"celeryctl restore          {t_restore:6.2f} s  peak RSS {rss_restore:6.1f} MiB  "
              f"(exit {c2})")
        print(f"celery purge -f (baseline) {t_celery:6.2f} s  peak RSS {rss_celery:6.1f} MiB  "
              f"(exit {c3}; no backup)")
        print(f"celeryctl --version        peak RSS {base_rss:6.1f} MiB (imports alone)")
        ok = c1 == c2 == 0 and t_purge < 30 and t_restore < 30
        if prev is not None:
            _, tp, cp, rp, tr, cr, rr = prev
            print(f"previous build purge       {tp:6.2f} s  peak RSS {rp:6.1f} MiB  (exit {cp})")
            print(f"previous build restore     {tr:6.2f} s  peak RSS {rr:6.1f} MiB  (exit {cr})")
            print(f"ratio new/previous: purge {t_purge / tp:.2f}x, restore "
                  f"{t_restore / tr:.2f}x (target <= 2x)")
            ok = ok and t_purge <= 2 * tp and t_restore <= 2 * tr
        print("targets (each < 30 s, memory bounded):", "met" if ok else "NOT met")
        return 0 if ok else 1
    finally:
        lab.down(d, progress=lambda *_: None)


if __name__ == "__main__":
    sys.exit(main())
