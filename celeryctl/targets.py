"""Where to look: the one place that decides which broker, backend and API celeryctl reads.

Precedence, per setting: command-line flags > environment > profile > Celery app config >
built-in default. Each resolved value remembers where it came from (`origins`), so output can
say "broker from CELERY_BROKER_URL" or "default redis://localhost:6379/0 (nothing given)".

Environment: CELERY_BROKER_URL, CELERY_RESULT_BACKEND, CELERYCTL_RABBITMQ_API, CELERYCTL_CONFIG,
CELERYCTL_RABBITMQ_API_CA, CELERYCTL_RABBITMQ_API_CERT, CELERYCTL_RABBITMQ_API_KEY.
Profiles: TOML at ~/.config/celeryctl/config.toml (or $CELERYCTL_CONFIG)::

    [clusters.prod]
    broker = "redis://:secret@redis.prod:6379/0"
    result_backend = "redis://redis.prod:6379/1"
    rabbitmq_api = "http://user:pass@rabbit.prod:15672"
    vhost = "/"
    queues = ["celery", "emails"]
    timeout = 3
    app = "proj.celery:app"
    transport_options = { global_keyprefix = "proj:" }
    # TLS (see celeryctl/tls.py and docs/targets.md): as the Celery settings of the same name
    broker_use_ssl = { ssl_ca_certs = "/etc/ssl/private-ca.pem", ssl_cert_reqs = "required" }
    redis_backend_use_ssl = { ssl_ca_certs = "/etc/ssl/private-ca.pem" }
    rabbitmq_api_ca = "/etc/ssl/private-ca.pem"   # also rabbitmq_api_cert, rabbitmq_api_key

TLS settings are merged key by key, highest first: the URL's `ssl_*` query parameters >
flag/environment (management API only) > profile > app. Every file they name must exist
(else exit 64 before connecting).
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celeryctl.status import UsageError
from celeryctl.tls import (
    TLSConfig,
    check_files,
    resolve_tls,
    settings_from_mapping,
    settings_from_query,
)
from celeryctl.urls import (
    SECRETS,
    Endpoint,
    parse_broker,
    parse_endpoint,
    parse_http,
    redact,
    sentinel_master_name,
)

DEFAULT_BROKER = "redis://localhost:6379/0"
DEFAULT_TIMEOUT = 2.0
DEFAULT_CONFIG = "~/.config/celeryctl/config.toml"

# Celery settings celeryctl reads from an app (names as in celery/app/defaults.py).
APP_SETTINGS = (
    "broker_url", "broker_read_url", "broker_write_url", "result_backend",
    "broker_transport_options", "result_backend_transport_options",
    "task_serializer", "result_serializer", "event_serializer", "accept_content",
    "result_accept_content", "task_queues", "task_routes", "task_default_queue",
    "task_default_exchange", "task_default_routing_key", "task_queue_max_priority",
    "task_default_priority", "broker_pool_limit", "broker_pool_acquire_timeout",
    "broker_connection_timeout", "broker_connection_retry", "broker_connection_max_retries",
    "broker_heartbeat", "worker_prefetch_multiplier", "task_acks_late",
    "task_reject_on_worker_lost", "result_expires", "result_persistent",
    "worker_max_tasks_per_child", "worker_concurrency", "task_always_eager",
    "control_exchange", "event_queue_ttl", "event_queue_expires", "control_queue_ttl",
    "control_queue_expires", "task_create_missing_queues", "worker_send_task_events",
    "redis_max_connections", "task_time_limit", "task_soft_time_limit",
    "broker_use_ssl", "redis_backend_use_ssl",
)


@dataclass(frozen=True)
class AppConfig:
    """What celeryctl read from a Celery app: JSON-safe settings, and what could not be read."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    queue_names: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    broker: tuple[Endpoint, ...]
    result_backend: str | None
    rabbitmq_api: Endpoint | None
    vhost: str | None
    queues: tuple[str, ...]
    timeout: float
    transport_options: dict[str, Any]
    app: AppConfig | None
    profile: str | None
    origins: dict[str, str]
    used_default_broker: bool = False
    # TLS of the result backend (the broker's and the API's travel with their Endpoints);
    # warnings to print before collecting (verification turned off)
    result_backend_tls: TLSConfig | None = None
    tls_warnings: tuple[str, ...] = ()

    @property
    def broker_defaulted(self) -> bool:
        """True when nothing (flag, environment, profile, app) named the broker."""
        return self.used_default_broker

    @property
    def broker_source(self) -> str:
        """Where the broker came from: "flag", "env CELERY_BROKER_URL", "profile NAME",
        "app NAME" or "default: nothing given"."""
        return self.origins.get("broker", "?")

    @property
    def broker_tls(self) -> TLSConfig | None:
        return self.broker[0].tls

    @property
    def broker_kind(self) -> str:
        return self.broker[0].kind

    @property
    def broker_url(self) -> str:
        return ";".join(e.raw for e in self.broker)

    @property
    def broker_redacted(self) -> str:
        return redact(self.broker_url) or ""

    @property
    def broker_db(self) -> int | None:
        """The Redis database of the broker (None on RabbitMQ)."""
        return self.broker[0].redis_db if self.broker_kind == "redis" else None

    @property
    def effective_vhost(self) -> str:
        return self.vhost if self.vhost is not None else self.broker[0].vhost

    def describe(self) -> list[str]:
        """Human lines saying where each value came from (for stderr / headers)."""
        lines = [f"broker {self.broker_redacted} ({self.origins.get('broker', '?')})"]
        if self.result_backend:
            lines.append(f"result backend {redact(self.result_backend)} "
                         f"({self.origins.get('result_backend', '?')})")
        if self.rabbitmq_api:
            lines.append(f"management API {self.rabbitmq_api.redacted} "
                         f"({self.origins.get('rabbitmq_api', '?')})")
        return lines

    def summary(self) -> dict[str, Any]:
        """JSON-safe, redacted description of the target."""
        return {
            "broker": self.broker_redacted,
            "broker_kind": self.broker_kind,
            "result_backend": redact(self.result_backend),
            "rabbitmq_api": self.rabbitmq_api.redacted if self.rabbitmq_api else None,
            "vhost": self.effective_vhost if self.broker_kind == "amqp" else None,
            "redis_db": self.broker_db,
            "queues": list(self.queues),
            "timeout_seconds": self.timeout,
            "profile": self.profile,
            "app": self.app.name if self.app else None,
            "origins": dict(self.origins),
            "used_default_broker": self.used_default_broker,
            "tls": {
                "broker": self.broker_tls.summary() if self.broker_tls else None,
                "result_backend": self.result_backend_tls.summary()
                if self.result_backend_tls else None,
                "rabbitmq_api": self.rabbitmq_api.tls.summary()
                if self.rabbitmq_api and self.rabbitmq_api.tls else None,
            },
        }


