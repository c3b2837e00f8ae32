"""The webhook service: the captured Alertmanager bodies POSTed to a running server, real runs, resolve."""

from __future__ import annotations

import json
import os

import pytest
import requests
from _service_helpers import accept_only, AUTH, TOKEN, ServerThread, fixture_bytes, fixture_json, make_service, wait_for
from jobrunbook.record import read_status
from jobrunbook.service import alert_key, parse_webhook


@pytest.fixture
def receiver(tmp_path):
    with accept_only(tmp_path) as pair:
        yield pair


def _rows(store):
    return {r["key"]: r for r in store.list(limit=1000)}


def test_capture_sequence_queues_one_run_per_firing_alert(receiver):
    srv, store = receiver
    r = srv.post(fixture_bytes("firing-warning.json"))
    assert r.status_code == 200 and len(r.json()["queued"]) == 1
    warning_id = r.json()["queued"][0]
    # the critical group: 3 firing alerts, commonLabels without queue/task_type; each alert's own labels are kept
    r = srv.post(fixture_bytes("firing-critical-grouped.raw-body.json"))
    assert r.status_code == 200
    body = r.json()
    assert len(body["queued"]) == 3 and body["deduplicated"] == 0
    rows = _rows(store)
    crit = {(x["queue"], x["task_type"]): x for x in rows.values() if x["alertname"] == "JobFailureRateCritical"}
    assert set(crit) == {("default", "email:send"), ("default", "webhook:deliver"), ("priority", "report:generate")}
    # the critical for default/email:send fired while the warning run for it is open: linked to it
    assert crit[("default", "email:send")]["linked_to"] == warning_id
    assert body["linked"] == {str(crit[("default", "email:send")]["id"]): warning_id}
    assert crit[("default", "webhook:deliver")]["linked_to"] is None
    # Alertmanager re-sends the same group (pretty-printed this time): nothing new
    r = srv.post(fixture_bytes("firing-critical-grouped.json"))
    assert r.json()["queued"] == [] and r.json()["deduplicated"] == 3
    # a firing group holding 2 stale resolved alerts: only its firing alerts are recorded; the warning for
    # default/email:send fired again while its critical's run is open: linked to that run, not run again
    r = srv.post(fixture_bytes("firing-mixed-with-resolved.json"))
    body = r.json()
    assert len(body["queued"]) == 1 and body["resolved_unmatched"] == 2
    new = store.get(body["queued"][0])
    assert (new["queue"], new["task_type"], new["starts_at"]) == ("priority", "email:send", "2026-11-29T18:33:59.292Z")
    [(covered, critical)] = body["covered"].items()
    assert critical == crit[("default", "email:send")]["id"]
    assert store.get(int(covered))["state"] == "linked" and store.get(int(covered))["linked_to"] == critical
    # max_alerts truncation: the 2 alerts sent are new episodes (new startsAt); truncatedAlerts is reported
    r = srv.post(fixture_bytes("firing-critical-truncated-max_alerts-2.json"))
    assert r.json()["truncated"] == 1 and len(r.json()["queued"]) == 2
    # resolved closes the matching episodes only
    r = srv.post(fixture_bytes("resolved.json"))
    assert sorted(r.json()["resolved"]) == sorted(x["id"] for x in crit.values())
    assert srv.post(fixture_bytes("resolved.json")).json()["resolved_duplicate"] == 3
    ttr = {x["fingerprint"]: x["time_to_resolve_s"] for x in store.list() if x["resolved_at"]}
    assert ttr == {"3b77cca778cf2e9d": 41.0, "8e8fe761c26a8f23": 45.0, "932a5f757a277c05": 42.0}
    metrics = srv.get("/metrics", auth=False).text
    assert 'jobrunbook_webhook_alerts_received_total{status="firing"} 11.0' in metrics
    assert 'jobrunbook_webhook_alerts_received_total{status="resolved"} 8.0' in metrics
    assert "jobrunbook_webhook_alerts_deduplicated_total 3.0" in metrics
    assert "jobrunbook_webhook_alerts_truncated_total 1.0" in metrics
    assert "jobrunbook_queue_depth 7.0" in metrics
    assert "jobrunbook_alerts_linked 1.0" in metrics


