"""The service's own Prometheus metrics, on a registry of its own (one per app, so tests can make many)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ServiceMetrics", "RUN_BUCKETS"]

RUN_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200)


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry(auto_describe=True)
        self.requests = Counter("jobrunbook_webhook_requests", "Webhook POSTs by HTTP answer code.", ["code"],
                                registry=r)
        self.alerts = Counter("jobrunbook_webhook_alerts_received", "Alerts received, by the alert's own status.",
                              ["status"], registry=r)
        self.deduplicated = Counter("jobrunbook_webhook_alerts_deduplicated",
                                    "Firing alerts already accepted (same fingerprint and startsAt).", registry=r)
        self.ignored = Counter("jobrunbook_webhook_alerts_ignored",
                               "Alerts accepted but not run: alertname not served, or over the per-group cap.",
                               ["reason"], registry=r)
        self.truncated = Counter("jobrunbook_webhook_alerts_truncated",
                                 "Alerts Alertmanager left out of a POST (truncatedAlerts, max_alerts).", registry=r)
        self.runs = Counter("jobrunbook_runs", "Runs finished, by outcome (done, failed, error).", ["outcome"],
                            registry=r)
        self.resolved = Counter("jobrunbook_runs_resolved", "Runs closed by a resolved notification.", registry=r)
        self.duration = Histogram("jobrunbook_run_duration_seconds", "Wall time of one run.", buckets=RUN_BUCKETS,
                                  registry=r)
        self.running = Gauge("jobrunbook_runs_running", "Runs executing now.", registry=r)
        self.notifications = Counter("jobrunbook_notifications", "Notifications sent, by target and outcome.",
                                     ["target", "outcome"], registry=r)

    def watch_queue(self, depth: Callable[[], float]) -> None:
        """``jobrunbook_queue_depth``: alerts accepted and not yet started, read from the store at scrape time."""
        g = Gauge("jobrunbook_queue_depth", "Accepted alerts waiting for a run slot.", registry=self.registry)
        g.set_function(depth)
