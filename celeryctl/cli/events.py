"""`celeryctl events`: a bounded window of task telemetry that leaves the cluster as it found it.

finish dead runs (state files) -> ping -> listen (collect/events) -> other monitors? -> state
file -> enable_events where off (actions/events) -> window (aggregation: events/agg; live
screen: render/events) -> disable_events exactly there (also on Ctrl-C, SIGTERM, SIGHUP and
errors) -> state file removed -> JSON / table / Prometheus -> audit line.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import typer

from celeryctl.cli import options as o
from celeryctl.cli.act import AuditLog
from celeryctl.status import ExitStatus

MAX_WINDOW = 3600.0

HELP = """Task telemetry for a bounded window: counts, failure and retry ratios, exceptions,
runtime and wait percentiles, unfinished tasks, per-worker rates, heartbeat lag and clock drift.

Before listening, task events are enabled only on the workers that have them off (Celery's
enable_events answers "enabled" or "already enabled"); when the window ends — or on Ctrl-C,
SIGTERM, SIGHUP or an error — they are disabled on exactly those workers again. A state file
(~/.local/state/celeryctl/events/PID.json) records what was enabled; if celeryctl is killed
with -9, the next `celeryctl events` on the same broker (or `events --restore`) finishes the
job. Another event monitor (Flower, celery events) is warned about: Flower re-enables events.

