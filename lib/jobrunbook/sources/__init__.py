"""Evidence beyond asynq's Redis: worker metrics and Prometheus, worker logs,
dependency probes, related alerts.

Every call returns a ``SourceResult`` (source, status ok|degraded|down|error|
timeout, message, hint, elapsed_s, data, to_dict()); a source that is down or
slow is a result, never an exception that ends a run.
"""

from jobrunbook._lazy import lazy_exports

# Imported on first use (PEP 562): a notebook cell that needs one source does
# not pay for importing every other source's dependencies.
_EXPORTS = {
    "ALERT_COLUMNS": "jobrunbook.sources.alerts",
    "RELATED_ALERTS": "jobrunbook.sources.alerts",
    "related_alerts": "jobrunbook.sources.alerts",
    "EVENT_COLUMNS": "jobrunbook.sources.logparse",
    "GROUP_COLUMNS": "jobrunbook.sources.logparse",
    "collect_worker_logs": "jobrunbook.sources.logs",
    "fetch_logs": "jobrunbook.sources.logs",
    "group_errors": "jobrunbook.sources.logparse",
    "parse_log_lines": "jobrunbook.sources.logparse",
    "MetricNames": "jobrunbook.sources.metrics",
    "collect_worker_metrics": "jobrunbook.sources.metrics",
    "duration_quantiles": "jobrunbook.sources.metrics",
    "failure_ratios": "jobrunbook.sources.metrics",
    "histogram_quantile": "jobrunbook.sources.metrics",
    "measure_rates": "jobrunbook.sources.metrics",
    "parse_metrics": "jobrunbook.sources.metrics",
    "scrape_metrics": "jobrunbook.sources.metrics",
    "PROBE_COLUMNS": "jobrunbook.sources.probes",
    "probe_dependencies": "jobrunbook.sources.probes",
    "probe_http": "jobrunbook.sources.probes",
    "probe_postgres": "jobrunbook.sources.probes",
    "probe_redis": "jobrunbook.sources.probes",
    "run_probes": "jobrunbook.sources.probes",
    "DEFAULT_RULES_FILE": "jobrunbook.sources.prometheus",
    "evaluate_alert_expression": "jobrunbook.sources.prometheus",
    "failure_ratio_by_task_type": "jobrunbook.sources.prometheus",
    "failure_ratio_query": "jobrunbook.sources.prometheus",
    "instant_query": "jobrunbook.sources.prometheus",
    "load_alert_rules": "jobrunbook.sources.prometheus",
    "range_query": "jobrunbook.sources.prometheus",
    "STATUSES": "jobrunbook.sources.result",
    "SourceResult": "jobrunbook.sources.result",
}

__all__ = [
    "ALERT_COLUMNS",
    "DEFAULT_RULES_FILE",
    "EVENT_COLUMNS",
    "GROUP_COLUMNS",
    "PROBE_COLUMNS",
    "RELATED_ALERTS",
    "STATUSES",
    "MetricNames",
    "SourceResult",
    "collect_worker_logs",
    "collect_worker_metrics",
    "duration_quantiles",
    "evaluate_alert_expression",
    "failure_ratio_by_task_type",
    "failure_ratio_query",
    "failure_ratios",
    "fetch_logs",
    "group_errors",
    "histogram_quantile",
    "instant_query",
    "load_alert_rules",
    "measure_rates",
    "parse_log_lines",
    "parse_metrics",
    "probe_dependencies",
    "probe_http",
    "probe_postgres",
    "probe_redis",
    "range_query",
    "related_alerts",
    "run_probes",
    "scrape_metrics",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
