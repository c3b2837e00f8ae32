"""A section's findings as versioned JSON: written from notebooks, read by the report.

    findings/NN_<section>.json = {
        "schema": "jobrunbook.findings/1", "section": "05_diagnosis",
        "status": "ok" | "degraded" | "failed", "created_at": "...Z", "data": {...}}

The keys the report reads from ``data`` (any section; later sections win):
``verdict``, ``severity``, ``failure_ratio``, ``task_types``, ``causes``
[{name, confidence, onset, evidence, actions [{title, command}]}], ``escalation``
{deadline_utc, remaining, started_from, next_step, who}, ``ratios`` {app, asynq, differ, reason}.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from jobrunbook import clock
from jobrunbook._exceptions import ConfigError, DataError

__all__ = [
    "SCHEMA",
    "RUN_DIR_ENV",
    "FINDING_STATUSES",
    "write_findings",
    "read_findings",
    "summarize_verdict",
    "to_jsonable",
]

SCHEMA = "jobrunbook.findings/1"
RUN_DIR_ENV = "JOBRUNBOOK_RUN_DIR"
FINDING_STATUSES = ("ok", "degraded", "failed")
_SECTION = re.compile(r"^\d\d_[A-Za-z0-9_]+$")
VERDICT_KEYS = ("verdict", "severity", "failure_ratio", "failure_ratio_source", "task_types", "causes", "escalation",
                "top_cause", "ratios")


def to_jsonable(value: Any) -> Any:
    """Plain JSON values from what notebooks hold: numpy scalars, DataFrames, datetimes, sets."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # pandas DataFrame
        return to_jsonable(value.to_dict(orient="records"))
    if hasattr(value, "to_dict"):  # pandas Series
        return to_jsonable(value.to_dict())
    if hasattr(value, "item"):  # numpy scalar
        return to_jsonable(value.item())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _resolve_run_dir(run_dir: str | os.PathLike | None) -> Path:
    chosen = run_dir or os.environ.get(RUN_DIR_ENV)
    if not chosen:
        raise ConfigError("no run directory for findings", hint=f"pass run_dir= or set ${RUN_DIR_ENV}")
    return Path(chosen)


def write_findings(section: str, data: Mapping[str, Any], run_dir: str | os.PathLike | None = None, *,
                   status: str = "ok", now: datetime | None = None) -> Path:
    """Write ``run_dir/findings/<section>.json`` and return its path.

    ``section`` is the notebook's stem, e.g. ``"05_diagnosis"``. ``run_dir``
    defaults to ``$JOBRUNBOOK_RUN_DIR``; a notebook run alone with neither
    writes under ``./outputs/adhoc``.
    """
    from jobrunbook.record import write_json

    if not _SECTION.match(section or ""):
        raise ConfigError(f"section must look like 05_diagnosis, got {str(section)[:40]!r}")
    if status not in FINDING_STATUSES:
        raise ConfigError(f"finding status must be one of {FINDING_STATUSES}, got {status!r}")
    try:
        base = _resolve_run_dir(run_dir)
    except ConfigError:
        base = Path("outputs") / "adhoc"
    doc = {
        "schema": SCHEMA,
        "section": section,
        "status": status,
        "created_at": to_jsonable(now or clock.utcnow()),
        "data": to_jsonable(dict(data)),
    }
    path = base / "findings" / f"{section}.json"
    write_json(path, doc)
    return path


def read_findings(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{"00_alert": {schema, section, status, created_at, data}, ...}`` in section order.

    A file that is not valid findings becomes a ``failed`` entry saying so,
    so that one bad file never hides the others.
    """
    folder = Path(run_dir) / "findings"
    out: dict[str, dict[str, Any]] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        section = path.stem
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("jobrunbook.findings/"):
                raise DataError("not a jobrunbook findings file")
            doc.setdefault("data", {})
            if not isinstance(doc["data"], dict):
                doc["data"] = {"value": doc["data"]}
        except (ValueError, DataError) as exc:
            doc = {"schema": SCHEMA, "section": section, "status": "failed", "created_at": None,
                   "data": {"error": f"unreadable findings file {path.name}: {exc}"}}
        out[section] = doc
    return out


def summarize_verdict(findings: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The verdict keys merged over sections, a later section winning; missing keys are absent."""
    merged: dict[str, Any] = {}
    for section in sorted(findings):
        data = findings[section].get("data") or {}
        for key in VERDICT_KEYS:
            if data.get(key) not in (None, "", [], {}):
                merged[key] = data[key]
    return merged
