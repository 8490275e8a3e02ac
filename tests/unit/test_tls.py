"""TLS settings, pure: URL parameters and settings dicts -> one TLSConfig -> each library's
keyword arguments; precedence; usage errors; TLS failure descriptions."""

from __future__ import annotations

import ssl
import sys
import textwrap

import pytest

from celeryctl.status import UsageError
from celeryctl.targets import Flags, resolve
from celeryctl.tls import (
    TLSConfig,
    amqp_sslopts,
    check_files,
    redis_ssl_kwargs,
    requests_kwargs,
    resolve_tls,
    settings_from_mapping,
    settings_from_query,
    ssl_context,
    strip_tls_query,
)


@pytest.mark.parametrize("value,expected", [
    ("required", "required"), ("CERT_REQUIRED", "required"), ("optional", "optional"),
    ("CERT_OPTIONAL", "optional"), ("none", "none"), ("CERT_NONE", "none"),
    (ssl.CERT_REQUIRED, "required"), (2, "required"), (0, "none"), (ssl.CERT_NONE, "none"),
])
def test_cert_reqs_spellings(value, expected):
    if isinstance(value, str):  # a URL carries text only
        assert settings_from_query([("ssl_cert_reqs", value)], "u") == {"cert_reqs": expected}
    assert settings_from_mapping({"ssl_cert_reqs": value}, "m") == {"cert_reqs": expected}
    assert settings_from_mapping({"cert_reqs": value}, "m") == {"cert_reqs": expected}


def test_query_parameters_normalised():
    q = [("ssl_cert_reqs", "CERT_REQUIRED"), ("ssl_ca_certs", "/etc/ca.pem"),
         ("ssl_certfile", "/c.pem"), ("ssl_keyfile", "/k.pem"), ("ssl_check_hostname", "false"),
         ("master_name", "x")]
    assert settings_from_query(q, "u") == {
        "cert_reqs": "required", "ca_certs": "/etc/ca.pem", "certfile": "/c.pem",
        "keyfile": "/k.pem", "check_hostname": False}
    assert settings_from_query([("db", "1")], "u") is None
    assert settings_from_query([("ssl", "true")], "u") == {}  # TLS on, defaults
    assert settings_from_query([("ssl", "0")], "u") is None


def test_bad_values_are_usage_errors():
    with pytest.raises(UsageError, match="ssl_cert_reqs must be required, optional or none"):
        settings_from_query([("ssl_cert_reqs", "maybe")], "broker URL")
    with pytest.raises(UsageError, match="unknown TLS parameter 'ssl_ca_cert'"):
        settings_from_query([("ssl_ca_cert", "/x")], "broker URL")  # a typo is not ignored
    with pytest.raises(UsageError, match="ssl_check_hostname must be true or false"):
        settings_from_query([("ssl_check_hostname", "perhaps")], "u")
    with pytest.raises(UsageError, match="must be a table/dict"):
        settings_from_mapping(["ca"], "app x: broker_use_ssl")


def test_mapping_both_spellings_and_true():
    assert settings_from_mapping(True, "m") == {}
    assert settings_from_mapping(None, "m") is None and settings_from_mapping(False, "m") is None
    assert settings_from_mapping({"ca_certs": "/a", "certfile": "/c", "keyfile": "/k",
                                  "server_hostname": "rabbit", "ciphers": "HIGH"}, "m") == {
        "ca_certs": "/a", "certfile": "/c", "keyfile": "/k", "server_hostname": "rabbit"}


def test_resolve_precedence_key_by_key():
    tls = resolve_tls("redis", [("URL", {"ca_certs": "/url-ca"}),
                                ("profile p", {"ca_certs": "/profile-ca", "certfile": "/p.crt"}),
                                ("app a", {"cert_reqs": "optional", "certfile": "/a.crt",
                                           "keyfile": "/a.key"})])
    assert (tls.ca_certs, tls.certfile, tls.keyfile, tls.cert_reqs) == \
        ("/url-ca", "/p.crt", "/a.key", "optional")
    assert tls.origin("ca_certs") == "URL" and tls.origin("certfile") == "profile p"
    assert tls.origin("keyfile") == "app a"


