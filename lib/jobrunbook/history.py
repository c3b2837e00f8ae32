"""Runs of the same alert: what the index groups and what each report says of the alert's past.

A run's ``status.json`` carries the alert's fingerprint (Alertmanager's: the
same label set fires under the same one), its queue and task type, when it
started and the top cause it found. ``earlier_runs`` finds the runs of one
alert in an outputs folder; ``grouped_runs`` orders every run for the index
by queue/task type, then by alert.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["read_runs", "earlier_runs", "alert_history", "grouped_runs", "WINDOW"]

WINDOW = timedelta(days=7)


def _when(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def read_runs(outputs_dir: str | Path) -> list[dict[str, Any]]:
    """Every run directory's status.json in ``outputs_dir`` (a broken one is skipped), with its id."""
    runs = []
    for path in Path(outputs_dir).glob("*/status.json"):
        try:
            st = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(st, dict):
            runs.append({**st, "run_id": path.parent.name, "has_report": (path.parent / "report.html").exists()})
    return runs


def earlier_runs(status: Mapping[str, Any], runs: list[Mapping[str, Any]], *,
                 window: timedelta = WINDOW) -> list[Mapping[str, Any]]:
    """The runs of the same alert (fingerprint) that started within ``window`` before this one, newest first."""
    fp, started = status.get("fingerprint"), _when(status.get("started_at"))
    if not fp or started is None:
        return []
    out = []
    for r in runs:
        t = _when(r.get("started_at"))
        if r.get("run_id") == status.get("run_id") or r.get("fingerprint") != fp or t is None:
            continue
        if started - window <= t < started:
            out.append(r)
    return sorted(out, key=lambda r: str(r.get("started_at")), reverse=True)


def alert_history(status: Mapping[str, Any], outputs_dir: str | Path) -> dict[str, Any] | None:
    """What a report says of its alert's past: how often it fired in the window, and the last top cause."""
    earlier = earlier_runs(status, read_runs(outputs_dir))
    if not earlier:
        return None
    days = WINDOW.days

    def link(r: Mapping[str, Any]) -> str:
        return f"../{quote(str(r['run_id']))}/report.html"

    last = earlier[0]
    return {
        "count": len(earlier) + 1,
        "text": f"This alert fired {len(earlier) + 1} times in the last {days} days (runs of the same fingerprint).",
        "last": {"run_id": last["run_id"], "href": link(last),
                 "cause": last.get("top_cause_name") or "not recorded"},
        "runs": [{"run_id": r["run_id"], "href": link(r), "time": str(r.get("started_at", ""))[:16].replace("T", " ")}
                 for r in earlier[:10]],
    }


def grouped_runs(runs: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Runs for the index: by queue/task type, then by alert (fingerprint), newest first at every level."""
    by_target: dict[tuple[str, str], dict[str, list[Mapping[str, Any]]]] = {}
    for r in runs:
        target = (str(r.get("queue") or ""), str(r.get("task_type") or ""))
        by_target.setdefault(target, {}).setdefault(str(r.get("fingerprint") or r.get("run_id")), []).append(r)

    def newest(items: list[Mapping[str, Any]]) -> str:
        return max(str(r.get("started_at") or "") for r in items)

    groups = []
    for (queue, task_type), alerts in by_target.items():
        entries = []
        for fp, items in alerts.items():
            items = sorted(items, key=lambda r: (str(r.get("started_at") or ""), str(r["run_id"])), reverse=True)
            entries.append({"fingerprint": fp, "alertname": items[0].get("alertname", ""),
                            "severity": items[0].get("severity", ""), "runs": items, "newest": newest(items)})
        entries.sort(key=lambda e: e["newest"], reverse=True)
        groups.append({"queue": queue, "task_type": task_type or "(all)", "alerts": entries,
                       "newest": max(e["newest"] for e in entries)})
    groups.sort(key=lambda g: g["newest"], reverse=True)
    return groups
