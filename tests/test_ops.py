"""The batched scripts leave exactly the keys asynq's own scripts leave (real redis-server)."""

from __future__ import annotations

import pytest
import redis
from jobrunbook._exceptions import RemediationRefused
from jobrunbook.asynq import keys as K
from jobrunbook.asynq.oneshot import archive_all_oneshot, delete_all_oneshot, run_all_oneshot
from jobrunbook.asynq.ops import QueueLock, acquire_lock, apply_batch, apply_in_batches
from conftest import SNAPSHOTS
from remediate_support import add_task, keyspace, load, membership

NOW = 1795990000


@pytest.fixture
def twin(redis_server, redis_url):
    """db 0 for jobrunbook's batched scripts, db 1 for asynq's one-call approach."""
    a = redis_server.client()
    b = redis.Redis(host="127.0.0.1", port=redis_server.port, db=1)
    return a, b


def _ids(client, queue, state):
    return [m.decode() for m in client.zrange(K.state_key(queue, state), 0, -1)]


@pytest.mark.parametrize("fixture", SNAPSHOTS)
def test_run_all_in_batches_equals_asynq_runall(twin, fixture):
    a, b = twin
    load(a, fixture)
    load(b, fixture)
    counters_before = {k: a.get(k) for k in a.scan_iter("asynq:{*}:processed*")}
    for queue in ("critical", "default"):
        ids = _ids(a, queue, "retry")
        with acquire_lock(a, queue, who="test", what="run") as lock:
            out = apply_in_batches(a, lock, "run", ids, expected_state="retry", batch_size=7)
        assert len(out.done) == len(ids) and out.batches == -(-len(ids) // 7)
        assert run_all_oneshot(b, queue, "retry") == len(ids)
        # list order: asynq LPUSHes in rank order, so the lowest score is dequeued first
        assert a.lrange(K.state_key(queue, "pending"), 0, -1) == list(reversed([i.encode() for i in ids]))
        if ids:
            assert a.hget(K.task_key(queue, ids[0]), "pending_since") is None  # runTaskCmd does not set it
    assert keyspace(a) == keyspace(b)
    assert {k: a.get(k) for k in a.scan_iter("asynq:{*}:processed*")} == counters_before


def test_archive_all_equals_asynq_including_the_cap_trim(twin):
    a, b = twin
    for c in (a, b):
        load(c, "mixed")
        # an archive close to the cap, some of it older than 90 days
        c.zadd(K.state_key("default", "archived"), {f"old-{i:05d}": NOW - 100 * 86400 + i for i in range(20)})
        c.zadd(K.state_key("default", "archived"), {f"arch-{i:05d}": NOW - 3600 + i % 50 for i in range(9975)})

    ids = _ids(a, "default", "retry")
    with acquire_lock(a, "default", who="test", what="archive") as lock:
        out = apply_in_batches(a, lock, "archive", ids, expected_state="retry", batch_size=10, now=NOW)
    assert len(out.done) == len(ids) == 25
    archive_all_oneshot(b, "default", "retry", NOW)
    assert keyspace(a) == keyspace(b)
    archived = _ids(a, "default", "archived")
    assert len(archived) == K.ARCHIVE_MAX_SIZE - 1  # ZREMRANGEBYRANK 0 -10000 keeps 9,999
    assert not any(i.startswith("old-") for i in archived)
    assert all(a.hget(K.task_key("default", i), "state") == b"archived" for i in ids)


def test_delete_all_equals_asynq_and_releases_only_own_unique_lock(twin):
    a, b = twin
    for c in (a, b):
        add_task(c, "q", "t1", "archived", unique_key="asynq:{q}:unique:k1")
        add_task(c, "q", "t2", "archived", unique_key="asynq:{q}:unique:k2")
        add_task(c, "q", "t3", "archived")
        c.set("asynq:{q}:unique:k1", "t1", ex=600)
        c.set("asynq:{q}:unique:k2", "someone-else", ex=600)
        c.set("asynq:{q}:failed", 7)
    with acquire_lock(a, "q", who="test", what="delete") as lock:
        out = apply_in_batches(a, lock, "delete", ["t1", "t2", "t3"], expected_state="archived", batch_size=2)
    delete_all_oneshot(b, "q", "archived")
    assert len(out.done) == 3
    assert keyspace(a) == keyspace(b)
    assert a.get("asynq:{q}:unique:k1") is None and a.get("asynq:{q}:unique:k2") == b"someone-else"
    assert a.get("asynq:{q}:failed") == b"7"


def test_single_task_codes_follow_asynq(rclient):
    add_task(rclient, "q", "act", "active")
    add_task(rclient, "q", "pend", "pending")
    add_task(rclient, "q", "arch", "archived")
    add_task(rclient, "q", "sched", "scheduled", extra={"pending_since": "123"})
    before = keyspace(rclient)
    with acquire_lock(rclient, "q", who="t", what="run") as lock:
        assert apply_batch(rclient, lock, "run", ["act", "pend", "missing"]) == [-1, -2, 0]
        assert apply_batch(rclient, lock, "archive", ["act", "arch"]) == [-1, -2]
        assert apply_batch(rclient, lock, "delete", ["act"]) == [-1]
        assert keyspace(rclient) == before  # refusals change nothing
        assert apply_batch(rclient, lock, "run", ["sched"]) == [1]
        assert apply_batch(rclient, lock, "archive", ["pend"], now=NOW) == [1]
        assert apply_batch(rclient, lock, "delete", ["arch"]) == [1]
    assert rclient.hgetall(K.task_key("q", "sched"))[b"state"] == b"pending"
    assert rclient.hget(K.task_key("q", "sched"), "pending_since") == b"123"  # untouched, as runTaskCmd
    assert membership(rclient, "q") == {"act": ["active"], "sched": ["pending"], "pend": ["archived"]}
    assert rclient.zscore(K.state_key("q", "archived"), "pend") == NOW
    assert not rclient.exists(K.task_key("q", "arch"))


def test_changed_task_is_skipped_and_counted(rclient):
    add_task(rclient, "q", "a", "retry")
    add_task(rclient, "q", "b", "retry")
    # b moved to pending by the forwarder after the selection
    rclient.zrem(K.state_key("q", "retry"), "b")
    rclient.lpush(K.state_key("q", "pending"), "b")
    rclient.hset(K.task_key("q", "b"), "state", "pending")
    # c's hash says retry but it is not in the retry set (an inconsistent task): skipped, untouched
    add_task(rclient, "q", "c", "retry")
    rclient.zrem(K.state_key("q", "retry"), "c")
    with acquire_lock(rclient, "q", who="t", what="run") as lock:
        out = apply_in_batches(rclient, lock, "run", ["a", "b", "c"], expected_state="retry")
    assert out.done == ["a"]
    assert out.skipped == {"state changed": ["b"], "not in its state's set": ["c"]}
    assert rclient.lrange(K.state_key("q", "pending"), 0, -1) == [b"a", b"b"]
    assert rclient.hget(K.task_key("q", "c"), "state") == b"retry"


def test_msg_changed_since_export_is_skipped(rclient):
    add_task(rclient, "q", "a", "retry")
    with acquire_lock(rclient, "q", who="t", what="delete") as lock:
        assert apply_batch(rclient, lock, "delete", ["a"], shas=["0" * 40]) == [-5]
    assert rclient.exists(K.task_key("q", "a"))


def test_lock_is_exclusive_and_checked_inside_every_script(rclient):
    add_task(rclient, "q", "a", "retry")
    lock = acquire_lock(rclient, "q", who="alice", what="run")
    with pytest.raises(RemediationRefused, match="alice"):
        acquire_lock(rclient, "q", who="bob", what="archive")
    stranger = QueueLock(rclient, "q", "not-the-token")
    before = keyspace(rclient)
    with pytest.raises(RemediationRefused, match="lock"):
        apply_batch(rclient, stranger, "run", ["a"])
    assert not stranger.release()
    assert keyspace(rclient) == before
    assert rclient.pttl(lock.key) > 0
    assert lock.release()
    acquire_lock(rclient, "q", who="bob", what="archive").release()