def test_resolve_enabled_by_scheme_or_settings():
    assert resolve_tls("redis", [("URL", None), ("app", None)]) is None
    assert resolve_tls("rediss", [("URL", None)]) == TLSConfig()  # verified, system CAs
    assert resolve_tls("redis", [("app", {})]) == TLSConfig()  # broker_use_ssl = True
    assert resolve_tls("amqp", [("app", {"ca_certs": "/a"})]).ca_certs == "/a"


@pytest.fixture(scope="module")
def real_certs(tmp_path_factory):
    """Real PEM files (the lab's openssl-made CA and client pair): check_files loads them."""
    from celeryctl.lab.tls import make_certs

    return make_certs(tmp_path_factory.mktemp("certs"))


def test_check_files(tmp_path, real_certs):
    import shutil

    ca = tmp_path / "ca.pem"
    shutil.copy(real_certs.ca, ca)
    check_files(TLSConfig(ca_certs=str(ca)), "broker")
    check_files(TLSConfig(ca_certs=str(ca), certfile=real_certs.client_cert,
                          keyfile=real_certs.client_key), "broker")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(UsageError, match="holds no usable CA certificate"):
        check_files(TLSConfig(ca_certs=str(garbage)), "broker")
    # a key of another pair: refused now (exit 64), never a "TLS handshake failed" later
    with pytest.raises(UsageError, match="cannot be used together") as exc:
        check_files(TLSConfig(certfile=real_certs.client_cert,
                              keyfile=real_certs.server_key), "broker")
    assert real_certs.server_key not in str(exc.value)
    with pytest.raises(UsageError, match=r"the ssl_ca_certs file .*nope.pem does not exist "
                                         r"\(from URL\)"):
        check_files(TLSConfig(ca_certs=str(tmp_path / "nope.pem"),
                              origins=(("ca_certs", "URL"),)), "broker")
    with pytest.raises(UsageError) as exc:
        check_files(TLSConfig(certfile=str(ca), keyfile=str(tmp_path / "secret-dir/k.pem")),
                    "broker")
    assert "ssl_keyfile" in str(exc.value) and "secret-dir" not in str(exc.value)
    with pytest.raises(UsageError, match="is not a readable file"):
        check_files(TLSConfig(ca_certs=str(tmp_path)), "broker")
    with pytest.raises(UsageError, match="ssl_keyfile given without ssl_certfile"):
        check_files(TLSConfig(keyfile=str(ca)), "broker")


def test_adapters():
    tls = TLSConfig(cert_reqs="required", ca_certs="/ca", certfile="/c", keyfile="/k")
    assert redis_ssl_kwargs(tls) == {"ssl_cert_reqs": "required", "ssl_ca_certs": "/ca",
                                     "ssl_certfile": "/c", "ssl_keyfile": "/k"}
    assert redis_ssl_kwargs(TLSConfig(check_hostname=False)) == {
        "ssl_cert_reqs": "required", "ssl_check_hostname": False}
    # py-amqp checks the host name exactly when it gets server_hostname (kombu's rule)
    assert amqp_sslopts(tls, "rabbit") == {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": "/ca",
                                           "certfile": "/c", "keyfile": "/k"}
    assert amqp_sslopts(TLSConfig(check_hostname=True), "rabbit")["server_hostname"] == "rabbit"
    assert amqp_sslopts(TLSConfig(server_hostname="r.example"), "x")["server_hostname"] == \
        "r.example"
    assert requests_kwargs(None) == {"verify": True}
    assert requests_kwargs(TLSConfig(ca_certs="/ca", certfile="/c", keyfile="/k")) == {
        "verify": "/ca", "cert": ("/c", "/k")}
    assert requests_kwargs(TLSConfig())["verify"] is True  # never False


def test_ssl_context_mirrors_py_amqp():
    ctx = ssl_context(TLSConfig(cert_reqs="none"), "h")
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    ctx = ssl_context(TLSConfig(), "h")
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname
    ctx = ssl_context(TLSConfig(check_hostname=True), "h")
    assert ctx.check_hostname


