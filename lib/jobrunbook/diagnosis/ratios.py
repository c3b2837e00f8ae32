"""The failure ratio twice: the app's metric and asynq's own counters, with why they differ.

The app counts what its handlers return (``job_processed_total``); asynq
counts every failure it records (``asynq:{q}:processed:<date>`` and
``failed:<date>``, and their all-time totals). A task whose worker died
mid-run (lease expired) never returns to the app's code, so only asynq counts
it; a task with no handler never reaches one; a panic may bypass the app's
counting, depending on where it counts. A worker crash then looks minor in
the app's ratio and not in asynq's.
"""

from __future__ import annotations

from typing import Any

from jobrunbook.diagnosis.evidence import Evidence

__all__ = ["failure_ratios", "ASYNQ_ONLY"]

# causes whose failures asynq counts and the app's metric may not: cause -> why
ASYNQ_ONLY = {
    "lease_expired": "lease expiration(s): the worker died mid-task, so no handler returned to count them",
    "handler_not_found": "task(s) with no handler: asynq fails them before any of the app's code runs",
    "panic": "panic(s) asynq recovered: counted by the app only if it counts in a deferred call or middleware",
}
# the two ratios differ when apart by more than this (absolute) and by a fifth of the larger
_APART = 0.02


def _asynq(ev: Evidence, today: str | None) -> dict[str, Any] | None:
    """asynq's failed share: today's counters where today has work, else the all-time totals."""
    rows = []
    for q, days in sorted(ev.daily.items()):
        day = next((d for d in days if d["date"] == today), None) if today else (days[0] if days else None)
        if day and day["processed"]:
            rows.append((q, day["processed"], day["failed"]))
    window = f"asynq's counters for {today or 'today'} (UTC)"
    if not rows:
        rows = [(q, t["processed"], t["failed"]) for q, t in sorted(ev.totals.items()) if t["processed"]]
        window = "asynq's all-time counters"
    if not rows:
        return None
    processed, failed = sum(r[1] for r in rows), sum(r[2] for r in rows)
    return {"ratio": failed / processed, "processed": processed, "failed": failed, "source": window,
            "by_queue": {q: {"processed": p, "failed": f, "ratio": f / p} for q, p, f in rows}}


def failure_ratios(ev: Evidence, failures_by_cause: dict[str, int], *, today: str | None = None) -> dict[str, Any]:
    """{"app": {ratio, source, processed?, failed?} | None, "asynq": {...} | None, "differ": bool, "reason": str}."""
    app = None
    if ev.failure_ratio is not None:
        app = {"ratio": ev.failure_ratio, "source": ev.failure_ratio_source or "the app's metric"}
        if ev.app_counts and "/metrics" in app["source"]:
            app.update(processed=ev.app_counts["processed"], failed=ev.app_counts["failed"])
    asynq = _asynq(ev, today)
    out: dict[str, Any] = {"app": app, "asynq": asynq, "differ": False, "reason": ""}
    if not app or not asynq:
        return out
    a, b = app["ratio"], asynq["ratio"]
    if abs(a - b) <= max(_APART, 0.2 * max(a, b)):
        return out
    out["differ"] = True
    reasons = []
    only = {k: n for k in ASYNQ_ONLY if (n := failures_by_cause.get(k))}
    # counts to compare only when the app's ratio is its lifetime one (the worker's /metrics), not a 5 min rate
    counts = ev.app_counts if ev.app_counts and "/metrics" in app["source"] else None
    if counts:
        seen_by_app = asynq["processed"] - sum(only.values())
        apart = abs(seen_by_app - counts["processed"]) > 0.25 * max(seen_by_app, counts["processed"])
        windows = (f"they count different windows: the app {counts['processed']:,.0f} jobs processed, asynq "
                   f"{asynq['processed']:,} " + ("(all time)" if "all-time" in asynq["source"] else
                                                 "(its day holds the hours before the incident)")) if apart else ""
    else:
        windows = "they count different windows"
    if only and b > a:
        extra = ""
        if counts and not windows and asynq["failed"] > counts["failed"]:
            extra = f" ({asynq['failed'] - counts['failed']:,.0f} more failures than the app counts)"
        reasons.append("asynq counts failures the app's metric does not" + extra + ": "
                       + "; ".join(f"{n:,} {ASYNQ_ONLY[k]}" for k, n in only.items()))
    reasons.append(windows or ("" if reasons else "the app's metric counts failures asynq does not record"))
    out["reason"] = "; ".join(r for r in reasons if r) + f" (app: {app['source']}; asynq: {asynq['source']})"
    return out
