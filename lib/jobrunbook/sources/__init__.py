"""Evidence beyond asynq's Redis: worker metrics and Prometheus, worker logs,
dependency probes, related alerts.

Every call returns a ``SourceResult`` (source, status ok|degraded|down|error|
timeout, message, hint, elapsed_s, data, to_dict()); a source that is down or
slow is a result, never an exception that ends a run.
"""

from jobrunbook.sources.alerts import ALERT_COLUMNS, RELATED_ALERTS, related_alerts
from jobrunbook.sources.logs import (
    EVENT_COLUMNS,
    GROUP_COLUMNS,
    collect_worker_logs,
    fetch_logs,
    group_errors,
    parse_log_lines,
)
from jobrunbook.sources.metrics import (
    MetricNames,
    collect_worker_metrics,
    duration_quantiles,
    failure_ratios,
    histogram_quantile,
    measure_rates,
    parse_metrics,
    scrape_metrics,
)
from jobrunbook.sources.probes import (
    PROBE_COLUMNS,
    probe_dependencies,
    probe_http,
    probe_postgres,
    probe_redis,
    run_probes,
)
from jobrunbook.sources.prometheus import (
    DEFAULT_RULES_FILE,
    evaluate_alert_expression,
    failure_ratio_by_task_type,
    failure_ratio_query,
    instant_query,
    load_alert_rules,
    range_query,
)
from jobrunbook.sources.result import STATUSES, SourceResult

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
