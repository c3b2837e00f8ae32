"""Remediation on both asynq versions' captures: the same selection as asynq's Inspector, every byte kept."""

from __future__ import annotations

import base64

import pytest
from _asynq_helpers import truth
from conftest import SNAPSHOTS, load_fixture_snapshot
from jobrunbook.asynq import asynq_pb2
from jobrunbook.asynq import keys as K
from jobrunbook.asynq.export import read_export, restore_export
from jobrunbook.asynq.messages import decode_task, encode_task
from jobrunbook.asynq.ops import acquire_lock
from jobrunbook.remediate import TaskFilter, execute_remediation, format_plan, plan_remediation
from remediate_support import keyspace

NOW = 1796300000


def _restore(client, path, queue):
    with acquire_lock(client, queue, who="t", what="restore") as lock:
        return restore_export(client, path, lock)


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_selection_and_archive_equal_asynqs_inspector_and_undo_exactly(rclient, tmp_path, name):
    load_fixture_snapshot(rclient, name)
    before = keyspace(rclient)
    for q in truth(name)["queues"]:
        retry = [t["id"] for t in q["tasks"]["retry"]]
        archived = [t["id"] for t in q["tasks"]["archived"]]
        if not retry:
            continue
        plan = plan_remediation(rclient, "run", TaskFilter(q["queue"], state="retry"))
        assert plan.ids == retry  # asynq's order: by next process time
        plan = plan_remediation(rclient, "archive", TaskFilter(q["queue"], state="retry"), now=NOW)
        res = execute_remediation(rclient, plan, confirm=plan.count, max_tasks=1000, run_dir=tmp_path)
        assert res.done == len(retry) and res.counts_after["retry"] == 0
        assert res.counts_after["archived"] == len(retry) + len(archived)
        got = {m.decode() for m in rclient.zrange(K.state_key(q["queue"], "archived"), 0, -1)}
        assert got == set(retry) | set(archived)
        # the messages are untouched by the change (asynq's archive from the Inspector rewrites only state)
        for t in q["tasks"]["retry"]:
            raw = rclient.hget(K.task_key(q["queue"], t["id"]), "msg")
            assert decode_task(raw).error_msg == t["last_err"]
        _restore(rclient, res.export_path, q["queue"])
    assert keyspace(rclient) == before


def test_headers_and_an_unknown_field_survive_every_change_byte_for_byte(rclient, tmp_path):
    pb = asynq_pb2.TaskMessage(type="email:send", id="h1", queue="q", payload=b'{"to":"a@b.c"}', retry=3,
                               retried=1, error_msg="boom", last_failed_at=NOW - 60)
    pb.headers.update({"tenant": "acme", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    msg = pb.SerializeToString() + b"\xa0\x06\x2a"  # field 100, varint 42: a field no asynq release has yet
    # Go writes map entries in any order: put traceparent first, as 31 of the 40 headers/ tasks have it
    entries = [b for num, b in _fields(msg) if num == 15]
    msg = b"".join(b for num, b in _fields(msg) if num < 15) + b"".join(reversed(entries)) + \
        b"".join(b for num, b in _fields(msg) if num > 15)
    assert asynq_pb2.TaskMessage.FromString(msg).headers["tenant"] == "acme"
    assert encode_task(decode_task(msg)) == msg  # read and written back by jobrunbook: the same bytes
    rclient.sadd(K.ALL_QUEUES, "q")
    rclient.hset(K.task_key("q", "h1"), mapping={"msg": msg, "state": "retry"})
    rclient.zadd(K.state_key("q", "retry"), {"h1": NOW - 30})

    def stored() -> bytes:
        return rclient.hget(K.task_key("q", "h1"), "msg")

    def act(action, state):
        plan = plan_remediation(rclient, action, TaskFilter("q", ids=("h1",), state=state), now=NOW)
        return execute_remediation(rclient, plan, confirm=1, max_tasks=1, run_dir=tmp_path)

    act("run", "retry")
    assert rclient.lrange(K.state_key("q", "pending"), 0, -1) == [b"h1"] and stored() == msg
    archived = act("archive", "pending")
    assert rclient.zscore(K.state_key("q", "archived"), "h1") == NOW and stored() == msg
    _, tasks, _ = read_export(archived.export_path)
    assert base64.b64decode(tasks[0]["fields"]["msg"]["b64"]) == msg  # exported before the change
    deleted = act("delete", "archived")
    assert not rclient.exists(K.task_key("q", "h1"))
    _, tasks, _ = read_export(deleted.export_path)
    assert base64.b64decode(tasks[0]["fields"]["msg"]["b64"]) == msg
    _restore(rclient, deleted.export_path, "q")
    assert stored() == msg and rclient.zscore(K.state_key("q", "archived"), "h1") == NOW
    assert decode_task(stored()).headers == {"tenant": "acme", "traceparent": pb.headers["traceparent"]}


def _fields(msg: bytes):
    from jobrunbook.asynq.messages import wire_fields

    return wire_fields(msg)


def test_the_archive_cap_guard_uses_the_configured_cap(rclient, tmp_path):
    load_fixture_snapshot(rclient, "v0.26/mixed")
    rclient.zadd(K.state_key("default", "archived"), {f"filler-{i:03d}": NOW - 3600 + i for i in range(40)})
    flt = TaskFilter("default", state="retry")
    default = plan_remediation(rclient, "archive", flt, now=NOW)
    assert default.eviction is None and default.archive_cap == 10_000
    assert "cap 10,000 (asynq's default): asynq keeps the newest 9,999 (ZREMRANGEBYRANK 0 -10000)" in format_plan(default)
    plan = plan_remediation(rclient, "archive", flt, now=NOW, archive_cap=50)
    archived_now = 9 + 40
    assert plan.eviction["count"] == archived_now + 25 - 49 and "cap 50 (archive_max_size)" in plan.eviction["message"]
    assert "keeps the newest 49" in format_plan(plan)
    res = execute_remediation(rclient, plan, confirm=plan.count, max_tasks=100, run_dir=tmp_path,
                              allow_archive_eviction=True)
    assert res.done == 25 and rclient.zcard(K.state_key("default", "archived")) == 49