REFUSE_DEFAULT = ("refused: no broker given; pass --broker URL (or CELERY_BROKER_URL, "
                  "--profile, -A APP). celeryctl never acts on the default broker. "
                  "Nothing changed.")


def _int_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(
        isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in v)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


# the kombu transport options celeryctl reads, and what each must be
TRANSPORT_OPTION_TYPES: dict[str, tuple[Any, str]] = {
    "global_keyprefix": (lambda v: isinstance(v, str), "a string"),
    "sep": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "priority_steps": (_int_list, "a list of integers 0-255"),
    "visibility_timeout": (_number, "a positive number of seconds"),
    "master_name": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
}


def check_transport_options(options: dict[str, Any], where: str) -> None:
    """A wrong-typed option celeryctl reads is a usage error naming the key (never its
    value: it could be a secret), not a crash later."""
    for key, (ok, expected) in TRANSPORT_OPTION_TYPES.items():
        if key in options and options[key] is not None and not ok(options[key]):
            raise UsageError(f"{where}: {key} must be {expected}, not "
                             f"{type(options[key]).__name__}")


def refuse_default_broker(target: Target) -> None:
    """Actions (purge, restore, control, connections kill) act only on a broker someone named:
    a UsageError (exit 64) when the broker is the built-in default. Read commands may use the
    default (and say so)."""
    if target.broker_defaulted:
        raise UsageError(REFUSE_DEFAULT)


@dataclass
class Flags:
    """Values given on the command line (None = not given)."""

    broker: str | None = None
    result_backend: str | None = None
    rabbitmq_api: str | None = None
    vhost: str | None = None
    queues: tuple[str, ...] = ()
    timeout: float | None = None
    app: str | None = None
    profile: str | None = None
    rabbitmq_api_ca: str | None = None


