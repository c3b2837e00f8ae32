"""Two `jobrunbook serve` replicas sharing one Postgres queue and one outputs folder (issue 15).

Alertmanager-style bodies (the captured ones, one alert each, fingerprints made distinct) go to a random
replica, and each is re-sent to the other; one replica is killed with SIGKILL (its process group: server,
worker process, kernels) while it runs an alert. Every alert runs to completion exactly once; the
interrupted one is taken over by the other replica when its lease expires (the replicas have different
names, as on two machines, so the lease is the only way the survivor can know).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import requests
from _service_helpers import AUTH, ROOT, TOKEN, fixture_json, wait_for
from jobrunbook.record import read_status

PAUSE = ROOT / "tests" / "notebooks" / "pause"  # one notebook that sleeps 6 s
LEASE = 6.0


class Replica:
    def __init__(self, name: str, outputs: Path, dsn: str, tmp: Path) -> None:
        self.name = name
        port_file = tmp / f"{name}.port"
        self.log = (tmp / f"{name}.log").open("w")
        env = os.environ | {"JOBRUNBOOK_WEBHOOK_TOKEN": TOKEN, "JOBRUNBOOK_STORE": dsn}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobrunbook.cli", "serve", "--port", "0", "--port-file", str(port_file),
             "--outputs", str(outputs), "--notebooks", str(PAUSE), "--concurrency", "1", "--timeout", "60",
             "--lease", str(LEASE), "--replica-name", name, "--redis-url", "redis://127.0.0.1:1/0"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: port_file.exists() or self.proc.poll() is not None, 60, 0.05, f"{name} to listen")
        assert self.proc.poll() is None, (tmp / f"{name}.log").read_text()[-2000:]
        self.url = f"http://127.0.0.1:{port_file.read_text()}"

    def post(self, body: dict) -> dict:
        r = requests.post(self.url + "/alerts", data=json.dumps(body), headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def runs(self) -> list[dict]:
        return requests.get(self.url + "/runs?limit=1000", headers=AUTH, timeout=30).json()

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the server, its worker process and its kernels
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.log.close()


def _bodies(n: int) -> list[dict]:
    """n webhook bodies as Alertmanager sends them, one firing alert each: the captured warning and critical
    groups' alerts, their fingerprints and queues made distinct."""
    warning, critical = fixture_json("firing-warning.json"), fixture_json("firing-critical-grouped.json")
    out = []
    for i in range(n):
        body = json.loads(json.dumps(critical if i % 2 else warning))
        alert = body["alerts"][i % len(body["alerts"])]
        alert["fingerprint"] = f"{0xABC000 + i:016x}"
        alert["labels"]["queue"] = f"replica-q{i}"
        body["alerts"], body["commonLabels"] = [alert], dict(alert["labels"])
        out.append(body)
    return out


def test_two_replicas_share_one_queue_and_take_over_a_killed_replicas_run(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS alerts, counters")
    outputs = tmp_path / "outputs"  # shared, as on a shared volume
    a = Replica("replica-a", outputs, pg_dsn, tmp_path)
    b = Replica("replica-b", outputs, pg_dsn, tmp_path)
    rng = random.Random(15)
    bodies = _bodies(8)
    try:
        first, dedup = [], 0
        for body in bodies:
            one, other = (a, b) if rng.random() < 0.5 else (b, a)
            first.append(one.name)
            assert len(one.post(body)["queued"]) == 1
            dedup += other.post(body)["deduplicated"]  # Alertmanager's re-send, to the other replica
        assert dedup == len(bodies) and set(first) == {"replica-a", "replica-b"}
        # kill replica A while it runs an alert
        victim = wait_for(lambda: next((r for r in b.runs() if r["state"] == "running"
                                        and str(r["owner"]).startswith("replica-a:") and r["run_id"]), None),
                          120, 0.1, "replica-a to run an alert")
        a.kill9()
        killed_at = time.monotonic()
        late = _bodies(9)[-1]
        assert len(b.post(late)["queued"]) == 1  # the survivor still accepts
        taken = wait_for(lambda: next((r for r in b.runs() if r["id"] == victim["id"]
                                       and str(r["owner"]).startswith("replica-b:")), None), 120, 0.1,
                         "replica-b to take the interrupted run over")
        takeover_s = time.monotonic() - killed_at

        def finished():
            rows = b.runs()
            return rows if len(rows) == 9 and all(r["state"] in ("done", "failed") for r in rows) else None

        rows = wait_for(finished, 300, 0.5, "every alert to run")
        print(f"\ntwo replicas: 9 alerts, 8 re-sends deduplicated; replica-a killed mid-run "
              f"(alert {victim['id']}); replica-b took it over {takeover_s:.1f} s after the kill (lease {LEASE:.0f} s)")
    finally:
        a.stop()
        b.stop()
    assert all(r["state"] == "done" for r in rows), [(r["id"], r["state"], r["error"]) for r in rows]
    assert len({r["key"] for r in rows}) == 9  # each alert recorded once, whichever replica got it
    by_id = {r["id"]: r for r in rows}
    assert by_id[victim["id"]]["attempts"] == 2 and taken["attempts"] == 2
    assert all(r["attempts"] == 1 for r in rows if r["id"] != victim["id"])
    # every alert ran to completion exactly once; the interrupted attempt is marked as such, in the shared folder
    done, interrupted = {}, []
    for d in outputs.iterdir():
        if d.is_dir() and (d / "status.json").exists():
            st = read_status(d)
            if st["state"] == "done":
                done.setdefault(st["fingerprint"], []).append(d.name)
            else:
                interrupted.append((st["fingerprint"], st.get("error", "")))
    assert {fp: len(names) for fp, names in done.items()} == {r["fingerprint"]: 1 for r in rows}
    assert interrupted == [(victim["fingerprint"], interrupted[0][1])] and "interrupted" in interrupted[0][1]
    assert {by_id[i]["run_id"] for i in by_id} == {n for names in done.values() for n in names}
    assert read_status(outputs / by_id[victim["id"]]["run_id"])["service"]["attempt"] == 2
