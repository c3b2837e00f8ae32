"""The worker's log on both asynq versions: revocations are no failures, the window follows the alert."""

from __future__ import annotations

import json

from _asynq_helpers import generated_at
from conftest import fixture_dir, load_fixture_snapshot
from jobrunbook import clock
from jobrunbook.diagnosis import diagnose
from jobrunbook.diagnosis.gather import evidence_from_findings, gather_findings
from jobrunbook.sections.logs import read_worker_logs
from jobrunbook.sources.logs import collect_worker_logs, log_window
import pytest

# calendar-sensitive (daily counters, expiries, windows, deadlines): `make test-dates` runs these under faketime
pytestmark = pytest.mark.dates

# what a v0.26.0 worker writes when a handler returns asynq.RevokeTask (processor.go: Warnf("revoke task id=%s")),
# next to the application's own line for the error it returned
REVOKED = """asynq: pid=24348 2026/12/02 12:46:20.100000 WARN: revoke task id=rev-1
2026-12-02T12:46:20.100100Z app level=error msg="task failed" queue=default task_type=email:send task_id=rev-1 \
retried=0 max_retry=2 next=retry error="user 1042 deleted: revoke task"
asynq: pid=24348 2026/12/02 12:46:21.200000 WARN: revoke task id=rev-2
"""


def test_revoked_tasks_are_counted_and_never_failures(tmp_path):
    original = (fixture_dir("v0.26/mixed") / "worker.log").read_text()
    log = tmp_path / "worker.log"
    log.write_text(original + REVOKED)
    plain = collect_worker_logs("file", path=fixture_dir("v0.26/mixed") / "worker.log", since=None).data
    r = collect_worker_logs("file", path=log, since=None)
    assert r.data["revoked"] == 2 and plain["revoked"] == 0
    assert r.data["groups"].equals(plain["groups"])  # the revocations are in no failure group
    assert "rev-1" not in set(r.data["events"]["task_id"].dropna())
    assert "2 task(s) revoked" in r.message
    assert r.data["asynq_versions"] == ["v0.26.0"] == plain["asynq_versions"]  # from the stack-trace paths
    assert collect_worker_logs("file", path=fixture_dir("mixed") / "worker.log", since=None).data[
        "asynq_versions"] == ["v0.24.1"]
    # the diagnosis says how many, and does not count them
    ev = evidence_from_findings({"logs": {"status": "ok", "groups": r.data["groups"].to_dict("records"),
                                          "revoked": r.data["revoked"]}})
    d = diagnose(ev, now=generated_at("v0.26/mixed"))
    assert d.revoked == 2 and "2 task(s) the worker revoked (asynq.RevokeTask) are done, not failures" in d.verdict
    assert d.total_failures == plain["groups"]["count"].sum()


def test_log_evidence_survives_a_diagnosis_days_later(rclient):
    load_fixture_snapshot(rclient, "mixed")
    log = fixture_dir("mixed") / "worker.log"
    full = collect_worker_logs("file", path=log, since=None).data["groups"]
    later = generated_at("mixed") + 3 * 86400
    alert = {"alertname": "JobFailureRate", "startsAt": "2026-11-29T19:26:30Z"}
    with clock.use(clock.FixedClock(later)):
        # the wall clock's last 24 h: the capture's log is gone (the old behaviour)
        assert collect_worker_logs("file", path=log, since="24h").data["groups"].empty
        url = f"redis://127.0.0.1:{rclient.connection_pool.connection_kwargs['port']}/0"
        with_alert = gather_findings(redis_url=url, log_file=str(log), alert=alert)
        without = gather_findings(redis_url=url, log_file=str(log))
    assert with_alert["logs"]["since"] == "2026-11-29T18:26:30Z" == log_window(alert["startsAt"])
    assert sum(g["count"] for g in with_alert["logs"]["groups"]) == full["count"].sum() > 0
    # no alert: the window starts an hour before the first failure Redis holds
    first = min(g["first_failed_at"] for g in without["asynq"]["groups"])
    assert without["logs"]["since"] == log_window(None, first_seen=first)
    assert sum(g["count"] for g in without["logs"]["groups"]) == full["count"].sum()
    assert log_window(None) is None


def test_the_logs_section_reads_from_before_the_alert(tmp_path, monkeypatch):
    from jobrunbook.config import Settings
    from jobrunbook.run.params import build_params
    from jobrunbook.sections._base import Context

    log = fixture_dir("bad-deploy") / "worker.log"
    settings = Settings(redis_url="", metrics_url="", log_source="file", log_path=str(log))
    params = build_params({"starts_at": "2026-11-29T19:27:00Z", "run_dir": str(tmp_path)})
    with clock.use(clock.FixedClock(generated_at("bad-deploy") + 5 * 86400)):
        section = read_worker_logs(Context(params=params, settings=settings, run_dir=tmp_path))
    truth = json.loads((fixture_dir("bad-deploy") / "truth.json").read_text())
    assert f"{truth['failed_attempts_total']} failure line(s)" in section.reading
    assert "since 2026-11-29T18:27:00Z" in section.reading and "asynq v0.24.1" in section.reading
    assert section.findings["since"] == "2026-11-29T18:27:00Z"
