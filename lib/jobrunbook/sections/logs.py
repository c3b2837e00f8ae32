"""Section 01: the worker's logs (runbook step 1)."""

from __future__ import annotations

from jobrunbook.sections._base import Context, Section, _finish, _unreachable, gap


def read_worker_logs(ctx: Context, *, since: str | None = None) -> Section:
    """Runbook step 1: errors, failures and panics in the worker's log, grouped like the task errors.

    The log is read from ``since``; by default from an hour before the alert started (``log_window``),
    not the last hour of the wall clock, so a run made later keeps the incident's lines.
    """
    from jobrunbook.sources import collect_worker_logs
    from jobrunbook.sources.logs import describe_window, log_window

    if since is None:
        since = log_window(ctx.starts_at)

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
    revoked = r.data.get("revoked", 0)
    reading = (f"{int(groups['count'].sum()) if not groups.empty else 0} failure line(s) and {r.data['panics']} panic(s) "
               f"{describe_window(since)}" + (f"; most frequent: {top[0]['task_type']}: {top[0]['example'][:100]}" if top else "")
               + (f"; {revoked} task(s) revoked (asynq.RevokeTask, v0.25+: done and counted processed, not failures)"
                  if revoked else "")
               + (f"; stack traces name asynq {', '.join(r.data['asynq_versions'])}" if r.data.get("asynq_versions")
                  else "")
               + (f"; the worker restarted at {', '.join(x['time'][11:19] for x in restarts[-3:])} UTC"
                  + ("" if all(x["graceful"] for x in restarts) else " (not gracefully: a crash)") if restarts else "")
               + ".")
    return _finish(ctx, "01_logs", Section("01_logs", reading, table=groups[cols].head(15), findings={
        "groups": groups.drop(columns=[c for c in ("stack",) if c in groups.columns]).head(50),
        "panics": r.data["panics"], "lines": r.data["lines"], "truncated": r.data["truncated"],
        "restarts": r.data["restarts"], "from": r.data.get("from"), "started": r.data.get("started"),
        "revoked": revoked, "asynq_versions": r.data.get("asynq_versions", []),
        "since": since}))
