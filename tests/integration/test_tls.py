"""TLS as deployments use it, on real servers: Redis serving only TLS (rediss://) and RabbitMQ
serving only amqps:// and the management API over https, with certificates from a private CA
the lab makes (celeryctl/lab/tls.py), and real Celery workers connected over TLS.

Servers are module-scoped (one TLS Redis, one requiring client certificates, two with bad
server certificates, one RabbitMQ node requiring client certificates everywhere)."""

from __future__ import annotations

import json
import socket
import textwrap
import time

import pytest

from celeryctl.lab import servers as s
from celeryctl.lab.tls import ServerTLS, make_certs
from tests.conftest import _start_workers, closed_port, run_cli, run_json, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.workers]
H = socket.gethostname()
FAST = 3.0  # seconds a TLS refusal may take, process start-up included (--timeout is 5)


@pytest.fixture(scope="module")
def tlsdir(tmp_path_factory):
    return tmp_path_factory.mktemp("tlslab")


@pytest.fixture(scope="module")
def certs(tlsdir):
    return make_certs(tlsdir / "certs")


def _stop(*procs):
    """Stop the workers together (each takes seconds to shut down), then the servers."""
    import threading

    workers = [p for p in procs if p is not None and p.kind == "worker"]
    threads = [threading.Thread(target=p.stop) for p in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        if p is not None and p.kind != "worker":
            p.stop(timeout=20)


@pytest.fixture(scope="module")
def redis_tls(tlsdir, certs):
    """TLS only (the plain port off), client certificates not asked for, two TLS workers."""
    server = s.start_redis(tlsdir, name="redis-tls", tls=ServerTLS(certs))
    workers = []
    try:
        workers = _start_workers(tlsdir, server.info["url"], ["tw1@%h", "tw2@%h"],
                                 "celery,hipri")
        yield {**server.info, "names": [f"tw{i}@{H}" for i in (1, 2)]}
    finally:
        _stop(*workers, server)


@pytest.fixture(scope="module")
def redis_mtls(tlsdir, certs):
    """TLS with client certificates required (--tls-auth-clients yes)."""
    server = s.start_redis(tlsdir, name="redis-mtls", tls=ServerTLS(certs, client_certs="yes"))
    yield server.info
    server.stop()


@pytest.fixture(scope="module")
def redis_bad_certs(tlsdir, certs):
    """Two servers whose certificates fail: one for another host name, one expired."""
    procs = []
    try:
        for name, stem in (("redis-wronghost", "wronghost"), ("redis-expired", "expired")):
            procs.append(s.start_redis(tlsdir, name=name, tls=ServerTLS(
                certs, server_cert=certs.path(f"{stem}.crt"), server_key=certs.path(f"{stem}.key"))))
        yield {"wronghost": procs[0].info["port"], "expired": procs[1].info["port"]}
    finally:
        _stop(*procs)


def _url(port, certs, *, ca=None, client=False, db=0, extra=""):
    q = f"ssl_cert_reqs=required&ssl_ca_certs={ca or certs.ca}"
    if client:
        q += f"&ssl_certfile={certs.client_cert}&ssl_keyfile={certs.client_key}"
    return f"rediss://127.0.0.1:{port}/{db}?{q}{extra}"


def _source(doc, name):
    return next(x for x in doc["sources"] if x["name"] == name)


def _secret_free(certs, *texts):
    """The client key's path (where a secret lives) is never printed."""
    for t in texts:
        assert certs.client_key not in (t if isinstance(t, str) else json.dumps(t))


# --- Redis -------------------------------------------------------------------------------

def test_redis_tls_url_parameters_every_read_command(redis_tls, certs):
    url = redis_tls["url"]
    assert url.startswith("rediss://") and redis_tls["plain_port"] is None
    code, doc, err, _ = run_json("workers", "--broker", url)
    assert code == 0, err
    assert sorted(r["name"] for r in doc["workers"]) == redis_tls["names"]
    assert doc["target"]["tls"]["broker"]["ca_certs"] == certs.ca
    code, doc, err, _ = run_json("queues", "--broker", url)
    assert code == 0, err
    names = {r["name"]: r for r in doc["queues"]}
    assert names["celery"]["consumers"] == 2
    code, doc, err, _ = run_json("connections", "--broker", url)
    assert code == 0, err
    assert {r["worker"] for r in doc["connections"] if r["worker"]} == set(redis_tls["names"])
    code, doc, err, _ = run_json("doctor", "--broker", url)
    assert code in (0, 1, 2), err
    assert _source(doc, "broker")["ok"] and _source(doc, "workers")["ok"]
    code, out, err, _ = run_cli("workers", "inspect", "ping", "--broker", url)
    assert code == 0 and all(n in out for n in redis_tls["names"])


def test_redis_tls_from_app_broker_use_ssl(redis_tls, certs, tmp_path):
    """-A: the app's broker_use_ssl (redis-py's names, ssl.CERT_REQUIRED) with a URL that
    carries nothing, and the same settings turning a redis:// URL into TLS, as kombu does."""
    for i, scheme in enumerate(("rediss", "redis")):
        (tmp_path / f"tlsapp{i}.py").write_text(textwrap.dedent(f"""
            import ssl
            from celery import Celery
            app = Celery("tlsapp")
            app.conf.broker_url = "{scheme}://127.0.0.1:{redis_tls['port']}/0"
            app.conf.broker_use_ssl = {{"ssl_cert_reqs": ssl.CERT_REQUIRED,
                                       "ssl_ca_certs": "{certs.ca}"}}
        """))
        code, doc, err, _ = run_json("workers", "-A", f"tlsapp{i}",
                                     env={"PYTHONPATH": str(tmp_path)})
        assert code == 0, err
        assert sorted(r["name"] for r in doc["workers"]) == redis_tls["names"]
        assert doc["target"]["tls"]["broker"]["origins"]["ca_certs"] == \
            f"app tlsapp{i} broker_use_ssl"


def test_redis_tls_from_profile(redis_tls, certs, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(textwrap.dedent(f"""
        [clusters.tls]
        broker = "rediss://127.0.0.1:{redis_tls['port']}/0"
        result_backend = "rediss://127.0.0.1:{redis_tls['port']}/1"
        [clusters.tls.broker_use_ssl]
        ssl_cert_reqs = "CERT_REQUIRED"
        ssl_ca_certs = "{certs.ca}"
        [clusters.tls.redis_backend_use_ssl]
        ssl_ca_certs = "{certs.ca}"
    """))
    code, doc, err, _ = run_json("queues", "--profile", "tls",
                                 env={"CELERYCTL_CONFIG": str(cfg)})
    assert code == 0, err
    assert _source(doc, "broker")["ok"] and _source(doc, "result-backend")["ok"]
    assert doc["target"]["tls"]["result_backend"]["origins"]["ca_certs"] == \
        "profile tls redis_backend_use_ssl"


def test_redis_tls_result_backend(redis_tls, certs):
    url = redis_tls["url"]
    backend = _url(redis_tls["port"], certs, db=1)
    code, doc, err, _ = run_json("queues", "--broker", url, "--result-backend", backend)
    assert code == 0 and _source(doc, "result-backend")["ok"], err
    assert "same Redis instance" in _source(doc, "result-backend")["detail"]
    wrong = _url(redis_tls["port"], certs, db=1, ca=certs.other_ca)
    code, doc, err, _ = run_json("queues", "--broker", url, "--result-backend", wrong)
    assert code == 0  # the listing was observed; the backend's failure is reported
    b = _source(doc, "result-backend")
    assert b["ok"] is False and "TLS certificate verification failed" in b["error"]


def test_redis_wrong_ca_fails_fast_and_clearly(redis_tls, certs):
    url = _url(redis_tls["port"], certs, ca=certs.other_ca)
    for cmd in ("queues", "workers", "connections"):
        code, out, err, secs = run_cli(cmd, "--broker", url, "-t", "5")
        assert code == 3, (cmd, err)
        assert secs < FAST, (cmd, secs)
        assert "TLS certificate verification failed (self-signed certificate in certificate " \
               "chain): give the CA" in err and "ssl_ca_certs=FILE" in err
    # no CA at all: the system's CAs do not know the lab's
    code, out, err, secs = run_cli("queues", "--broker",
                                   f"rediss://127.0.0.1:{redis_tls['port']}/0", "-t", "5")
    assert code == 3 and secs < FAST and "TLS certificate verification failed" in err


def test_redis_host_name_mismatch_and_expired_certificate(redis_bad_certs, certs):
    url = _url(redis_bad_certs["wronghost"], certs, extra="&ssl_check_hostname=true")
    code, out, err, secs = run_cli("queues", "--broker", url, "-t", "5")
    assert code == 3 and secs < FAST
    assert "TLS host name check failed" in err and "not valid for '127.0.0.1'" in err
    # told not to check the name (the chain still is): connects
    url = _url(redis_bad_certs["wronghost"], certs, extra="&ssl_check_hostname=false")
    code, out, err, _ = run_cli("queues", "--broker", url)
    assert code == 0, err
    code, out, err, secs = run_cli("queues", "--broker",
                                   _url(redis_bad_certs["expired"], certs), "-t", "5")
    assert code == 3 and secs < FAST
    assert "certificate has expired" in err and "renew the certificate" in err


def test_redis_client_certificate_required(redis_mtls, certs):
    port = redis_mtls["port"]
    code, doc, err, _ = run_json("queues", "--broker", _url(port, certs, client=True))
    assert code == 0, err
    _secret_free(certs, doc, err)
    assert "ssl_keyfile=***" in doc["target"]["broker"]
    code, out, err, secs = run_cli("queues", "--broker", _url(port, certs), "-t", "5")
    assert code == 3 and secs < FAST
    assert "client certificate" in err and "ssl_certfile=FILE&ssl_keyfile=FILE" in err


def test_missing_tls_files_are_usage_errors(redis_tls, certs, tmp_path):
    code, out, err, secs = run_cli("queues", "--broker",
                                   _url(redis_tls["port"], certs, ca=tmp_path / "nope.pem"))
    assert code == 64 and f"the ssl_ca_certs file {tmp_path / 'nope.pem'} does not exist" in err
    hidden = tmp_path / "private" / "client.key"
    url = _url(redis_tls["port"], certs) + f"&ssl_certfile={certs.client_cert}&ssl_keyfile={hidden}"
    code, out, err, _ = run_cli("workers", "--broker", url)
    assert code == 64 and "ssl_keyfile file does not exist" in err and str(hidden) not in err
    code, out, err, _ = run_cli("queues", "--broker", redis_tls["url"] + "&ssl_cert_reqs=maybe")
    assert code == 64 and "ssl_cert_reqs must be" in err


def test_redis_verification_off_is_announced(redis_tls):
    url = f"rediss://127.0.0.1:{redis_tls['port']}/0?ssl_cert_reqs=none"
    code, out, err, _ = run_cli("queues", "--broker", url)
    assert code == 0, err
    assert "warning: TLS certificate verification is OFF for the broker" in err


def test_redis_tls_purge_restore_and_kill(redis_tls, certs, tmp_path):
    """The guarded actions reuse the same clients: purge and restore over TLS, and closing a
    stale TLS client."""
    import redis

    from tests.integration.test_purge import _lists, _publish

    # db 0, where the workers are: their pidbox bindings let each step return early
    url = _url(redis_tls["port"], certs)
    r = redis.Redis.from_url(url)
    _publish(url, "tlsq", 12)
    before = _lists(r, "tlsq")
    backup = tmp_path / "b.jsonl"
    code, out, err, _ = run_cli("purge", "tlsq", "--broker", url, "--confirm", "--yes",
                                "--backup", str(backup), "--audit-log", str(tmp_path / "a"))
    assert code == 0 and "purged 12, remaining 0" in out, err
    code, out, err, _ = run_cli("restore", str(backup), "--broker", url, "--confirm", "--yes",
                                "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    assert _lists(r, "tlsq") == before
    stale = redis.Redis.from_url(url)
    stale.client_setname("stale-tls-client")
    stale_id = str(stale.client_id())
    code, doc, err, _ = run_json("connections", "kill", "--name", "stale-tls-client",
                                 "--broker", url, "--confirm", "--yes",
                                 "--audit-log", str(tmp_path / "a"))
    assert code == 0, err
    assert [c["id"] for c in doc["connections"] if c["result"] == "closed"] == [stale_id]
    assert stale_id not in {str(c["id"]) for c in r.client_list()}


# --- RabbitMQ ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rabbit_tls(tlsdir, certs):
    """amqps:// and the management API over https only, client certificates required on
    both; two workers connected over TLS (the demo app's broker_use_ssl)."""
    server = s.start_rabbitmq(tlsdir, name="rabbit-tls", tls=ServerTLS(certs, client_certs="yes"))
    workers = []
    try:
        workers = _start_workers(tlsdir, server.info["url"], ["tmw1@%h", "tmw2@%h"], "celery")
        yield {**server.info, "names": [f"tmw{i}@{H}" for i in (1, 2)]}
    finally:
        _stop(*workers, server)


def _api_env(certs, client=True):
    return {"CELERYCTL_RABBITMQ_API_CERT": certs.client_cert,
            "CELERYCTL_RABBITMQ_API_KEY": certs.client_key} if client else {}


def _rargs(rabbit_tls, certs, *, url=None, ca=None):
    return ["--broker", url or rabbit_tls["url"], "--rabbitmq-api", rabbit_tls["api"],
            "--rabbitmq-api-ca", ca or certs.ca]


@pytest.mark.rabbitmq
def test_rabbit_amqps_workers_queues_connections(rabbit_tls, certs):
    assert rabbit_tls["url"].startswith("amqps://") and rabbit_tls["api"].startswith("https://")
    env = _api_env(certs)
    code, doc, err, _ = run_json("workers", *_rargs(rabbit_tls, certs), env=env)
    assert code == 0, err
    assert sorted(r["name"] for r in doc["workers"]) == rabbit_tls["names"]
    assert "management API" in _source(doc, "workers")["detail"] or doc["expected"]

    def consumers():  # the management API's statistics lag the workers' start
        code, doc, err, _ = run_json("queues", *_rargs(rabbit_tls, certs), env=env)
        assert code == 0 and _source(doc, "management-api")["ok"], err
        return {r["name"]: r["consumers"] for r in doc["queues"]}.get("celery") == 2

    assert wait_for(consumers, timeout=20)
    code, doc, err, _ = run_json("connections", *_rargs(rabbit_tls, certs), env=env)
    assert code == 0, err
    assert {r["worker"] for r in doc["connections"] if r["worker"]} == set(rabbit_tls["names"])
    _secret_free(certs, doc, err)


@pytest.mark.rabbitmq
def test_rabbit_amqps_from_app_broker_use_ssl(rabbit_tls, certs, tmp_path):
    """The app's broker_use_ssl in py-amqp's names, on an amqps:// URL without parameters
    (what a Celery deployment has to do: kombu rejects ssl_* parameters on amqps URLs)."""
    (tmp_path / "amqpstls.py").write_text(textwrap.dedent(f"""
        import ssl
        from celery import Celery
        app = Celery("amqpstls")
        app.conf.broker_url = "amqps://127.0.0.1:{rabbit_tls['amqp_port']}//"
        app.conf.broker_use_ssl = {{"ca_certs": "{certs.ca}", "cert_reqs": ssl.CERT_REQUIRED,
                                   "certfile": "{certs.client_cert}",
                                   "keyfile": "{certs.client_key}"}}
    """))
    code, doc, err, _ = run_json("workers", "-A", "amqpstls", "--rabbitmq-api",
                                 rabbit_tls["api"], "--rabbitmq-api-ca", certs.ca,
                                 env={"PYTHONPATH": str(tmp_path), **_api_env(certs)})
    assert code == 0, err
    assert sorted(r["name"] for r in doc["workers"]) == rabbit_tls["names"]


@pytest.mark.rabbitmq
def test_rabbit_fallback_passive_declare_over_tls(rabbit_tls, certs):
    """Management API down: queue depth by passive declare, through pika, over TLS."""
    code, doc, err, _ = run_json("queues", "--broker", rabbit_tls["url"], "--rabbitmq-api",
                                 f"https://127.0.0.1:{closed_port()}", "-Q", "celery")
    assert code == 0, err
    assert _source(doc, "amqp")["ok"] and not _source(doc, "management-api")["ok"]
    row = {r["name"]: r for r in doc["queues"]}["celery"]
    assert row["consumers"] == 2 and row["ready"] == 0


@pytest.mark.rabbitmq
def test_rabbit_management_api_tls_errors(rabbit_tls, certs):
    env = _api_env(certs)
    code, doc, err, _ = run_json("connections", *_rargs(rabbit_tls, certs, ca=certs.other_ca),
                                 "-t", "2", env=env)
    assert code == 3
    api = _source(doc, "management-api")
    # the API refuses at once; the command as a whole still gives the worker broadcast its
    # time, since the expected workers were to come from that API
    assert api["elapsed_seconds"] < 1.0
    assert "TLS certificate verification failed" in api["error"]
    assert "--rabbitmq-api-ca FILE" in api["error"]
    # the CA from the environment instead of the flag
    code, out, err, _ = run_cli("connections", "--broker", rabbit_tls["url"], "--rabbitmq-api",
                                rabbit_tls["api"], env={**env, "CELERYCTL_RABBITMQ_API_CA":
                                                        certs.ca})
    assert code == 0, err
    code, out, err, _ = run_cli("connections", *_rargs(rabbit_tls, certs), "-t", "2")
    assert code == 3 and "requires a client certificate" in err and "rabbitmq_api_cert" in err
    # plain http to the https port
    code, out, err, _ = run_cli("connections", "--broker", rabbit_tls["url"], "--rabbitmq-api",
                                rabbit_tls["api"].replace("https", "http"), "-t", "2")
    assert code == 3 and "the port expects TLS" in err


@pytest.mark.rabbitmq
def test_rabbit_amqps_refusals_fail_fast(rabbit_tls, certs):
    no_cert = rabbit_tls["url"].split("&ssl_certfile")[0]
    code, out, err, secs = run_cli("workers", *_rargs(rabbit_tls, certs, url=no_cert), "-t", "5",
                                   env=_api_env(certs))
    assert code == 3 and secs < FAST, err
    assert "client certificate" in err
    wrong = rabbit_tls["url"].replace(f"ssl_ca_certs={certs.ca}", f"ssl_ca_certs={certs.other_ca}")
    t0 = time.monotonic()
    code, out, err, secs = run_cli("workers", *_rargs(rabbit_tls, certs, url=wrong), "-t", "5",
                                   env=_api_env(certs))
    assert code == 3 and time.monotonic() - t0 < FAST
    assert "TLS certificate verification failed" in err and "ca_certs" in err


def _pika_tls(rabbit_tls, certs):
    import ssl

    import pika

    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.load_cert_chain(certs.client_cert, certs.client_key)
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", rabbit_tls["amqp_port"], ssl_options=pika.SSLOptions(ctx, "localhost")))


@pytest.mark.rabbitmq
def test_rabbit_tls_purge_and_restore(rabbit_tls, certs, tmp_path):
    """purge drains over AMQP (pika) and restore publishes over it, both over TLS; the plan
    reads the management API over https."""
    import requests

    conn = _pika_tls(rabbit_tls, certs)
    ch = conn.channel()
    ch.queue_declare("tlsq", durable=True)
    for i in range(5):
        ch.basic_publish("", "tlsq", json.dumps([[i], {}, {}]).encode())
    conn.close()
    api = f"{rabbit_tls['api']}/api/queues/%2F/tlsq"
    assert wait_for(lambda: requests.get(api, auth=("guest", "guest"), verify=certs.ca, cert=(
        certs.client_cert, certs.client_key), timeout=5).json().get("messages_ready") == 5,
        timeout=20)
    backup = tmp_path / "b.jsonl"
    code, out, err, _ = run_cli("purge", "tlsq", *_rargs(rabbit_tls, certs), "--confirm",
                                "--yes", "--backup", str(backup), "--audit-log",
                                str(tmp_path / "a"), env=_api_env(certs))
    assert code == 0 and "purged 5, remaining 0" in out, err
    code, out, err, _ = run_cli("restore", str(backup), *_rargs(rabbit_tls, certs), "--confirm",
                                "--yes", "--audit-log", str(tmp_path / "a"), env=_api_env(certs))
    assert code == 0, err
    conn = _pika_tls(rabbit_tls, certs)
    assert conn.channel().queue_declare("tlsq", passive=True).method.message_count == 5
    conn.close()
    _secret_free(certs, out, err, backup.read_text())
