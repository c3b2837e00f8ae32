"""`make bench`'s summary: every benchmark runs (at smoke size here) and has its rows in the one JSON summary."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

BENCHES = {"inspector", "run", "run scale", "service", "remediation"}
FIELDS = {"bench", "measure", "unit", "best", "median", "ratio_best", "ratio_median", "target", "ok", "repeats"}


def test_bench_summary_has_a_row_for_every_benchmark(tmp_path):
    out = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--repeat", "1",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    rows = summary["rows"]
    assert {r["bench"] for r in rows} == BENCHES and set(summary["benches"]) == BENCHES
    assert all(FIELDS <= set(r) and r["repeats"] == 1 and r["best"] is not None for r in rows), rows
    measures = {(r["bench"], r["measure"]) for r in rows}
    assert ("run", "one-shot (alert to report.html)") in measures and ("run", "warm (as serve --warm)") in measures
    assert {m for b, m in measures if b == "run scale"} == {
        "2k: report vs aggregate floor + 3 s", "2k: peak RSS of any kernel", "2k: report.html size",
        "2k: longest Redis call"}
    # the floor the run is held against was measured in the same run, and the ratio is against it
    one_shot = next(r for r in rows if r["measure"] == "one-shot (alert to report.html)")
    assert one_shot["floor"] > 0 and abs(one_shot["ratio_best"] - one_shot["best"] / one_shot["floor"]) < 0.01
    assert summary["started"]["load"].startswith("load ") and summary["repeat"] == 1
    # one table on the terminal: the header and a line per row
    table = proc.stdout[proc.stdout.index("SUMMARY"):]
    assert all(r["measure"][:40] in table for r in rows)