def test_strip_tls_query():
    assert strip_tls_query("amqps://h:5671/v?ssl_ca_certs=%2Fa&heartbeat=10&ssl_cert_reqs=x") \
        == "amqps://h:5671/v?heartbeat=10"
    assert strip_tls_query("amqp://h//?ssl=1&heartbeat=5") == "amqp://h//?heartbeat=5"
    assert strip_tls_query("rediss://:pw@h/0?ssl_ca_certs=/a") == "rediss://:pw@h/0"


# --- targets ----------------------------------------------------------------------------

def _files(tmp_path):
    """Real PEMs under the names the tests use (check_files loads them)."""
    import shutil

    from celeryctl.lab.tls import make_certs

    certs = make_certs(tmp_path.parent / "shared-certs")
    for name in ("url-ca.pem", "profile-ca.pem", "app-ca.pem", "api-ca.pem", "env-ca.pem"):
        shutil.copy(certs.ca, tmp_path / name)
    shutil.copy(certs.client_cert, tmp_path / "c.pem")
    shutil.copy(certs.client_key, tmp_path / "k.pem")
    return tmp_path


def test_targets_url_over_profile_over_app(tmp_path, monkeypatch):
    d = _files(tmp_path)
    (d / "tlsapp_unit.py").write_text(textwrap.dedent(f"""
        import ssl
        from celery import Celery
        app = Celery("t")
        app.conf.broker_url = "rediss://app-host:6380/0"
        app.conf.broker_use_ssl = {{"ssl_cert_reqs": ssl.CERT_OPTIONAL,
                                   "ssl_ca_certs": "{d}/app-ca.pem",
                                   "ssl_certfile": "{d}/c.pem", "ssl_keyfile": "{d}/k.pem"}}
        app.conf.result_backend = "redis://app-host:6380/1"
        app.conf.redis_backend_use_ssl = {{"ssl_ca_certs": "{d}/app-ca.pem"}}
    """))
    monkeypatch.syspath_prepend(str(d))
    cfg = d / "c.toml"
    cfg.write_text(f'[clusters.p]\napp = "tlsapp_unit:app"\n'
                   f'broker_use_ssl = {{ ssl_ca_certs = "{d}/profile-ca.pem" }}\n')
    env = {"CELERYCTL_CONFIG": str(cfg)}
    t = resolve(Flags(profile="p"), env=env)
    tls = t.broker_tls
    assert tls.ca_certs == f"{d}/profile-ca.pem" and tls.origin("ca_certs").startswith("profile")
    assert tls.cert_reqs == "optional" and tls.origin("cert_reqs").startswith("app")
    assert tls.certfile == f"{d}/c.pem"
    assert t.result_backend_tls.ca_certs == f"{d}/app-ca.pem"
    t = resolve(Flags(profile="p", broker=f"rediss://h/0?ssl_ca_certs={d}/url-ca.pem"), env=env)
    assert t.broker_tls.ca_certs == f"{d}/url-ca.pem" and t.broker_tls.origin("ca_certs") == "URL"
    assert t.broker_tls.cert_reqs == "optional"  # still the app's: merged key by key
    summary = t.summary()["tls"]
    assert summary["broker"]["keyfile"] == "***" and "k.pem" not in str(summary)
    # a plain redis:// URL is made TLS by broker_use_ssl, as kombu does
    t = resolve(Flags(profile="p", broker="redis://h/0"), env=env)
    assert t.broker_tls is not None
    sys.modules.pop("tlsapp_unit", None)