def test_other_alertnames_are_accepted_ignored_and_counted(receiver):
    srv, store = receiver
    body = fixture_json("firing-warning.json")
    body["alerts"][0]["labels"]["alertname"] = "DiskFull"
    r = srv.post(body)
    assert r.status_code == 200 and r.json()["ignored"] == 1 and r.json()["queued"] == []
    assert store.list() == []
    assert 'jobrunbook_webhook_alerts_ignored_total{reason="alertname"} 1.0' in srv.get("/metrics").text


def test_basic_auth_as_alertmanager_sends_it(receiver):
    import base64

    srv, _ = receiver
    ok = {"Authorization": "Basic " + base64.b64encode(f"alertmanager:{TOKEN}".encode()).decode(),
          "Content-Type": "application/json"}
    assert srv.post(fixture_bytes("firing-warning.json"), headers=ok).status_code == 200
    bad = {"Authorization": "Basic " + base64.b64encode(b"alertmanager:nope").decode()}
    assert srv.post(fixture_bytes("firing-warning.json"), headers=bad).status_code == 401


def test_concurrent_posts_are_each_answered_once_their_alerts_are_committed(receiver):
    """64 POSTs at once (the writer commits them in a few transactions): every 200 names ids that are in the
    store, no id twice; a re-send of all of them is all deduplicated."""
    from concurrent.futures import ThreadPoolExecutor

    srv, store = receiver
    bodies = []
    for i in range(64):
        body = fixture_json("firing-warning.json")
        body["alerts"][0]["fingerprint"] = f"{i:016x}"
        body["alerts"][0]["labels"]["queue"] = f"q{i}"
        body["groupKey"] = f"g{i}"
        bodies.append(body)
    with ThreadPoolExecutor(16) as ex:
        answers = list(ex.map(srv.post, bodies))
    assert [r.status_code for r in answers] == [200] * 64
    ids = [i for r in answers for i in r.json()["queued"]]
    assert len(ids) == len(set(ids)) == 64
    assert {r["id"] for r in store.list(limit=1000)} == set(ids)
    with ThreadPoolExecutor(16) as ex:
        assert sum(r.json()["deduplicated"] for r in ex.map(srv.post, bodies)) == 64


@pytest.fixture(scope="module")
def served_runs(tmp_path_factory):
    """Real runs by the real engine on the trivial notebooks: warning, then the critical group, then resolved."""
    out = tmp_path_factory.mktemp("outputs")
    app, store, worker = make_service(out, concurrency=2)
    srv = ServerThread(app)
    assert srv.post(fixture_bytes("firing-warning.json")).status_code == 200
    assert srv.post(fixture_bytes("firing-critical-grouped.raw-body.json")).status_code == 200
    wait_for(lambda: all(r["state"] == "done" for r in store.list()) and len(store.list()) == 4, 90, 0.2, "4 runs")
    yield srv, store, worker, out
    srv.stop()


def test_each_firing_alert_gets_a_real_run_with_its_own_labels(served_runs):
    srv, store, _, out = served_runs
    runs = srv.get("/runs").json()
    assert [r["received_at"] for r in runs] == sorted((r["received_at"] for r in runs), reverse=True)
    by_fp = {r["fingerprint"]: r for r in runs}
    hook = parse_webhook(fixture_bytes("firing-critical-grouped.raw-body.json"))
    for alert in hook.alerts:
        row = by_fp[alert.fingerprint]
        assert row["key"] == alert_key(alert)
        run_dir = out / row["run_id"]
        params = json.loads((run_dir / "params.json").read_text())
        assert (params["queue"], params["task_type"], params["severity"]) == (
            alert.labels["queue"], alert.labels["task_type"], "critical")
        status = read_status(run_dir)
        assert status["state"] == "done" and status["service"]["alert_id"] == row["id"]
        assert (run_dir / "report.html").is_file()
    linked = by_fp["3b77cca778cf2e9d"]
    assert read_status(out / linked["run_id"])["service"]["linked_run"] == by_fp["e4f4d901c8ab50ef"]["run_id"]
    metrics = srv.get("/metrics").text
    assert 'jobrunbook_runs_total{outcome="done"} 4.0' in metrics
    assert "jobrunbook_run_duration_seconds_count 4.0" in metrics


