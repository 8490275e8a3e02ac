from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from celeryctl.status import UsageError
from celeryctl.urls import Secrets, parse_broker, parse_endpoint, parse_http, redact


@pytest.mark.parametrize("url,expected", [
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://user:pw@h/1", "redis://user:***@h/1"),
    ("redis://pwonly@h/1", "redis://***@h/1"),
    ("amqp://guest:guest@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
    ("amqp://h//", "amqp://h//"),
    ("redis://h/0?password=x&db=1", "redis://h/0?password=***&db=1"),
    ("redis://:a@h/0;redis://:b@g/0", "redis://:***@h/0;redis://:***@g/0"),
    ("http://u:p@h:15672/api", "http://u:***@h:15672/api"),
])
def test_redact(url, expected):
    assert redact(url) == expected


password = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                          blacklist_characters="@/:?#[]%"),
                   min_size=4, max_size=30)


@given(pw=password)
def test_redacted_url_never_contains_password(pw):
    from urllib.parse import quote

    assume(pw not in "amqp://user@host:5672/vh")
    url = f"amqp://user:{quote(pw, safe='')}@host:5672/vh"
    out = redact(url)
    assert quote(pw, safe="") not in out and pw not in out
    ep = parse_endpoint(url)
    assert ep.password == pw
    assert pw not in repr(ep)


def test_parse_broker_kinds_and_failover():
    eps = parse_broker("redis://a:1/0;rediss://b:2/3")
    assert [e.kind for e in eps] == ["redis", "redis"]
    assert eps[1].redis_db == 3 and eps[1].port == 2
    assert parse_broker("pyamqp://h//")[0].kind == "amqp"
    assert parse_broker("amqp://h//")[0].vhost == "/"
    assert parse_broker("amqp://h/prod")[0].vhost == "prod"
    assert parse_broker("amqp://h/a%2Fb")[0].vhost == "a/b"
    assert parse_broker("redis://h")[0].redis_db == 0
    assert parse_broker("redis://secret@h/0")[0].password == "secret"


@pytest.mark.parametrize("bad", ["", "nope", "sqs://x", "redis://h:99999/0", "redis://h/x",
                                 "redis://h/0;amqp://g//", "redis://h:port/0"])
def test_parse_broker_rejects(bad):
    with pytest.raises(UsageError):
        parse_broker(bad)


def test_parse_http():
    ep = parse_http("https://u:p@rabbit.example:15671/mgmt")
    assert ep.scheme == "https" and ep.port == 15671 and ep.path == "mgmt"
    with pytest.raises(UsageError):
        parse_http("amqp://h//")


def test_secrets_scrub():
    s = Secrets()
    s.add_url("redis://:topsecret@h/0;amqp://u:p%40ss%21@h//")
    assert s.scrub("error: topsecret rejected") == "error: *** rejected"
    assert s.scrub("p@ss! and p%40ss%21") == "*** and ***"
    s.add("ab")  # too short to scrub safely: left to structural redaction
    assert s.scrub("abc") == "abc"


def test_sentinel_master_name_from_options_or_url():
    import pytest

    from celeryctl.status import UsageError
    from celeryctl.urls import parse_broker, sentinel_master_name

    eps = parse_broker("sentinel://:pw@h1:26379;sentinel://h2:26379?master_name=mymaster")
    assert eps[0].port == 26379 and eps[0].kind == "redis" and eps[0].password == "pw"
    assert sentinel_master_name(eps, {}) == "mymaster"
    assert sentinel_master_name(eps, {"master_name": "other"}) == "other"
    with pytest.raises(UsageError, match="master's name"):
        sentinel_master_name(parse_broker("sentinel://h1:26379"), {})
