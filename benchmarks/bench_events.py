"""`celeryctl events` at 2,000 task events per second: nothing lost, memory flat.

A lab Redis; synthetic workers publish real Celery events through Celery's own EventDispatcher
(the code path a worker uses: same JSON envelope, same pub/sub channel, task events batched on
`task.multi` as a worker with an event loop does). Each synthetic task sends task-received,
task-started and task-succeeded (a runtime drawn from 1-200 ms), every 10th task fails instead
and every 20th retries first: --rate events per second spread over --workers senders, each
with its own heartbeat. Why synthetic: 2,000 events/s are ~670 real tasks a second, which two
shared cores cannot run *and* measure; what celeryctl does per event (receive, decode,
aggregate) is the same whoever sends it.

For each window length (default 30 s and 60 s) it runs `celeryctl events --for W -f json`,
publishes for W - 4 s once celeryctl listens, and reports: tasks and events published, events
counted (they must be equal: no silent loss), and the peak RSS of the celeryctl process
(`ru_maxrss` from wait4). Usage:

    python benchmarks/bench_events.py [--rate 2000] [--windows 30,60] [--workers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._timing import machine  # noqa: E402
from celeryctl.lab import servers as s  # noqa: E402


def publish(url: str, rate: float, seconds: float, workers: int, out: dict) -> None:
    from celery import Celery

    rnd = random.Random(1)
    conns, disps = [], []
    for i in range(workers):  # an app each: each sender has its own logical clock
        app = Celery(f"bench{i}", broker=url, set_as_current=False)
        conn = app.connection_for_write()
        conns.append(conn)
        disps.append(app.events.Dispatcher(conn, hostname=f"bench{i}@lab", enabled=True,
                                           buffer_group=["task"], buffer_limit=64))
    tasks = events = 0
    started = time.monotonic()
    next_hb = started
    per_tick = rate * 0.01  # events per 10 ms
    budget = 0.0
    while time.monotonic() - started < seconds:
        tick = time.monotonic()
        if tick >= next_hb:
            for d in disps:
                d.send("worker-heartbeat", freq=2.0, active=0, processed=tasks)
            next_hb += 2.0
        budget += per_tick
        while budget >= 3:
            d = disps[tasks % workers]
            tid = str(uuid.uuid4())
            d.send("task-received", uuid=tid, name="bench.work", args="()", kwargs="{}")
            d.send("task-started", uuid=tid)
            n = 3
            if tasks % 20 == 0:
                d.send("task-retried", uuid=tid, exception="ValueError('again')")
                d.send("task-received", uuid=tid, name="bench.work", args="()",
                       kwargs="{}")
                d.send("task-started", uuid=tid)
                n += 3
            if tasks % 10 == 0:
                d.send("task-failed", uuid=tid, exception="RuntimeError('bench failure')")
            else:
                d.send("task-succeeded", uuid=tid, runtime=rnd.uniform(0.001, 0.2))
            tasks += 1
            events += n
            budget -= n
        for d in disps:
            d.flush()
        time.sleep(max(0.0, 0.01 - (time.monotonic() - tick)))
    for d in disps:
        d.flush()
        d.close()
    for c in conns:
        c.release()
    out.update(tasks=tasks, task_events=events, seconds=time.monotonic() - started)


def run_window(url: str, window: float, rate: float, workers: int, state: Path) -> dict:
    env = dict(os.environ, XDG_STATE_HOME=str(state), NO_COLOR="1",
               CELERYCTL_CONFIG="/nonexistent")
    with tempfile.TemporaryFile(mode="w+") as outf:
        return _run(url, window, rate, workers, state, env, outf)


def _run(url, window, rate, workers, state, env, outf) -> dict:
    p = subprocess.Popen([sys.executable, "-m", "celeryctl", "events", "--for", str(window),
                          "-f", "json", "--broker", url], stdout=outf, stderr=subprocess.DEVNULL,
                         env=env)
    sdir = state / "celeryctl" / "events"
    end = time.monotonic() + 30
    while not any(json.loads(f.read_text()).get("phase") == "enabled"
                  for f in (sdir.glob("*.json") if sdir.exists() else [])
                  if f.read_text()):
        if time.monotonic() > end or p.poll() is not None:
            raise SystemExit("celeryctl events did not start listening")
        time.sleep(0.05)
    pub: dict = {}
    t = threading.Thread(target=publish, args=(url, rate, window - 4, workers, pub))
    t.start()
    t.join()
    _pid, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    outf.seek(0)
    doc = json.loads(outf.read())
    work = next(x for x in doc["tasks"] if x["name"] == "bench.work")
    counted = sum(work[k] for k in ("received", "started", "succeeded", "failed", "retried"))
    return {"window_s": window, "published_tasks": pub["tasks"],
            "published_task_events": pub["task_events"],
            "publish_rate": round(pub["task_events"] / pub["seconds"]),
            "counted_task_events": counted, "succeeded": work["succeeded"],
            "failed": work["failed"], "retried": work["retried"],
            "lost": pub["task_events"] - counted,
            "clock_gaps": doc["events"]["clock_gaps"],
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "exit": p.returncode,
            "runtime_p99": work["runtime"]["p99"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--windows", default="30,60")
    ap.add_argument("--workers", type=int, default=4)
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-events-"))
    r = s.start_redis(base, name="redis-bench")
    try:
        url = r.info["url"].rsplit("/", 1)[0] + "/5"
        print(f"# {machine()}; Redis {r.info.get('version', '?')}")
        for w in [float(x) for x in a.windows.split(",")]:
            res = run_window(url, w, a.rate, a.workers, base / f"state-{w:g}")
            print(json.dumps(res), flush=True)
    finally:
        r.stop()


if __name__ == "__main__":
    main()
