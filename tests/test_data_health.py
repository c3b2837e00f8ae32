"""The data faults users of each asynq release hit, found and repaired exactly (real redis-server)."""

from __future__ import annotations

import argparse
import json

from conftest import load_fixture_snapshot
from jobrunbook.asynq import keys as K
from jobrunbook.asynq import summary as S
from jobrunbook.asynq.export import read_export, restore_export
from jobrunbook.asynq.hazards import check_data_health, redis_hazard, unregistered_queues
from jobrunbook.asynq.inspector import Inspector
from jobrunbook.asynq.ops import acquire_lock, apply_in_batches
from jobrunbook.asynq.versions import behaviour
from jobrunbook.remediate import find_mismatches, fix_states, read_audit
from remediate_support import keyspace
import pytest

# calendar-sensitive (daily counters, expiries, windows, deadlines): `make test-dates` runs these under faketime
pytestmark = pytest.mark.dates


def _half_archived(client, queue: str, n: int) -> list[str]:
    """What a v0.25+ worker's archive leaves on Redis < 6.2 (asynq#1085): LREM active, ZREM lease and ZADD
    archived ran, then ZRANGE ... BYSCORE failed: the hash still says active and keeps its old msg."""
    ids = [m.decode() for m in client.zrange(K.state_key(queue, "retry"), 0, n - 1)]
    for i in ids:
        client.zrem(K.state_key(queue, "retry"), i)
        client.zadd(K.state_key(queue, "archived"), {i: 1796000000})
        client.hset(K.task_key(queue, i), "state", "active")
    return ids


def test_state_mismatch_found_repaired_exactly_and_undone(rclient, tmp_path):
    load_fixture_snapshot(rclient, "v0.26/mixed")
    ids = _half_archived(rclient, "default", 3)
    # asynq's own path refuses them: the state check sees "active"
    with acquire_lock(rclient, "default", who="t", what="delete") as lock:
        out = apply_in_batches(rclient, lock, "delete", ids, expected_state="archived")
    assert not out.done and sorted(out.skipped["state changed"]) == sorted(ids)
    reading = Inspector(rclient).version(configured="v0.26.0")
    health = check_data_health(rclient, ["critical", "default"], reading, redis_url="redis://r:6379/0")
    assert health["queues"]["default"]["state_mismatch"]["archived"]["count"] == 3 and not health["ok"]
    repair = next(r for r in health["repairs"] if r["problem"] == "state mismatch")
    assert repair["commands"] == ["jobrunbook remediate fix-state --queue default --redis-url redis://r:6379/0",
                                  "jobrunbook remediate fix-state --queue default --redis-url redis://r:6379/0 "
                                  "--confirm 3"]
    assert sorted((m.id, m.set_state, m.hash_state) for m in find_mismatches(rclient, "default")) == \
        sorted((i, "archived", "active") for i in ids)
    before = keyspace(rclient)
    dry = fix_states(rclient, "default", run_dir=tmp_path)
    assert dry["count"] == 3 and dry["by_state"] == {"in archived, hash says active": 3}
    assert keyspace(rclient) == before  # a dry run changes nothing
    done = fix_states(rclient, "default", run_dir=tmp_path, confirm=3)
    assert done["done"] == 3 and [a["step"] for a in read_audit(tmp_path)] == ["plan", "done"]
    assert all(rclient.hget(K.task_key("default", i), "state") == b"archived" for i in ids)
    assert Inspector(rclient).health("default").ok
    # the export recorded where each id really was: restore gives the mismatch back byte for byte
    _, tasks, applied = read_export(done["export"])
    assert applied == set(ids) and {t["membership"]["key"] for t in tasks} == {K.state_key("default", "archived")}
    with acquire_lock(rclient, "default", who="t", what="restore") as lock:
        restore_export(rclient, done["export"], lock)
    assert keyspace(rclient) == before
    fix_states(rclient, "default", run_dir=tmp_path, confirm=3)
    # repaired, asynq's delete works on them again
    with acquire_lock(rclient, "default", who="t", what="delete") as lock:
        out = apply_in_batches(rclient, lock, "delete", ids, expected_state="archived")
    assert sorted(out.done) == sorted(ids)


def test_an_id_in_two_states_or_in_active_is_left_alone(rclient, tmp_path):
    load_fixture_snapshot(rclient, "mixed")
    (i,) = _half_archived(rclient, "critical", 1)
    rclient.lpush(K.state_key("critical", "active"), i)  # also where its hash says: a worker may hold it
    res = fix_states(rclient, "critical", run_dir=tmp_path, confirm=1)
    assert res["done"] == 0 and res["skipped"] == {"also in the state its hash names": 1}
    assert rclient.hget(K.task_key("critical", i), "state") == b"active"


