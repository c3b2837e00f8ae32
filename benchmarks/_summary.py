"""What every benchmark reports to ``benchmarks/run.py``: rows of a measure against its target, as JSON.

A row is one measure: its best and median over the repeats (every measure is a
time, a size or a latency: the best is the least), the floor measured in the
same run (or the absolute bound) it is compared with, the ratio (best against
the best floor; median of the repeats' own ratios), the target and whether it
is met. Each bench writes ``{"bench", "rows", "notes"}`` to the file named by
``--json-out``; run.py gathers them into one table.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any


def row(bench: str, measure: str, values: list[float], *, unit: str, target: str, limit: float = 1.0,
        floors: list[float] | None = None, bound: float | None = None, higher_is_better: bool = False,
        note: str = "", informative: bool = False) -> dict[str, Any]:
    """One measure over its repeats. Compared with ``floors`` (the same repeats' floors, measured in the same
    run: ratio = value / floor, or floor / value when ``higher_is_better``) or with an absolute ``bound``
    (ratio = value / bound). ``limit``: the ratio the target allows (1.3 for "<= 1.3x floor", 0.7 for
    ">= 0.7 of the floor's speed"; 1.0 for a bound). ``informative``: measured against the target's
    yardstick, but the target is set for another size (``ok`` is None: neither met nor missed)."""
    ref = floors if floors else [bound or 1.0] * len(values)

    def ratio(v: float, f: float) -> float:
        if higher_is_better:
            return f / v if v else 0.0
        return v / f if f else float("inf")

    ratios = [ratio(v, f) for v, f in zip(values, ref, strict=True)]
    best_value = min(values)  # every measure here is a time, a size or a latency: less is better
    ratio_best = ratio(best_value, min(ref))
    ok = ratio_best >= limit if higher_is_better else ratio_best <= limit
    return {"bench": bench, "measure": measure, "unit": unit, "best": best_value,
            "median": statistics.median(values), "floor": min(floors) if floors else None, "bound": bound,
            "ratio_best": round(ratio_best, 3), "ratio_median": round(statistics.median(ratios), 3),
            "target": target, "limit": limit, "higher_is_better": higher_is_better,
            "ok": None if informative else bool(ok),
            "repeats": len(values), "values": values, "floors": floors or [], "note": note}


def write(path: str | os.PathLike | None, bench: str, rows: list[dict[str, Any]], **notes: Any) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"bench": bench, "rows": rows, "notes": notes}, indent=2, default=str) + "\n")


def load_avg() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} (1/5 min) on {os.cpu_count()} cores"
