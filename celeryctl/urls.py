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
    `;`-separated list. Everything between `//` and the LAST `@` is treated as credentials,
    whatever the scheme, before any parsing: an unencoded `/`, `?`, `#` or `@` in a password
    never makes part of it show. Unparseable input is masked rather than echoed."""
    if url is None:
        return None
    return ";".join(_redact_one(part) for part in split_list(url))


# `;` separates failover URLs only where the next URL starts (kombu splits at every `;`, so a
# `;` inside a URL is refused by parse_endpoint; redaction must still mask around it)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_LIST_SEP = re.compile(r";(?=\s*(?:[A-Za-z][A-Za-z0-9+.\-]*://|;|$))")


def split_list(url: str) -> list[str]:
    """The URLs of a `;`-separated failover list (empty entries dropped)."""
    return [p.strip() for p in _LIST_SEP.split(url) if p.strip()]


@dataclass(frozen=True)
class _Split:
    """One URL cut at the authority, without interpretation: `userinfo` is everything between
    `scheme://` and the last `@` (None without an `@`)."""

    scheme: str
    userinfo: str | None
    hostport: str
    rest: str  # path, ?query and #fragment as written (starts with / ? # or is empty)


def _split(url: str) -> _Split | None:
    m = _SCHEME.match(url)
    if m is None:
        return None
    after = url[m.end():]
    at = after.rfind("@")
    userinfo, tail = (after[:at], after[at + 1:]) if at >= 0 else (None, after)
    cut = min((i for i in (tail.find(c) for c in "/?#") if i >= 0), default=len(tail))
    return _Split(m.group(1), userinfo, tail[:cut], tail[cut:])


def _userinfo_ambiguous(userinfo: str | None) -> bool:
    """An `@` after a `/`, `?` or `#`: either a password holding them unencoded, or an `@` in
    the path or query — two readings that connect to different hosts, so neither is taken."""
    return userinfo is not None and any(c in userinfo for c in "/?#")


def _masked_userinfo(userinfo: str) -> str:
    if not userinfo:
        return userinfo
    user, colon, _ = userinfo.partition(":")
    if colon and not _userinfo_ambiguous(userinfo):
        return f"{user}:{MASK}"
    return MASK  # redis://PASSWORD@host, an unknown scheme, or an ambiguous one


def _split_hostport(hostport: str) -> tuple[str, str | None]:
    """(host, port text or None). `[v6]:port` keeps the brackets off the host."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            return hostport, None
        host, after = hostport[1:end], hostport[end + 1:]
        return host, (after[1:] if after.startswith(":") else (after or None))
    host, colon, port = hostport.partition(":")
    return host, (port if colon else None)


def _redact_one(url: str) -> str:
    url = url.strip()
    p = _split(url)
    if p is None:
        # not SCHEME://...: whatever precedes an @ may be a password
        at = url.rfind("@")
        return MASK + url[at:] if at >= 0 else url
    netloc = p.hostport
    host, port = _split_hostport(p.hostport)
    if port is not None and not port.isdigit():
        # `redis://:password` (no @host) reads as a port: never echo it
        netloc = (f"[{host}]" if p.hostport.startswith("[") else host) + f":{MASK}"
    if p.userinfo is not None:
        netloc = f"{_masked_userinfo(p.userinfo)}@{netloc}"
    rest = p.rest.split("#", 1)[0]
    path, q, query = rest.partition("?")
    out = f"{p.scheme}://{netloc}{path}"
    if q:
        pairs = parse_qsl(query, keep_blank_values=True)
        out += "?" + "&".join(
            f"{k}={MASK if _SECRET_QUERY_KEYS.search(k) else quote(v, safe='')}"
            for k, v in pairs)
    return out


def _refuse(what: str, text: str, why: str) -> UsageError:
    return UsageError(f"malformed {what} {redact(text)}: {why}")