def test_unregistered_queue_found_by_a_bounded_scan(rclient):
    load_fixture_snapshot(rclient, "v0.26/bad-deploy")
    # asynq#946: the queue was removed from asynq:queues while a v0.25+ producer kept enqueueing to it
    for n in range(3):
        rclient.hset(K.task_key("emails", f"e{n}"), mapping={"msg": b"x", "state": "pending"})
        rclient.lpush(K.state_key("emails", "pending"), f"e{n}")
    found = unregistered_queues(rclient)
    assert found.complete and found.queues == {"emails": {"keys": 4, "pending": 3, "retry": 0, "archived": 0}}
    queue_keys = len(list(rclient.scan_iter("asynq:{*}:*")))
    assert found.keys_scanned == queue_keys == rclient.dbsize() - 1  # all but asynq:queues
    bounded = unregistered_queues(rclient, max_keys=10, count=5)
    assert not bounded.complete and 10 <= bounded.keys_scanned < queue_keys
    s = S.summarize(Inspector(rclient), redis_url="redis://r:6379/0")
    repair = next(r for r in s["data_health"]["repairs"] if r["problem"] == "unregistered queue")
    assert repair["commands"] == ["redis-cli -u redis://r:6379/0 SADD asynq:queues emails"]
    text = S.render_text(s)
    assert "not in asynq:queues" in text and "SADD asynq:queues emails" in text
    rclient.sadd(K.ALL_QUEUES, "emails")  # the command, run
    assert unregistered_queues(rclient).queues == {}


def test_old_redis_with_a_v025_worker_is_the_failed_archive_hazard():
    assert redis_hazard("6.0.16", behaviour("v0.25.0")).startswith("Redis 6.0.16 is older than 6.2")
    assert "asynq#1085" in redis_hazard("5.0.7", behaviour("v0.26.0"))
    assert redis_hazard("6.2.0", behaviour("v0.26.0")) is None and redis_hazard("7.0.15", behaviour("v0.25.1")) is None
    assert redis_hazard("6.0.16", behaviour("v0.24.1")) is None  # v0.24's archive uses ZREMRANGEBYSCORE
    assert "set asynq_version" in redis_hazard("6.0.16", behaviour("v0.24.1"), assumed_by_default=True)
    assert redis_hazard(None, behaviour("v0.26.0")) is None


def test_inspect_says_the_version_and_the_cap(rclient, redis_server, capsys, monkeypatch):
    load_fixture_snapshot(rclient, "v0.26/headers")
    monkeypatch.setenv("JOBRUNBOOK_ARCHIVE_MAX_SIZE", "500")
    p = argparse.ArgumentParser()
    S.add_arguments(p)
    assert S.command(p.parse_args(["--redis-url", redis_server.url])) == 0
    text = capsys.readouterr().out
    assert "Read as asynq v0.26.0, detected from the data: 40 failed or completed task(s) carry headers" in text
    assert "(archive 3/500, asynq keeps the newest 499)" in text
    monkeypatch.setenv("JOBRUNBOOK_ASYNQ_VERSION", "v0.25.1")
    assert S.command(p.parse_args(["--redis-url", redis_server.url, "--json"])) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["asynq_version"]["version"] == "v0.25.1" and out["asynq_version"]["source"] == "configured"
    assert out["asynq_version"]["conflicts"] and out["data_health"]["archive_cap"] == 500


def test_the_asynq_section_says_the_version_and_the_repairs(rclient, redis_server, tmp_path):
    from jobrunbook.config import Settings
    from jobrunbook.run.params import build_params
    from jobrunbook.sections._base import Context
    from jobrunbook.sections.asynq import failing_task_types

    load_fixture_snapshot(rclient, "v0.26/headers")
    (i,) = _half_archived(rclient, "critical", 1)
    settings = Settings(redis_url=redis_server.url, metrics_url="", log_source="", archive_max_size=2000)
    ctx = Context(params=build_params({"run_dir": str(tmp_path)}), settings=settings, run_dir=tmp_path)
    section = failing_task_types(ctx)
    assert "Read as asynq v0.26.0, detected from the data: 40 failed or completed task(s) carry headers" in \
        section.reading
    assert "state mismatch in critical (1)" in section.reading
    assert section.findings["asynq_version"]["version"] == "v0.26.0"
    assert section.findings["data_health"]["archive_cap"] == 2000
    assert section.commands == [f"jobrunbook remediate fix-state --queue critical --redis-url {redis_server.url}",
                                f"jobrunbook remediate fix-state --queue critical --redis-url {redis_server.url} "
                                "--confirm 1"]
    (health,) = [t for caption, t in section.tables.items() if caption.startswith("Data health")]
    assert list(health["problem"]) == ["state mismatch"]
    written = json.loads((tmp_path / "findings" / "02_asynq.json").read_text())
    assert "Read as asynq v0.26.0" in written["data"]["message"] and i


def test_a_mismatched_id_is_no_orphan_to_delete(rclient, tmp_path):
    from jobrunbook.remediate import clean_orphans, find_orphans

    load_fixture_snapshot(rclient, "mixed")
    ids = _half_archived(rclient, "default", 2)
    rclient.zrem(K.state_key("default", "archived"), ids[1])  # and this one is really in no set now
    assert [o.id for o in find_orphans(rclient, "default")] == [ids[1]]
    h = Inspector(rclient).health("default")
    assert (h.orphans.count, h.state_mismatch["archived"].count) == (1, 1)
    done = clean_orphans(rclient, "default", run_dir=tmp_path, confirm=1)
    assert done["done"] == 1 and rclient.exists(K.task_key("default", ids[0]))
    assert not rclient.exists(K.task_key("default", ids[1]))
