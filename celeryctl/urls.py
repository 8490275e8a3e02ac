"""Parsing, validation and redaction of broker, backend and API URLs (pure).

Every URL that reaches any output goes through `redact()`; every error text that may
echo a URL goes through `Secrets.scrub()`. Passwords never leave the process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from celeryctl.status import UsageError

if TYPE_CHECKING:
    from celeryctl.tls import TLSConfig

BROKER_SCHEMES = {
    "redis": "redis",
    "rediss": "redis",
    "amqp": "amqp",
    "amqps": "amqp",
    "pyamqp": "amqp",
    "sentinel": "redis",  # kombu's Redis Sentinel transport: master_name in transport options
}
DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "sentinel": 26379, "amqp": 5672, "amqps": 5671, "pyamqp": 5672,
                 "http": 80, "https": 443}
_SECRET_QUERY_KEYS = re.compile(r"pass|token|secret|key|auth|credential", re.I)
MASK = "***"


@dataclass(frozen=True)
class Endpoint:
    """One parsed URL. `password` is kept for connecting, and never printed."""

    raw: str = field(repr=False)
    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    path: str  # decoded path without the leading slash (vhost or db number)
    query: tuple[tuple[str, str], ...] = ()
    # TLS settings when TLS is on (celeryctl/tls.py): set by targets.resolve from the URL's
    # ssl_* parameters, the profile and the app; None for a plain connection
    tls: TLSConfig | None = field(default=None, repr=False, compare=False)

    @property
    def kind(self) -> str:
        return BROKER_SCHEMES.get(self.scheme, self.scheme)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def redacted(self) -> str:
        return redact(self.raw)

    @property
    def vhost(self) -> str:
        """AMQP virtual host as kombu reads it: '' and '/' are the default vhost '/'."""
        return self.path if self.path else "/"

    @property
    def redis_db(self) -> int:
        params = dict(self.query)
        value = self.path or params.get("db") or "0"
        try:
            return int(value)
        except ValueError:
            raise UsageError(
                f"Redis database must be a number, got {value!r} in {self.redacted}"
            ) from None


def redact(url: str | None) -> str | None:
    """Replace the password (and secret-looking query values) of every URL in a
    `;`-separated list. Unparseable input is masked whole rather than echoed."""
    if url is None:
        return None
    return ";".join(_redact_one(part) for part in url.split(";"))


def _redact_one(url: str) -> str:
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            userinfo = f"{user}:{MASK}"
        elif parts.scheme in ("redis", "rediss", "sentinel") and userinfo:
            # redis://secret@host uses the userinfo as the password.
            userinfo = MASK
        netloc = f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{k}={MASK if _SECRET_QUERY_KEYS.search(k) else quote(v, safe='')}" for k, v in pairs
        )
    out = f"{parts.scheme}://{netloc}{parts.path}"
    if query:
        out += f"?{query}"
    return out


def parse_endpoint(url: str, *, allowed: dict[str, str] | None = None, what: str = "URL") -> Endpoint:
    """Parse one URL; raise UsageError (exit 64) with a redacted message when it is malformed
    or its scheme is not in `allowed`."""
    text = url.strip()
    if not text:
        raise UsageError(f"empty {what}")
    if "://" not in text:
        raise UsageError(f"malformed {what} {redact(text)!s}: expected SCHEME://HOST[:PORT]/...")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"malformed {what} {redact(text)}: {exc}") from None
    scheme = parts.scheme.lower()
    if allowed is not None and scheme not in allowed:
        raise UsageError(
            f"unknown scheme {scheme!r} in {what} {redact(text)}; "
            f"supported: {', '.join(sorted(allowed))}"
        )
    host = parts.hostname or "localhost"
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if scheme in ("redis", "rediss", "sentinel") and username and password is None:
        # kombu/redis-py accept redis://password@host
        password, username = username, None
    path = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
    query = tuple(parse_qsl(parts.query, keep_blank_values=True))
    if scheme in ("redis", "rediss", "sentinel") and not password:
        password = dict(query).get("password") or None
    return Endpoint(
        raw=text,
        scheme=scheme,
        host=host,
        port=port or DEFAULT_PORTS.get(scheme, 0),
        username=username,
        password=password,
        path=path,
        query=query,
    )


def parse_broker(url: str) -> list[Endpoint]:
    """A broker URL or a `;`-separated failover list, all of one transport kind."""
    endpoints = [
        parse_endpoint(part, allowed=BROKER_SCHEMES, what="broker URL")
        for part in url.split(";")
        if part.strip()
    ]
    if not endpoints:
        raise UsageError("empty broker URL")
    for e in endpoints:
        if e.kind == "redis":
            e.redis_db  # noqa: B018 - validates: a non-numeric db is a usage error
    kinds = {e.kind for e in endpoints}
    if len(kinds) > 1:
        raise UsageError(f"broker failover list mixes transports: {redact(url)}")
    return endpoints


def with_vhost(ep: Endpoint, vhost: str) -> Endpoint:
    """The AMQP endpoint with its virtual host replaced (`--vhost`): every connection — remote
    control through kombu, passive declares, purge — then uses the same vhost as the
    management API, never the URL's."""
    import dataclasses

    parts = urlsplit(ep.raw)
    path = "/" + quote(vhost, safe="")
    raw = f"{parts.scheme}://{parts.netloc}{path}" + (f"?{parts.query}" if parts.query else "")
    return dataclasses.replace(ep, raw=raw, path=vhost)


def sentinel_master_name(endpoints, options: dict | None) -> str:
    """Sentinel: the monitored master's name — kombu's `master_name` transport option (or,
    a celeryctl convenience, `?master_name=` on a URL). A usage error (exit 64) when absent."""
    name = (options or {}).get("master_name") or next(
        (dict(e.query)["master_name"] for e in endpoints if dict(e.query).get("master_name")),
        None)
    if not name:
        raise UsageError("a sentinel:// broker needs the master's name: broker_transport_options"
                         " = {'master_name': ...} (profile transport_options, or -A), or "
                         "?master_name=NAME on the URL")
    return str(name)


def parse_http(url: str, what: str = "RabbitMQ management API URL") -> Endpoint:
    return parse_endpoint(url, allowed={"http": "http", "https": "https"}, what=what)


class Secrets:
    """Every password and token celeryctl was given, to scrub from any text it prints."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: str | None) -> None:
        # Structural redaction covers every URL we print; this second layer catches
        # library errors that echo a secret. Very short secrets would garble every line
        # if scrubbed as substrings, so they rely on the structural layer alone.
        if value and len(value) >= 3:
            self._values.add(value)
            self._values.add(quote(value, safe=""))

    def add_url(self, url: str | None) -> None:
        if not url:
            return
        for part in url.split(";"):
            try:
                parts = urlsplit(part.strip())
                if parts.password:
                    self.add(unquote(parts.password))
                    self.add(parts.password)
                elif parts.scheme in ("redis", "rediss", "sentinel") and parts.username:
                    self.add(unquote(parts.username))
                for k, v in parse_qsl(parts.query):
                    if _SECRET_QUERY_KEYS.search(k):
                        self.add(v)
            except ValueError:
                continue

    def scrub(self, text: str) -> str:
        # longest first, so a secret that contains another is masked whole
        for value in sorted(self._values, key=len, reverse=True):
            if value:
                text = text.replace(value, MASK)
        return text


SECRETS = Secrets()