def resolve(flags: Flags, env: dict[str, str] | None = None) -> Target:
    """Resolve flags > environment > profile > app config > default into a Target."""
    env = dict(os.environ if env is None else env)
    profile_name, profile = _load_profile(flags.profile, env)
    app_name = flags.app or profile.get("app")
    app = load_app_config(app_name) if app_name else None
    app_settings = app.settings if app else {}
    origins: dict[str, str] = {}

    def pick(name: str, flag: Any, env_key: str | None, profile_key: str, app_key: str | None):
        if flag not in (None, ()):
            origins[name] = "flag"
            return flag
        if env_key and env.get(env_key):
            origins[name] = f"env {env_key}"
            return env[env_key]
        if profile.get(profile_key) not in (None, ""):
            origins[name] = f"profile {profile_name}"
            return profile[profile_key]
        if app_key and app_settings.get(app_key) not in (None, ""):
            origins[name] = f"app {app.name}"  # type: ignore[union-attr]
            return app_settings[app_key]
        return None

    broker_url = pick("broker", flags.broker, "CELERY_BROKER_URL", "broker", "broker_url")
    used_default = False
    if broker_url is None:
        broker_url, used_default = DEFAULT_BROKER, True
        origins["broker"] = "default: nothing given"
    if isinstance(broker_url, (list, tuple)):
        broker_url = ";".join(broker_url)
    SECRETS.add_url(str(broker_url))
    broker = tuple(parse_broker(str(broker_url)))
    lower = _mapping_layers("broker_use_ssl", profile_name, profile, app)
    broker = tuple(_with_tls(e, "broker", lower) for e in broker)

    backend = pick("result_backend", flags.result_backend, "CELERY_RESULT_BACKEND",
                   "result_backend", "result_backend")
    if backend is not None:
        backend = str(backend)
        SECRETS.add_url(backend)
        if "://" in backend:
            parse_endpoint(backend, what="result backend URL")  # malformed -> exit 64
    backend_tls = _backend_tls(backend, profile_name, profile, app)

    api_url = pick("rabbitmq_api", flags.rabbitmq_api, "CELERYCTL_RABBITMQ_API",
                   "rabbitmq_api", None)
    api: Endpoint | None = None
    if api_url:
        SECRETS.add_url(str(api_url))
        api = parse_http(str(api_url))
    else:
        api = derive_management_api(broker[0], backend)
        if api is not None:
            origins["rabbitmq_api"] = (f"derived from the AMQP broker/backend URL (port "
                                       f"{api.port})")
    api, api_notes = _api_tls(api, flags, env, profile_name, profile, broker[0],
                              derived=not api_url)

    vhost = pick("vhost", flags.vhost, None, "vhost", None)
    if vhost is not None and broker[0].kind == "amqp":
        from celeryctl.urls import with_vhost

        broker = tuple(with_vhost(e, str(vhost)) for e in broker)
    queues = tuple(flags.queues) or tuple(profile.get("queues") or ())
    if flags.queues:
        origins["queues"] = "flag"
    timeout = pick("timeout", flags.timeout, "CELERYCTL_TIMEOUT", "timeout", None)
    try:
        timeout = float(timeout) if timeout is not None else DEFAULT_TIMEOUT
    except (TypeError, ValueError):
        raise UsageError(f"timeout must be a number of seconds, got {timeout!r}") from None
    if not 0 < timeout <= 600:
        raise UsageError(f"timeout must be more than 0 and at most 600 seconds, got {timeout:g}")

    transport_options: dict[str, Any] = {}
    if isinstance(app_settings.get("broker_transport_options"), dict):
        check_transport_options(app_settings["broker_transport_options"],
                                "the app's broker_transport_options")
        transport_options.update(app_settings["broker_transport_options"])
    if isinstance(profile.get("transport_options"), dict):
        check_transport_options(profile["transport_options"],
                                f"transport_options of profile {profile_name!r}")
        transport_options.update(profile["transport_options"])
    if broker[0].scheme == "sentinel":
        sentinel_master_name(broker, transport_options)  # refused now, not as "unreachable"

    return Target(
        broker=broker,
        result_backend=backend,
        rabbitmq_api=api,
        vhost=vhost,
        queues=queues,
        timeout=timeout,
        transport_options=transport_options,
        app=app,
        profile=profile_name,
        origins=origins,
        used_default_broker=used_default,
        result_backend_tls=backend_tls,
        tls_warnings=tuple(_tls_warnings(broker[0].tls, backend_tls) + api_notes),
    )


