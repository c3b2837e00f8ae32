"""A large incident: the report stays small and says how much more there is, the data-health check rides on
the aggregate's pass, and 06 counts large selections from 02's read instead of reading every task again."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, RedisServer, load_fixture_snapshot

from jobrunbook.asynq.aggregate import aggregate_failures
from jobrunbook.asynq.hazards import check_data_health
from jobrunbook.asynq.messages import decode_task
from jobrunbook.asynq.inspector import Inspector
from jobrunbook.config import Settings
from jobrunbook.demo import start_demo
from jobrunbook.demo.scale import failed_count, write_failed_tasks
from jobrunbook.run import execute_run, params_from_labels

NOTEBOOKS = ROOT / "notebooks"
TASKS = 100_000
# 40 task types: 40 failed-task groups, more than a table shows; the first ten are a database outage (a cause
# whose remediation re-runs the retry tasks), all in default's retry set, far over what 06 reads again
GROUPS = [{"queue": "default", "state": "retry", "type": f"sync:part{i:02d}",
           "error": f"load part {i:02d}: dial tcp 10.0.0.5:5432: connect: connection refused"} for i in range(10)] + \
         [{"queue": "critical" if i % 2 else "default", "state": "archived" if i % 3 else "retry",
           "type": f"job:kind{i:02d}", "error": f"kind {i:02d} rejected the request"} for i in range(30)]


def findings(run_dir: Path, section: str) -> dict:
    return json.loads((run_dir / "findings" / f"{section}.json").read_text())["data"]


@pytest.fixture(scope="module")
def large_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("large")
    server = RedisServer(tmp / "redis")
    try:
        write_failed_tasks(server.client(), TASKS, GROUPS)
        params = params_from_labels(["alertname=JobFailureRateCritical", "severity=critical", "queue=default"],
                                    Settings(redis_url=server.url, metrics_url="", log_source=""))
        run = execute_run(params, notebooks_dir=NOTEBOOKS, outputs_dir=tmp / "outputs",
                          env={"JOBRUNBOOK_DEMO_JSON": str(tmp / "none.json"), "JOBRUNBOOK_POSTGRES_DSN": ""})
        run.wait_pdf()
        yield run, server.client()
    finally:
        server.stop()


def test_large_incident_report_is_bounded_and_says_how_much_more(large_run):
    run, _ = large_run
    assert run.report is not None and run.state == "done", {n: s.error for n, s in run.sections.items()}
    asynq = findings(run.run_dir, "02_asynq")
    # the whole data is in the findings: every group, every task
    assert asynq["tasks"] == TASKS and len(asynq["groups"]) == len(GROUPS)
    assert sum(g["count"] for g in asynq["groups"]) == TASKS
    html = run.report.read_text()
    assert run.report.stat().st_size < 2_000_000
    # the report's table of groups shows the first 25 and says how many more (40 - 25)
    assert "15 more row(s): the whole table is in this section" in html
    status = json.loads((run.run_dir / "status.json").read_text())
    rss = [s["peak_rss_mb"] for s in status["sections"].values()]
    assert all(r and r < 300 for r in rss), rss  # no kernel held the incident in memory
    assert status["process_peak_rss_mb"] > 0


def test_large_selection_counted_from_02_not_read_again(large_run):
    run, client = large_run
    plans = findings(run.run_dir, "06_remediation")["plans"]
    groups = findings(run.run_dir, "02_asynq")["groups"]
    # the database outage (10 groups, 25,000 tasks in default's retry set) is one cause, one command
    outage = [g for g in groups if g["task_type"].startswith("sync:part")]
    assert {g["cause"] for g in outage} == {"dependency"}
    plan = next(p for p in plans if p["cause"] == "dependency")
    assert plan.get("counted_from") == "02_asynq"
    assert plan["tasks"] == plan["cause's tasks"] == sum(g["retry"] + g["archived"] for g in outage) == 25_000
    assert plan["where"] == "default/retry 25,000" and len(plan["groups"]) == 10
    assert plan["to act"].endswith("--cause dependency --confirm 25000")
    assert plan["asynq CLI"].startswith("none: default/retry holds")  # the other kinds wait there too
    assert client.zcard("asynq:{default}:retry") > 20_000
    reading = findings(run.run_dir, "06_remediation")["message"]
    assert "covers exactly its 25,000 failed task(s)" in reading
    assert "Counted from section 02's read of every failed task" in reading
    audit = [json.loads(line) for line in (run.run_dir / "audit.jsonl").read_text().splitlines()]
    assert audit and all(a["dry_run"] for a in audit)
    assert {a.get("counted_from") for a in audit if a["step"] == "plan" and a.get("cause") == "dependency"} == \
        {"02_asynq"}


@pytest.mark.parametrize("name", ["mixed", "v0.26/mixed"])
def test_aggregate_checks_retry_and_archived_as_the_health_check_does(rclient, name):
    load_fixture_snapshot(rclient, name)
    # asynq#1085 as a v0.25+ worker on Redis < 6.2 leaves it: an archived id whose hash still says active
    queue = "default"
    tid = rclient.zrange(f"asynq:{{{queue}}}:archived", 0, 0)[0].decode()
    rclient.hset(f"asynq:{{{queue}}}:t:{tid}", "state", "active")
    rclient.zadd(f"asynq:{{{queue}}}:retry", {"gone-0000": 1})  # an id whose hash is missing
    queues = sorted(q.decode() for q in rclient.smembers("asynq:queues"))
    reading = Inspector(rclient).version(queues)
    agg = aggregate_failures(rclient, queues)
    alone = check_data_health(rclient, queues, reading)
    riding = check_data_health(rclient, queues, reading, aggregate=agg)
    # as a run does it: the aggregate still reading in a thread while the rest is checked
    with ThreadPoolExecutor(1) as ex:
        meanwhile = check_data_health(rclient, queues, reading, aggregate=ex.submit(aggregate_failures, rclient,
                                                                                     queues))
    assert riding["repairs"] == meanwhile["repairs"] == alone["repairs"] and riding["ok"] is alone["ok"] is False
    for q in queues:
        for field in ("missing_hash", "state_mismatch", "orphans", "no_state_field", "ids_checked"):
            assert riding["queues"][q][field] == meanwhile["queues"][q][field] == alone["queues"][q][field], \
                (q, field)
    assert riding["queues"][queue]["state_mismatch"]["archived"] == {"count": 1, "examples": [f"{tid}=active"]}
    assert riding["queues"][queue]["missing_hash"]["retry"]["count"] == 1


def test_demo_incident_scaled_keeps_the_groups_and_their_shares(tmp_path):
    from jobrunbook import clock

    # both incidents at one instant: the same seed then writes the same history (on the wall clock the two
    # starts fall seconds apart, and a group at the window's edge, a lease expiry, can be in one and not the other)
    at = clock.FixedClock(clock.now())
    with clock.use(at), start_demo("mixed", seed=3, state_dir=tmp_path / "small", live=False,
                                   prometheus=False) as small:
        before = aggregate_failures(small.client(), ["critical", "default", "low"])
    with clock.use(at), start_demo("mixed", seed=3, state_dir=tmp_path / "large", live=False, prometheus=False,
                                   failed_tasks=20_000) as demo:
        client = demo.client()
        assert failed_count(client, ["critical", "default", "low"]) == 20_000 == demo.scale["failed_tasks"]
        after = aggregate_failures(client, ["critical", "default", "low"])
        tid = client.zrange("asynq:{critical}:archived", -1, -1)[0].decode()
        msg = decode_task(client.hget(f"asynq:{{critical}}:t:{tid}", "msg"))
    assert after.tasks == 20_000 and after.anomalies == before.anomalies
    assert msg is not None and msg.id == tid  # a copy carries its own id in its message
    share = {(g.queue, g.task_type, g.fingerprint): g.count / before.tasks for g in before.groups}
    got = {(g.queue, g.task_type, g.fingerprint): g.count / after.tasks for g in after.groups}
    assert set(got) == set(share)
    assert all(abs(got[k] - share[k]) < 0.01 for k in share), (got, share)
