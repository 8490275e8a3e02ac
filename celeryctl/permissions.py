"""Least privilege: what each celeryctl command needs from Redis and RabbitMQ (pure data).

One source for docs/permissions.md (`python -m celeryctl.permissions docs/permissions.md`; a
unit test fails when the page is stale), for the accounts the lab creates
(`celeryctl lab up --accounts`) and for the tests that run every read command with them.

Three accounts cover every command:

- ``monitor`` — read-only. Sees queues, in-flight messages, connections and the server;
  cannot ask the workers anything (remote control writes: it publishes a request and reads
  the replies from a reply queue it creates).
- ``inspect`` — monitor plus remote control (the pidbox exchange and a private reply queue,
  nothing else): `workers`, and doctor's worker checks. Cannot touch a task queue.
- ``operator`` — inspect plus the guarded actions: `purge`, `restore`, `control`,
  `connections kill`.

The Redis rules are for celeryctl's own kombu (5.7: its pidbox reply bindings expire, which
takes EVALSHA, ZADD and TIME); the workers' Celery version does not matter. Key and channel
patterns start with `*` so that a `global_keyprefix` is covered.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- Redis ACL ---------------------------------------------------------------------------

REDIS_MONITOR = (
    "+ping", "+select", "+info", "+scan", "+type", "+smembers", "+llen", "+lrange", "+hlen",
    "+hscan", "+zrange", "+zcard", "+zscore", "+ttl", "+pttl", "+client|list", "+client|id",
    "+config|get", "+hget", "+hgetall", "%R~*",
)
# remote control through kombu: SADD the reply queue's binding (EVALSHA of a script that
# SADDs, ZADDs a deadline and reads TIME), PUBLISH the request on the pidbox channel, BRPOP
# the replies, then SREM/DEL the reply queue; kombu's pipelines are transactions (MULTI/EXEC)
REDIS_REMOTE_CONTROL = (
    "+publish", "+sadd", "+srem", "+del", "+exists", "+brpop", "+multi", "+exec", "+eval",
    "+evalsha", "+script|load", "+script|exists", "+zadd", "+zrem", "+zrangebyscore", "+time",
    "+pexpire", "&*celery.pidbox", "~*_kombu.binding.reply.celery.pidbox",
    "~*_kombu.binding_permanent.reply.celery.pidbox", "~*_kombu.binding_deadlines",
    "~*.reply.celery.pidbox*",
)
# `events`: SUBSCRIBE to the event channels (`/{db}.celeryev/<type>`; nothing is written), and
# to tell another monitor: PUBSUB NUMSUB (CLIENT LIST is the monitor's already)
REDIS_EVENTS = ("+subscribe", "+unsubscribe", "+pubsub|numsub", "&*celeryev*")
# purge (EVAL of scripts that RENAME the queue lists aside and record it in a hash and a set,
# LRANGE to back them up, then DEL or put back), restore (LPUSH/RPUSH in MULTI/EXEC with its
# progress in a hash), connections kill (CLIENT KILL)
REDIS_OPERATOR = ("+rename", "+lpush", "+rpush", "+unlink", "+ltrim", "+hset", "+expire",
                  "+client|kill", "~*")

# --- RabbitMQ ----------------------------------------------------------------------------

# inspect: remote control (the pidbox reply queue), and `events`' own event queue
# (celeryev.celeryctl.<hex>: declared, bound to the celeryev exchange — read on it — consumed)
RC_CONFIGURE = r"^((.*\.)?reply\.celery\.pidbox|celeryev\.celeryctl\.[0-9a-f]+)$"
# the operator also declares restore's progress queues (celeryctl.restore.<id>)
OP_CONFIGURE = (r"^((.*\.)?reply\.celery\.pidbox|celeryctl\.restore\.[0-9a-f]+|"
                r"celeryev\.celeryctl\.[0-9a-f]+)$")
RC_WRITE = r"^(celery\.pidbox|.*\.reply\.celery\.pidbox|celeryev\.celeryctl\.[0-9a-f]+)$"
RC_READ = r"^((.*\.)?reply\.celery\.pidbox|celeryev|celeryev\.celeryctl\.[0-9a-f]+)$"
OP_WRITE = (r"^(celery\.pidbox|amq\.default|.*\.reply\.celery\.pidbox|"
            r"celeryev\.celeryctl\.[0-9a-f]+)$")
NOTHING = "^$"


@dataclass(frozen=True)
class Account:
    tier: str  # monitor | inspect | operator
    user: str
    summary: str
    redis_rules: tuple[str, ...]
    rabbit_tags: tuple[str, ...]
    rabbit_perms: tuple[str, str, str]  # configure, write, read

    def redis_setuser(self, password: str = "PASSWORD") -> list[str]:
        """`ACL SETUSER` arguments: a clean slate, then exactly these rules."""
        return ["ACL", "SETUSER", self.user, "reset", "on", f">{password}", "-@all",
                *self.redis_rules]

    def redis_cli(self) -> str:
        return "redis-cli " + " ".join(_shell(a) for a in self.redis_setuser())

    def rabbitmqctl(self, vhost: str = "/") -> list[str]:
        c, w, r = self.rabbit_perms
        return [f"rabbitmqctl add_user {self.user} 'PASSWORD'",
                f"rabbitmqctl set_user_tags {self.user} {' '.join(self.rabbit_tags)}",
                f"rabbitmqctl set_permissions -p {vhost} {self.user} '{c}' '{w}' '{r}'"]


def _shell(arg: str) -> str:
    return arg if all(ch.isalnum() or ch in "+-@_|/.=:" for ch in arg) else f"'{arg}'"


ACCOUNTS: dict[str, Account] = {a.tier: a for a in (
    Account("monitor", "celeryctl-monitor",
            "read-only: queues, in-flight messages, connections, the server; no worker "
            "replies (remote control writes)",
            REDIS_MONITOR, ("monitoring",), (NOTHING, NOTHING, NOTHING)),
    Account("inspect", "celeryctl-inspect",
            "monitor plus remote control (workers, doctor's worker checks); no task queue "
            "can be changed",
            REDIS_MONITOR + REDIS_REMOTE_CONTROL + REDIS_EVENTS, ("monitoring",),
            (RC_CONFIGURE, RC_WRITE, RC_READ)),
    Account("operator", "celeryctl-operator",
            "inspect plus the guarded actions: purge, restore, control, connections kill",
            REDIS_MONITOR + REDIS_REMOTE_CONTROL + REDIS_EVENTS + REDIS_OPERATOR,
            ("monitoring", "administrator"), (OP_CONFIGURE, OP_WRITE, ".*")),
)}

# What each command needs: (minimal account, what it still shows with less).
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("queues", "monitor",
     "inspect adds which worker consumes each queue (Redis: consumer counts come only from "
     "the workers; RabbitMQ: from the broker, so monitor has them)"),
    ("queues watch", "monitor", "as queues"),
    ("connections", "monitor",
     "inspect adds the worker each connection belongs to; RabbitMQ: a user with the "
     "management tag only (not monitoring) sees only its own connections — refused, said so"),
    ("workers, workers inspect", "inspect",
     "monitor: refused — `permission denied: remote control refused`, naming the rules"),
    ("doctor, snapshot", "inspect",
     "monitor: every broker and queue check runs; the worker checks are skipped with the "
     "reason, and the verdict is INCOMPLETE (exit 3) unless something is wrong"),
    ("tasks", "inspect",
     "monitor: refused (remote control), said so, exit 3 — never \"no tasks\". On Redis it "
     "also reads kombu's unacked entries (HLEN, HSCAN, ZSCORE of unacked/unacked_index) for "
     "how long each task has been held; refused, those times are unknown (a note says why)"),
    ("purge, restore", "operator",
     "RabbitMQ: read on the queue (purge), write on amq.default (restore)"),
    ("control", "inspect", "the remote-control rights are all it needs"),
    ("events", "inspect",
     "turning task events on and off is remote control (enable_events/disable_events, as "
     "`control enable-events`): a state change, but one it undoes, and the same right "
     "`control` needs — so inspect, not operator. Listening: Redis SUBSCRIBE on the "
     "`*celeryev*` channels (nothing written); RabbitMQ its own queue "
     "`celeryev.celeryctl.<hex>` (configure, write, read) and read on the `celeryev` "
     "exchange. Monitor: refused (remote control), nothing changed, exit 3"),
    ("task ID...", "inspect",
     "monitor: the queues, in-flight messages and result backend are read; the workers are "
     "not asked (said in the verdict of a task not found elsewhere, exit 3). RabbitMQ: "
     "queued messages only with --peek (read on the queue through the management API)"),
    ("connections kill", "operator",
     "Redis: +client|kill; RabbitMQ: the administrator tag (only administrators may close "
     "other users' connections through the management API)"),
)


def render_page() -> str:
    """docs/permissions.md."""
    lines = [
        "# Least privilege: accounts for celeryctl",
        "",
        "<!-- generated by `python -m celeryctl.permissions docs/permissions.md` from "
        "celeryctl/permissions.py; a unit test fails when it is stale -->",
        "",
        "celeryctl never needs an administrator account to diagnose a cluster. Three accounts "
        "cover every command; `celeryctl lab up --accounts` creates exactly these in the lab, "
        "and the test suite runs every read command and doctor with them.",
        "",
        "| account | what it may do |",
        "|---|---|",
    ]
    lines += [f"| `{a.user}` ({a.tier}) | {a.summary} |" for a in ACCOUNTS.values()]
    lines += ["", "## What each command needs", "", "| command | account | with less |",
              "|---|---|---|"]
    lines += [f"| `{c}` | {t} | {w} |" for c, t, w in COMMANDS]
    lines += [
        "",
        "A command that lacks a privilege says so — `permission denied: ... refused; needs "
        "...` — and names the operation and the rule that allows it; it never reports a "
        "refusal as \"unreachable\", nor an empty list for what it could not read. "
        "`doctor` lists each source as observed, permission denied, authentication failed, "
        "unreachable or not configured.",
        "",
        "## Redis (ACL, Redis >= 7.0)",
        "",
        "Each line starts from a clean slate (`reset`, `-@all`) and grants exactly what the "
        "account needs. `%R~*` is read-only access to every key (Redis 7.0+; on Redis 6 use "
        "`~*` and accept that the monitor account could write). Key and channel patterns start "
        "with `*` so a `global_keyprefix` is covered. Replace PASSWORD.",
        "",
    ]
    for a in ACCOUNTS.values():
        lines += [f"### {a.user}", "", a.summary + ".", "", "```sh", a.redis_cli(), "```", ""]
    lines += [
        "Broker URL: `redis://celeryctl-monitor:PASSWORD@HOST:6379/0`.",
        "",
        "**Managed Redis** (ElastiCache, Memorystore, Azure Cache, Redis Cloud) renames or "
        "disables `CONFIG` and sometimes `CLIENT`, `INFO` or `SCAN`. Each read stands alone: "
        "a refused one is reported (`not read: CONFIG GET: permission denied ... renamed or "
        "disabled`) and costs only the checks that need it, which are skipped with the reason. "
        "Without `CONFIG`, the eviction policy and persistence are read from `INFO memory` and "
        "`INFO persistence`. Without `SCAN`, queues are those named by the workers, `-A` and "
        "`-Q`, and the output says discovery was partial.",
        "",
        "## RabbitMQ",
        "",
        "Tags decide what the management API shows: `monitoring` sees every node, queue and "
        "connection; `management` sees only its own connections and not `/api/nodes` "
        "(celeryctl says so rather than listing nothing). Vhost permissions (configure, write, "
        "read regular expressions) decide what the AMQP connection may do. Passive declares "
        "(the fallback depth read when the API is down) need no permission, only access to the "
        "vhost — `'^$'` grants access and nothing else. With a `control_exchange` other than "
        "`celery`, replace `celery` in the patterns. Replace PASSWORD and the vhost.",
        "",
    ]
    for a in ACCOUNTS.values():
        lines += [f"### {a.user}", "", a.summary + ".", "", "```sh", *a.rabbitmqctl(), "```",
                  ""]
    lines += [
        "Broker URL: `amqp://celeryctl-monitor:PASSWORD@HOST:5672/VHOST`; management API: "
        "`--rabbitmq-api http://celeryctl-monitor:PASSWORD@HOST:15672` (the same user, "
        "derived automatically when not given).",
        "",
        "The management API answers `401 Login failed` for a wrong password, `401 Not "
        "management user` for a user without a tag, `401 Not monitor user` for a "
        "management-only user on `/api/nodes`, and `401 User not authorised to access virtual "
        "host` without vhost permissions: celeryctl reports the first as authentication "
        "failed and the others as permission denied, naming the fix.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import sys
    from pathlib import Path

    args = sys.argv[1:] if argv is None else argv
    usage = "usage: python -m celeryctl.permissions [FILE]  (docs/permissions.md; stdout without FILE)"
    if args[:1] in (["-h"], ["--help"]):
        print(usage)
        return 0
    if len(args) > 1 or (args and args[0].startswith("-")):
        print(usage, file=sys.stderr)
        return 64
    text = render_page()
    if args:
        Path(args[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
