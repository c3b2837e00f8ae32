"""Export before a change, restore byte for byte (DUMP of every key), orphans."""

from __future__ import annotations

import argparse
import json

import pytest
from jobrunbook.asynq import keys as K
from jobrunbook.asynq.export import read_export, restore_export
from jobrunbook.asynq.ops import acquire_lock
from jobrunbook.remediate import TaskFilter, clean_orphans, execute_remediation, find_blocking_ids, find_orphans, plan_remediation
from remediate_support import add_task, keyspace, load


def _restore(client, path, queue, **kw):
    with acquire_lock(client, queue, who="t", what="restore") as lock:
        return restore_export(client, path, lock, **kw)


@pytest.mark.parametrize("action,state", [("archive", "retry"), ("delete", "retry"), ("delete", "archived")])
def test_change_then_restore_is_byte_identical(rclient, tmp_path, action, state):
    load(rclient, "mixed")
    rclient.set("asynq:{critical}:unique:x", "ignored", ex=900)
    before = keyspace(rclient)
    plan = plan_remediation(rclient, action, TaskFilter("critical", state=state), batch_size=5)
    res = execute_remediation(rclient, plan, confirm=plan.count, max_tasks=100, run_dir=tmp_path)
    assert res.done == plan.count and keyspace(rclient) != before
    header, tasks, applied = read_export(res.export_path)
    assert header["queue"] == "critical" and len(tasks) == plan.count and applied == set(plan.ids)
    rec = tasks[0]
    assert set(rec["fields"]) >= {"msg", "state"} and rec["membership"]["key"] == K.state_key("critical", state)
    out = _restore(rclient, res.export_path, "critical")
    assert out.counts() == {"restored": plan.count, "conflicts": 0, "active": 0, "not_applied": 0}
    assert keyspace(rclient) == before
    # restoring twice is harmless
    _restore(rclient, res.export_path, "critical")
    assert keyspace(rclient) == before


def test_restore_releases_and_restores_unique_lock(rclient, tmp_path):
    add_task(rclient, "q", "u1", "retry", unique_key="asynq:{q}:unique:email:abc")
    rclient.set("asynq:{q}:unique:email:abc", "u1", ex=600)
    before = keyspace(rclient)
    plan = plan_remediation(rclient, "delete", TaskFilter("q", ids=("u1",)))
    res = execute_remediation(rclient, plan, confirm=1, max_tasks=1, run_dir=tmp_path)
    assert not rclient.exists("asynq:{q}:unique:email:abc")
    _restore(rclient, res.export_path, "q")
    assert keyspace(rclient) == before and 0 < rclient.ttl("asynq:{q}:unique:email:abc") <= 600


def test_restore_refuses_to_overwrite_a_different_task(rclient, tmp_path):
    add_task(rclient, "q", "fixed-id", "retry", error="first")
    plan = plan_remediation(rclient, "delete", TaskFilter("q", ids=("fixed-id",)))
    res = execute_remediation(rclient, plan, confirm=1, max_tasks=1, run_dir=tmp_path)
    add_task(rclient, "q", "fixed-id", "pending", error="a new task under the same id")
    before = keyspace(rclient)
    out = _restore(rclient, res.export_path, "q")
    assert out.conflicts == ["fixed-id"] and keyspace(rclient) == before
    out = _restore(rclient, res.export_path, "q", force=True)
    assert out.restored == ["fixed-id"]
    assert rclient.hget(K.task_key("q", "fixed-id"), "state") == b"retry"
    assert rclient.llen(K.state_key("q", "pending")) == 0


def test_orphans_and_blocking_ids_found_exported_cleaned_and_restorable(rclient, tmp_path):
    load(rclient, "mixed")
    add_task(rclient, "default", "invoice-2026-0042", "archived", score=1795999999)
    # asynq's archive trim leaves the hash behind (asynq#847)
    victim = rclient.zrange(K.state_key("default", "archived"), 0, 0)[0].decode()
    rclient.zrem(K.state_key("default", "archived"), victim)
    orphans = find_orphans(rclient, "default")
    assert [o.id for o in orphans] == [victim] and orphans[0].state == "archived"
    assert find_blocking_ids(rclient, "default") == [
        {"id": "invoice-2026-0042", "state": "archived", "why": "archived with a fixed id"}]
    before = keyspace(rclient)
    dry = clean_orphans(rclient, "default", run_dir=tmp_path)
    assert dry["count"] == 1 and keyspace(rclient) == before
    done = clean_orphans(rclient, "default", run_dir=tmp_path, confirm=1)
    assert done["done"] == 1 and not rclient.exists(K.task_key("default", victim))
    _restore(rclient, done["export"], "default")
    assert keyspace(rclient) == before


def test_restore_cli(rclient, redis_url, tmp_path, capsys):
    from jobrunbook.remediate import restore as restore_cli
    load(rclient, "dependency-down")
    before = keyspace(rclient)
    plan = plan_remediation(rclient, "archive", TaskFilter("default", state="retry"))
    res = execute_remediation(rclient, plan, confirm=plan.count, max_tasks=100, run_dir=tmp_path)
    parser = argparse.ArgumentParser()
    restore_cli.add_arguments(parser)
    assert restore_cli.command(parser.parse_args([res.export_path, "--redis-url", redis_url])) == 0
    assert json.loads(capsys.readouterr().out)["restored"] == plan.count
    assert keyspace(rclient) == before
    assert [json.loads(line)["step"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()][-1] == "restore"
