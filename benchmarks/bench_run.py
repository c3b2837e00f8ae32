#!/usr/bin/env python3
"""Alert to report.html: one-shot and warm runs against floors measured in the same run.

    floor_cold  N trivial notebooks, each by papermill with a fresh kernel, two at a time
    one-shot    `jobrunbook run --alert FILE` (a fresh process: imports, kernels, report)
    floor_warm  N trivial notebooks on N pre-started kernels (pool already warm)
    warm        execute_run on a warm KernelPool (the service's way), report included

N = the number of section notebooks in --notebooks (default: tests/notebooks/trivial;
the lead points it at notebooks/ with the demo's --redis-url). Targets: one-shot <=
1.3x floor_cold; warm <= 2x floor_warm and < 4 s.
"""

from __future__ import annotations

import argparse
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
SHARED = Path(os.environ.get("JOBRUNBOOK_SHARED", ROOT.parent / "shared"))
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


def one_shot(args: argparse.Namespace, out: Path) -> float:
    cmd = [sys.executable, "-m", "jobrunbook.cli", "run", "--alert", str(args.alert), "--notebooks",
           str(args.notebooks), "--outputs", str(out), "--timeout", "120"]
    if args.redis_url:
        cmd += ["--redis-url", args.redis_url]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if "report: " not in proc.stdout:
        raise SystemExit(f"one-shot run produced no report:\n{proc.stdout}\n{proc.stderr[-2000:]}")
    return elapsed


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


def warm(args: argparse.Namespace, n: int, out: Path, repeat: int) -> list[float]:
    import json

    from jobrunbook.kernels import KernelPool
    from jobrunbook.run import execute_run, params_from_webhook

    params = params_from_webhook(json.loads(Path(args.alert).read_text()),
                                 **({"redis_url": args.redis_url} if args.redis_url else {}))[0]
    times = []
    with KernelPool(size=n, parallel_starts=2) as pool:
        for _ in range(repeat):
            pool.wait_ready(n, timeout=120)  # the service's pool is full between alerts
            t = time.perf_counter()
            run = execute_run(params, notebooks_dir=args.notebooks, outputs_dir=out, pool=pool, timeout=120)
            times.append(time.perf_counter() - t)
            assert run.report and run.report.exists()
    return times


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notebooks", type=Path, default=ROOT / "tests" / "notebooks" / "trivial")
    p.add_argument("--alert", type=Path, default=SHARED / "fixtures" / "alertmanager" / "firing-warning.json")
    p.add_argument("--redis-url", default="")
    p.add_argument("--repeat", type=int, default=3)
    args, _ = p.parse_known_args(argv)
    logging.getLogger("papermill").setLevel(logging.ERROR)
    n = len(list(args.notebooks.glob("[0-9][0-9]_*.ipynb")))
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        out = Path(tmp)
        fc = min(floor_cold(n, out) for _ in range(args.repeat))
        os_ = min(one_shot(args, out / "oneshot") for _ in range(args.repeat))
        fw = min(floor_warm(n, out) for _ in range(args.repeat))
        wt = warm(args, n, out / "warm", args.repeat)
    w = min(wt)
    print(f"notebooks: {n} from {args.notebooks}")
    print(f"{'measure':<12}{'seconds':>9}{'ratio':>8}  target")
    print(f"{'floor_cold':<12}{fc:9.2f}")
    print(f"{'one-shot':<12}{os_:9.2f}{os_ / fc:8.2f}  <= 1.3x  {'ok' if os_ / fc <= 1.3 else 'MISSED'}")
    print(f"{'floor_warm':<12}{fw:9.2f}")
    print(f"{'warm':<12}{w:9.2f}{w / fw:8.2f}  <= 2x and < 4 s  "
          f"{'ok' if w / fw <= 2 and w < 4 else 'MISSED'}  (median {statistics.median(wt):.2f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
