#!/usr/bin/env python3
"""The demo incident, alert to report.html: one-shot and warm runs against floors measured in the same run.

    floor_cold  N trivial notebooks, each by papermill with a fresh kernel, two at a time
    one-shot    `jobrunbook run --alert <demo alert.json>` as a new process on the real
                notebooks (imports, kernels, every source queried, report rendered)
    floor_warm  N trivial notebooks on N pre-started kernels (pool already warm)
    warm        execute_run on a warm KernelPool (the service's way), report included

N = the number of section notebooks in --notebooks (default: notebooks/). The demo
(scenario mixed, seed 1, its Prometheus when installed) is started once and every
run queries it. Targets: one-shot <= 1.3x floor_cold; warm <= 2x floor_warm and < 4 s.
Per-section times of the best real runs (status.json) show where the time goes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIVIAL = ROOT / "tests" / "notebooks" / "trivial" / "00_alert.ipynb"


def floor_cold(n: int, out: Path) -> float:
    import papermill

    def one(i: int) -> None:
        papermill.execute_notebook(str(TRIVIAL), str(out / f"cold-{i}.ipynb"), progress_bar=False,
                                   parameters={"queue": "bench"})

    t = time.perf_counter()
    with ThreadPoolExecutor(2) as ex:
        list(ex.map(one, range(n)))
    return time.perf_counter() - t


def floor_warm(n: int, out: Path) -> float:
    import papermill
    from jobrunbook.kernels import KernelPool

    with KernelPool(size=n, parallel_starts=2) as pool:
        kms = [pool.acquire() for _ in range(n)]
        t = time.perf_counter()

        def one(i: int) -> None:
            papermill.execute_notebook(str(TRIVIAL), str(out / f"warm-{i}.ipynb"), progress_bar=False,
                                       parameters={"queue": "bench"}, km=kms[i])

        with ThreadPoolExecutor(2) as ex:
            list(ex.map(one, range(n)))
        elapsed = time.perf_counter() - t
        for km in kms:
            pool.release(km)
    return elapsed


def demo_settings(demo, outputs: Path):
    """The run's settings and the kernels' environment, as `jobrunbook demo` (run_runbook) passes them."""
    env = {"JOBRUNBOOK_POSTGRES_DSN": demo.postgres_dsn, "JOBRUNBOOK_DEMO_JSON": str(demo.demo_json)}
    return demo.settings(), env


def one_shot(demo, notebooks: Path, out: Path) -> tuple[float, dict]:
    settings, env = demo_settings(demo, out)
    cmd = [sys.executable, "-m", "jobrunbook.cli", "run", "--alert", str(demo.alert_path),
           "--notebooks", str(notebooks), "--outputs", str(out), "--timeout", "120",
           "--redis-url", settings.redis_url, "--metrics-url", settings.metrics_url,
           "--prometheus-url", settings.prometheus_url, "--log-source", settings.log_path,
           "--health-url", f"partner-api={demo.external_health_url}"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})
    elapsed, lines = None, []
    assert proc.stdout is not None
    for line in proc.stdout:  # the report is ready when the run says so; report.pdf is printed after it
        lines.append(line)
        if line.startswith("report: ") and elapsed is None:
            elapsed = time.perf_counter() - t
    stderr = proc.stderr.read() if proc.stderr else ""
    proc.wait()
    exited = time.perf_counter() - t
    report = next((line.split()[1] for line in lines if line.startswith("report: ")), "")
    if elapsed is None or not report.endswith("report.html") or not Path(report).exists():
        raise SystemExit(f"one-shot run produced no report:\n{''.join(lines)}\n{stderr[-2000:]}")
    status = json.loads((Path(report).parent / "status.json").read_text())
    status["_exited_s"] = exited
    return elapsed, status


def warm(demo, notebooks: Path, n: int, out: Path, repeat: int) -> list[tuple[float, dict]]:
    from jobrunbook.kernels import WARMUP_CODE, KernelPool
    from jobrunbook.run import execute_run, params_from_alert

    alert = demo.alert["alerts"][0]
    settings, env = demo_settings(demo, out)
    params = params_from_alert(alert, settings)
    results = []
    # the service's warm-up: pandas, matplotlib and the lib the sections call, imported ahead
    with KernelPool(size=n, parallel_starts=2, warmup_code=WARMUP_CODE) as pool:
        for _ in range(repeat):
            pool.wait_ready(n, timeout=120)  # the service's pool is full between alerts
            t = time.perf_counter()
            run = execute_run(params, notebooks_dir=notebooks, outputs_dir=out, alert=alert, env=env, pool=pool,
                              timeout=120)
            elapsed = time.perf_counter() - t
            run.wait_pdf()  # printed after the report: not part of alert-to-report, done before the next run
            if not (run.report and run.report.exists()):
                raise SystemExit(f"warm run produced no report: {run.run_dir}/status.json")
            results.append((elapsed, json.loads((run.run_dir / "status.json").read_text())))
    return results


def print_sections(label: str, total: float, status: dict) -> None:
    secs = status.get("sections", {})
    print(f"{label}: {total:.2f}s wall, sections phase {status.get('duration_s') or 0:.2f}s, "
          f"state {status.get('state')}{' failed ' + ','.join(status['failed_sections']) if status.get('failed_sections') else ''}")
    for name, s in sorted(secs.items()):
        print(f"  {name:<20}{s.get('state', ''):<8}{s.get('elapsed_s') or 0:7.2f}s")
    rest = total - (status.get("duration_s") or 0)
    print(f"  {'(outside sections)':<28}{rest:7.2f}s  process start/imports, run dir, report, rca, index")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    p.add_argument("--repeat", type=int, default=3)
    args, _ = p.parse_known_args(argv)
    logging.getLogger("papermill").setLevel(logging.ERROR)
    notebooks = args.notebooks.resolve()
    n = len(list(notebooks.glob("[0-9][0-9]_*.ipynb")))
    from jobrunbook.demo import start_demo

    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        out = Path(tmp) / "outputs"
        floors = out / "floors"
        floors.mkdir(parents=True)
        demo = start_demo("mixed", seed=1, state_dir=out / "demo", live=False)
        try:
            fc = min(floor_cold(n, floors) for _ in range(args.repeat))
            shots = [one_shot(demo, notebooks, out) for _ in range(args.repeat)]
            fw = min(floor_warm(n, floors) for _ in range(args.repeat))
            warms = warm(demo, notebooks, n, out, args.repeat)
        finally:
            demo.stop()
    os_, os_status = min(shots, key=lambda r: r[0])
    w, w_status = min(warms, key=lambda r: r[0])
    print(f"notebooks: {n} from {notebooks}; demo mixed seed 1, prometheus "
          f"{demo.prometheus_url or 'none (' + str(demo.prometheus_note) + ')'}; best of {args.repeat}")
    print(f"{'measure':<12}{'seconds':>9}{'ratio':>8}  target")
    print(f"{'floor_cold':<12}{fc:9.2f}")
    print(f"{'one-shot':<12}{os_:9.2f}{os_ / fc:8.2f}  <= 1.3x  {'ok' if os_ / fc <= 1.3 else 'MISSED'}"
          f"  (median {statistics.median(t for t, _ in shots):.2f}s)")
    print(f"{'floor_warm':<12}{fw:9.2f}")
    print(f"{'warm':<12}{w:9.2f}{w / fw:8.2f}  <= 2x and < 4 s  "
          f"{'ok' if w / fw <= 2 and w < 4 else 'MISSED'}  (median {statistics.median(t for t, _ in warms):.2f}s)")
    print_sections("one-shot (best)", os_, os_status)
    print_sections("warm (best)", w, w_status)
    print(f"bench wall time {time.perf_counter() - t_all:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
