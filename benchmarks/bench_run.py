#!/usr/bin/env python3
"""The demo incident, alert to report.html: one-shot and warm runs against floors measured in the same run.

    floor_cold  N trivial notebooks, each by papermill with a fresh kernel, two at a time
    one-shot    `jobrunbook run --alert <demo alert.json>` as a new process on the real
                notebooks (imports, kernels, every source queried, report rendered)
    floor_warm  N trivial notebooks on N pre-started kernels (pool already warm), two at a time:
                kernels started the usual way, jupyter_client's client, no replacement starting
    warm        execute_run on a warm KernelPool (the service's way), report included

N = the number of section notebooks in --notebooks (default: notebooks/). The demo
(scenario mixed, seed 1, its Prometheus when installed) is started once and every
run queries it. A run is timed to report.html (the line that announces it): report.pdf
is printed after it, for the review, and the time the process exits is shown beside.
Targets: one-shot <= 1.3x floor_cold; warm <= 2x floor_warm and < 4 s. Per-section
times of the best real runs (status.json) show where the time goes.

--failed-tasks 10000,100000,1000000: instead, the whole runbook (one-shot) against the
demo incident with that many failed tasks (jobrunbook.demo.scale: the scenario's failed
tasks copied, same groups in the same shares), each against the aggregate floor of the
same Redis measured in the same run (the inspector bench's Lua batch read): wall time
per section, peak RSS of the kernels and of the run process, report.html's size, and
the longest Redis call (SLOWLOG). Targets at 1M: report within floor + 3 s, every
kernel < 300 MB, report.html < 2 MB, no call over 5 ms.
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

    # kernels started the usual way, no replacement starting during the measure, jupyter_client's own client
    with KernelPool(size=n, parallel_starts=2, fork=False, max_starts=n) as pool:
        kms = [pool.acquire() for _ in range(n)]
        for km in kms:
            km.client_class = "jupyter_client.asynchronous.AsyncKernelClient"
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
    print(f"{label}: {total:.2f}s to report.html, sections phase {status.get('duration_s') or 0:.2f}s, "
          f"state {status.get('state')}{' failed ' + ','.join(status['failed_sections']) if status.get('failed_sections') else ''}"
          + (f"; process exited at {status['_exited_s']:.2f}s (report.pdf printed)" if status.get("_exited_s") else ""))
    starts = [_ts(s["started_at"]) for s in secs.values() if s.get("started_at")]
    t0 = min(starts) if starts else 0.0
    for name, s in sorted(secs.items()):
        at = _ts(s["started_at"]) - t0 if s.get("started_at") else 0.0
        rss = f"{s['peak_rss_mb']:7.0f} MB" if s.get("peak_rss_mb") else ""
        print(f"  {name:<20}{s.get('state', ''):<9}starts {at:6.2f}s  takes {s.get('elapsed_s') or 0:6.2f}s{rss}")
    rest = total - (status.get("duration_s") or 0)
    print(f"  {'(outside sections)':<29}{rest:7.2f}s  process start/imports, first kernels, report, rca, index")


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- a large incident -------------------------------------------------------------------------------------
def aggregate_floor(client, queues: list[str]) -> float:
    """The inspector bench's floor: its Lua batch read (the aggregate's own script, bytes only, the next call in
    flight or not: the faster) over every failed set of the incident."""
    from bench_inspector import floor_lua_sets
    from jobrunbook.asynq import keys
    from jobrunbook.asynq.aggregate import DEFAULT_BATCH

    sets = [(keys.state_key(q, s), keys.task_key_prefix(q)) for q in queues for s in keys.FAILED_STATES]
    best = None
    for overlap in (False, True):
        t = time.perf_counter()
        floor_lua_sets(client, sets, overlap, DEFAULT_BATCH)
        elapsed = time.perf_counter() - t
        best = elapsed if best is None else min(best, elapsed)
    return best


SLOW_US = 1000  # SLOWLOG keeps every call of 1 ms or more during a run; the target is none over 5 ms


def longest_call(client) -> tuple[float, str]:
    """The longest Redis call SLOWLOG kept since its reset (the bench's own SLOWLOG/CONFIG calls aside)."""
    try:
        entries = client.slowlog_get(100_000)
    except Exception:  # noqa: BLE001 - an embedded Redis without SLOWLOG
        return float("nan"), "n/a"

    def name(e) -> str:
        cmd = e["command"]
        return (cmd.decode(errors="replace") if isinstance(cmd, bytes) else str(cmd)).split(" ")[0].upper()

    entries = [e for e in entries if name(e) not in ("SLOWLOG", "CONFIG")]
    if not entries:
        return 0.0, ""
    worst = max(entries, key=lambda e: e["duration"])
    return worst["duration"] / 1000.0, name(worst)


def scale(n: int, notebooks: Path, out: Path, repeat: int) -> dict:
    from jobrunbook.demo import start_demo
    from jobrunbook.demo.scenarios import QUEUES

    t = time.perf_counter()
    demo = start_demo("mixed", seed=1, state_dir=out / f"demo-{n}", live=False, failed_tasks=n)
    built = time.perf_counter() - t
    client = demo.client()
    runs = []
    try:
        for _ in range(repeat):
            floor = aggregate_floor(client, list(QUEUES))
            try:
                client.config_set("slowlog-log-slower-than", SLOW_US)
                client.config_set("slowlog-max-len", 100_000)
                client.slowlog_reset()
            except Exception:  # noqa: BLE001 - embedded Redis: no SLOWLOG, said in the table
                pass
            elapsed, status = one_shot(demo, notebooks, out / f"runs-{n}")
            longest, cmd = longest_call(client)
            report = out / f"runs-{n}" / status["run_id"] / "report.html"
            runs.append({"floor": floor, "report_s": elapsed, "status": status, "longest_ms": longest,
                         "longest_cmd": cmd, "report_bytes": report.stat().st_size,
                         "kernel_rss_mb": max((s.get("peak_rss_mb") or 0) for s in status["sections"].values()),
                         "run_rss_mb": status.get("process_peak_rss_mb") or 0})
    finally:
        demo.stop()
    return {"n": n, "failed_tasks": (demo.scale or {}).get("failed_tasks", n), "built_s": built, "runs": runs}


def print_scale(r: dict) -> None:
    best = min(r["runs"], key=lambda x: x["report_s"] - x["floor"])
    print(f"\n{r['failed_tasks']:,} failed tasks (incident built in {r['built_s']:.0f}s); best of {len(r['runs'])}: "
          f"report {best['report_s']:.2f}s, aggregate floor {best['floor']:.2f}s "
          f"(report - floor {best['report_s'] - best['floor']:+.2f}s, target <= +3 s)")
    print(f"  peak RSS: kernels {best['kernel_rss_mb']:.0f} MB (target < 300), run process {best['run_rss_mb']:.0f} MB; "
          f"report.html {best['report_bytes'] / 1e6:.2f} MB (target < 2); longest Redis call "
          f"{best['longest_ms']:.2f} ms {best['longest_cmd']} (target <= 5)")
    print_sections("  sections", best["report_s"], best["status"])


def scale_rows(r: dict) -> list[dict]:
    from _summary import row

    n, runs = r["failed_tasks"], r["runs"]
    label = f"{n // 1000}k" if n < 1_000_000 else f"{n / 1e6:g}M"
    return [
        row("run scale", f"{label}: report vs aggregate floor + 3 s", [x["report_s"] for x in runs], unit="s",
            floors=[x["floor"] + 3.0 for x in runs], limit=1.0,
            target="<= floor + 3 s" if n >= 1_000_000 else "(the target is at 1M)", informative=n < 1_000_000),
        row("run scale", f"{label}: peak RSS of any kernel", [x["kernel_rss_mb"] for x in runs], unit="MB",
            bound=300, target="< 300 MB"),
        row("run scale", f"{label}: report.html size", [x["report_bytes"] / 1e6 for x in runs], unit="MB",
            bound=2.0, target="< 2 MB"),
        row("run scale", f"{label}: longest Redis call", [x["longest_ms"] for x in runs], unit="ms", bound=5.0,
            target="<= 5 ms"),
    ]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--failed-tasks", default="", metavar="N[,N...]",
                   help="instead: the whole runbook against a demo incident with N failed tasks (e.g. 10000,100000,1000000)")
    p.add_argument("--summary-json", default="", help="write the rows for benchmarks/run.py's summary here")
    args, _ = p.parse_known_args(argv)
    logging.getLogger("papermill").setLevel(logging.ERROR)
    notebooks = args.notebooks.resolve()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _summary import load_avg, row, write

    t_all = time.perf_counter()
    if args.failed_tasks:
        counts = [int(x.replace("_", "")) for x in args.failed_tasks.split(",") if x]
        results = []
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            for n in counts:
                results.append(scale(n, notebooks, Path(tmp), args.repeat))
                print_scale(results[-1])
                sys.stdout.flush()
        rows = [x for r in results for x in scale_rows(r)]
        write(args.summary_json, "run scale", rows, load=load_avg(),
              scale=[{k: v for k, v in r.items() if k != "runs"} | {"runs": [{k: v for k, v in x.items() if k != "status"}
                                                                              for x in r["runs"]]} for r in results])
        print(f"bench wall time {time.perf_counter() - t_all:.0f}s; {load_avg()}")
        return 0

    n = len(list(notebooks.glob("[0-9][0-9]_*.ipynb")))
    from jobrunbook.demo import start_demo

    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        out = Path(tmp) / "outputs"
        floors = out / "floors"
        floors.mkdir(parents=True)
        demo = start_demo("mixed", seed=1, state_dir=out / "demo", live=False)
        try:
            # floor and run alternate, so that a load that comes and goes weighs on both alike
            cold, shots = [], []
            for _ in range(args.repeat):
                cold.append(floor_cold(n, floors))
                shots.append(one_shot(demo, notebooks, out))
            fw = [floor_warm(n, floors) for _ in range(args.repeat)]
            warms = warm(demo, notebooks, n, out, args.repeat)
        finally:
            demo.stop()
    os_, os_status = min(shots, key=lambda r: r[0])
    w, w_status = min(warms, key=lambda r: r[0])
    rows = [row("run", "one-shot (alert to report.html)", [t for t, _ in shots], unit="s", floors=cold, limit=1.3,
                target="<= 1.3x floor_cold"),
            row("run", "warm (as serve --warm)", [t for t, _ in warms], unit="s", floors=fw, limit=2.0,
                target="<= 2x floor_warm")]
    print(f"notebooks: {n} from {notebooks}; demo mixed seed 1, prometheus "
          f"{demo.prometheus_url or 'none (' + str(demo.prometheus_note) + ')'}; best and median of {args.repeat}; "
          f"{load_avg()}")
    print(f"{'measure':<12}{'best s':>9}{'median s':>10}{'ratio':>8}{'median':>8}  target")
    print(f"{'floor_cold':<12}{min(cold):9.2f}{statistics.median(cold):10.2f}")
    r = rows[0]
    print(f"{'one-shot':<12}{r['best']:9.2f}{r['median']:10.2f}{r['ratio_best']:8.2f}{r['ratio_median']:8.2f}  "
          f"<= 1.3x  {'ok' if r['ok'] else 'MISSED'}  (exit with report.pdf: best "
          f"{min(st['_exited_s'] for _, st in shots):.2f}s)")
    print(f"{'floor_warm':<12}{min(fw):9.2f}{statistics.median(fw):10.2f}")
    r = rows[1]
    print(f"{'warm':<12}{r['best']:9.2f}{r['median']:10.2f}{r['ratio_best']:8.2f}{r['ratio_median']:8.2f}  "
          f"<= 2x and < 4 s  {'ok' if r['ok'] and r['best'] < 4 else 'MISSED'}")
    print_sections("one-shot (best)", os_, os_status)
    print_sections("warm (best)", w, w_status)
    write(args.summary_json, "run", rows, load=load_avg())
    print(f"bench wall time {time.perf_counter() - t_all:.0f}s; {load_avg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
