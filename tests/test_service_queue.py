"""The bounded queue, priority by severity, resolve and link (issue 15), on both stores: SQLite and Postgres.

The receiver runs on a real uvicorn (no worker: the queue is what the test reads), against a SQLite file or
a database of this session's own on the machine's Postgres.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import timedelta

import psycopg
import pytest
from _service_helpers import ServerThread, fixture_json, make_service, wait_for
from jobrunbook import clock
from jobrunbook.service import STORE_NAME, PostgresStore, SqliteStore


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / STORE_NAME)
    else:
        dsn = request.getfixturevalue("pg_dsn")
        s = PostgresStore(dsn)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("TRUNCATE alerts, counters RESTART IDENTITY")
    yield s
    s.close()


def _t(minutes: float) -> str:
    """RFC 3339 time ``minutes`` from now (negative: ago)."""
    return clock.iso(clock.utcnow() + timedelta(minutes=minutes))


def alert(fp: str, *, severity: str = "warning", queue: str = "default", task_type: str = "email:send",
          starts: str = "2026-11-29T18:30:27.292Z", status: str = "firing", ends: str = "0001-01-01T00:00:00Z",
          **labels: str) -> dict:
    name = "JobFailureRateCritical" if severity == "critical" else "JobFailureRate"
    return {"status": status, "fingerprint": fp, "startsAt": starts, "endsAt": ends, "annotations": {},
            "generatorURL": "", "labels": {"alertname": name, "component": "worker", "severity": severity,
                                           "queue": queue, "task_type": task_type, **labels}}


def hook(*alerts: dict, group: str = "g") -> dict:
    body = fixture_json("firing-warning.json")
    status = "resolved" if all(a["status"] == "resolved" for a in alerts) else "firing"
    return body | {"alerts": list(alerts), "groupKey": f'{{}}:{{group="{group}"}}', "status": status}


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


@pytest.fixture
def receiver(store, tmp_path):
    def start(**kw):
        app, _, _ = make_service(tmp_path / "outputs", worker=False, store=store, **kw)
        srv = ServerThread(app)
        started.append(srv)
        return srv

    started: list = []
    yield start
    for srv in started:
        srv.stop()


def test_a_full_queue_records_the_overflow_as_capped_and_a_critical_takes_a_warnings_place(receiver, store):
    srv = receiver(max_queued=3)
    ids = []
    for n in range(5):  # 5 warnings, each of its own group and queue: only the global cap applies
        r = srv.post(hook(alert(f"{n:016x}", queue=f"q{n}"), group=f"g{n}"))
        assert r.status_code == 200
        ids.append((r.json()["queued"] or [None])[0])
    assert ids[3:] == [None, None]
    states = {r["fingerprint"]: (r["state"], r["cap_reason"]) for r in srv.get("/runs").json()}
    assert sorted(states.values()) == [("capped", "queue")] * 2 + [("queued", None)] * 3
    metrics = srv.get("/metrics", auth=False).text
    assert 'jobrunbook_alerts_capped{reason="queue"} 2.0' in metrics and _metric(metrics, "jobrunbook_queue_depth") == 3
    assert 'jobrunbook_webhook_alerts_ignored_total{reason="queue_full"} 2.0' in metrics
    # a critical into the full queue: the newest queued warning makes room (never a critical behind warnings)
    r = srv.post(hook(alert("c" * 16, severity="critical", queue="qc"), group="gc")).json()
    assert len(r["queued"]) == 1 and r["displaced"] == [ids[2]] and r["capped"] == 0
    assert store.get(ids[2])["state"] == "capped" and store.get(ids[2])["cap_reason"] == "queue"
    metrics = srv.get("/metrics", auth=False).text
    assert 'jobrunbook_alerts_capped{reason="queue"} 3.0' in metrics and _metric(metrics, "jobrunbook_queue_depth") == 3
    # critical first, then the oldest warning
    assert [store.claim("test-worker").row["fingerprint"] for _ in range(2)] == ["c" * 16, f"{0:016x}"]
    # the index shows what was capped, and why
    page = srv.get("/").text
    assert page.count("not run: the queue was full") == 3 and "3 alert(s) recorded without a run" in page
    # a re-send of a capped warning finds room now (two runs left the queue): it is queued, once
    resend = hook(alert(f"{2:016x}", queue="q2"), group="g2")
    assert srv.post(resend).json()["queued"] == [ids[2]]
    assert srv.post(resend).json()["deduplicated"] == 1
    assert store.get(ids[2])["state"] == "queued"


def test_critical_alerts_are_never_capped_behind_warnings_in_a_storm(receiver, store):
    """200 warnings over 50 groups, then 5 criticals: the queue holds its cap and every critical is queued."""
    srv = receiver(max_queued=20, max_runs_per_group=1)
    for n in range(200):
        assert srv.post(hook(alert(f"{n:016x}", queue=f"q{n}"), group=f"g{n % 50}")).status_code == 200
    rows = srv.get("/runs?limit=1000").json()
    assert sum(r["state"] == "queued" for r in rows) == 20
    reasons = [r["cap_reason"] for r in rows if r["state"] == "capped"]
    assert len(reasons) == 180 and set(reasons) == {"group", "queue"}
    for n in range(5):
        body = srv.post(hook(alert(f"c{n:015x}", severity="critical", queue=f"crit{n}"), group=f"c{n}")).json()
        assert len(body["queued"]) == 1 and len(body["displaced"]) == 1
    rows = srv.get("/runs?limit=1000").json()
    queued = [r for r in rows if r["state"] == "queued"]
    assert len(queued) == 20 and sum(r["severity"] == "critical" for r in queued) == 5
    assert store.claim("w").row["severity"] == "critical"


def test_runs_per_group_are_capped_within_the_window(receiver, store):
    srv = receiver(max_runs_per_group=2)
    body = fixture_json("firing-critical-grouped.json")
    r = srv.post(body).json()
    assert len(r["queued"]) == 2 and r["capped"] == 1 and r["queue_full"] == 0
    assert sorted((x["state"], x["cap_reason"]) for x in store.list()) == [("capped", "group"), ("queued", None),
                                                                          ("queued", None)]
    assert srv.post(body).json()["deduplicated"] == 3  # a group-capped alert is still known: no second try
    assert 'jobrunbook_alerts_capped{reason="group"} 1.0' in srv.get("/metrics", auth=False).text


def test_a_resolved_alert_closes_every_open_episode_not_later_than_its_own(receiver, store):
    srv = receiver()
    fp = "e4f4d901c8ab50ef"
    starts = ["2026-11-29T18:30:00.000Z", "2026-11-29T18:40:00.000Z", "2026-11-29T18:50:00.000Z"]
    ids = [srv.post(hook(alert(fp, starts=s))).json()["queued"][0] for s in starts]  # the alert re-fired twice
    # resolved for the second episode: it and the first (whose resolved never came) close; the third stays open
    r = srv.post(hook(alert(fp, starts=starts[1], status="resolved", ends="2026-11-29T18:45:00.000Z"))).json()
    assert sorted(r["resolved"]) == ids[:2] and r["resolved_unmatched"] == 0
    rows = {x["id"]: x for x in store.list()}
    assert rows[ids[0]]["time_to_resolve_s"] == 900.0 and rows[ids[1]]["time_to_resolve_s"] == 300.0
    assert {rows[i]["close_state"] for i in ids[:2]} == {"pending"} and rows[ids[2]]["resolved_at"] is None
    again = srv.post(hook(alert(fp, starts=starts[1], status="resolved", ends="2026-11-29T18:45:00.000Z"))).json()
    assert again["resolved"] == [] and again["resolved_duplicate"] == 1
    earlier = srv.post(hook(alert(fp, starts="2026-11-29T18:00:00.000Z", status="resolved",
                                  ends="2026-11-29T18:05:00.000Z"))).json()
    assert earlier["resolved_unmatched"] == 1
    later = srv.post(hook(alert(fp, starts=starts[2], status="resolved", ends="2026-11-29T18:55:00.000Z"))).json()
    assert later["resolved"] == [ids[2]]


def test_a_warning_its_critical_covers_is_linked_not_run(receiver, store):
    srv = receiver()
    crit = srv.post(hook(alert("c0" * 8, severity="critical", starts=_t(-10)), group="crit")).json()["queued"][0]
    # the critical is open: the warning for the same queue/task type and group is linked to it
    w1 = srv.post(hook(alert("a0" * 8, starts=_t(-5)), group="warn")).json()
    assert w1["queued"] == [] and list(w1["covered"].values()) == [crit]
    # the critical ends; the warning fires again within the group window: linked again, not a new full run
    assert srv.post(hook(alert("c0" * 8, severity="critical", starts=_t(-10), status="resolved", ends=_t(-1)),
                         group="crit")).json()["resolved"] == [crit]
    w2 = srv.post(hook(alert("a0" * 8, starts=_t(0)), group="warn")).json()
    assert list(w2["covered"].values()) == [crit]
    # other labels (another component): another incident; its own run
    other = srv.post(hook(alert("b0" * 8, starts=_t(0), component="scheduler"), group="warn")).json()
    assert len(other["queued"]) == 1 and other["covered"] == {}
    # a critical that ended longer ago than the window covers nothing
    old = srv.post(hook(alert("d0" * 8, severity="critical", queue="q2", starts=_t(-180)), group="crit")).json()
    srv.post(hook(alert("d0" * 8, severity="critical", queue="q2", starts=_t(-180), status="resolved",
                        ends=_t(-90)), group="crit"))
    late = srv.post(hook(alert("e0" * 8, queue="q2", starts=_t(0)), group="warn")).json()
    assert len(late["queued"]) == 1 and late["queued"][0] != old["queued"][0]
    rows = {r["id"]: r for r in srv.get("/runs").json() if r["state"] == "linked"}
    assert {r["linked_to"] for r in rows.values()} == {crit} and len(rows) == 2
    metrics = srv.get("/metrics", auth=False).text
    assert _metric(metrics, "jobrunbook_alerts_linked") == 2
    assert 'jobrunbook_webhook_alerts_ignored_total{reason="linked"} 2.0' in metrics
    # a resolved warning that was linked: recorded, nothing to close
    done = srv.post(hook(alert("a0" * 8, starts=_t(0), status="resolved", ends=_t(1)), group="warn")).json()
    assert len(done["resolved"]) == 2 and all(store.get(i)["close_state"] is None for i in done["resolved"])


def test_the_index_shows_a_linked_warning_beside_its_critical_run(tmp_path):
    """A real run for the critical (trivial notebooks); the warning that follows is shown in its section."""
    outputs = tmp_path / "outputs"
    app, store, _ = make_service(outputs, concurrency=1)
    srv = ServerThread(app)
    try:
        crit = srv.post(hook(alert("c1" * 8, severity="critical", starts=_t(-3)), group="crit")).json()["queued"][0]
        row = wait_for(lambda: (r := store.get(crit))["state"] in ("done", "failed") and r, 120, 0.2, "the run")
        assert row["state"] == "done", row["error"]
        warning = srv.post(hook(alert("a1" * 8, starts=_t(0)), group="warn")).json()
        assert list(warning["covered"].values()) == [crit]
        page = srv.get("/").text
        section = next(s for s in page.split('<section class="nb target">') if row["run_id"] in s)
        assert "covered by the critical run " + row["run_id"] in section
        assert f'href="{row["run_id"]}/report.html"' in section and section.count("<tr><td") == 2
        assert json.loads(json.dumps(srv.get("/runs").json()))[0]["state"] == "linked"
    finally:
        srv.stop()


def test_a_lease_that_is_not_renewed_is_taken_over_and_the_old_owner_cannot_finish(receiver, store):
    srv = receiver()
    [row_id] = srv.post(hook(alert("f1" * 8))).json()["queued"]
    a = store.claim("host-a:1:aaaa", lease=0.5)
    assert a.id == row_id and a.row["attempts"] == 1
    assert store.claim("host-b:2:bbbb", lease=0.5) is None  # leased: nobody else takes it
    assert store.heartbeat("host-a:1:aaaa", [row_id], lease=0.5) == {row_id}
    wait_for(lambda: store.claim("host-b:2:bbbb", lease=30) is not None, 10, 0.1, "the lease to expire")
    row = store.get(row_id)
    assert (row["owner"], row["attempts"], row["state"]) == ("host-b:2:bbbb", 2, "running")
    assert store.heartbeat("host-a:1:aaaa", [row_id]) == set()  # A learns it lost the row
    assert store.finish(row_id, state="done", run_id=None, owner="host-a:1:aaaa") is False
    assert store.finish(row_id, state="done", run_id=None, owner="host-b:2:bbbb") is True
    assert store.get(row_id)["state"] == "done" and store.get(row_id)["owner"] is None


def test_a_dead_owner_of_this_replica_is_seen_at_once_and_a_run_interrupted_three_times_fails(receiver, store):
    srv = receiver()
    [row_id] = srv.post(hook(alert("f2" * 8))).json()["queued"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for attempt in range(1, 4):
        job = store.claim(f"replica-x:{dead.pid}:{attempt:04d}", lease=3600)
        assert job.id == row_id and job.row["attempts"] == attempt
        assert store.claim("replica-x:1:none", lease=3600) is None  # an hour's lease, an owner that looks alive
        assert store.expire_dead_owners("replica-y") == 0  # another replica's: left to its lease
        assert store.expire_dead_owners("replica-x") == 1  # this replica's, its pid gone: expired now
    assert store.claim("replica-x:1:none") is None
    row = store.get(row_id)
    assert row["state"] == "failed" and row["error"].startswith("interrupted 3 times")