def test_run_files_are_served_read_only_and_path_safe(served_runs, tmp_path):
    srv, store, _, out = served_runs
    run_id = srv.get("/runs").json()[0]["run_id"]
    r = srv.get(f"/runs/{run_id}/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.content == (out / run_id / "report.html").read_bytes()
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert srv.get(f"/runs/{run_id}").status_code == 308
    assert srv.get(f"/runs/{run_id}/status.json").json()["run_id"] == run_id
    assert srv.get(f"/{run_id}/report.html").status_code == 200  # the index's relative links
    assert srv.get(f"/runs/{run_id}/notebooks/").status_code == 200
    index = srv.get("/")
    assert index.status_code == 200 and run_id in index.text
    secret = tmp_path / "secret.txt"
    secret.write_text("outside outputs")
    os.symlink(secret, out / run_id / "link.txt")
    os.symlink(tmp_path, out / run_id / "linkdir")
    try:
        for path in [f"/runs/{run_id}/link.txt", f"/runs/{run_id}/linkdir/secret.txt", "/runs/..%2F..%2Fetc/passwd",
                     f"/runs/{run_id}/..%2F..%2F..%2Fetc%2Fpasswd", f"/runs/{run_id}/%2e%2e/%2e%2e/etc/passwd",
                     "/runs/.jobrunbook-service.sqlite3/", f"/runs/{run_id}/nope.html", "/runs/%00/x",
                     f"/runs/{run_id}/.status.json.tmp"]:
            r = srv.get(path)
            assert r.status_code == 404, path
            assert b"outside outputs" not in r.content and b"root:" not in r.content
        assert requests.get(f"{srv.url}/runs/{run_id}/", timeout=5).status_code == 401
        assert requests.post(f"{srv.url}/runs/{run_id}/report.html", headers=AUTH, timeout=5).status_code == 405
    finally:
        (out / run_id / "link.txt").unlink()
        (out / run_id / "linkdir").unlink()
    assert srv.get("/healthz", auth=False).json()["ok"] is True


def test_resolved_closes_the_run(served_runs):
    srv, store, _, out = served_runs
    r = srv.post(fixture_bytes("resolved.json"))
    assert len(r.json()["resolved"]) == 3
    wait_for(lambda: all(x["close_state"] == "closed" for x in store.list() if x["resolved_at"]), 30, 0.1, "closes")
    by_fp = {x["fingerprint"]: x for x in store.list()}
    row = by_fp["3b77cca778cf2e9d"]
    status = read_status(out / row["run_id"])
    assert status["state"] == "resolved"
    assert status["resolved_at"] == "2026-11-29T18:31:35.292Z" and status["time_to_resolve_s"] == 41.0
    closing = status["closing"]
    # no Prometheus configured: the last value Alertmanager reported (25.36 %) against the thresholds
    assert closing["failure_ratio_now"] == pytest.approx(0.2536)
    assert closing["below"] == {"warning": False, "critical": False}
    rca = (out / row["run_id"] / "rca.md").read_text()
    assert "## Resolution" in rca and "Time to resolve: 41.0 s" in rca and "25.36 %" in rca
    # the warning run was not in this group: still open
    assert read_status(out / by_fp["e4f4d901c8ab50ef"]["run_id"])["state"] == "done"
    assert "jobrunbook_runs_resolved_total 3.0" in srv.get("/metrics").text
