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


# --- issue 14: --cause, the diagnosis's own classifier across queues and states -------------------------------

def _inspector_tasks(fixture: str) -> list[dict]:
    data = json.loads((ASYNQ_FIXTURES / fixture / "inspector.json").read_text())
    return [{**t, "state": state} for q in data["queues"] for state in ("retry", "archived") for t in q["tasks"][state]]


@pytest.mark.parametrize("fixture", ["mixed", "dependency-down", "bad-deploy"])
def test_cause_selects_exactly_the_tasks_asynq_shows_for_it(rclient, fixture):
    from jobrunbook.diagnosis import diagnose
    from jobrunbook.diagnosis.causes import classify
    from jobrunbook.diagnosis.gather import groups_from_aggregate
    from jobrunbook.diagnosis.evidence import Evidence
    from jobrunbook.asynq.inspector import Inspector
    from jobrunbook.remediate.plan import cause_filters, plan_across

    load(rclient, fixture)
    tasks = _inspector_tasks(fixture)  # asynq's own Inspector: the ground truth
    d = diagnose(Evidence(groups=groups_from_aggregate(Inspector(rclient).failures().to_records())))
    chosen: dict[str, set[str]] = {}
    for cause in [c for c in d.causes if c.failures]:
        plans = plan_across(rclient, "run", cause_filters(rclient, "run", cause=cause.key))
        chosen[cause.key] = {i for p in plans.plans for i in p.ids}
        assert plans.count == cause.failures == len(chosen[cause.key])
        assert chosen[cause.key] == {t["id"] for t in tasks if classify(t["last_err"]) == cause.key}
        assert sum(g["count"] for g in plans.groups()) == plans.count
        # the diagnosis's groups of the cause are the dry run's groups
        assert {(g["queue"], g["task_type"], g["fingerprint"]) for g in cause.groups} <= \
            {(g["queue"], g["task_type"], g["fingerprint"]) for g in plans.groups()}
    every = [i for ids in chosen.values() for i in ids]
    assert len(every) == len(set(every)) == len(tasks)  # each failed task in exactly one cause


def test_cli_cause_dry_run_acts_on_its_tasks_only_and_restores(rclient, redis_url, tmp_path, capsys):
    from jobrunbook.diagnosis.causes import classify
    from jobrunbook.remediate import cli as remediate_cli
    from jobrunbook.remediate import restore as restore_cli

    load(rclient, "mixed")
    tasks = _inspector_tasks("mixed")
    mine = {t["id"] for t in tasks if classify(t["last_err"]) == "validation"}
    assert {t["queue"] for t in tasks if t["id"] in mine} == {"critical", "default"}  # across queues
    parser = argparse.ArgumentParser()
    remediate_cli.add_arguments(parser)
    argv = ["delete", "--redis-url", redis_url, "--cause", "validation", "--run-dir", str(tmp_path)]
    before = keyspace(rclient)
    assert remediate_cli.command(parser.parse_args(argv)) == 0
    out = capsys.readouterr().out
    assert f"DRY RUN: delete {len(mine)} task(s) of cause validation" in out
    for t in tasks:
        if t["id"] in mine:  # every group shown with its queue, state, type and fingerprint
            assert f"{t['queue']}/{t['state']}  {t['type']}  {fingerprint(t['last_err'])[:60]}" in out
    assert f"to act: add --confirm {len(mine)}" in out and keyspace(rclient) == before
    with pytest.raises(RemediationRefused, match="does not match"):
        remediate_cli.command(parser.parse_args(argv + ["--confirm", str(len(mine) + 5)]))
    assert keyspace(rclient) == before
    assert remediate_cli.command(parser.parse_args(argv + ["--confirm", str(len(mine))])) == 0
    out = capsys.readouterr().out
    assert f"delete: {len(mine)} task(s) done of cause validation" in out
    left = {q: membership(rclient, q) for q in ("critical", "default")}
    assert not mine & {i for q in left.values() for i in q}
    assert {i for q in left.values() for i in q} >= {t["id"] for t in tasks if t["id"] not in mine}
    restore_parser = argparse.ArgumentParser()
    restore_cli.add_arguments(restore_parser)
    exports = sorted((tmp_path / "exports").glob("*.jsonl"))
    assert len(exports) == 2  # one per queue, each written before its deletes
    for export in exports:
        assert restore_cli.command(restore_parser.parse_args([str(export), "--redis-url", redis_url])) == 0
    assert keyspace(rclient) == before


def test_cause_bad_input_names_the_problem(rclient, redis_url, tmp_path):
    from jobrunbook._exceptions import ConfigError
    from jobrunbook.remediate import cli as remediate_cli

    load(rclient, "mixed")
    parser = argparse.ArgumentParser()
    remediate_cli.add_arguments(parser)
    base = ["--redis-url", redis_url, "--run-dir", str(tmp_path)]
    with pytest.raises(ConfigError, match="no cause 'dependencies'; one of handler_not_found.*dependency"):
        remediate_cli.command(parser.parse_args(["run", *base, "--cause", "dependencies"]))
    with pytest.raises(ConfigError, match="does not combine with --id"):
        remediate_cli.command(parser.parse_args(["run", *base, "--cause", "panic", "--id", "x"]))
    with pytest.raises(RemediationRefused, match="archive does not apply to archived"):
        remediate_cli.command(parser.parse_args(["archive", *base, "--cause", "panic", "--state", "archived"]))
    with pytest.raises(ConfigError, match="a queue is required"):
        remediate_cli.command(parser.parse_args(["run", *base, "--state", "retry"]))
    with pytest.raises(NotFound, match="queue 'nope' not found"):
        remediate_cli.command(parser.parse_args(["run", *base, "--cause", "panic", "--queue", "nope"]))
    with pytest.raises(NotFound, match="no task matches cause lease_expired"):
        remediate_cli.command(parser.parse_args(["run", *base, "--cause", "lease_expired"]))


def test_cause_dry_run_offers_asynq_cli_only_for_a_whole_state(rclient, tmp_path):
    from jobrunbook.remediate.plan import cause_filters, format_plans, plan_across

    load(rclient, "dependency-down")
    text = format_plans(plan_across(rclient, "run", cause_filters(rclient, "run", cause="dependency")))
    other = rclient.zcard(K.state_key("critical", "retry")) - sum(
        1 for t in _inspector_tasks("dependency-down") if t["queue"] == "critical" and t["state"] == "retry"
        and "connection refused" in t["last_err"])
    assert other > 0
    assert f"none for critical/retry: it also holds {other} task(s)" in text
    # every retry task of default is a dependency failure: asynq's runall re-runs exactly them
    assert "asynq task runall --queue=default --state=retry" in text