def test_targets_missing_ca_is_usage_error(tmp_path):
    env = {"CELERYCTL_CONFIG": str(tmp_path / "none.toml")}
    with pytest.raises(UsageError, match="broker: the ssl_ca_certs file .* does not exist"):
        resolve(Flags(broker=f"rediss://h/0?ssl_ca_certs={tmp_path}/nope.pem"), env=env)
    with pytest.raises(UsageError, match="result backend: the ssl_ca_certs file"):
        resolve(Flags(broker="redis://h/0",
                      result_backend=f"rediss://h/1?ssl_ca_certs={tmp_path}/nope.pem"), env=env)
    with pytest.raises(UsageError, match=r"management API: the CA file .* \(from flag\)"):
        resolve(Flags(broker="amqp://h//", rabbitmq_api="https://h:15671",
                      rabbitmq_api_ca=str(tmp_path / "nope.pem")), env=env)


def test_targets_management_api_tls(tmp_path):
    d = _files(tmp_path)
    cfg = d / "c.toml"
    cfg.write_text(f'[clusters.p]\nrabbitmq_api = "https://u:pw@rabbit:15671"\n'
                   f'rabbitmq_api_ca = "{d}/profile-ca.pem"\nrabbitmq_api_cert = "{d}/c.pem"\n'
                   f'rabbitmq_api_key = "{d}/k.pem"\n')
    env = {"CELERYCTL_CONFIG": str(cfg)}
    t = resolve(Flags(profile="p", broker="amqp://rabbit//"), env=env)
    assert t.rabbitmq_api.tls.ca_certs == f"{d}/profile-ca.pem"
    assert t.rabbitmq_api.tls.certfile == f"{d}/c.pem"
    env["CELERYCTL_RABBITMQ_API_CA"] = f"{d}/env-ca.pem"
    t = resolve(Flags(profile="p", broker="amqp://rabbit//"), env=env)
    assert t.rabbitmq_api.tls.ca_certs == f"{d}/env-ca.pem"
    t = resolve(Flags(profile="p", broker="amqp://rabbit//", rabbitmq_api_ca=f"{d}/api-ca.pem"),
                env=env)
    assert t.rabbitmq_api.tls.ca_certs == f"{d}/api-ca.pem"
    assert t.rabbitmq_api.tls.origin("ca_certs") == "flag"
    # an http:// API: the settings are not used, and that is said
    t = resolve(Flags(broker="amqp://rabbit//", rabbitmq_api="http://rabbit:15672",
                      rabbitmq_api_ca=f"{d}/api-ca.pem"), env={"CELERYCTL_CONFIG": "/none"})
    assert t.rabbitmq_api.tls is None and "http://" in t.tls_warnings[0]


def test_derived_api_of_a_tls_broker_is_https_with_its_ca(tmp_path):
    d = _files(tmp_path)
    t = resolve(Flags(broker=f"amqps://u:pw@rabbit//?ssl_ca_certs={d}/url-ca.pem"),
                env={"CELERYCTL_CONFIG": "/none"})
    assert (t.rabbitmq_api.scheme, t.rabbitmq_api.port) == ("https", 15671)
    assert t.rabbitmq_api.tls.ca_certs == f"{d}/url-ca.pem"
    assert t.broker[0].port == 5671
    # amqp:// made TLS by broker_use_ssl and no port: 5671, as kombu picks
    cfg = d / "c.toml"
    cfg.write_text('[clusters.p]\nbroker = "amqp://rabbit//"\nbroker_use_ssl = true\n')
    t = resolve(Flags(profile="p"), env={"CELERYCTL_CONFIG": str(cfg)})
    assert t.broker[0].port == 5671 and t.broker_tls is not None


def test_verification_off_is_announced(tmp_path):
    t = resolve(Flags(broker="rediss://h/0?ssl_cert_reqs=CERT_NONE"),
                env={"CELERYCTL_CONFIG": "/none"})
    assert "verification is OFF for the broker" in t.tls_warnings[0]


def test_keyfile_path_never_printed(tmp_path):
    from celeryctl.urls import SECRETS, redact

    d = _files(tmp_path)
    url = f"rediss://h/0?ssl_ca_certs={d}/url-ca.pem&ssl_certfile={d}/c.pem&ssl_keyfile={d}/k.pem"
    t = resolve(Flags(broker=url), env={"CELERYCTL_CONFIG": "/none"})
    assert f"{d}/k.pem" not in redact(url) and f"{d}/k.pem" not in str(t.summary())
    assert SECRETS.scrub(f"cannot load {d}/k.pem") == "cannot load ***"


