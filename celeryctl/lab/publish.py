"""Publish demo tasks to the lab (used by `make demo` and drills):
`python -m celeryctl.lab.publish --count 25 [--queue nobody] [--priority 6]`;
`--rate 20 --count 0` publishes 20 a second until stopped (a queue that grows)."""

from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--queue", default="unconsumed")
    p.add_argument("--priority", type=int, default=None)
    p.add_argument("--task", default="add", choices=("add", "sleep", "fail", "flaky"))
    p.add_argument("--seconds", type=float, default=5.0, help="sleep: how long each runs")
    p.add_argument("--retries", type=int, default=3, help="flaky: retries before success")
    p.add_argument("--rate", type=float, default=0.0,
                   help="messages per second (0: as fast as possible); with --count 0, forever")
    args = p.parse_args()
    import itertools
    import time

    from celeryctl.lab import demoapp

    task = getattr(demoapp, args.task)
    targs = {"add": (1, 2), "sleep": (args.seconds,), "fail": (),
             "flaky": (args.retries,)}[args.task]
    start = time.monotonic()
    for i in itertools.count() if args.count == 0 else range(args.count):
        task.apply_async(targs, queue=args.queue,
                         priority=args.priority if args.priority is not None else (i % 10))
        if args.rate > 0:
            time.sleep(max(0.0, start + (i + 1) / args.rate - time.monotonic()))
    print(f"published {args.count} {task.name} to {args.queue}")


if __name__ == "__main__":
    main()
