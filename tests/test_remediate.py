"""Plan, confirm, refuse, interrupt: remediation on the real fixture snapshots."""

from __future__ import annotations

import argparse
import json

import pytest
from conftest import ASYNQ_FIXTURES
from jobrunbook._exceptions import NotFound, RemediationRefused
from jobrunbook.asynq import keys as K
from jobrunbook.asynq.ops import acquire_lock
from jobrunbook.fingerprint import fingerprint
from jobrunbook.remediate import TaskFilter, execute_remediation, plan_remediation, read_audit, watch_recovery
from remediate_support import add_task, keyspace, load, membership

# calendar-sensitive (daily counters, expiries, windows, deadlines): `make test-dates` runs these under faketime
pytestmark = pytest.mark.dates


def _truth(fixture: str, queue: str, state: str) -> list[dict]:
    data = json.loads((ASYNQ_FIXTURES / fixture / "inspector.json").read_text())
    q = next(q for q in data["queues"] if q["queue"] == queue)
    return q["tasks"][state]


def test_filters_select_exactly_what_asynqs_inspector_shows(rclient):
    load(rclient, "dependency-down")
    truth = _truth("dependency-down", "critical", "retry")
    refused = {t["id"] for t in truth if "connection refused" in t["last_err"]}
    assert 0 < len(refused) < len(truth)
    plan = plan_remediation(rclient, "run", TaskFilter("critical", state="retry", error_contains="connection refused"))
    assert set(plan.ids) == refused
    email = {t["id"] for t in truth if t["type"] == "email:send" and "connection refused" in t["last_err"]}
    fp = fingerprint(next(t["last_err"] for t in truth if t["id"] in email))
    same_fp = {t["id"] for t in truth if t["type"] == "email:send" and fingerprint(t["last_err"]) == fp}
    plan = plan_remediation(rclient, "run", TaskFilter("critical", state="retry", task_type="email:send",
                                                       fingerprint=fp))
    assert set(plan.ids) == same_fp and same_fp
    # failure window on last_failed_at
    times = sorted({t["last_failed_at"] for t in truth})
    from jobrunbook.remediate import parse_when
    mid = parse_when(times[len(times) // 2])
    since = plan_remediation(rclient, "run", TaskFilter("critical", state="retry", failed_since=mid))
    before = plan_remediation(rclient, "run", TaskFilter("critical", state="retry", failed_before=mid))
    assert set(since.ids) == {t["id"] for t in truth if parse_when(t["last_failed_at"]) >= mid}
    assert set(since.ids) | set(before.ids) == {t["id"] for t in truth} and not set(since.ids) & set(before.ids)


def test_dry_run_then_real_run_with_audit(rclient, tmp_path, monkeypatch):
    monkeypatch.setenv("JOBRUNBOOK_ACTOR", "oncall-test")
    load(rclient, "bad-deploy")
    flt = TaskFilter("critical", state="retry", task_type="payment:capture")
    plan = plan_remediation(rclient, "archive", flt, run_dir=tmp_path, batch_size=10)
    n = len([t for t in _truth("bad-deploy", "critical", "retry") if t["type"] == "payment:capture"])
    assert plan.count == n and plan.batches == -(-n // 10)
    assert plan.asynq_commands()[0] == f"asynq task archive --queue=critical --id={plan.ids[0]}"
    before = keyspace(rclient)
    with pytest.raises(RemediationRefused, match="--confirm"):
        execute_remediation(rclient, plan, confirm=n + 5, max_tasks=1000, run_dir=tmp_path)
    with pytest.raises(RemediationRefused, match="max-tasks"):
        execute_remediation(rclient, plan, confirm=n, max_tasks=n - 1, run_dir=tmp_path)
    assert keyspace(rclient) == before
    res = execute_remediation(rclient, plan, confirm=n, max_tasks=1000, run_dir=tmp_path)
    assert res.done == n and res.counts_after["archived"] == n
    audit = read_audit(tmp_path)
    assert [a["step"] for a in audit] == ["plan", "refused", "refused"] + ["batch"] * plan.batches + ["done"]
    assert all(a["who"] == "oncall-test" and a["ts"].endswith("Z") for a in audit)
    assert audit[-1]["export"] == res.export_path and audit[0]["dry_run"] is True
    assert audit[-1]["counts_before"]["retry"] == 32 and audit[-1]["counts_after"]["retry"] == 32 - n


def test_whole_state_plan_shows_valid_asynq_cli(rclient):
    load(rclient, "mixed")
    plan = plan_remediation(rclient, "run", TaskFilter("default", state="retry"))
    assert plan.asynq_commands() == ["asynq task runall --queue=default --state=retry"]
    plan = plan_remediation(rclient, "archive", TaskFilter("default", state="retry"))
    assert plan.asynq_commands() == ["asynq task archiveall --queue=default --state=retry"]


def test_bad_input_is_refused_and_nothing_changes(rclient, tmp_path):
    load(rclient, "mixed")
    add_task(rclient, "default", "busy", "active")
    before = keyspace(rclient)
    with pytest.raises(NotFound, match="queue 'nope'"):
        plan_remediation(rclient, "run", TaskFilter("nope", state="retry"), run_dir=tmp_path)
    with pytest.raises(NotFound, match="not-a-task"):
        plan_remediation(rclient, "run", TaskFilter("default", ids=("not-a-task",)), run_dir=tmp_path)
    with pytest.raises(RemediationRefused, match="being processed"):
        plan_remediation(rclient, "delete", TaskFilter("default", ids=("busy",)), run_dir=tmp_path)
    with pytest.raises(NotFound, match="no task"):
        plan_remediation(rclient, "run", TaskFilter("default", state="retry", task_type="no:such"), run_dir=tmp_path)
    with pytest.raises(RemediationRefused, match="does not apply"):
        plan_remediation(rclient, "run", TaskFilter("default", state="pending"), run_dir=tmp_path)
    plan = plan_remediation(rclient, "run", TaskFilter("default", state="retry"), run_dir=tmp_path)
    with pytest.raises(RemediationRefused, match="does not match"):
        execute_remediation(rclient, plan, confirm=plan.count + 3, max_tasks=100, run_dir=tmp_path)
    with pytest.raises(RemediationRefused, match="dry run"):
        execute_remediation(rclient, plan, confirm=None, max_tasks=100, run_dir=tmp_path)
    assert keyspace(rclient) == before
    assert all("error" in a for a in read_audit(tmp_path) if a["step"] in ("refused",))


def test_two_remediations_on_one_queue_one_is_refused(rclient, tmp_path):
    load(rclient, "mixed")
    plan = plan_remediation(rclient, "run", TaskFilter("default", state="retry"))
    before = keyspace(rclient)
    with acquire_lock(rclient, "default", who="alice", what="archive"):
        with pytest.raises(RemediationRefused, match="alice"):
            execute_remediation(rclient, plan, confirm=plan.count, max_tasks=100, run_dir=tmp_path)
        assert keyspace(rclient) == before
        # another queue is free
        other = plan_remediation(rclient, "run", TaskFilter("critical", state="retry"))
        assert execute_remediation(rclient, other, confirm=other.count, max_tasks=100, run_dir=tmp_path).done


def test_interruption_between_batches_leaves_every_task_in_exactly_one_state(rclient, tmp_path):
    load(rclient, "mixed")
    ids = {m.decode() for m in rclient.zrange(K.state_key("critical", "retry"), 0, -1)}
    plan = plan_remediation(rclient, "archive", TaskFilter("critical", state="retry"), batch_size=4)
    seen = []

    def crash(done, batch, codes):
        seen.append(done)
        if len(seen) == 3:
            raise KeyboardInterrupt("operator pressed ^C")

    with pytest.raises(KeyboardInterrupt):
        execute_remediation(rclient, plan, confirm=plan.count, max_tasks=100, run_dir=tmp_path, on_batch=crash)
    where = membership(rclient, "critical")
    assert all(len(where.get(i, [])) == 1 for i in ids)
    assert sum(where[i] == ["archived"] for i in ids) == 12
    for i in ids:
        assert rclient.hget(K.task_key("critical", i), "state").decode() == where[i][0]
    assert read_audit(tmp_path)[-1]["step"] == "interrupted"
    assert not rclient.exists("jobrunbook:{critical}:remediation-lock")
    # re-running picks up exactly the rest
    plan = plan_remediation(rclient, "archive", TaskFilter("critical", state="retry"))
    assert plan.count == len(ids) - 12
    execute_remediation(rclient, plan, confirm=plan.count, max_tasks=100, run_dir=tmp_path)
    assert all(membership(rclient, "critical")[i] == ["archived"] for i in ids)


def test_archive_cap_eviction_refused_then_exported(rclient, tmp_path):
    load(rclient, "mixed")
    rclient.zadd(K.state_key("default", "archived"), {f"filler-{i:05d}": 1795900000 + i for i in range(9990)})
    plan = plan_remediation(rclient, "archive", TaskFilter("default", state="retry"))
    assert plan.eviction["count"] == 9 + 9990 + 25 - 9999
    assert plan.eviction["sample"][0] < plan.eviction["sample"][1]  # oldest first
    before = keyspace(rclient)
    with pytest.raises(RemediationRefused, match="trim 25"):
        execute_remediation(rclient, plan, confirm=plan.count, max_tasks=100, run_dir=tmp_path)
    assert keyspace(rclient) == before
    res = execute_remediation(rclient, plan, confirm=plan.count, max_tasks=100, run_dir=tmp_path,
                              allow_archive_eviction=True)
    assert res.done == 25 and rclient.zcard(K.state_key("default", "archived")) == 9999
    evicted = [a for a in read_audit(tmp_path) if a["step"] == "export-evicted"][0]
    assert plan.eviction["ids"] == [f"filler-{i:05d}" for i in range(25)]  # the oldest go
    assert not any(rclient.zscore(K.state_key("default", "archived"), i) for i in plan.eviction["ids"])
    assert evicted["count"] == 0  # the fillers are bare ids without hashes: nothing to export


def test_cli_dry_run_and_confirmed_run(rclient, redis_url, tmp_path, capsys):
    from jobrunbook.remediate import cli as remediate_cli
    load(rclient, "dependency-down")
    parser = argparse.ArgumentParser()
    remediate_cli.add_arguments(parser)
    argv = ["run", "--redis-url", redis_url, "--queue", "default", "--state", "retry",
            "--error-contains", "connection refused", "--run-dir", str(tmp_path)]
    assert remediate_cli.command(parser.parse_args(argv)) == 0
    out = capsys.readouterr().out
    assert "DRY RUN: run" in out
    n = int(out.split("--confirm ")[1].split()[0])
    assert rclient.llen(K.state_key("default", "pending")) == 0
    assert remediate_cli.command(parser.parse_args(argv + ["--confirm", str(n)])) == 0
    assert rclient.llen(K.state_key("default", "pending")) == n
    assert [a["step"] for a in read_audit(tmp_path)][-2:] == ["batch", "done"]


def test_watch_recovery_reads_daily_counter_deltas(rclient):
    clock = [1795980000.0]
    day = "2026-11-29"
    rclient.set(f"asynq:{{q}}:processed:{day}", 100)
    rclient.set(f"asynq:{{q}}:failed:{day}", 40)

    def sleep(s):
        clock[0] += s
        rclient.incrby(f"asynq:{{q}}:processed:{day}", 50)
        rclient.incrby(f"asynq:{{q}}:failed:{day}", 1)

    res = watch_recovery(rclient, "q", duration_s=60, interval_s=20, clock=lambda: clock[0], sleep=sleep)
    assert res["processed"] == 150 and res["failed"] == 3 and res["returned_to_normal"] is True
    assert len(res["samples"]) == 4
