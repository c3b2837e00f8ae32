#!/usr/bin/env python3
"""``make bench``: every benchmark, then ONE table of each measure's ratio against its target, also as JSON.

    benchmarks/run.py [--repeat 3] [--out FILE.json] [--only run,service] [--smoke]
    benchmarks/run.py --compare OLD.json NEW.json       # two summaries, measure by measure

Each bench measures its own floor in the same run, repeats (``--repeat``, 3 by
default) and writes its rows (best and median, the ratio, the target, met or
not: ``benchmarks/_summary.py``); this script runs them one after another
(inspector, run, run scale, service, remediation), prints each one's own
output, then the summary, and writes the summary to ``--out`` (default
``outputs/bench/summary-<UTC time>.json``) with the machine's load before and
after, so that two runs can be compared. A bench that could not run still has
its row, saying so. Exit status: the number of benches that did not run.
``--smoke``: tiny sizes and one repeat, to check the plumbing (a test does).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _summary import load_avg  # noqa: E402

# name -> (script, its arguments, the same at smoke size)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "inspector": ("bench_inspector.py", ["--tasks", "100000,1000000"], ["--tasks", "2000"]),
    "run": ("bench_run.py", [], []),
    "run scale": ("bench_run.py", ["--failed-tasks", "10000,100000,1000000"], ["--failed-tasks", "2000"]),
    "service": ("bench_service.py", ["--posts", "1000"], ["--posts", "60"]),
    "remediation": ("bench_remediate.py", ["--tasks", "100000"], ["--tasks", "2000"]),
}


def run_benches(names: list[str], *, repeat: int, smoke: bool, extra: list[str], workdir: Path) -> dict:
    started = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "load": load_avg()}
    rows, benches = [], {}
    for name in names:
        script, args, small = BENCHES[name]
        rows_file = workdir / f"{name.replace(' ', '-')}.json"
        cmd = [sys.executable, str(HERE / script), *(small if smoke else args), "--repeat", str(repeat),
               "--summary-json", str(rows_file), *extra]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        rc = subprocess.call(cmd, cwd=ROOT)
        took = time.perf_counter() - t
        if rows_file.exists():
            got = json.loads(rows_file.read_text())
            rows += got["rows"]
            benches[name] = {"exit": rc, "seconds": round(took), "notes": got.get("notes", {})}
        else:
            print(f"!! {name} wrote no results (exit {rc})", flush=True)
            rows.append({"bench": name, "measure": "(did not run)", "unit": "", "best": None, "median": None,
                         "floor": None, "bound": None, "ratio_best": None, "ratio_median": None,
                         "target": f"exit {rc}", "ok": False, "repeats": 0})
            benches[name] = {"exit": rc, "seconds": round(took), "ran": False}
    return {"started": started, "ended": {"at": datetime.now(UTC).isoformat(timespec="seconds"), "load": load_avg()},
            "repeat": repeat, "smoke": smoke, "cpus": os.cpu_count(), "benches": benches, "rows": rows}


def _num(x, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def print_summary(summary: dict) -> None:
    print(f"\nSUMMARY (best and median of {summary['repeat']} repeats; {summary['cpus']} cores; "
          f"{summary['started']['load']} at start, {summary['ended']['load']} at the end)")
    head = (f"{'bench':<12}{'measure':<52}{'best':>9}{'median':>9}  {'unit':<5}{'vs':>9}{'ratio':>8}{'median':>8}  "
            f"{'target':<34}ok")
    print(head)
    print("-" * len(head))
    for r in summary["rows"]:
        ref = r.get("floor") if r.get("floor") is not None else r.get("bound")
        print(f"{r['bench']:<12}{r['measure'][:51]:<52}{_num(r['best']):>9}{_num(r['median']):>9}  "
              f"{r.get('unit', ''):<5}{_num(ref):>9}{_num(r['ratio_best']):>8}{_num(r['ratio_median']):>8}  "
              f"{str(r['target'])[:33]:<34}{_ok(r['ok'])}")
    held = [r for r in summary["rows"] if r["ok"] is not None]
    missed = [r for r in held if not r["ok"]]
    print(f"{len(held) - len(missed)} of {len(held)} targets met"
          + (f"; missed: {', '.join(r['bench'] + ' / ' + r['measure'] for r in missed)}" if missed else ""))


def _ok(ok: bool | None) -> str:
    return "-" if ok is None else "yes" if ok else "NO"


def compare(old_path: Path, new_path: Path) -> None:
    old, new = json.loads(old_path.read_text()), json.loads(new_path.read_text())
    before = {(r["bench"], r["measure"]): r for r in old["rows"]}
    print(f"{'bench':<12}{'measure':<52}{'old ratio':>10}{'new ratio':>10}{'old best':>10}{'new best':>10}  ok")
    for r in new["rows"]:
        o = before.get((r["bench"], r["measure"]), {})
        print(f"{r['bench']:<12}{r['measure'][:51]:<52}{_num(o.get('ratio_best')):>10}{_num(r['ratio_best']):>10}"
              f"{_num(o.get('best')):>10}{_num(r['best']):>10}  {_ok(r['ok'])}")
    print(f"old: {old['started']['at']} ({old['started']['load']}); new: {new['started']['at']} "
          f"({new['started']['load']})")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(BENCHES)}")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and the given repeats: the plumbing only")
    p.add_argument("--out", type=Path, default=None, help="the summary as JSON (default outputs/bench/summary-*.json)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"), help="compare two summaries and stop")
    args, extra = p.parse_known_args(argv)
    if args.compare:
        compare(*args.compare)
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        p.error(f"unknown bench {', '.join(unknown)}; one of {', '.join(BENCHES)}")
    with tempfile.TemporaryDirectory(prefix="bench-summary-") as tmp:
        summary = run_benches(names, repeat=args.repeat, smoke=args.smoke, extra=extra, workdir=Path(tmp))
    print_summary(summary)
    out = args.out or ROOT / "outputs" / "bench" / f"summary-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"summary: {out}")
    return sum(1 for b in summary["benches"].values() if b.get("ran") is False)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
