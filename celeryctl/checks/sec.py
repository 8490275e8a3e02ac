"""SEC: security of the broker and backend set-up.

Two views of "reachable from the network": the URL celeryctl was given names a host that is
not loopback, or the server itself says it listens beyond loopback (Redis `CONFIG GET bind`
and `protected-mode`; RabbitMQ's listeners in `/api/overview`). The second catches a broker
reached over `127.0.0.1` on its own host that every other host can reach too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from celeryctl.checks import Finding, Limits, Severity, Skip, check


def _loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _remote_hosts(snap) -> list[str]:
    """The broker URL's hosts that are not loopback."""
    return [h for h in snap.broker_hosts if not _loopback(h)]


def _with_password(url: str) -> bool:
    return "***" in url  # the target URL is redacted: a password shows as ***


def _redis_exposed(snap) -> dict | None:
    """The broker Redis's non-loopback listen addresses, when clients from other hosts can
    reach it: `bind` beyond loopback, and protected mode off or a password set (protected
    mode refuses non-local clients only while the default user has no password)."""
    cfg = snap.get("redis_config") or {}
    if "bind" not in cfg:
        # CONFIG refused (managed Redis) or not observed: the server's view is unknown, and
        # on loopback it was the only view there was
        raise Skip("the server's listen addresses are unknown: CONFIG GET bind not read "
                   f"({snap.why_not('redis_config')}); the URL names a loopback host")
    addrs = [a.lstrip("-") for a in cfg["bind"].split()] or ["*"]  # empty bind: every address
    outside = [a for a in addrs if a in ("*", "::*") or not _loopback(a)]
    protected = cfg.get("protected-mode", "yes") == "yes"
    if outside and (not protected or _with_password(snap.target.get("broker") or "")):
        return {"bind": cfg["bind"], "protected-mode": cfg.get("protected-mode")}
    return None


def _rabbit_exposed(snap) -> list[dict]:
    """Plain-AMQP listeners (not amqp/ssl) on a non-loopback address."""
    server = snap.get("rabbit_server")
    if server is None:
        raise Skip("the node's listeners are unknown: management API not observed "
                   f"({snap.why_not('rabbit_server')}); the URL names a loopback host")
    return [x for x in getattr(server, "listeners", None) or []
            if x.get("protocol") == "amqp" and not _loopback(str(x.get("ip_address") or ""))]


def _skip_if_listeners_unknown(snap) -> None:
    """RabbitMQ names its listeners in /api/overview only to monitoring and administrator
    users, and only while statistics are on: without them the local case cannot be judged."""
    from celeryctl.checks import Skip, rabbit

    if not snap.observed("rabbit_server"):
        why = f"rabbit_server not observed: {snap.why_not('rabbit_server')}"
    elif not snap.get("rabbit_server").listeners:
        why = rabbit.unread(snap, "listeners") or "/api/overview listed no listener"
    else:
        return
    raise Skip(f"whether the AMQP listener is open beyond loopback is unknown: {why}")


@check("SEC001", "redis-without-password",
       broker="redis")