# --- TLS ---------------------------------------------------------------------------------

def _mapping_layers(key: str, profile_name: str | None, profile: dict[str, Any],
                    app: AppConfig | None) -> list[tuple[str, dict[str, Any] | None]]:
    """`broker_use_ssl` / `redis_backend_use_ssl` from the profile, then the app."""
    layers = [(f"profile {profile_name} {key}",
               settings_from_mapping(profile.get(key), f"profile {profile_name}: {key}"))]
    if app is not None:
        layers.append((f"app {app.name} {key}",
                       settings_from_mapping(app.settings.get(key), f"app {app.name}: {key}")))
    for _, d in layers:
        if d and d.get("keyfile"):
            SECRETS.add(d["keyfile"])
    return layers


def _with_tls(ep: Endpoint, what: str, lower: list[tuple[str, dict[str, Any] | None]]
              ) -> Endpoint:
    """The endpoint with its TLS settings: its URL's `ssl_*` parameters over `lower`."""
    import dataclasses
    from urllib.parse import urlsplit

    query = settings_from_query(ep.query, f"{what} URL {ep.redacted}")
    tls = resolve_tls(ep.scheme, [("URL", query), *lower])
    if tls is None:
        return ep
    check_files(tls, what)
    port = ep.port
    if ep.kind == "amqp" and ep.scheme != "amqps" and urlsplit(ep.raw).port is None:
        port = 5671  # kombu: the TLS port when TLS is on and the URL names none
    return dataclasses.replace(ep, tls=tls, port=port)


def _backend_tls(backend: str | None, profile_name: str | None, profile: dict[str, Any],
                 app: AppConfig | None) -> TLSConfig | None:
    """Redis backends: URL parameters over `redis_backend_use_ssl` (Celery merges them the
    same way, key by key). An AMQP backend URL: its own parameters only."""
    if not backend or "://" not in backend:
        return None
    ep = parse_endpoint(backend, what="result backend URL")
    if ep.scheme in ("redis", "rediss"):
        lower = _mapping_layers("redis_backend_use_ssl", profile_name, profile, app)
    elif ep.scheme in ("amqp", "amqps", "pyamqp"):
        lower = []
    else:
        return None
    return _with_tls(ep, "result backend", lower).tls


def _api_tls(api: Endpoint | None, flags: Flags, env: dict[str, str],
             profile_name: str | None, profile: dict[str, Any], broker: Endpoint,
             derived: bool) -> tuple[Endpoint | None, list[str]]:
    """The management API's CA and client certificate: flag > environment > profile. An API
    URL derived from a TLS broker also trusts the broker's CA unless told otherwise."""
    import dataclasses

    given = {}
    origins = {}
    for key, flag, env_key, profile_key in (
            ("ca_certs", flags.rabbitmq_api_ca, "CELERYCTL_RABBITMQ_API_CA", "rabbitmq_api_ca"),
            ("certfile", None, "CELERYCTL_RABBITMQ_API_CERT", "rabbitmq_api_cert"),
            ("keyfile", None, "CELERYCTL_RABBITMQ_API_KEY", "rabbitmq_api_key")):
        if flag:
            given[key], origins[key] = str(flag), "flag"
        elif env.get(env_key):
            given[key], origins[key] = env[env_key], f"env {env_key}"
        elif profile.get(profile_key):
            given[key], origins[key] = str(profile[profile_key]), f"profile {profile_name}"
    if given.get("keyfile"):
        SECRETS.add(given["keyfile"])
    if api is None:
        return None, []
    if api.scheme != "https":
        notes = [f"the management API's TLS settings ({', '.join(sorted(origins.values()))}) "
                 f"are not used: its URL is http://"] if given else []
        return api, notes
    if derived and "ca_certs" not in given and broker.tls and broker.tls.ca_certs:
        given["ca_certs"], origins["ca_certs"] = broker.tls.ca_certs, "the broker's CA"
    tls = resolve_tls("https", [(origins[k], {k: os.path.expanduser(v)})
                                for k, v in given.items()])
    check_files(tls, "management API", names={"ca_certs": "CA", "certfile": "client "
                                              "certificate", "keyfile": "client key"})
    return dataclasses.replace(api, tls=tls), []


