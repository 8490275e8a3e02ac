"""TLS settings for every connection celeryctl makes: parsed, merged and translated (pure).

Where TLS settings come from, per connection, highest first (each key on its own):

1. the URL's query: `ssl_cert_reqs`, `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`,
   `ssl_check_hostname` (kombu's and redis-py's spelling, `kombu/utils/url.py parse_url`);
2. the profile: `broker_use_ssl = {...}` / `redis_backend_use_ssl = {...}`; for the
   management API `rabbitmq_api_ca` / `_cert` / `_key` (flag and environment above it);
3. the Celery app (`-A`): `broker_use_ssl` / `redis_backend_use_ssl`.

TLS is on for `rediss://`, `amqps://`, `https://`, and — as kombu does — for `redis://` or
`amqp://` when any layer gives TLS settings (`broker_use_ssl` on a `redis://` URL makes kombu
use `SSLConnection`). Mappings take both spellings: redis-py's (`ssl_ca_certs`, ...) and
py-amqp's (`ca_certs`, `certfile`, `keyfile`, `cert_reqs`, `server_hostname`).
`ssl_cert_reqs` takes `required`/`optional`/`none`, `CERT_REQUIRED`/`CERT_OPTIONAL`/`CERT_NONE`
or the `ssl` module's numbers (an app's `ssl.CERT_REQUIRED` arrives as 2).

Unlike kombu (which takes an amqps URL's `ssl_*` parameters *instead of* `broker_use_ssl`, and
then hands them to py-amqp, which rejects those names), celeryctl merges key by key: a CA in
the URL and a client certificate in `broker_use_ssl` are both used.

The adapters at the end turn one `TLSConfig` into what each client library takes: redis-py
keyword arguments, kombu's `ssl=` (redis-py or py-amqp names), an `ssl.SSLContext` for pika
built the way py-amqp builds its own, and requests' `verify=`/`cert=`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from celeryctl.status import UsageError

TLS_SCHEMES = ("rediss", "amqps", "https")

# every spelling -> one name
ALIASES = {
    "ssl_cert_reqs": "cert_reqs", "cert_reqs": "cert_reqs",
    "ssl_ca_certs": "ca_certs", "ca_certs": "ca_certs",
    "ssl_certfile": "certfile", "certfile": "certfile",
    "ssl_keyfile": "keyfile", "keyfile": "keyfile",
    "ssl_check_hostname": "check_hostname", "check_hostname": "check_hostname",
    "server_hostname": "server_hostname", "ssl_server_hostname": "server_hostname",
}
# what a URL query may carry (kombu's names); other ssl_* keys are refused, not ignored
QUERY_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
              "ssl_check_hostname")
CERT_REQS = {"required": "required", "cert_required": "required", "2": "required",
             "optional": "optional", "cert_optional": "optional", "1": "optional",
             "none": "none", "cert_none": "none", "0": "none"}
FILE_KEYS = ("ca_certs", "certfile", "keyfile")
# the names the user wrote, for messages (URL spelling)
SPELLING = {"cert_reqs": "ssl_cert_reqs", "ca_certs": "ssl_ca_certs",
            "certfile": "ssl_certfile", "keyfile": "ssl_keyfile",
            "check_hostname": "ssl_check_hostname", "server_hostname": "server_hostname"}
_TRUE = ("1", "true", "yes", "y", "t", "on")
_FALSE = ("0", "false", "no", "n", "f", "off")


@dataclass(frozen=True)
class TLSConfig:
    """TLS for one connection. `None` fields mean "the client library's default" (system CAs,
    no client certificate). `origins` says where each given key came from."""

    cert_reqs: str = "required"  # required | optional | none
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    check_hostname: bool | None = None
    server_hostname: str | None = None
    origins: tuple[tuple[str, str], ...] = ()

    @property
    def verifies(self) -> bool:
        return self.cert_reqs != "none"

    def origin(self, key: str) -> str | None:
        return dict(self.origins).get(key)

    def summary(self) -> dict[str, Any]:
        """JSON-safe description: the CA and certificate paths, never the key's path."""
        return {"cert_reqs": self.cert_reqs, "ca_certs": self.ca_certs or "system default",
                "certfile": self.certfile, "keyfile": "***" if self.keyfile else None,
                "check_hostname": self.check_hostname,
                "origins": dict(self.origins)}


# --- parsing ------------------------------------------------------------------------------

