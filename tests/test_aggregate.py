"""The streaming aggregate of failed tasks: exact on the fixtures, bounded, and never crashing."""

from __future__ import annotations

import collections
import datetime as dt
import subprocess
import sys

import pytest
import redis
from _asynq_helpers import put_task, truth
from conftest import SNAPSHOTS, RedisServer, load_fixture_snapshot
from jobrunbook._exceptions import RedisUnavailable
from jobrunbook.asynq import keys
from jobrunbook.asynq.aggregate import OTHER, aggregate_failures
from jobrunbook.asynq.inspector import Inspector
from jobrunbook.asynq.messages import TaskMessage, encode_task
from jobrunbook.fingerprint import fingerprint


def _ts(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_groups_agree_with_asynqs_task_lists(rclient, name):
    load_fixture_snapshot(rclient, name)
    want: dict = collections.defaultdict(lambda: {"retry": 0, "archived": 0, "times": [], "retried": collections.Counter()})
    for q in truth(name)["queues"]:
        for state in ("retry", "archived"):
            for t in q["tasks"][state]:
                g = want[(q["queue"], t["type"], fingerprint(t["last_err"]))]
                g[state] += 1
                g["times"].append(_ts(t["last_failed_at"]))
                g["retried"][t["retried"]] += 1
    agg = Inspector(rclient).failures()
    assert agg.complete and agg.anomalies == {"missing_hash": 0, "corrupt_msg": 0, "non_utf8_text": 0}
    got = {(g.queue, g.task_type, g.fingerprint): g for g in agg.groups}
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        assert (g.retry, g.archived, g.count) == (w["retry"], w["archived"], w["retry"] + w["archived"])
        assert (g.first_failed_at, g.last_failed_at) == (min(w["times"]), max(w["times"]))
        assert g.retried == dict(w["retried"])
        assert 1 <= len(g.example_ids) <= 3 and fingerprint(g.example_error) == g.fingerprint
    assert [g.count for g in agg.groups] == sorted((g.count for g in agg.groups), reverse=True)
    assert agg.tasks == sum(agg.by_state.values()) == sum(g.count for g in agg.groups)
    frame = agg.to_frame()
    assert list(frame["count"]) == [g.count for g in agg.groups]
    assert str(frame["last_failed_at"].dt.tz) == "UTC"
    assert agg.to_records()[0]["last_failed_at_iso"].endswith("Z")


def test_bad_data_is_counted_not_raised(rclient):
    err = "dial tcp 10.0.0.%d:5432: connect: connection refused"
    for i in range(5):
        put_task(rclient, "q", f"ok{i}", "retry", score=i, ttype="db:write", error=err % i, last_failed_at=100 + i)
    # unknown protobuf field (number 99) appended to a real message: decoded as usual
    msg = put_task(rclient, "q", "newer", "archived", score=9, ttype="db:write", error=err % 9, last_failed_at=90)
    rclient.hset(keys.task_key("q", "newer"), "msg", msg + b"\x98\x06\x01")
    put_task(rclient, "q", "junk", "retry", score=10, msg=b"\x0a\xff\xff\xff\xff garbage")
    rclient.zadd(keys.state_key("q", "retry"), {"gone": 11})
    # error text that is not UTF-8: same length as the valid text, so the message stays well-formed
    raw = encode_task(TaskMessage(type="db:write", id="latin1", queue="q", error_msg="caf\u00e9 down", last_failed_at=5))
    raw = raw.replace("caf\u00e9 down".encode(), b"caf\xe9\xff down")
    put_task(rclient, "q", "latin1", "retry", score=12, msg=raw)
    agg = aggregate_failures(rclient, ["q"], batch=3)
    assert agg.complete
    assert agg.anomalies == {"missing_hash": 1, "corrupt_msg": 1, "non_utf8_text": 1}
    assert agg.anomaly_examples["missing_hash"] == ["q/gone"]
    refused = [g for g in agg.groups if g.fingerprint == "dial tcp <addr>: connect: connection refused"]
    assert len(refused) == 1 and (refused[0].count, refused[0].retry, refused[0].archived) == (6, 5, 1)
    assert (refused[0].first_failed_at, refused[0].last_failed_at) == (90, 104)
    odd = [g for g in agg.groups if g.example_ids == ["latin1"]]
    assert odd and "\ufffd" in odd[0].example_error and odd[0].last_failed_at == 5
    assert agg.tasks == 7 and agg.by_state == {"retry": 8, "archived": 1}


def test_groups_are_capped_and_overflow_counted(rclient):
    for i in range(40):
        put_task(rclient, "q", f"t{i}", "retry", score=i, ttype=f"type:{i % 10}", error=f"error kind {chr(97 + i % 10)}")
    agg = aggregate_failures(rclient, ["q"], max_groups=4, batch=7)
    named = [g for g in agg.groups if g.task_type != OTHER]
    other = [g for g in agg.groups if g.task_type == OTHER]
    assert len(named) == 4 and len(other) == 1  # at most max_groups named groups, plus "(other)"
    assert other[0].count == agg.overflow_tasks == 40 - sum(g.count for g in named)
    assert sum(g.count for g in agg.groups) == 40
    assert all(len(g.example_ids) <= 3 for g in agg.groups)


def test_batch_size_does_not_change_the_result(rclient):
    for i in range(250):
        put_task(rclient, "q", f"t{i}", "retry" if i % 3 else "archived", score=i, ttype="a" if i % 2 else "b",
                 error=f"timeout after {i}ms", retried=i % 4, last_failed_at=1000 + i)
    results = [aggregate_failures(rclient, ["q"], batch=b).to_records() for b in (1, 7, 1000)]
    for r in results:
        for g in r:
            g.pop("example_ids")
    assert results[0] == results[1] == results[2]


class _StopRedisAfter(redis.Connection):
    """A connection that stops the (real, private) redis-server when the 3rd slice is requested."""

    server: RedisServer | None = None
    slices = 0

    def send_command(self, *args, **kwargs):
        if args and args[0] == "EVALSHA":
            type(self).slices += 1
            if type(self).slices == 3 and self.server is not None:
                self.server.stop()
        return super().send_command(*args, **kwargs)


def test_redis_stopped_mid_scan_gives_a_partial_result(tmp_path):
    server = RedisServer(tmp_path)
    try:
        client = server.client()
        for i in range(50):
            put_task(client, "q", f"t{i}", "retry", score=i, error="boom")
        _StopRedisAfter.server, _StopRedisAfter.slices = server, 0
        pool = redis.ConnectionPool(connection_class=_StopRedisAfter, host="127.0.0.1", port=server.port,
                                    socket_timeout=2)
        agg = aggregate_failures(redis.Redis(connection_pool=pool), ["q"], batch=10)
        assert not agg.complete
        assert 10 <= agg.by_state["retry"] < 50 and agg.groups[0].count == agg.tasks <= agg.by_state["retry"]
        assert f"127.0.0.1:{server.port}" in agg.incomplete_reason and "q/retry" in agg.incomplete_reason
        # Redis already down before the first slice: a clear error, not a half result
        with pytest.raises(RedisUnavailable, match="unreachable"):
            aggregate_failures(redis.Redis(port=server.port, socket_timeout=1), ["q"])
    finally:
        _StopRedisAfter.server = None
        server.stop()


def test_the_cli_path_does_not_import_pandas():
    code = ("import sys, jobrunbook.asynq.summary, jobrunbook.asynq.aggregate, jobrunbook.asynq.inspector;"
            "print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