def _tls_warnings(broker: TLSConfig | None, backend: TLSConfig | None) -> list[str]:
    out = []
    for what, tls in (("broker", broker), ("result backend", backend)):
        if tls is not None and not tls.verifies:
            out.append(f"TLS certificate verification is OFF for the {what} (ssl_cert_reqs=none "
                       f"from {tls.origin('cert_reqs') or 'settings'}): the connection is "
                       f"encrypted but the server is not authenticated")
    return out


def derive_management_api(broker: Endpoint, backend: str | None) -> Endpoint | None:
    """When the broker (or an amqp/rpc backend's broker) is AMQP and no API URL was given,
    the management API is assumed at http://HOST:15672 with the same credentials."""
    source = broker if broker.kind == "amqp" else None
    if source is None and backend and backend.split("://", 1)[0] in ("amqp", "amqps", "pyamqp"):
        try:
            source = parse_endpoint(backend)
        except UsageError:
            source = None
    if source is None:
        return None
    user = source.username or "guest"
    password = source.password if source.password is not None else "guest"
    from urllib.parse import quote

    host = f"[{source.host}]" if ":" in source.host else source.host
    # a broker over TLS: the management plugin over https, on its conventional port
    secure = source.scheme == "amqps" or source.tls is not None
    scheme, port = ("https", 15671) if secure else ("http", 15672)
    raw = f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}"
    return parse_http(raw)


def _load_profile(name: str | None, env: dict[str, str]) -> tuple[str | None, dict[str, Any]]:
    path = Path(os.path.expanduser(env.get("CELERYCTL_CONFIG") or DEFAULT_CONFIG))
    if name is None:
        name = env.get("CELERYCTL_PROFILE")
    if not path.exists():
        if name:
            raise UsageError(f"profile {name!r} asked for, but {path} does not exist")
        return None, {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read profile file {path}: {exc}") from None
    if not isinstance(data.get("default", ""), str):
        raise UsageError(f"profile file {path}: default: expected a string (a profile name), "
                         f"got {_type_name(data['default'])}")
    clusters = data.get("clusters") or {}
    if not isinstance(clusters, dict):
        raise UsageError(f"profile file {path}: clusters: expected a table of profiles, got "
                         f"{_type_name(clusters)}")
    if name is None:
        name = data.get("default")
        if name is None:
            return None, {}
    if name not in clusters:
        known = ", ".join(sorted(clusters)) or "none"
        raise UsageError(f"no profile {name!r} in {path} (profiles: {known})")
    profile = clusters[name]
    if not isinstance(profile, dict):
        raise UsageError(f"profile {name!r} in {path} is not a table")
    # secrets first: nothing below prints a value, but a later error elsewhere might
    for key in ("broker", "result_backend", "rabbitmq_api"):
        for v in profile.get(key) if isinstance(profile.get(key), list) else [profile.get(key)]:
            if isinstance(v, str):
                SECRETS.add_url(v)
    for key in ("broker_use_ssl", "redis_backend_use_ssl"):
        if isinstance(profile.get(key), dict):
            for k in ("ssl_keyfile", "keyfile", "ssl_password", "password"):
                SECRETS.add(profile[key].get(k) if isinstance(profile[key].get(k), str)
                            else None)
    check_profile(profile, f"profile file {path}, profile {name!r}")
    return name, profile


# Each profile key and the type it must have: (check, what the message says is expected).
def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


PROFILE_KEYS: dict[str, tuple[Any, str]] = {
    "broker": (lambda v: isinstance(v, (str, list)), "a URL string, or a list of URL strings "
               "(failover)"),
    "result_backend": (_is_str, "a URL string"),
    "rabbitmq_api": (_is_str, "a URL string"),
    "vhost": (_is_str, "a string"),
    "queues": (_is_str_list, "a list of queue names, e.g. [\"celery\", \"emails\"]"),
    "timeout": (_is_number, "a number of seconds"),
    "app": (_is_str, "a string MODULE[:ATTR]"),
    "transport_options": (lambda v: isinstance(v, dict), "a table"),
    "broker_use_ssl": (lambda v: isinstance(v, (dict, bool)), "a table of TLS settings or "
                       "true/false"),
    "redis_backend_use_ssl": (lambda v: isinstance(v, (dict, bool)), "a table of TLS "
                              "settings or true/false"),
    "rabbitmq_api_ca": (_is_str, "a file path string"),
    "rabbitmq_api_cert": (_is_str, "a file path string"),
    "rabbitmq_api_key": (_is_str, "a file path string"),
}
_LIST_ITEMS = {"broker": "a URL string", "queues": "a queue name string"}


def _type_name(v: Any) -> str:
    """The TOML type of a value — never the value itself (it may be a secret)."""
    for t, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"),
                    (str, "a string"), (list, "an array"), (dict, "a table")):
        if isinstance(v, t):
            return name
    return f"a {type(v).__name__}"  # TOML dates and times