Exit status: 0 ok; 1 the window saw failures, or another monitor or a problem worth a look
(see notes); 2 task events could not be turned back off on some worker (the state file is
kept: run `celeryctl events --restore`); 3 the broker or the workers could not be reached
(nothing changed); 64 bad option; 130 interrupted (after restoring).
"""


def register(app: typer.Typer) -> None:
    app.command("events", help=HELP)(events)


def events(
    ctx: typer.Context,
    seconds: float = typer.Option(30.0, "--for", metavar="SECONDS",
                                  help=f"Length of the window (up to {MAX_WINDOW:g})."),
    tasks: list[str] = typer.Option(None, "--task", metavar="PATTERN",
                                    help="Only task names matching this glob (repeatable)."),
    workers: list[str] = typer.Option(None, "--worker", "-w", metavar="NODE",
                                      help="Only this worker (repeatable): events are "
                                      "enabled and counted there only."),
    fmt: str = typer.Option("table", "--format", "-f", metavar="table|json|prometheus",
                            help="table (a live screen on a terminal, tables at the end), "
                            "json, or prometheus (OpenMetrics text).",
                            autocompletion=o.complete_choices("table", "json", "prometheus")),
    include_args: bool = typer.Option(False, "--include-args",
                                      help="Show the arguments of a failed task next to its "
                                      "exception (off: arguments are never read)."),
    restore_only: bool = typer.Option(False, "--restore",
                                      help="Only finish the job of an earlier run that died "
                                      "(killed with -9): turn its task events back off."),
    audit_log: str | None = AuditLog,
    broker: o.Broker = None, rabbitmq_api: o.RabbitAPI = None,
    rabbitmq_api_ca: o.RabbitAPICA = None, vhost: o.Vhost = None,
    timeout: o.Timeout = None, app_: o.App = None, profile: o.Profile = None,
    wide: o.Wide = False,
) -> None:
    from celeryctl.cli.act import action_ctx
    from celeryctl.status import UsageError

    fmt = (fmt or "").lower()
    if fmt not in ("table", "json", "prometheus"):
        raise UsageError(f"--format must be table, json or prometheus, got {fmt!r}")
    if not (seconds > 0 and seconds <= MAX_WINDOW):
        raise UsageError(f"--for must be more than 0 and at most {MAX_WINDOW:g} seconds, "
                         f"got {seconds:g}")
    c = action_ctx(ctx, "json" if fmt != "table" else "table", broker, rabbitmq_api, vhost,
                   timeout, app_, profile, rabbitmq_api_ca)
    run = _Run(c, seconds, tuple(tasks or ()), tuple(workers or ()), fmt, include_args,
               audit_log, wide)
    raise typer.Exit(int(run.restore_only() if restore_only else run.window()))


class _Run:
    def __init__(self, c, seconds, tasks, workers, fmt, include_args, audit_log, wide):
        self.c, self.t = c, c.target
        self.seconds, self.tasks, self.workers = seconds, tasks, workers
        self.fmt, self.include_args, self.audit_log, self.wide = fmt, include_args, audit_log, \
            wide
        self.vhost = self.t.effective_vhost if self.t.broker_kind == "amqp" else None
        self.notes: list[str] = []
        self.sources: list[dict[str, Any]] = []
        self.failure: str | None = None  # why no window ran (collect() returned no summary)
        self.restart_problems: dict[str, str] = {}
        self.enabled_by_live: dict[str, int] = {}

    def say(self, text: str, style: str = "yellow") -> None:
        from rich.text import Text

        from celeryctl.render.text import safe

        self.c.err.print(Text(safe(text), style=style), highlight=False)

    # --- earlier runs ----------------------------------------------------------------

    def live_runs(self):
        """Other live `celeryctl events` runs on this broker (this host): (states, node ->
        pid of a live run listening to it)."""
        from celeryctl.actions.events import classify_states, read_states

        _dead, live, _notes = classify_states(read_states(), self.t.broker_redacted, self.vhost)
        relied: dict[str, int] = {}
        for st in live:
            for n in st.candidates:
                relied.setdefault(n, st.pid)
        return live, relied

    def finish_dead_runs(self, quiet_live: bool = False) -> tuple[list[dict[str, Any]], bool]:
        """Restore what runs that ended or died left enabled — except on a worker a live run
        on this broker still listens to (the last live run turns it off). (rows, all ok)."""
        from celeryctl.actions.events import classify_states, read_states, remove_state, restore

        dead, live, notes = classify_states(read_states(), self.t.broker_redacted, self.vhost)
        relied: dict[str, int] = {}
        for st in live:
            for n in st.candidates:
                relied.setdefault(n, st.pid)
        for n in notes:
            self.notes.append(n)
            self.say("note: " + n)
        for st in live if not quiet_live else ():
            text = (f"another celeryctl events (pid {st.pid}, started {st.started}) enabled "
                    f"task events on {', '.join(st.enabled) or 'no worker'} and listens to "
                    f"{', '.join(st.candidates) or 'no worker'}; the last of the runs to end "
                    "turns them off")
            self.notes.append(text)
            self.say("warning: " + text)
        rows, ok = [], True
        for st in dead:
            if st.phase != "enabled":
                text = (f"a celeryctl events run (pid {st.pid}, started {st.started}) died "
                        f"while enabling task events on {', '.join(st.candidates)}: which of "
                        "them it turned on is unknown, so none is turned off (check with the "
                        "workers' owners; `celeryctl control disable-events -d NODE` if they "
                        "should be off)")
                self.notes.append(text)
                self.say("warning: " + text)
                remove_state(st)
                rows.append({"pid": st.pid, "started": st.started, "workers": st.candidates,
                             "restored": [], "gone": [], "kept": [],
                             "problems": {"*": "died while enabling"}})
                ok = False
                continue
            before = list(st.enabled)
            r = restore(self.t, st, keep={n: p for n, p in relied.items() if n in st.enabled})
            rows.append({"pid": st.pid, "started": st.started, "workers": before,
                         "restored": r.done, "gone": sorted(r.gone), "kept": sorted(r.kept),
                         "problems": r.problems})
            who = f"celeryctl events pid {st.pid}, started {st.started}, no longer running"
            if r.problems:
                ok = False
                self.say(f"error: task events left on by {who} could not be turned off on "
                         f"{', '.join(r.problems)}: "
                         + "; ".join(f"{k}: {v}" for k, v in r.problems.items())
                         + " (the state file is kept: run `celeryctl events --restore`)", "red")
            if r.done:
                self.say(f"restored: task events turned off again on {', '.join(r.done)} "
                         f"(left on by {who})", "green")
            for n, why in r.gone.items():
                text = f"{n}: nothing to restore ({why}); dropped from the state file of {who}"
                self.notes.append(text)
                self.say("note: " + text)
            for n, pid in r.kept.items():
                text = (f"{n}: task events left on by {who} stay on: celeryctl events pid {pid} "
                        "is listening to it now (the last run to end turns them off)")
                self.notes.append(text)
                self.say("note: " + text)
            self._audit("events --restore", "ok" if not r.problems else "failed", r.done,
                        {"restored": len(r.done), "failed": len(r.problems),
                         "gone": len(r.gone), "kept": len(r.kept)}, pid=st.pid)
        return rows, ok

    def other_broker_leftovers(self) -> list[str]:
        """State files of this host for other brokers (what --restore did not touch)."""
        from celeryctl.actions.events import read_states, same_broker

        here = __import__("socket").gethostname()
        out = []
        for st in read_states():
            if st.host == here and not same_broker(st, self.t.broker_redacted, self.vhost) \
                    and st.enabled:
                out.append(f"{st.broker}{' vhost ' + st.vhost if st.vhost else ''}: pid "
                           f"{st.pid} enabled {', '.join(st.enabled)} ({st.path})")
        return out

    def restore_only(self) -> ExitStatus:
        from celeryctl.render.jsonout import dumps

        rows, ok = self.finish_dead_runs()
        others = self.other_broker_leftovers() if not rows else []
        if self.fmt == "table":
            if not rows:
                self.c.out.print("nothing to restore: no earlier celeryctl events run left task "
                                 "events on for this broker", highlight=False)
            for line in others:
                self.say("note: state file of another broker (not touched): " + line)
        else:
            sys.stdout.write(dumps({"schema": 1, "restored": rows, "notes": self.notes,
                                    "other_brokers": others}, indent=2) + "\n")
        return ExitStatus.OK if ok else ExitStatus.CRITICAL

    # --- the window ------------------------------------------------------------------

    def window(self) -> ExitStatus:
        summary, status = self.collect()
        if summary is not None:
            self._output(summary)
        return status

    def collect(self) -> tuple[dict[str, Any] | None, ExitStatus]:
        """Run the window (enable where off, listen, restore exactly there): (the summary, or
        None when nothing was listened to; the exit status of `celeryctl events`). Also what
        `doctor --events` runs (cli/doctor.py), so both enable and restore the same way."""
        import difflib

        from celeryctl.actions.events import (
            enable_outcome,
            new_state,
            restore,
            restore_deadline,
            send,
            write_state,
        )
        from celeryctl.actions.interrupt import Deferred
        from celeryctl.collect import gather
        from celeryctl.collect.events import Listener, other_monitors
        from celeryctl.events.agg import Aggregator
        from celeryctl.status import UsageError

        _rows, restored_ok = self.finish_dead_runs()
        g = gather(self.t, workers=("ping",))
        self.sources += [s.to_dict() for s in g.sources]
        if not g.workers.ok:
            self.c.footer(g)
            self.say("nothing changed: the workers could not be asked", "red")
            self.failure = f"the workers could not be asked: {g.workers.error}"
            return None, ExitStatus.UNKNOWN
        answered = sorted({n.name for n in g.workers.value.nodes})
        if self.workers:
            unknown = [w for w in self.workers if w not in answered]
            if unknown:
                close = difflib.get_close_matches(unknown[0], answered, n=3, cutoff=0.5)
                raise UsageError(f"no worker named {unknown[0]!r} answered"
                                 + (f"; did you mean {', '.join(close)}?" if close else
                                    f"; answering: {', '.join(answered) or 'none'}"))
            candidates = sorted(set(self.workers))
        else:
            candidates = answered
        if not candidates:
            self.notes.append("no worker answered ping: only events of workers that already "
                              "send them can be heard")

        agg = Aggregator(window_start=time.time(), task_patterns=self.tasks,
                         workers=self.workers, include_args=self.include_args)
        agg.expect_heartbeats = bool(candidates)
        lock = threading.Lock()
        # worker lifecycle heard in this run: node -> ("online"|"offline", local time)
        self.lifecycle: dict[str, tuple[str, float]] = {}
        self.restarts: list[tuple[str, float]] = []

        def on_event(ev, at) -> None:
            with lock:
                if isinstance(ev, dict) and ev.get("type") in ("worker-online",
                                                               "worker-offline"):
                    host = str(ev.get("hostname") or "?")
                    kind = str(ev["type"])[7:]
                    if kind == "online":
                        self.restarts.append((host, at))
                    self.lifecycle[host] = (kind, at)
                agg.feed(ev, at)

        def on_bad() -> None:
            with lock:
                agg.note_undecodable()

        listener = Listener(self.t, on_event, on_bad)
        err = listener.start(self.t.timeout)
        if err:
            self.sources.append({"name": "events", "ok": False, "error": err})
            self.say(f"error: could not listen to events: {err}. Nothing changed.", "red")
            self.failure = f"could not listen to events: {err}"
            listener.close()
            return None, ExitStatus.UNKNOWN
        self.sources.append({"name": "events", "ok": True, "error": None,
                             "detail": (f"queue {listener.queue_name}" if listener.queue_name
                                        else "Redis pub/sub (SUBSCRIBE)")})
        found, unknown_why = other_monitors(self.t, len(answered), listener.queue_name,
                                            listening=True)
        for f in found:
            text = (f"another event monitor is attached: {f}. Flower re-enables events on its "
                    "own, so workers may send task events again after this window")
            self.notes.append(text)
            self.say("warning: " + text)
        if unknown_why:
            self.notes.append(unknown_why)

        live, _relied = self.live_runs()
        # workers another live run enabled: "already enabled" to us, yet off before it
        self.enabled_by_live = {n: st_.pid for st_ in live for n in st_.enabled}
        st = new_state(self.t.broker_redacted, self.vhost, candidates)
        mine: list[str] = []
        already: list[str] = []
        problems: dict[str, str] = {}
        restored: list[str] = []
        rproblems: dict[str, str] = {}
        gone: dict[str, str] = {}
        kept: dict[str, int] = {}
        t0 = time.monotonic()
        interrupted = None
        stop = Deferred(": turning task events back off first",
                        again="kill -9 would leave task events on where this run turned them "
                        "on (the state file stays: `celeryctl events --restore`, "
                        "docs/commands.md#events)")
        with stop:
            try:
                try:
                    write_state(st)
                except OSError as exc:
                    self.say(f"error: cannot write the state file ({exc.strerror or exc}): "
                             "nothing enabled", "red")
                    self.failure = f"cannot write the state file ({exc.strerror or exc})"
                    listener.close()
                    return None, ExitStatus.CRITICAL
                replies, send_err = send(self.t, "enable_events", candidates,
                                         restore_deadline(self.t))
                if candidates:  # a broadcast: every worker's clock steps once (not a loss)
                    with lock:
                        agg.note_control_sent(time.time())
                if send_err:
                    problems = {n: f"could not send enable_events: {send_err}"
                                for n in candidates}
                mine, already, more = enable_outcome(replies, candidates)
                if not send_err:
                    problems = more
                st.enabled, st.phase = mine, "enabled"
                write_state(st)
                self._audit("events (enable)", "ok", mine,
                            {"enabled": len(mine), "already": len(already)})
                for n, p in problems.items():
                    self.notes.append(f"{n}: {p}")
                    self.say(f"warning: {n}: {p}")
                agg.window_start = time.time()
                self._wait(agg, lock, stop, listener, st, mine)
            finally:
                listen_end = time.time()
                listener.stop()
                t0 = time.monotonic()
                if st.phase == "enabled" or mine:
                    _live, relied = self.live_runs()
                    offline = {n for n, (k, _at) in self.lifecycle.items() if k == "offline"}
                    r = restore(self.t, st, keep={n: p for n, p in relied.items()
                                                  if n in st.enabled}, offline=offline)
                    restored, rproblems, gone, kept = r.done, r.problems, r.gone, r.kept
                else:
                    from celeryctl.actions.events import remove_state

                    remove_state(st)
                listener.close()
                interrupted = stop.signal
        # runs that ended while this one listened handed their workers over: the last live
        # run turns them off
        _rows, handed_ok = self.finish_dead_runs(quiet_live=True)
        restore_seconds = time.monotonic() - t0
        with lock:
            summary = agg.summary(listen_end, histograms=self.fmt == "prometheus")
        summary["restore_seconds"] = round(restore_seconds, 3)
        if listener.errors:
            self.notes.append(f"the event connection was lost ({listener.errors[-1]}); "
                              f"{listener.disconnected_seconds:.1f} s without events")
        for n, why in gone.items():
            self.notes.append(f"{n}: nothing to restore ({why})")
        for n, pid in kept.items():
            self.notes.append(f"{n}: task events left on: celeryctl events pid {pid} is still "
                              "listening to it (the last run to end turns them off)")
        for n, p in rproblems.items():
            self.notes.append(f"{n}: {p} — run `celeryctl events --restore`")
        self._merge_workers(summary, candidates, mine, already, restored, rproblems)
        for w in summary["workers"]:
            pid = self.enabled_by_live.get(w["name"])
            if pid is not None and w["name"] in already:
                w["events_were_enabled"] = False
                w["enabled_by"] = f"celeryctl events pid {pid}"
            w["gone"] = w["name"] in gone
            if w["name"] in kept:
                w["restored"] = False
                w["left_on_for"] = f"celeryctl events pid {kept[w['name']]}"
        summary["notes"] = self.notes + summary["notes"]
        summary["sources"] = self.sources
        summary["target"] = self.t.summary()
        summary["interrupted"] = interrupted
        self._audit("events (restore)", "ok" if not rproblems else "failed", restored,
                    {"restored": len(restored), "failed": len(rproblems)},
                    window_seconds=summary["window_seconds"])
        if rproblems:
            self.say("error: task events could not be turned back off on "
                     f"{', '.join(rproblems)}: run `celeryctl events --restore`", "red")
            return summary, ExitStatus.CRITICAL
        if interrupted:
            return summary, ExitStatus.INTERRUPTED
        if not (restored_ok and handed_ok):
            return summary, ExitStatus.CRITICAL
        o = summary["overall"]
        if (found or problems or o["failed"] or summary["events"]["clock_gaps"]
                or self.restart_problems or summary["events"].get("silent_seconds")):
            return summary, ExitStatus.WARNING
        return summary, ExitStatus.OK

    def _wait(self, agg, lock, stop, listener, st=None, mine=None) -> None:
        end = time.monotonic() + self.seconds
        live = self.fmt == "table" and sys.stdout.isatty()
        self.restart_problems: dict[str, str] = {}
        if not live:
            while not stop.requested and time.monotonic() < end:
                time.sleep(min(0.2, max(0.0, end - time.monotonic())))
                self._restarted(agg, lock, st, mine, end)
            return
        from rich.live import Live

        from celeryctl.render.events import render_screen

        header = {"broker": self.t.broker_redacted, "window": self.seconds,
                  "notes": self.notes[-3:]}

        def screen():
            with lock:
                s = agg.summary(time.time())
            size = self.c.out.size
            return render_screen(s, header, size.height, size.width, wide=self.wide)

        with Live(console=self.c.out, screen=True, auto_refresh=False,
                  transient=True) as lv:
            while not stop.requested and time.monotonic() < end:
                lv.update(screen(), refresh=True)
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
                self._restarted(agg, lock, st, mine, end)

    def _restarted(self, agg, lock, st, mine, end) -> None:
        """A worker this run enabled came back (worker-online: restarted, task events off
        again unless -E): send enable_events again, still owned by this run. Bounded by the
        window's end."""
        from celeryctl.actions.events import ENABLED, _text, send

        with lock:
            todo, self.restarts[:] = list(self.restarts), []
        if not todo or st is None or mine is None:
            return
        nodes = sorted({n for n, _at in todo if n in mine})
        if not nodes:
            return
        stamp = {n: time.strftime("%H:%M:%S", time.localtime(at)) for n, at in todo}
        replies, err = send(self.t, "enable_events", nodes,
                            min(end, time.monotonic() + 2 * float(self.t.timeout or 2.0)))
        with lock:
            agg.note_control_sent(time.time())
        for n in nodes:
            got = replies.get(n) or []
            text = _text(got[0]) if got else None
            if text in (ENABLED, "task events already enabled"):
                self.restart_problems.pop(n, None)
                note = (f"{n} restarted at {stamp[n]} (worker-online) with task events off: "
                        "turned them on again; its tasks between the restart and then are "
                        "not counted")
            else:
                why = err or (f"enable_events: {text}" if text else "no reply to enable_events")
                self.restart_problems[n] = why
                note = (f"{n} restarted at {stamp[n]} (worker-online) with task events off and "
                        f"they could not be turned on again ({why}): its tasks since "
                        f"{stamp[n]} are not counted")
            self.notes.append(note)
            self.say("warning: " + note)
            if n not in st.enabled:  # gone from the file at its offline: own it again
                st.enabled.append(n)
        try:
            from celeryctl.actions.events import write_state

            write_state(st)
        except OSError:
            pass

    def _merge_workers(self, summary, candidates, mine, already, restored, rproblems) -> None:
        rows = {w["name"]: w for w in summary["workers"]}
        for n in candidates:
            if n not in rows:
                rows[n] = {"name": n, "events": 0, "task_events": 0, "tasks_per_second": None,
                           "heartbeats": 0, "heartbeat_freq_seconds": None,
                           "heartbeat_age_seconds": None, "heartbeat_late": None,
                           "offline": None, "clock_drift_seconds": None,
                           "event_delay_max_seconds": None, "utcoffset_hours": None,
                           "clock_gaps": 0, "out_of_order": 0, "duplicates": 0}
        for n, w in rows.items():
            w["events_were_enabled"] = (False if n in mine else True if n in already
                                        else None)
            w["enabled_by_celeryctl"] = n in mine
            w["restored"] = (True if n in restored else False if n in rproblems
                             else None)
        summary["workers"] = [rows[n] for n in sorted(rows)]

    def _output(self, summary: dict[str, Any]) -> None:
        from celeryctl.render.jsonout import dumps

        if self.fmt == "json":
            sys.stdout.write(dumps(summary, indent=2) + "\n")
        elif self.fmt == "prometheus":
            from celeryctl.render.events import prometheus

            sys.stdout.write(prometheus(summary))
        else:
            from celeryctl.render.events import render_final

            render_final(self.c.out, self.c.err, summary, wide=self.wide)

    def _audit(self, command: str, result: str, subjects: list[str], counts: dict[str, Any],
               **extra: Any) -> None:
        from celeryctl.cli.act import _audit

        _audit(self.c, self.audit_log, command, result, subjects, counts, **extra)
