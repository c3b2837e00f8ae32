"""Section 03: job metrics, from the worker and Prometheus (runbook step 3)."""

from __future__ import annotations

from typing import Any

from jobrunbook.sections._base import Context, Section, _finish, gap


def job_metrics(ctx: Context) -> Section:
    """Runbook step 3: failure ratio by task type, durations against the timeout, the ratio over time."""
    from jobrunbook.chartspec import figure
    from jobrunbook.sources import collect_worker_metrics

    charts: dict[str, Any] = {}
    captions: dict[str, str] = {}
    findings: dict[str, Any] = {}
    readings = []
    gaps: list[str] = []
    table = None
    if ctx.metrics_url:
        r = collect_worker_metrics(ctx.metrics_url, names=ctx.settings.metric_names, task_timeout_s=ctx.task_timeout_s,
                                   timeout=ctx.timeout)
        if r.reachable:
            failure, durations = r.data["failure"], r.data["durations"]
            table = failure["by_queue_task_type"].sort_values("ratio", ascending=False)
            findings["failure"] = failure
            findings["durations"] = durations
            if not durations.empty:
                own = {} if ctx.task_timeout_s else _timeouts_in_asynq(ctx)
                charts["durations"] = figure(
                    "duration_chart", durations.rename(columns={"p50_s": "p50", "p95_s": "p95", "p99_s": "p99"}),
                    timeout_s=ctx.task_timeout_s, timeouts=own)
                captions["durations"] = (
                    "Bars near or over a type's dashed timeout line mean its jobs run into the timeout; "
                    + ("the timeout is the configured one." if ctx.task_timeout_s else
                       "each type's timeout is the one its tasks carry in asynq."))
            worst = table.head(1).to_dict("records")
            if worst:
                readings.append(f"Worst by the worker's own counters (since its process started): "
                                f"{worst[0]['task_type']} on {worst[0]['queue']} at {worst[0]['ratio']:.0%} failed "
                                f"(all types {failure['overall']['ratio']:.0%}).")
        else:
            readings.append(f"Worker metrics unreachable: {r.message}.")
            gaps.append(gap("worker metrics unreachable", r.message, r.hint))
            findings["error"] = r.message
    if ctx.prometheus_url:
        from jobrunbook.sources.prometheus import failure_ratio_by_task_type

        p = failure_ratio_by_task_type(ctx.prometheus_url, starts_at=ctx.starts_at or None)
        if p.reachable and p.data is not None:
            series = p.data["series"].rename(columns={"timestamp": "time", "value": "failure_ratio"})
            charts["failure_ratio"] = figure("failure_ratio_chart", series, alert_start=ctx.starts_at or None)
            captions["failure_ratio"] = ("Failed share per task type over time (Prometheus, 5 min rate): where it "
                                         "crosses the dashed thresholds, and whether it started with the alert.")
            findings["prometheus"] = {"summary": p.data["summary"], "query": p.data["query"],
                                      "series": series[["task_type", "time", "failure_ratio"]] if "task_type" in
                                      series.columns else series[["time", "failure_ratio"]]}
        else:
            readings.append(f"Prometheus: {p.message}.")
            gaps.append(gap("Prometheus", p.message, p.hint))
            findings["prometheus_error"] = p.message
    if not ctx.metrics_url and not ctx.prometheus_url:
        readings.append("No metrics source configured (JOBRUNBOOK_METRICS_URL, JOBRUNBOOK_PROMETHEUS_URL).")
        gaps.append(gap("no metrics source configured", "neither the worker's /metrics nor Prometheus",
                        "export JOBRUNBOOK_METRICS_URL=http://worker:8080/metrics"))
    return _finish(ctx, "03_metrics", Section("03_metrics", " ".join(readings) or "Metrics read.", gaps=gaps,
                                              table=table, charts=charts, captions=captions, findings=findings))


def _timeouts_in_asynq(ctx: Context) -> dict[str, int]:
    """Each failing type's timeout as its tasks carry it in asynq (none when Redis cannot be read)."""
    from jobrunbook._exceptions import JobrunbookError
    from jobrunbook.asynq.connection import connect
    from jobrunbook.asynq.inspector import Inspector
    from jobrunbook.sections.asynq import task_timeouts

    if not ctx.redis_url:
        return {}
    try:
        insp = Inspector(connect(ctx.redis_connect_url, timeout=ctx.timeout))
        return task_timeouts(insp, insp.queues())
    except JobrunbookError:
        return {}