def check_profile(profile: dict[str, Any], where: str) -> None:
    """Every key of a profile has its type: a UsageError (exit 64) naming the file, the
    profile and the key otherwise — `broker = 5`, `queues = "abc"` (which would mean the
    queues a, b and c), `timeout = "3"`, an unknown key (a typo would fall back to a default).
    Values are never printed: they may hold passwords."""
    import difflib

    for key, value in profile.items():
        if key not in PROFILE_KEYS:
            close = difflib.get_close_matches(key, list(PROFILE_KEYS), n=1, cutoff=0.7)
            hint = f" (did you mean {close[0]!r}?)" if close else (
                f" (known: {', '.join(PROFILE_KEYS)})")
            raise UsageError(f"{where}: unknown key {key!r}{hint}")
        ok, expected = PROFILE_KEYS[key]
        if not ok(value):
            raise UsageError(f"{where}: {key}: expected {expected}, got {_type_name(value)}")
        if isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, str) or not item.strip():
                    got = "an empty string" if isinstance(item, str) else _type_name(item)
                    raise UsageError(f"{where}: {key}[{i}]: expected {_LIST_ITEMS[key]}, "
                                     f"got {got}")


def load_app_config(spec: str) -> AppConfig:
    """Import a Celery app the way `celery -A` does and read its settings one by one, so one
    broken setting (say, the `amqp://` result backend Celery 5 removed) does not lose the rest.
    The app's backend is never instantiated."""
    try:
        from celery.app.utils import find_app
    except ImportError as exc:  # pragma: no cover
        raise UsageError(f"celery is not importable: {exc}") from None
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        app = find_app(spec)
    except Exception as exc:  # noqa: BLE001 - user code can raise anything on import
        raise UsageError(
            f"cannot import Celery app {spec!r}: {type(exc).__name__}: {SECRETS.scrub(str(exc))}"
        ) from None
    errors: list[str] = []
    settings: dict[str, Any] = {}
    try:
        conf = app.conf
        conf.get("broker_url")  # forces pending config_from_object to load
    except Exception as exc:  # noqa: BLE001
        return AppConfig(name=spec, errors=(f"app config could not be loaded: "
                                            f"{type(exc).__name__}: {SECRETS.scrub(str(exc))}",))
    for key in APP_SETTINGS:
        try:
            settings[key] = jsonable(conf.get(key))
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{key}: {type(exc).__name__}: {SECRETS.scrub(str(exc))}")
    for key in ("broker_url", "result_backend", "broker_read_url", "broker_write_url"):
        if isinstance(settings.get(key), str):
            SECRETS.add_url(settings[key])
    return AppConfig(name=spec, settings=settings, queue_names=tuple(_queue_names(conf)),
                     errors=tuple(errors))


def _queue_names(conf: Any) -> list[str]:
    names: list[str] = []
    try:
        default = conf.get("task_default_queue") or "celery"
        names.append(default)
        for q in conf.get("task_queues") or ():
            name = getattr(q, "name", None) or (q if isinstance(q, str) else None)
            if name:
                names.append(name)
        routes = conf.get("task_routes") or ()
        route_maps = routes if isinstance(routes, (list, tuple)) else [routes]
        for r in route_maps:
            if isinstance(r, dict):
                for v in r.values():
                    q = v.get("queue") if isinstance(v, dict) else None
                    name = getattr(q, "name", q)
                    if isinstance(name, str):
                        names.append(name)
    except Exception:  # noqa: BLE001 - routes can be arbitrary objects
        pass
    return list(dict.fromkeys(names))


def jsonable(value: Any) -> Any:
    """Settings as JSON-safe values: timedeltas in seconds, kombu Queues as dicts,
    anything else unknown as its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    name = getattr(value, "name", None)
    if name is not None and hasattr(value, "routing_key"):  # kombu Queue
        return {"name": name, "routing_key": getattr(value, "routing_key", None),
                "max_priority": getattr(value, "max_priority", None),
                "queue_arguments": jsonable(getattr(value, "queue_arguments", None) or {})}
    return repr(value)
