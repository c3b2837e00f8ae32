"""`kill -9` of `jobrunbook serve` after it accepted alerts: after a restart every accepted alert still runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import requests
from _service_helpers import AUTH, SLOW, TOKEN, TRIVIAL, fixture_json, wait_for
from jobrunbook.record import read_status


def _serve(outputs: Path, notebooks: Path, port_file: Path) -> subprocess.Popen:
    port_file.unlink(missing_ok=True)
    env = os.environ | {"JOBRUNBOOK_WEBHOOK_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "jobrunbook.cli", "serve", "--port", "0", "--port-file",
                             str(port_file), "--outputs", str(outputs), "--notebooks", str(notebooks),
                             "--concurrency", "1", "--timeout", "60", "--redis-url", "redis://127.0.0.1:1/0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: port_file.exists() or proc.poll() is not None, 30, 0.05, "serve to listen")
    assert proc.poll() is None, proc.stdout.read().decode()
    return proc


def _kill9(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the server and the kernel it started: nothing shuts down cleanly
    proc.wait(10)


def test_kill_9_after_accept_then_restart_runs_every_accepted_alert(tmp_path):
    outputs, port_file = tmp_path / "outputs", tmp_path / "port"
    proc = _serve(outputs, SLOW, port_file)  # the first run sleeps 120 s: it is mid-run when killed
    try:
        url = f"http://127.0.0.1:{port_file.read_text()}"
        body = fixture_json("firing-warning.json")
        accepted = []
        for i in range(5):
            body["alerts"][0]["startsAt"] = f"2026-11-29T18:40:{i:02d}.000Z"
            r = requests.post(url + "/alerts", data=json.dumps(body), headers=AUTH, timeout=10)
            assert r.status_code == 200
            accepted += r.json()["queued"]
        assert len(accepted) == 5
        wait_for(lambda: any(r["run_id"] for r in requests.get(url + "/runs", headers=AUTH, timeout=5).json()),
                 60, 0.1, "the first run to start")
    finally:
        _kill9(proc)
    proc = _serve(outputs, TRIVIAL, port_file)
    try:
        url = f"http://127.0.0.1:{port_file.read_text()}"

        def all_done():
            rows = requests.get(url + "/runs", headers=AUTH, timeout=5).json()
            return rows if len(rows) == 5 and all(r["state"] == "done" for r in rows) else None

        # the runs execute in the niced worker process: on a loaded 2-core machine a trivial run takes ~20 s
        rows = all_done() or wait_for(all_done, 240, 0.3, "every accepted alert to run after the restart")
        assert sorted(r["id"] for r in rows) == sorted(accepted)
        first = min(rows, key=lambda r: r["id"])
        assert first["attempts"] == 2
        interrupted = [d for d in outputs.iterdir() if d.is_dir() and d.name != first["run_id"]
                       and (d / "status.json").exists() and read_status(d)["state"] == "failed"]
        assert len(interrupted) == 1 and "interrupted" in read_status(interrupted[0])["error"]
        assert all(read_status(outputs / r["run_id"])["state"] == "done" for r in rows)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            _kill9(proc)