def parse_endpoint(url: str, *, allowed: dict[str, str] | None = None, what: str = "URL") -> Endpoint:
    """Parse one URL; raise UsageError (exit 64) with a redacted message when it is malformed
    or its scheme is not in `allowed`. The message never holds any part of a password: the
    userinfo is cut off at the last `@` before anything is interpreted.

    `raw` is rebuilt canonically (credentials percent-encoded, a Redis `?password=` moved into
    the userinfo), so kombu, redis-py and pika all read the same credentials celeryctl did."""
    text = url.strip()
    if not text:
        raise UsageError(f"empty {what}")
    p = _split(text)
    if p is None:
        raise _refuse(what, text, "expected SCHEME://HOST[:PORT]/...")
    scheme = p.scheme.lower()
    if allowed is not None and scheme not in allowed:
        raise UsageError(
            f"unknown scheme {scheme!r} in {what} {redact(text)}; "
            f"supported: {', '.join(sorted(allowed))}"
        )
    if ";" in text:
        raise _refuse(what, text, "';' inside a URL (kombu splits failover lists at every "
                      "';'): percent-encode it as %3B")
    if _userinfo_ambiguous(p.userinfo):
        raise _refuse(what, text, "an '@' follows a '/', '?' or '#', so where the host starts "
                      "is ambiguous: percent-encode them in user names, passwords, vhosts and "
                      "parameters ('/' %2F, '?' %3F, '#' %23, '@' %40)")
    if any(c.isspace() for c in text):
        raise _refuse(what, text, "white space inside the URL")
    host, port_text = _split_hostport(p.hostport)
    if p.hostport.startswith("[") and "]" not in p.hostport:
        raise _refuse(what, text, "unclosed '[' in the host")
    if not p.hostport.startswith("[") and ":" in host:
        raise _refuse(what, text, "an IPv6 address goes in brackets: [ADDRESS]:PORT")
    port = DEFAULT_PORTS.get(scheme, 0)
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
            raise _refuse(what, text, "the port must be a number from 1 to 65535")
        port = int(port_text)
    host = unquote(host).lower() or "localhost"
    username = password = None
    if p.userinfo is not None:
        user, colon, pw = p.userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    if scheme in ("redis", "rediss", "sentinel") and username and password is None:
        # kombu/redis-py accept redis://password@host
        password, username = username, None
    rest = p.rest.split("#", 1)[0]
    raw_path, _, raw_query = rest.partition("?")
    path = unquote(raw_path[1:]) if raw_path.startswith("/") else unquote(raw_path)
    query = tuple(parse_qsl(raw_query, keep_blank_values=True))
    if scheme in ("redis", "rediss", "sentinel"):
        # redis-py (and Celery's Redis result backend) read ?password= and ?username=; kombu
        # would choke on them (TypeError): they move into the userinfo of `raw`
        params = dict(query)
        if not password and params.get("password"):
            password = params["password"]
        if not username and params.get("username"):
            username = params["username"]
        query = tuple((k, v) for k, v in query if k not in ("password", "username"))
    auth = ""
    if username or password is not None:
        auth = quote(username or "", safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        auth += "@"
    raw = f"{scheme}://{auth}{p.hostport}{raw_path}"
    if query:
        raw += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    return Endpoint(
        raw=raw,
        scheme=scheme,
        host=host,
        port=port,
        username=username,
        password=password,
        path=path,
        query=query,
    )


def parse_broker(url: str) -> list[Endpoint]:
    """A broker URL or a `;`-separated failover list, all of one transport kind."""
    endpoints = [
        parse_endpoint(part, allowed=BROKER_SCHEMES, what="broker URL")
        for part in split_list(url)
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
        """The credentials of every URL in a failover list, cut as `redact` cuts them (all
        between `//` and the last `@`), so even a URL parse_endpoint refuses is covered."""
        if not url:
            return
        for part in split_list(str(url)):
            p = _split(part)
            if p is None:
                at = part.rfind("@")
                if at > 0:
                    self.add(part[:at])
                continue
            if p.userinfo:
                user, colon, pw = p.userinfo.partition(":")
                # a user name alone is the password on Redis and may be on a scheme
                # celeryctl does not know; on AMQP and HTTP it is only a name
                named = p.scheme.lower() in ("amqp", "amqps", "pyamqp", "http", "https")
                for value in ((pw,) if colon else (() if named else (user,))):
                    self.add(value)
                    self.add(unquote(value))
                if _userinfo_ambiguous(p.userinfo):
                    self.add(p.userinfo)
            for k, v in parse_qsl(p.rest.split("#", 1)[0].partition("?")[2]):
                if _SECRET_QUERY_KEYS.search(k):
                    self.add(v)

    def scrub(self, text: str) -> str:
        # longest first, so a secret that contains another is masked whole
        for value in sorted(self._values, key=len, reverse=True):
            if value:
                text = text.replace(value, MASK)
        return text


SECRETS = Secrets()