def parse_cert_reqs(value: Any, where: str) -> str:
    name = getattr(value, "name", None)  # ssl.VerifyMode
    text = str(name if name else value).strip().lower()
    if text in CERT_REQS:
        return CERT_REQS[text]
    raise UsageError(f"{where}: ssl_cert_reqs must be required, optional or none "
                     f"(or CERT_REQUIRED, CERT_OPTIONAL, CERT_NONE), got {value!r}")


def parse_bool(value: Any, key: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UsageError(f"{where}: {key} must be true or false, got {value!r}")


def _normalise(key: str, value: Any, where: str) -> tuple[str, Any]:
    name = ALIASES[key]
    if name == "cert_reqs":
        return name, parse_cert_reqs(value, where)
    if name == "check_hostname":
        return name, parse_bool(value, key, where)
    if value is None or value == "":
        return name, None
    if not isinstance(value, str):
        raise UsageError(f"{where}: {key} must be a file path or name, got {value!r}")
    return name, os.path.expanduser(value) if name in FILE_KEYS else value


def settings_from_query(query: Iterable[tuple[str, str]], where: str) -> dict[str, Any] | None:
    """The URL's `ssl_*` parameters, normalised; None when it has none. An unknown `ssl_*`
    key is a usage error (a typo must not silently turn verification into a default).
    `ssl=true` alone turns TLS on with the defaults (kombu takes a truthy `ssl` from an AMQP
    URL's query as its `ssl` argument)."""
    out: dict[str, Any] = {}
    enabled = False
    for key, value in query:
        if key.lower() == "ssl":
            enabled = parse_bool(value, "ssl", where)
            continue
        if not key.lower().startswith("ssl_"):
            continue
        if key not in QUERY_KEYS:
            raise UsageError(f"{where}: unknown TLS parameter {key!r}; celeryctl takes "
                             f"{', '.join(QUERY_KEYS)}")
        name, v = _normalise(key, value, where)
        if v is not None:
            out[name] = v
    return out or ({} if enabled else None)


def settings_from_mapping(value: Any, where: str) -> dict[str, Any] | None:
    """`broker_use_ssl` / `redis_backend_use_ssl` (app or profile): a dict in redis-py's or
    py-amqp's spelling, or True (TLS with the defaults). None/False/{}: not given. Keys
    celeryctl does not use (`ciphers`, `ssl_version`...) are ignored: they tune, they do not
    decide whether a certificate is trusted."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, str) and value.strip().lower() in _TRUE:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(f"{where} must be a table/dict of TLS settings or true, "
                         f"got {type(value).__name__}")
    import difflib

    out: dict[str, Any] = {}
    for key, v in value.items():
        if str(key) in ALIASES:
            name, nv = _normalise(str(key), v, where)
            if nv is not None:
                out[name] = nv
            continue
        close = difflib.get_close_matches(str(key), list(ALIASES), n=1, cutoff=0.85)
        if close:  # a typo of a key that decides trust must not fall back to a default
            raise UsageError(f"{where}: unknown TLS setting {str(key)!r} (did you mean "
                             f"{close[0]!r}?)")
    return out


def resolve_tls(scheme: str, layers: Iterable[tuple[str, dict[str, Any] | None]]
                ) -> TLSConfig | None:
    """Merge the layers (highest precedence first) key by key. None when TLS is off: a plain
    scheme and no layer gave TLS settings."""
    layers = list(layers)
    if scheme not in TLS_SCHEMES and all(d is None for _, d in layers):
        return None
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for origin, d in reversed(layers):  # lowest first; higher ones overwrite
        for k, v in (d or {}).items():
            merged[k] = v
            origins[k] = origin
    return TLSConfig(**merged, origins=tuple(sorted(origins.items())))


def check_files(tls: TLSConfig | None, what: str, names: dict[str, str] | None = None
                ) -> None:
    """Every file a TLS setting names must exist and be readable: a usage error (exit 64)
    before any connection, not a handshake failure later. A key file's path is never
    echoed (it names where a secret lives)."""
    if tls is None:
        return
    for key in FILE_KEYS:
        path = getattr(tls, key)
        if not path:
            continue
        shown = "" if key == "keyfile" else f" {path}"
        origin = tls.origin(key)
        src = f" (from {origin})" if origin else ""
        name = (names or SPELLING)[key]
        if not os.path.exists(path):
            raise UsageError(f"{what}: the {name} file{shown} does not exist{src}")
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise UsageError(f"{what}: the {name} file{shown} is not a readable file{src}")
    if tls.keyfile and not tls.certfile:
        raise UsageError(f"{what}: ssl_keyfile given without ssl_certfile (the client "
                         f"certificate it belongs to)")
    _load(tls, what, names or SPELLING)


def _load(tls: TLSConfig, what: str, names: dict[str, str]) -> None:
    """Load the files as the handshake will (CA bundle, certificate and key): a garbage file,
    a key of another pair or a passphrase-protected key is a usage error now, naming the
    setting — not a "TLS handshake failed" that pages as an unreachable broker. The key's
    path is never echoed."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_certs:
        try:
            ctx.load_verify_locations(cafile=tls.ca_certs)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise UsageError(f"{what}: the {names['ca_certs']} file {tls.ca_certs} holds no "
                             f"usable CA certificate ({_why(exc)})") from None
    if tls.certfile:
        def no_passphrase():
            raise UsageError(f"{what}: the {names['keyfile']} file is protected by a "
                             f"passphrase, which celeryctl cannot ask for")
        try:
            ctx.load_cert_chain(tls.certfile, tls.keyfile or None, password=no_passphrase)
        except UsageError:
            raise
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise UsageError(f"{what}: the client certificate ({names['certfile']} "
                             f"{tls.certfile}) and its key ({names['keyfile']}) cannot be "
                             f"used together ({_why(exc)})") from None


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or type(exc).__name__).replace("_", " ").lower()