# --- sentinels and the master ------------------------------------------------------------

def test_sentinel_client_tls_from_sentinel_kwargs():
    from celeryctl.collect.redis import _sentinel_client
    from celeryctl.urls import parse_endpoint

    ep = parse_endpoint("sentinel://h:26379")
    c = _sentinel_client(ep, 1.0, {"sentinel_kwargs": {"ssl": True, "ssl_ca_certs": "/ca"}})
    kw = c.connection_pool.connection_kwargs
    assert kw.get("ssl_ca_certs") == "/ca" and "SSL" in c.connection_pool.connection_class.__name__
    c = _sentinel_client(ep, 1.0, {"master_name": "m"})
    assert "SSL" not in c.connection_pool.connection_class.__name__


# --- TLS failures described ----------------------------------------------------------------

def _verify_error(message: str) -> Exception:
    inner = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                                            f"verify failed: {message} (_ssl.c:1006)")
    inner.verify_message = message
    try:
        try:
            raise inner
        except ssl.SSLError as e:  # as redis-py does: the ssl error is the context
            raise ConnectionError(f"Error 1 connecting to h:6379. {e}.")  # noqa: B904
    except ConnectionError as outer:
        return outer


@pytest.mark.parametrize("message,expected", [
    ("self-signed certificate in certificate chain",
     "TLS certificate verification failed (self-signed certificate in certificate chain): "
     "give the CA"),
    ("unable to get local issuer certificate", "give the CA that signed"),
    ("Hostname mismatch, certificate is not valid for 'h'", "TLS host name check failed"),
    ("IP address mismatch, certificate is not valid for '10.0.0.1'", "host name check failed"),
    ("certificate has expired", "renew the certificate"),
])
def test_describe_verify_failures(message, expected):
    from celeryctl.collect.bounded import describe_error

    assert expected in describe_error(_verify_error(message))


def test_describe_client_certificate_and_plain_port():
    from celeryctl.collect.bounded import describe_error

    e = ConnectionError("Error while reading from h:6379 : (1, '[SSL: "
                        "TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required')")
    assert "requires a client certificate" in describe_error(e)
    assert "ssl_certfile=FILE" in describe_error(e)
    e = ConnectionError("x")
    e.__context__ = ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:2427)")
    assert "client certificate" in describe_error(e)
    e = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
    assert "does not answer TLS on this port" in describe_error(e)
    assert "TLS" not in describe_error(ConnectionRefusedError(111, "Connection refused"))
    # a description is never described twice (failover lists, wrappers)
    once = describe_error(_verify_error("self-signed certificate"))
    assert describe_error(ConnectionError(f"127.0.0.1:1: {once}")) == f"127.0.0.1:1: {once}"


def test_management_api_fix_names_its_flag():
    from celeryctl.collect.rabbitmq import api_tls_error

    assert "--rabbitmq-api-ca FILE" in api_tls_error(_verify_error("self-signed certificate"))


def test_describe_verify_failure_from_text_alone():
    from celeryctl.collect.bounded import describe_error

    e = ConnectionError("Error 1 connecting to h:6379. [SSL: CERTIFICATE_VERIFY_FAILED] "
                        "certificate verify failed: self-signed certificate in certificate "
                        "chain (_ssl.c:1006).")
    assert describe_error(e).startswith("TLS certificate verification failed (self-signed "
                                        "certificate in certificate chain): give the CA")


def test_a_typo_in_broker_use_ssl_is_refused():
    from celeryctl.tls import settings_from_mapping

    with pytest.raises(UsageError, match="did you mean 'ssl_ca_certs'"):
        settings_from_mapping({"ssl_ca_cert": "/a"}, "profile broker_use_ssl")
    # tuning keys it does not use are still ignored
    assert settings_from_mapping({"ciphers": "HIGH", "ca_certs": "/a"}, "app") == {
        "ca_certs": "/a"}
