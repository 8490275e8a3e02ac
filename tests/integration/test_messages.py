"""Issue 13 item 4 on a real Redis: one priority-bucket notation in `purge` and `queues`, a
refused action prints its refusal (not a plan for nothing), `queues --all` says when it found
no internal queue, and `snapshot diff` warns when the snapshots come from different brokers."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli, run_json

pytestmark = [pytest.mark.redis]


def _db(redis_server, db: int) -> str:
    import redis

    url = redis_server["url"].rsplit("/", 1)[0] + f"/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


def _publish(url, queue, priorities):
    from celery import Celery

    app = Celery(broker=url, set_as_current=False)
    with app.producer_or_acquire() as producer:
        for p in priorities:
            app.send_task("celeryctl.lab.demoapp.add", (1, 2), queue=queue, priority=p,
                          producer=producer)
    app.close()


def test_one_bucket_notation_in_purge_and_queues(redis_server):
    url = _db(redis_server, 11)
    _publish(url, "bq", [0, 0, 4, 9])  # kombu's steps 0/3/6/9: 0:2, 3:1, 9:1
    code, out, err, _ = run_cli("queues", "--broker", url)
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.strip().startswith("bq"))
    assert "p0=2 p3=1 p9=1" in row, out
    code, out, err, _ = run_cli("purge", "bq", "--broker", url)  # a dry run
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.strip().startswith("bq"))
    assert "p0=2 p3=1 p9=1" in row, out
    assert "4 ready messages in 1 queue(s) would be deleted" in out
    code, doc, err, _ = run_json("queues", "--broker", url)
    assert doc["queues"][0]["buckets"] == {"0": 2, "3": 1, "6": 0, "9": 1}  # JSON as it was


def test_refused_purge_prints_the_refusal_not_a_plan(redis_server):
    import redis

    url = _db(redis_server, 12)
    _publish(url, "keep", [0, 0, 0])
    code, out, err, _ = run_cli("purge", "nope", "keep", "--broker", url)
    assert code == 64, (out, err)
    assert "would be deleted" not in out and "purge plan" not in out, out
    assert "refused: no queue named 'nope' on this broker" in err
    assert "nothing changed, not even keep: a refusal stops the whole command." in err
    assert redis.Redis.from_url(url).llen("keep") == 3
    code, out, err, _ = run_cli("purge", "nope", "--broker", url)
    assert code == 64 and out == "" and err.rstrip().endswith("nothing changed."), (out, err)
    code, doc, err, _ = run_json("purge", "nope", "--broker", url)  # JSON keeps its document
    assert code == 64 and doc["result"] is None and doc["plan"]["refusals"]


def test_refused_control_prints_the_refusal_not_a_plan(redis_server):
    url = _db(redis_server, 13)  # no worker on this db
    code, out, err, _ = run_cli("control", "rate-limit", "t.x", "5/s", "--broker", url,
                                "--timeout", "1")
    assert code == 64, (out, err)
    assert "->" not in out and "every worker (0 answering)" not in out, out
    assert "refused: no worker answered" in err and "nothing sent." in err


def test_queues_all_says_when_there_is_no_internal_queue(redis_server):
    url = _db(redis_server, 14)
    _publish(url, "plain", [0])
    code, out, err, _ = run_cli("queues", "--all", "--broker", url)
    assert code == 0, err
    assert "--all: no internal queues (pidbox replies, celeryev, result queues) found" in err
    code, out, err, _ = run_cli("queues", "--broker", url)
    assert "no internal queues" not in err  # without --all: nothing to say
    code, doc, err, _ = run_json("queues", "--all", "--broker", url)
    assert any("no internal queues" in n for n in doc["notes"])


def test_snapshot_diff_warns_when_the_brokers_differ(redis_server, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path, db in ((a, 15), (b, 14)):
        code, out, err, _ = run_cli("snapshot", "--broker", _db(redis_server, db), "-o",
                                    str(path), "--timeout", "1")
        assert code == 0, err
    port = redis_server["url"].rsplit(":", 1)[1].split("/")[0]
    code, out, err, _ = run_cli("snapshot", "diff", str(a), str(b))
    assert code == 0, err
    first = out.splitlines()[0]
    code, doc, err, _ = run_json("snapshot", "diff", str(a), str(b))
    run_id = doc["brokers"]["servers"][0]
    assert doc["brokers"]["by"] == "Redis run_id" and len(run_id) == 40, doc["brokers"]
    assert first == (f"warning: the snapshots come from different brokers: A "
                     f"redis://127.0.0.1:{port} db 15, B redis://127.0.0.1:{port} db 14 (the "
                     f"same server, Redis run_id {run_id[:12]}, but db 15 vs db 14); the "
                     f"diff below compares two deployments, not one over time"), out
    assert "between the snapshots" in out  # and the diff is still shown
    code, doc, err, _ = run_json("snapshot", "diff", str(a), str(b))
    assert doc["brokers"]["same"] is False
    code, out, err, _ = run_cli("snapshot", "diff", str(a), str(a))
    assert "different brokers" not in out


def test_snapshot_diff_goes_by_the_servers_run_id(labdir, tmp_path):
    """Issue 13 follow-up, item 7, against a real Redis: one server snapshotted as
    redis://localhost:P/0 and redis://127.0.0.1:P is one broker (a note, no warning); a fresh
    Redis on the same port (a new run_id) is another (a warning, by run_id)."""
    from celeryctl.lab import servers as s

    proc = s.start_redis(labdir, name="redis-runid")
    port = proc.info["port"]
    a, b, c = (tmp_path / f"{x}.json" for x in "abc")
    try:
        for path, url in ((a, f"redis://localhost:{port}/0"), (b, f"redis://127.0.0.1:{port}")):
            code, out, err, _ = run_cli("snapshot", "--broker", url, "-o", str(path),
                                        "--timeout", "1")
            assert code == 0, err
    finally:
        proc.stop()
    proc = s.start_redis(labdir, name="redis-runid", port=port)  # fresh: a new run_id
    try:
        code, out, err, _ = run_cli("snapshot", "--broker", f"redis://127.0.0.1:{port}/0",
                                    "-o", str(c), "--timeout", "1")
        assert code == 0, err
    finally:
        proc.stop()
    code, out, err, _ = run_cli("snapshot", "diff", str(a), str(b))
    assert code == 0, err
    assert "different brokers" not in out, out
    assert out.splitlines()[0].startswith(f"note: A redis://localhost:{port} db 0 and B "
                                          f"redis://127.0.0.1:{port} db 0: one server (Redis "
                                          f"run_id "), out
    code, doc, err, _ = run_json("snapshot", "diff", str(b), str(c))
    assert doc["brokers"]["same"] is False and doc["brokers"]["by"] == "Redis run_id"
    assert doc["brokers"]["before"] == doc["brokers"]["after"]  # the URL alone: no warning
    code, out, err, _ = run_cli("snapshot", "diff", str(b), str(c))
    assert out.splitlines()[0].startswith("warning: the snapshots come from different "
                                          "brokers: ") and "restarted" in out, out