def strip_tls_query(url: str) -> str:
    """The URL without its `ssl` and `ssl_*` parameters (kombu would otherwise use them
    instead of the `ssl=` celeryctl passes, and py-amqp rejects the `ssl_*` names)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if not (k.lower() == "ssl" or k.lower().startswith("ssl_"))]
    return urlunsplit(parts._replace(query=urlencode(kept)))


# --- adapters ------------------------------------------------------------------------------

def redis_ssl_kwargs(tls: TLSConfig) -> dict[str, Any]:
    """redis-py `Redis(...)`/kombu `ssl=` keys (`SSLConnection`). `ssl_check_hostname` only
    when given: otherwise redis-py's own default, as the workers' client has."""
    out: dict[str, Any] = {"ssl_cert_reqs": tls.cert_reqs}
    if tls.ca_certs:
        out["ssl_ca_certs"] = tls.ca_certs
    if tls.certfile:
        out["ssl_certfile"] = tls.certfile
    if tls.keyfile:
        out["ssl_keyfile"] = tls.keyfile
    if tls.check_hostname is not None:
        out["ssl_check_hostname"] = tls.check_hostname and tls.verifies
    return out


def verify_mode(tls: TLSConfig):
    import ssl

    return {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
            "none": ssl.CERT_NONE}[tls.cert_reqs]


def amqp_server_hostname(tls: TLSConfig, host: str) -> str | None:
    """py-amqp checks the host name exactly when it is given a `server_hostname` (kombu fills
    in the URL's host when the key is present but None): so does celeryctl."""
    if tls.server_hostname:
        return tls.server_hostname
    if tls.check_hostname and tls.verifies:
        return host
    return None


def amqp_sslopts(tls: TLSConfig, host: str) -> dict[str, Any]:
    """kombu's `ssl=` for py-amqp (`SSLTransport._wrap_socket_sni` keywords)."""
    out: dict[str, Any] = {"cert_reqs": verify_mode(tls)}
    if tls.ca_certs:
        out["ca_certs"] = tls.ca_certs
    if tls.certfile:
        out["certfile"] = tls.certfile
        out["keyfile"] = tls.keyfile
    hostname = amqp_server_hostname(tls, host)
    if hostname:
        out["server_hostname"] = hostname
    return out


def ssl_context(tls: TLSConfig, host: str):
    """An `ssl.SSLContext` for pika, made as py-amqp makes its own from the same settings
    (so the passive-declare fallback trusts exactly what remote control trusts). Reads the
    files: call it only when connecting."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.certfile:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    if tls.ca_certs:
        context.load_verify_locations(tls.ca_certs)
    context.check_hostname = amqp_server_hostname(tls, host) is not None
    context.verify_mode = verify_mode(tls)
    if not tls.ca_certs and tls.verifies:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


def requests_kwargs(tls: TLSConfig | None) -> dict[str, Any]:
    """requests' `verify=` (the CA file, or True: the system's CAs) and `cert=`. Never
    `verify=False`."""
    if tls is None:
        return {"verify": True}
    out: dict[str, Any] = {"verify": tls.ca_certs or True}
    if tls.certfile:
        out["cert"] = (tls.certfile, tls.keyfile) if tls.keyfile else tls.certfile
    return out
