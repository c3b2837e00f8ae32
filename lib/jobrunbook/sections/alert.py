"""Section 00: the alert and the assessment."""

from __future__ import annotations

from jobrunbook.sections._base import Context, Section, _finish, gap


def assess_alert(ctx: Context) -> Section:
    """Severity, thresholds, the failure rate now, how long the alert has been firing."""
    import pandas as pd

    from jobrunbook.diagnosis.causes import alert_for_severity
    from jobrunbook.diagnosis.escalation import escalation, format_delta
    from jobrunbook.diagnosis.evidence import parse_time

    start = parse_time(ctx.starts_at)
    ratio, ratio_source = None, "unknown"
    rows = []
    gaps: list[str] = []
    if ctx.metrics_url:
        from jobrunbook.sources import collect_worker_metrics

        r = collect_worker_metrics(ctx.metrics_url, names=ctx.settings.metric_names, timeout=ctx.timeout)
        if r.reachable:
            failure = r.data["failure"]
            cells = failure["by_queue_task_type"]
            mine = cells[(cells["queue"] == ctx.queue) & ((cells["task_type"] == ctx.task_type) if ctx.task_type else True)]
            if not mine.empty:
                ratio = float(mine["failed"].sum() / max(1, mine["processed"].sum()))
                ratio_source = f"worker /metrics since the worker started, {ctx.task_type or 'every type'} on {ctx.queue}"
        else:
            gaps.append(gap("worker metrics unreachable", r.message, r.hint))
    if ctx.prometheus_url:
        from jobrunbook.sources.prometheus import failure_ratio_by_task_type

        p = failure_ratio_by_task_type(ctx.prometheus_url, starts_at=ctx.starts_at or None,
                                       matchers={"queue": ctx.queue})
        if p.reachable and p.data is not None and not p.data["summary"].empty:
            summary = p.data["summary"]
            row = summary[summary["task_type"] == ctx.task_type] if ctx.task_type else summary
            if not row.empty:
                ratio = float(row["last"].iloc[0])
                ratio_source = f"Prometheus, 5 min rate, {ctx.task_type or 'every type'} on {ctx.queue}"
        elif not p.reachable:
            gaps.append(gap("Prometheus unreachable", p.message, p.hint))
    if not ctx.metrics_url and not ctx.prometheus_url:
        gaps.append(gap("no metrics source configured", "the failure rate now could not be read",
                        "export JOBRUNBOOK_PROMETHEUS_URL=http://prometheus:9090"))
    rule = alert_for_severity(ctx.severity)
    threshold = rule.threshold
    esc = escalation(ctx.severity, start, ctx.now)
    rows = [
        ("alert", ctx.alertname), ("severity", ctx.severity), ("queue", ctx.queue), ("task type", ctx.task_type or "(all)"),
        ("started", esc["started_at_utc"] or "unknown"),
        ("firing for", format_delta(ctx.now - start).removeprefix("in ") if start else "unknown"),
        ("threshold", f"> {threshold:.0%} ({rule.held_text})"),
        ("failure rate now", f"{ratio:.1%} ({ratio_source})" if ratio is not None else "unknown"),
        ("escalate by", f"{esc['deadline_utc']} ({esc['deadline_relative']})"),
    ]
    table = pd.DataFrame(rows, columns=["", "value"])
    if ratio is None:
        reading = f"{ctx.severity.capitalize()} alert on {ctx.queue}/{ctx.task_type or 'all'}: the current failure rate could not be read."
    else:
        state = "above" if ratio > threshold else "below"
        reading = (f"{ratio:.1%} of {ctx.task_type or 'jobs'} on {ctx.queue} fail now, {state} the "
                   f"{threshold:.0%} {ctx.severity} threshold; escalate {esc['deadline_relative']}.")
    return _finish(ctx, "00_alert", Section("00_alert", reading, table=table, gaps=gaps, kinds={"": "id"}, findings={
        "alert": ctx.alert, "failure_ratio": ratio, "failure_ratio_source": ratio_source,
        "threshold": threshold, "escalation": esc, "severity": ctx.severity,
        "sources": {k: ctx.settings.public()[k] for k in ("target", "redis_url", "metrics_url", "prometheus_url",
                                                          "alertmanager_url", "log_source", "log_path")}}))
