from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from celeryctl.status import UsageError
from celeryctl.targets import DEFAULT_BROKER, Flags, resolve


def _env(tmp_path, **kw):
    env = {"CELERYCTL_CONFIG": str(tmp_path / "none.toml")}
    env.update(kw)
    return env


def test_default_is_announced(tmp_path):
    t = resolve(Flags(), env=_env(tmp_path))
    assert t.broker_url == DEFAULT_BROKER and t.used_default_broker
    assert t.origins["broker"].startswith("default")
    assert t.timeout == 2.0


def test_precedence_flag_env_profile_app(tmp_path, monkeypatch):
    mod = tmp_path / "precapp.py"
    mod.write_text(textwrap.dedent("""
        from celery import Celery
        app = Celery("p")
        app.conf.broker_url = "redis://app-host:6379/0"
        app.conf.result_backend = "redis://app-host:6379/1"
        app.conf.task_routes = {"x.*": {"queue": "routed"}}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / "c.toml"
    cfg.write_text('[clusters.p]\nbroker = "redis://profile-host:6379/0"\napp = "precapp:app"\n'
                   'timeout = 5\nqueues = ["a"]\n')
    env = {"CELERYCTL_CONFIG": str(cfg)}
    t = resolve(Flags(profile="p"), env=env)
    assert t.broker[0].host == "profile-host" and t.origins["broker"] == "profile p"
    assert t.result_backend == "redis://app-host:6379/1"
    assert t.origins["result_backend"] == "app precapp:app"
    assert t.timeout == 5 and t.queues == ("a",)
    assert "routed" in t.app.queue_names
    env["CELERY_BROKER_URL"] = "redis://env-host:6379/0"
    t = resolve(Flags(profile="p"), env=env)
    assert t.broker[0].host == "env-host"
    t = resolve(Flags(profile="p", broker="redis://flag-host/0", timeout=1), env=env)
    assert t.broker[0].host == "flag-host" and t.timeout == 1
    sys.modules.pop("precapp", None)


def test_derived_management_api(tmp_path):
    t = resolve(Flags(broker="amqp://u:pw@rabbit.local:5672/vh"), env=_env(tmp_path))
    assert t.rabbitmq_api.host == "rabbit.local" and t.rabbitmq_api.port == 15672
    assert t.rabbitmq_api.password == "pw"
    assert "derived" in t.origins["rabbitmq_api"]
    assert t.effective_vhost == "vh"
    t = resolve(Flags(broker="redis://h/0", result_backend="amqp://g//"), env=_env(tmp_path))
    assert t.rabbitmq_api.host == "g"
    t = resolve(Flags(broker="redis://h/0"), env=_env(tmp_path))
    assert t.rabbitmq_api is None


def test_seed_app_with_removed_amqp_backend_imports(tmp_path, monkeypatch):
    """The seed article's exact config: Redis broker, amqp:// result backend (gone in
    Celery 5). Reading it must not fail."""
    seed = Path(__file__).parent.parent / "fixtures" / "seed_000_celery_config.py"
    (tmp_path / "seedcfg.py").write_text(seed.read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    t = resolve(Flags(app="seedcfg:app"), env=_env(tmp_path))
    assert t.result_backend == "amqp://guest:guest@localhost:5672//"
    assert t.app.settings["task_acks_late"] is True
    assert t.app.settings["result_expires"] == 3600
    assert t.app.settings["broker_pool_limit"] == 10
    assert t.rabbitmq_api is not None  # derived from the amqp backend
    assert "guest:guest" not in str(t.summary())


@pytest.mark.parametrize("flags", [Flags(timeout=0), Flags(timeout=-1), Flags(app="no.such.mod"),
                                   Flags(profile="x")])
def test_usage_errors(tmp_path, flags):
    with pytest.raises(UsageError):
        resolve(flags, env=_env(tmp_path))


def test_bad_profile_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[clusters.p\nbroken")
    with pytest.raises(UsageError, match="cannot read profile"):
        resolve(Flags(profile="p"), env={"CELERYCTL_CONFIG": str(cfg)})


def test_default_profile(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('default = "a"\n[clusters.a]\nbroker = "redis://pa/0"\n')
    t = resolve(Flags(), env={"CELERYCTL_CONFIG": str(cfg)})
    assert t.broker[0].host == "pa" and t.profile == "a"
