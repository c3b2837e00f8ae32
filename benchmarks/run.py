#!/usr/bin/env python3
"""Run every benchmarks/bench_*.py in turn (``make bench``); extra arguments go to each.

Each bench prints its own table and compares itself with a floor measured in
the same run. Exit status: the number of benches that failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    only = [a for a in argv if not a.startswith("-") and a.startswith("bench_")]
    rest = [a for a in argv if a not in only]
    failed = 0
    for bench in sorted(HERE.glob("bench_*.py")):
        if only and bench.stem not in only and bench.name not in only:
            continue
        print(f"== {bench.name}", flush=True)
        rc = subprocess.call([sys.executable, str(bench), *rest])
        if rc:
            print(f"!! {bench.name} exited with {rc}", flush=True)
            failed += 1
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
