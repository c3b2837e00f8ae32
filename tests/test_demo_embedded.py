"""The demo without a redis-server binary: fakeredis's embedded server, saying so, holding the same incident.

Issue 2 item 3. PATH is emptied of redis-server (start_redis looks it up with
shutil.which), the demo comes up on the embedded server, and the inspector
reads from it exactly what it reads from a real redis-server demo started with
the same seed and clock.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from jobrunbook.asynq.inspector import Inspector
from jobrunbook.demo import start_demo

# calendar-sensitive (daily counters, expiries, windows, deadlines): `make test-dates` runs these under faketime
pytestmark = pytest.mark.dates

NOW = 1_767_225_600.0  # fixed clock: same seed and now give identical data
SEED = 5
WINDOW = {"window_minutes": 8, "onset_minutes": 4}  # short: the embedded server is pure Python


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(embedded demo, its stderr, redis-server demo), same scenario, seed and now."""
    assert shutil.which("redis-server"), "the comparison needs a real redis-server on PATH"
    real = start_demo("validation", SEED, tmp_path_factory.mktemp("real"), now=NOW, live=False, prometheus=False, **WINDOW)
    mp = pytest.MonkeyPatch()
    capture = tmp_path_factory.mktemp("stderr") / "stderr.txt"
    try:
        import contextlib

        mp.setenv("PATH", str(tmp_path_factory.mktemp("empty-bin")))
        assert shutil.which("redis-server") is None
        with open(capture, "w") as err, contextlib.redirect_stderr(err):
            embedded = start_demo("validation", SEED, tmp_path_factory.mktemp("embedded"), now=NOW, live=False,
                                  prometheus=False, **WINDOW)
    except BaseException:
        real.stop()
        raise
    finally:
        mp.undo()
    yield embedded, capture.read_text(), real
    embedded.stop()
    real.stop()


def inspector(demo) -> Inspector:
    return Inspector(demo.client(), clock=lambda: NOW)


def test_embedded_server_is_used_and_announced(pair):
    embedded, stderr, real = pair
    assert embedded.redis.kind == "embedded" and embedded.redis.pid is None
    assert real.redis.kind == "redis-server" and real.redis.pid is not None
    assert "no redis-server on PATH" in stderr and "embedded" in stderr
    assert embedded.redis.port != real.redis.port
    assert embedded.client().ping()
    assert embedded.info()["redis_url"] == embedded.redis_url


def test_queue_counts_match_a_real_redis_server(pair):
    embedded, _, real = pair
    ei, ri = inspector(embedded), inspector(real)
    assert ei.queues() == ri.queues() and len(ri.queues()) >= 2
    for q in ri.queues():
        got = dataclasses.asdict(ei.queue_info(q))
        want = dataclasses.asdict(ri.queue_info(q))
        # MEMORY USAGE is an allocator's estimate: fakeredis has none to match
        assert got.pop("memory_usage_bytes") > 0 and want.pop("memory_usage_bytes") > 0, q
        assert got == want, q
    assert sum(ri.queue_info(q).retry + ri.queue_info(q).archived for q in ri.queues()) > 0


def test_failure_aggregate_matches_a_real_redis_server(pair):
    embedded, _, real = pair
    got, want = inspector(embedded).failures(), inspector(real).failures()
    assert want.groups, "the validation incident has failed tasks"
    assert got.to_records() == want.to_records()
    assert (got.tasks, got.by_state, got.anomalies, got.complete) == (want.tasks, want.by_state, want.anomalies,
                                                                       want.complete)


def test_history_and_task_listing_match(pair):
    embedded, _, real = pair
    ei, ri = inspector(embedded), inspector(real)
    for q in ri.queues():
        assert ei.history(q, days=7).to_dict() == ri.history(q, days=7).to_dict(), q
        for state in ("retry", "archived", "pending", "scheduled"):
            assert [t.to_dict() for t in ei.list_tasks(q, state, size=20)] == \
                   [t.to_dict() for t in ri.list_tasks(q, state, size=20)], (q, state)


def test_stop_closes_the_embedded_port(pair, tmp_path, monkeypatch):
    import redis

    monkeypatch.setenv("PATH", str(tmp_path))
    demo = start_demo("validation", SEED, tmp_path / "demo", now=NOW, live=False, prometheus=False,
                      window_minutes=1, onset_minutes=0.5)
    client = demo.client()
    assert demo.redis.kind == "embedded" and client.ping()
    demo.stop()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=demo.redis.port, socket_connect_timeout=1).ping()
