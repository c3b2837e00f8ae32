"""Section 01: the worker's logs (runbook step 1)."""

from __future__ import annotations

from jobrunbook.sections._base import Context, Section, _finish, _unreachable, gap


def read_worker_logs(ctx: Context, *, since: str = "1h") -> Section:
    """Runbook step 1: errors, failures and panics in the worker's log, grouped like the task errors."""
    from jobrunbook.sources import collect_worker_logs

    if not ctx.log_source:
        return _finish(ctx, "01_logs", Section("01_logs", "No log source configured (JOBRUNBOOK_LOG_SOURCE).",
                                               gaps=[gap("no log source configured", "the worker's logs were not read",
                                                         "export JOBRUNBOOK_LOG_SOURCE=docker")]))
    r = collect_worker_logs(since=since, **ctx.settings.log_args())
    if not r.reachable:
        return _finish(ctx, "01_logs", _unreachable("01_logs", "worker log", r.message, r.hint))
    groups = r.data["groups"]
    cols = [c for c in ("task_type", "count", "example", "last_seen") if c in groups.columns]
    top = groups.head(1).to_dict("records")
    restarts = r.data["restarts"]
    reading = (f"{int(groups['count'].sum()) if not groups.empty else 0} failure line(s) and {r.data['panics']} panic(s) "
               f"in the last {since}" + (f"; most frequent: {top[0]['task_type']}: {top[0]['example'][:100]}" if top else "")
               + (f"; the worker restarted at {', '.join(x['time'][11:19] for x in restarts[-3:])} UTC"
                  + ("" if all(x["graceful"] for x in restarts) else " (not gracefully: a crash)") if restarts else "")
               + ".")
    return _finish(ctx, "01_logs", Section("01_logs", reading, table=groups[cols].head(15), findings={
        "groups": groups.drop(columns=[c for c in ("stack",) if c in groups.columns]).head(50),
        "panics": r.data["panics"], "lines": r.data["lines"], "truncated": r.data["truncated"],
        "restarts": r.data["restarts"]}))
