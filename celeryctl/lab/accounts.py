"""The least-privilege accounts of docs/permissions.md, created for real in a lab: Redis ACL
users (`ACL SETUSER`, the exact rules of celeryctl/permissions.py) and RabbitMQ users (tags
and vhost permissions through the management API, as guest). Passwords are random and kept
in 0600 files, like every lab secret."""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote

from celeryctl.permissions import ACCOUNTS


def _password_file(base: Path, name: str) -> Path:
    d = base / "accounts"
    d.mkdir(parents=True, exist_ok=True)
    f = d / name
    f.touch(mode=0o600)
    f.chmod(0o600)
    f.write_text(secrets.token_urlsafe(18))
    return f


def create_redis_accounts(base: Path, admin_url: str) -> dict[str, dict]:
    """Every account as a Redis ACL user. `admin_url`: a URL with the rights to run ACL
    SETUSER (the lab's default user). -> tier -> {user, password_file}."""
    import redis

    r = redis.Redis.from_url(admin_url, socket_timeout=5)
    out = {}
    try:
        for tier, acct in ACCOUNTS.items():
            pw_file = _password_file(base, f"redis-{acct.user}")
            r.execute_command(*acct.redis_setuser(pw_file.read_text()))
            out[tier] = {"user": acct.user, "password_file": str(pw_file)}
    finally:
        r.close()
    return out


def create_rabbit_accounts(base: Path, api_url: str, vhost: str = "/") -> dict[str, dict]:
    """Every account as a RabbitMQ user with its tags and its permissions on `vhost`,
    through the management API as guest (rabbitmqctl takes seconds per call)."""
    import requests

    from celeryctl.urls import parse_http

    api = parse_http(api_url)
    base_url = f"http://{api.host}:{api.port}/api"
    auth = ("guest", "guest")
    out = {}
    for tier, acct in ACCOUNTS.items():
        pw_file = _password_file(base, f"rabbitmq-{acct.user}")
        requests.put(f"{base_url}/users/{quote(acct.user, safe='')}", auth=auth, timeout=10,
                     json={"password": pw_file.read_text(), "tags": ",".join(acct.rabbit_tags)}
                     ).raise_for_status()
        c, w, r = acct.rabbit_perms
        requests.put(f"{base_url}/permissions/{quote(vhost, safe='')}/"
                     f"{quote(acct.user, safe='')}", auth=auth, timeout=10,
                     json={"configure": c, "write": w, "read": r}).raise_for_status()
        out[tier] = {"user": acct.user, "password_file": str(pw_file)}
    return out


def account_url(url: str, account: dict, *, shell: bool = False) -> str:
    """`url` with the account's user and password (or `$(cat FILE)` for a shell line)."""
    pw = f"$(cat {account['password_file']})" if shell else \
        quote(Path(account["password_file"]).read_text(), safe="")
    scheme, rest = url.split("://", 1)
    rest = rest.rsplit("@", 1)[-1]
    return f"{scheme}://{quote(account['user'], safe='')}:{pw}@{rest}"
