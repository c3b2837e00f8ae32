#!/usr/bin/env python3
"""The webhook service under a burst (issue 6, Performance): `jobrunbook serve` in a subprocess, runner stubbed.

1. A burst of POSTs (default 1,000) from 8 client threads: distinct alerts over 10 Alertmanager groups plus
   re-sends of alerts already sent. Accept latency p50/p99 (target p99 < 50 ms); runs started must equal the
   distinct alerts within the per-group cap.
2. The same burst against a fresh server, `kill -9` after about a third of it, restart: every alert that got a
   2xx before the kill must run.

The run engine is replaced by a no-op ONLY here (``--serve`` mode of this file), so the numbers are the
receiver's and the queue's, not the notebooks'. Floor: the same POSTs to /healthz (the HTTP stack alone).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import requests

TOKEN = "bench-token-0123456789abcdef"
HDRS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
GROUPS, CAP = 10, 50


def noop_runner(params, alert, on_run_id, env=None):
    return SimpleNamespace(run_id=None, run_dir=None, state="done", verdict={}, duration_s=0.0)


def serve(argv: list[str]) -> int:
    from jobrunbook.service import cli

    import argparse as ap

    p = ap.ArgumentParser()
    cli.add_arguments(p)
    return cli.command(p.parse_args(argv), runner=noop_runner)


def start(outputs: Path) -> tuple[subprocess.Popen, str]:
    port_file = outputs.parent / f"{outputs.name}.port"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--port", "0", "--port-file", str(port_file),
                             "--outputs", str(outputs), "--max-runs-per-group", str(CAP), "--concurrency", "2"],
                            env=os.environ | {"JOBRUNBOOK_WEBHOOK_TOKEN": TOKEN}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("jobrunbook serve did not start")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port_file.read_text()}"


def bodies(n: int, seed: int = 1) -> tuple[list[bytes], int]:
    """n webhook bodies: ~70 % new alerts, ~30 % re-sends; and the number of runs expected within the cap."""
    rng = random.Random(seed)
    sent: list[bytes] = []
    per_group = [0] * GROUPS
    for i in range(n):
        if sent and rng.random() < 0.3:
            sent.append(rng.choice(sent))
            continue
        g = i % GROUPS
        per_group[g] += 1
        alert = {"status": "firing", "labels": {"alertname": "JobFailureRate", "component": "worker", "severity":
                 "warning", "queue": f"q{g}", "task_type": f"t{i}"}, "annotations": {},
                 "startsAt": "2026-11-29T18:30:27.292Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
                 "fingerprint": f"{i:016x}"}
        body = {"receiver": "runbook", "status": "firing", "alerts": [alert], "groupLabels": {},
                "commonLabels": {}, "commonAnnotations": {}, "externalURL": "", "version": "4",
                "groupKey": f'{{}}:{{alertname="JobFailureRate", queue="q{g}"}}', "truncatedAlerts": 0}
        sent.append(json.dumps(body).encode())
    return sent, sum(min(c, CAP) for c in per_group)


def burst(url: str, payloads: list[bytes], *, path: str = "/alerts", stop_after: int | None = None,
          on_stop=None) -> tuple[list[float], list[dict]]:
    local = threading.local()
    lat: list[float] = []
    answers: list[dict] = []
    lock = threading.Lock()
    fired = threading.Event()

    def one(data: bytes) -> None:
        s = getattr(local, "s", None) or requests.Session()
        local.s = s
        t = time.perf_counter()
        try:
            r = s.post(url + path, data=data, headers=HDRS, timeout=10) if path == "/alerts" else s.get(url + path)
        except requests.RequestException:
            return
        dt = time.perf_counter() - t
        with lock:
            if r.status_code == 200:
                lat.append(dt)
                answers.append(r.json() if path == "/alerts" else {})
            if stop_after and len(answers) >= stop_after and not fired.is_set():
                fired.set()
                on_stop()

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(one, payloads))
    return lat, answers


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def runs_done(url: str) -> list[dict]:
    return requests.get(url + "/runs?limit=1000", headers=HDRS, timeout=10).json()


def wait_drained(url: str, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = runs_done(url)
        if not any(r["state"] in ("queued", "running") for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        return serve(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--posts", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3, help="bursts, each against a fresh server")
    p.add_argument("--summary-json", default="", help="the rows for benchmarks/run.py's summary")
    args, _ = p.parse_known_args(argv)
    payloads, expected = bodies(args.posts)
    distinct = len(set(payloads))
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        bursts = []
        for i in range(max(1, args.repeat)):
            proc, url = start(Path(tmp) / f"a{i}")
            try:
                floor, _ = burst(url, payloads[:300], path="/healthz")
                lat, answers = burst(url, payloads)
                rows = wait_drained(url)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
            bursts.append((pct(lat, 0.99), floor, lat, answers, rows))
        p99, floor, lat, answers, rows = min(bursts, key=lambda b: b[0])
        started = sum(1 for r in rows if r["state"] == "done")
        capped = sum(1 for r in rows if r["state"] == "capped")
        dedup = sum(a["deduplicated"] for a in answers)
        print(f"posts {len(payloads)}: distinct alerts {distinct}, re-sends {len(payloads) - distinct}, "
              f"{GROUPS} groups, cap {CAP}/group")
        print(f"{'measure':<34}{'value':>10}  target")
        print(f"{'floor p50 (GET /healthz) ms':<34}{pct(floor, 0.5):10.2f}")
        print(f"{'accept p50 ms':<34}{pct(lat, 0.5):10.2f}")
        print(f"{'accept p99 ms':<34}{p99:10.2f}  < 50     {'ok' if p99 < 50 else 'MISSED'}")
        print(f"{'2xx answers':<34}{len(lat):10d}  {len(payloads)}")
        print(f"{'deduplicated':<34}{dedup:10d}  {len(payloads) - distinct}")
        print(f"{'runs started':<34}{started:10d}  {expected}  {'ok' if started == expected else 'MISSED'}")
        print(f"{'capped (recorded, not run)':<34}{capped:10d}  {distinct - expected}")
        ok &= p99 < 50 and started == expected and len(lat) == len(payloads)

        outputs = Path(tmp) / "b"
        proc, url = start(outputs)
        stop_after = len(payloads) // 3
        _, answers = burst(url, payloads, stop_after=stop_after, on_stop=lambda: os.killpg(proc.pid, signal.SIGKILL))
        proc.wait(10)
        acked = {i for a in answers for i in a["queued"]}
        proc, url = start(outputs)
        try:
            rows = wait_drained(url)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        ran = {r["id"] for r in rows if r["state"] == "done"}
        lost = acked - ran
        print(f"{'kill -9 after ~1/3: 2xx before':<34}{len(answers):10d}")
        print(f"{'  alerts queued by those 2xx':<34}{len(acked):10d}")
        print(f"{'  of them run after restart':<34}{len(acked & ran):10d}  all      {'ok' if not lost else 'MISSED'}")
        ok &= not lost and len(acked) > 0
    from _summary import load_avg, row, write

    write(args.summary_json, "service", [
        row("service", f"accept p99 of {len(payloads):,} POSTs", [b[0] for b in bursts], unit="ms", bound=50.0,
            target="< 50 ms", note=f"floor GET /healthz p50 {min(pct(b[1], 0.5) for b in bursts):.2f} ms"),
        row("service", "runs started short of the distinct alerts (cap aside)",
            [float(abs(sum(1 for r in b[4] if r["state"] == "done") - expected)) for b in bursts], unit="runs",
            bound=1.0, limit=0.0, target="0"),
        row("service", "acknowledged alerts not run after kill -9", [float(len(lost))], unit="alerts", bound=1.0,
            limit=0.0, target="0"),
    ], load=load_avg())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
