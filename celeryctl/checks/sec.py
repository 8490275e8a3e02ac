"""SEC: security of the broker and backend set-up."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from celeryctl.checks import Finding, Limits, Severity, check


def _loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@check("SEC001", "redis-without-password",
       broker="redis")
def redis_without_password(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A Redis broker on a non-loopback host reached without a password.

    ## Why it matters
    Anyone who reaches the port can read every task, publish tasks that workers will run, and
    flush the queues. With pickle accepted it is remote code execution.

    ## How to fix
    Set `requirepass` or ACL users, bind Redis to private interfaces, use `rediss://`.
    """
    url = snap.target.get("broker") or ""
    hosts = [h for h in snap.broker_hosts if not _loopback(h)]
    if hosts and "***" not in url:
        yield Finding(Severity.WARNING, f"broker {url}", "Redis broker reached without a password",
                      evidence={"hosts": hosts}, hint="Enable requirepass or ACLs.")


@check("SEC002", "cleartext-credentials")
def cleartext_credentials(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A password sent over `redis://` or `amqp://` (no TLS) to a host that is not loopback.

    ## Why it matters
    Anyone on the network path can read the password and every task payload.

    ## How to fix
    Use `rediss://` / `amqps://` (broker_use_ssl), or keep the broker on a private network.
    """
    url = snap.target.get("broker") or ""
    scheme = url.split("://", 1)[0]
    hosts = [h for h in snap.broker_hosts if not _loopback(h)]
    if hosts and "***" in url and scheme in ("redis", "amqp", "pyamqp"):
        yield Finding(Severity.WARNING, f"broker {url}",
                      "credentials sent in clear text to a remote broker",
                      evidence={"scheme": scheme, "hosts": hosts},
                      hint="Use rediss:// or amqps://.")


@check("SEC003", "rabbitmq-guest-remote",
       broker="amqp")
def rabbitmq_guest_remote(snap, limits: Limits) -> Iterator[Finding]:
    """
    ## What it finds
    A RabbitMQ broker on a non-loopback host reached as the `guest` user (or with no user,
    which means guest).

    ## Why it matters
    guest/guest is public knowledge; RabbitMQ only allows it from localhost by default, so a
    remote broker that accepts it has had `loopback_users` disabled — anyone can connect.

    ## How to fix
    Create a dedicated user with a strong password and permissions on its vhost only; delete
    guest (`rabbitmqctl delete_user guest`).
    """
    url = snap.target.get("broker") or ""
    remote = [h for h in snap.broker_hosts if not _loopback(h)]
    userinfo = url.split("://", 1)[-1].split("@", 1)[0] if "@" in url else ""
    user = userinfo.split(":", 1)[0] if userinfo else "guest"
    if remote and user == "guest":
        yield Finding(Severity.WARNING, f"broker {url}", "remote RabbitMQ used as guest",
                      evidence={"hosts": remote}, hint="Use a dedicated user; delete guest.",
                      commands=["rabbitmqctl delete_user guest"])