def redis_without_password(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A Redis broker that other hosts can use without a password: reached without one at a
    non-loopback host, or reached without one while the server listens beyond loopback
    (`bind` on a non-loopback address or `*`, with `protected-mode no`).

    ## Why it matters
    Anyone who reaches the port can read every task, publish tasks that workers will run, and
    flush the queues. With pickle accepted it is remote code execution.

    ## How to fix
    Set `requirepass` or ACL users, bind Redis to private interfaces, use `rediss://`.
    """
    url = snap.target.get("broker") or ""
    if _with_password(url):
        return
    hosts = _remote_hosts(snap)
    if hosts:
        yield Finding(Severity.WARNING, f"broker {url}",
                      "Redis broker on a non-loopback host, reached without a password: any "
                      "host that reaches the port can read and run tasks",
                      evidence={"hosts": hosts}, hint="Enable requirepass or ACLs.",
                      commands=["redis-cli CONFIG SET requirepass '<a long random secret>'"])
        return
    exposed = _redis_exposed(snap)
    if exposed:
        yield Finding(Severity.CRITICAL, f"broker {url}",
                      "Redis needs no password and listens beyond loopback with protected "
                      "mode off: any host that reaches the port can run tasks",
                      evidence=exposed,
                      hint="Set requirepass (or ACL users), or bind 127.0.0.1 and a private "
                           "interface only; keep protected-mode yes.",
                      commands=["redis-cli CONFIG SET requirepass '<a long random secret>'",
                                "redis-cli CONFIG SET protected-mode yes"])


@check("SEC002", "cleartext-credentials")
def cleartext_credentials(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A password sent over `redis://` or `amqp://` (no TLS) to a host that is not loopback, or
    a password-protected broker whose plain-text listener is open beyond loopback (so the
    clients on other hosts send the password in clear).

    ## Why it matters
    Anyone on the network path can read the password and every task payload.

    ## How to fix
    Use `rediss://` / `amqps://` (broker_use_ssl), or keep the broker on a private network.
    """
    url = snap.target.get("broker") or ""
    scheme = url.split("://", 1)[0]
    if not _with_password(url) or scheme not in ("redis", "amqp", "pyamqp"):
        return
    hosts = _remote_hosts(snap)
    if hosts:
        yield Finding(Severity.WARNING, f"broker {url}",
                      "credentials sent in clear text to a remote broker",
                      evidence={"scheme": scheme, "hosts": hosts},
                      hint="Use rediss:// or amqps://.")
        return
    if scheme != "redis":
        _skip_if_listeners_unknown(snap)
    exposed: dict | list | None = _redis_exposed(snap) if scheme == "redis" else \
        _rabbit_exposed(snap)
    if exposed:
        yield Finding(Severity.WARNING, f"broker {url}",
                      "password-protected broker with a plain-text listener beyond loopback: "
                      "clients on other hosts send the password in clear",
                      evidence={"scheme": scheme, "listeners": exposed},
                      hint="Serve TLS (Redis tls-port, RabbitMQ listeners.ssl) and use "
                           "rediss:// / amqps:// from other hosts.")


@check("SEC003", "rabbitmq-guest-remote",
       broker="amqp")
def rabbitmq_guest_remote(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A RabbitMQ broker on a non-loopback host reached as the `guest` user (or with no user,
    which means guest); or a broker reached as guest on loopback whose AMQP listener is open
    beyond loopback (management API's listeners).

    ## Why it matters
    guest/guest is public knowledge; RabbitMQ only allows it from localhost by default, so a
    remote broker that accepts it has had `loopback_users` disabled — anyone can connect. On
    a node listening on every interface, guest is one configuration line (`loopback_users =
    none`) away from that, and celeryctl cannot read that setting through the API.

    ## How to fix
    Create a dedicated user with a strong password and permissions on its vhost only; delete
    guest (`rabbitmqctl delete_user guest`).
    """
    url = snap.target.get("broker") or ""
    remote = _remote_hosts(snap)
    userinfo = url.split("://", 1)[-1].split("@", 1)[0] if "@" in url else ""
    user = userinfo.split(":", 1)[0] if userinfo else "guest"
    if user != "guest":
        return
    if remote:
        yield Finding(Severity.WARNING, f"broker {url}",
                      "RabbitMQ on a non-loopback host accepts the guest user: anyone who "
                      "knows guest/guest can connect",
                      evidence={"hosts": remote}, hint="Use a dedicated user; delete guest.",
                      commands=["rabbitmqctl delete_user guest"])
        return
    _skip_if_listeners_unknown(snap)
    exposed = _rabbit_exposed(snap)
    if exposed:  # listeners come from the API, which guest (or no user) just logged in to
        yield Finding(Severity.WARNING, f"broker {url}",
                      "the guest user works on a node whose AMQP listener is open beyond "
                      "loopback: other hosts are kept out only while loopback_users keeps its "
                      "default",
                      evidence={"user": "guest", "listeners": exposed},
                      hint="Use a dedicated user; delete guest (check `loopback_users` in "
                           "rabbitmq.conf).",
                      commands=["rabbitmqctl delete_user guest"])
