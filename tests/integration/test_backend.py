"""Result backend probing across the deployment shapes of the seed articles."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import closed_port, run_json

pytestmark = [pytest.mark.redis]


def _backend(doc):
    return next(s for s in doc["sources"] if s["name"] == "result-backend")


def test_redis_broker_redis_backend_same_instance(redis_server):
    url = redis_server["url"]
    base = url.rsplit("/", 1)[0]
    code, doc, err, _ = run_json("queues", "--broker", url, "--result-backend", f"{base}/0")
    assert code == 0, err
    b = _backend(doc)
    assert b["ok"] and "same Redis instance and db" in b["detail"]
    code, doc, err, _ = run_json("queues", "--broker", url, "--result-backend", f"{base}/1")
    assert "other db" in _backend(doc)["detail"]


@pytest.mark.rabbitmq
def test_redis_broker_rabbitmq_backends(redis_server, rabbit):
    """Seed 000: Redis broker with a RabbitMQ backend. rpc:// is probed over the broker; the
    amqp:// backend Celery 5 removed is probed as an AMQP server and flagged, not a crash."""
    amqp = f"amqp://127.0.0.1:{rabbit['amqp_port']}//"
    code, doc, err, _ = run_json("queues", "--broker", redis_server["url"],
                                 "--result-backend", amqp)
    assert code == 0, err
    b = _backend(doc)
    assert b["ok"] and "removed in Celery 5" in b["detail"]
    code, doc, err, _ = run_json("queues", "--broker", redis_server["url"],
                                 "--result-backend", "rpc://")
    assert _backend(doc)["ok"] and "rpc" in _backend(doc)["detail"]


@pytest.mark.rabbitmq
def test_rabbitmq_broker_with_redis_and_rpc_backends(rabbit, redis_server):
    broker = f"amqp://127.0.0.1:{rabbit['amqp_port']}//"
    api = f"http://127.0.0.1:{rabbit['management_port']}"
    for backend, kind in ((redis_server["url"], "redis"), ("rpc://", "rpc")):
        code, doc, err, _ = run_json("queues", "--broker", broker, "--rabbitmq-api", api,
                                     "--result-backend", backend)
        assert code == 0, err
        assert _backend(doc)["ok"] and _backend(doc)["detail"].startswith(kind)


def test_unreachable_backend_is_reported_not_fatal(redis_server):
    code, doc, err, _ = run_json("queues", "--broker", redis_server["url"], "--result-backend",
                                 f"redis://:pw-in-backend@127.0.0.1:{closed_port()}/1")
    assert code == 0  # the listing itself was observed
    b = _backend(doc)
    assert b["ok"] is False and "refused" in b["error"]
    assert "pw-in-backend" not in str(doc) + err


def test_database_backend_is_not_checked(redis_server):
    code, doc, err, _ = run_json("queues", "--broker", redis_server["url"], "--result-backend",
                                 "db+postgresql://u:p@db/celery")
    b = _backend(doc)
    assert b["ok"] is None and "not checked" in b["detail"]


SEED_APP = (Path(__file__).parent.parent / "fixtures" / "seed_000_celery_config.py").read_text()


def test_seed_redis_broker_amqp_backend_app_via_cli(redis_server, tmp_path):
    """The seed article's exact configuration, imported with -A: no crash, the broker from
    the environment, the removed amqp:// backend identified."""
    port = closed_port()  # not the seed's localhost:5672: a developer's RabbitMQ may be there
    assert "@localhost:5672//" in SEED_APP
    (tmp_path / "celery_config.py").write_text(
        SEED_APP.replace("@localhost:5672//", f"@127.0.0.1:{port}//"))
    code, doc, err, _ = run_json("queues", "-A", "celery_config",
                                 env={"CELERY_BROKER_URL": redis_server["url"],
                                      "PYTHONPATH": str(tmp_path)})
    assert code == 0, err
    assert doc["target"]["app"] == "celery_config"
    assert doc["target"]["origins"]["result_backend"] == "app celery_config"
    b = _backend(doc)
    assert b["url"] == f"amqp://guest:***@127.0.0.1:{port}//"
    assert "Traceback" not in err
