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


@pytest.mark.parametrize("timeout", [0, 600.5])
def test_timeout_bounds_are_said_as_they_are(tmp_path, timeout):
    """Issue 13 follow-up, item 13: 0 is refused, so the message does not say "between 0
    and 600" (which reads as including 0)."""
    with pytest.raises(UsageError) as info:
        resolve(Flags(timeout=timeout), env=_env(tmp_path))
    assert str(info.value) == \
        f"timeout must be more than 0 and at most 600 seconds, got {timeout:g}"
    assert resolve(Flags(timeout=600), env=_env(tmp_path)).timeout == 600


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


# --- profiles are typed; URLs from anywhere never leak; actions need a named broker ---------

@pytest.mark.parametrize("line,key,expected", [
    ("broker = 5", "broker", "expected a URL string"),
    ('queues = "abc"', "queues", "expected a list of queue names"),
    ("queues = [1, 2]", "queues[0]", "expected a queue name string"),
    ('broker = ["redis://h/0", 3]', "broker[1]", "expected a URL string"),
    ('timeout = "3"', "timeout", "expected a number of seconds"),
    ("timeout = true", "timeout", "got a boolean"),
    ("vhost = 1", "vhost", "expected a string"),
    ('transport_options = "x"', "transport_options", "expected a table"),
    ('broker_use_ssl = "maybe"', "broker_use_ssl", "expected a table of TLS settings"),
    ("rabbitmq_api = 1979-05-27", "rabbitmq_api", "expected a URL string"),
    ('brokr = "redis://h/0"', "brokr", "did you mean 'broker'"),
])
def test_profile_types_are_checked(tmp_path, line, key, expected):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[clusters.p]\n{line}\n")
    with pytest.raises(UsageError) as info:
        resolve(Flags(profile="p"), env={"CELERYCTL_CONFIG": str(cfg)})
    msg = str(info.value)
    assert str(cfg) in msg and "'p'" in msg and key in msg and expected in msg, msg


def test_profile_type_errors_never_print_the_value(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[clusters.p]\nbroker = "redis://:tops3cret@h/0"\n'
                   'rabbitmq_api = ["http://u:apis3cret@h:15672"]\n')
    with pytest.raises(UsageError) as info:
        resolve(Flags(profile="p"), env={"CELERYCTL_CONFIG": str(cfg)})
    assert "rabbitmq_api" in str(info.value)
    assert "apis3cret" not in str(info.value) and "tops3cret" not in str(info.value)


def test_profile_top_level_types(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("default = 3\n")
    with pytest.raises(UsageError, match="default: expected a string"):
        resolve(Flags(), env={"CELERYCTL_CONFIG": str(cfg)})
    cfg.write_text('clusters = "x"\n')
    with pytest.raises(UsageError, match="clusters: expected a table"):
        resolve(Flags(profile="p"), env={"CELERYCTL_CONFIG": str(cfg)})


def test_profile_list_broker_and_queues(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[clusters.p]\nbroker = ["redis://:a@h/0", "redis://:b@g/0"]\n'
                   'queues = ["abc"]\ntimeout = 3\n')
    t = resolve(Flags(profile="p"), env={"CELERYCTL_CONFIG": str(cfg)})
    assert [e.host for e in t.broker] == ["h", "g"] and t.queues == ("abc",)
    assert not t.broker_defaulted and t.broker_source == "profile p"


@pytest.mark.parametrize("bad", ["redis://:xq7z/kw9@host:6379/0", "redis://u:jq3?vw8@host/0",
                                 "fooq://SECRETZ9@host", "redis://:vv3;xx6@h/0",
                                 "redis://ok@h/0;redis://:xq7z/kw9@g/0"])
def test_malformed_urls_from_env_and_profile_never_leak(tmp_path, bad):
    secrets = ("xq7z", "kw9", "jq3", "vw8", "SECRETZ9", "vv3", "xx6")
    for env_key, flags in (("CELERY_BROKER_URL", Flags()),
                           ("CELERY_RESULT_BACKEND", Flags(broker="redis://h/0")),
                           ("CELERYCTL_RABBITMQ_API", Flags(broker="redis://h/0"))):
        value = bad.replace("redis", "http", 1) if env_key.endswith("API") else bad
        try:
            t = resolve(flags, env=_env(tmp_path, **{env_key: value}))
        except UsageError as exc:
            shown = str(exc)
        else:  # a result backend of any scheme is accepted: then its display is redacted
            import json

            shown = json.dumps(t.summary()) + "\n".join(t.describe())
        assert not any(s in shown for s in secrets), shown
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[clusters.p]\nbroker = "{bad}"\n')
    with pytest.raises(UsageError) as info:
        resolve(Flags(profile="p"), env={"CELERYCTL_CONFIG": str(cfg)})
    assert not any(s in str(info.value) for s in secrets), str(info.value)


def test_refuse_default_broker(tmp_path):
    from celeryctl.targets import refuse_default_broker

    t = resolve(Flags(), env=_env(tmp_path))
    assert t.broker_defaulted and t.broker_source.startswith("default")
    with pytest.raises(UsageError, match="never acts on the default broker"):
        refuse_default_broker(t)
    for t in (resolve(Flags(broker=DEFAULT_BROKER), env=_env(tmp_path)),
              resolve(Flags(), env=_env(tmp_path, CELERY_BROKER_URL=DEFAULT_BROKER))):
        assert not t.broker_defaulted
        refuse_default_broker(t)  # named explicitly, even if it is the default URL
