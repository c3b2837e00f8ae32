"""The service's Prometheus metrics, on a registry of its own (one per app, so tests can make many).

The webhook's counters live in the process that answers the webhook; what the runs did is read from the
store at scrape time (``StoreCollector``): the runs execute in another process (or another replica), and
the store is what they all share.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

__all__ = ["ServiceMetrics", "StoreCollector", "RUN_BUCKETS", "NOTIFICATIONS"]

RUN_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
NOTIFICATIONS = "notifications"  # the store counter the notifier bumps: labels "target,outcome"
log = logging.getLogger("jobrunbook.service")


class StoreCollector:
    """Queue depth, runs by outcome, run durations, capped and linked alerts, closes and notifications: from
    the store's records, whichever process or replica wrote them."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def describe(self):  # no samples at registration (it would read the store)
        return []

    def collect(self):
        try:
            st = self.store.stats(RUN_BUCKETS)
        except Exception as exc:  # noqa: BLE001 - a scrape without these is better than a 500
            log.warning("metrics: the store cannot be read: %s", exc)
            return
        states = st["states"]
        yield GaugeMetricFamily("jobrunbook_queue_depth", "Accepted alerts waiting for a run slot.",
                                value=states.get("queued", 0))
        yield GaugeMetricFamily("jobrunbook_runs_running", "Runs executing now (every worker).",
                                value=states.get("running", 0))
        capped = GaugeMetricFamily("jobrunbook_alerts_capped", "Alerts recorded and not run: over the per-group "
                                   "cap (reason group) or the queue was full (reason queue).", labels=["reason"])
        for reason in ("group", "queue"):
            capped.add_metric([reason], st["capped"].get(reason, 0))
        yield capped
        yield GaugeMetricFamily("jobrunbook_alerts_linked", "Warnings not run: covered by their critical's run.",
                                value=states.get("linked", 0))
        runs = CounterMetricFamily("jobrunbook_runs", "Runs finished, by outcome (done, failed, error).",
                                   labels=["outcome"])
        for outcome in ("done", "failed", "error"):
            runs.add_metric([outcome], st["outcomes"].get(outcome, 0))
        yield runs
        d = st["duration"]
        cumulative = [(str(float(b)), n) for b, n in d["buckets"]] + [("+Inf", d["count"])]
        yield HistogramMetricFamily("jobrunbook_run_duration_seconds", "Wall time of one run.",
                                    buckets=cumulative, sum_value=d["sum"])
        yield CounterMetricFamily("jobrunbook_runs_resolved", "Runs closed by a resolved notification.",
                                  value=st["closed"])
        notes = CounterMetricFamily("jobrunbook_notifications", "Notifications sent, by target and outcome.",
                                    labels=["target", "outcome"])
        for row in st["counters"]:
            if row["name"] == NOTIFICATIONS:
                target, _, outcome = str(row["labels"]).partition(",")
                notes.add_metric([target, outcome], int(row["value"]))
        yield notes


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
                               "Alerts accepted but not run: alertname not served, over the per-group cap "
                               "(group_cap), the queue full (queue_full), covered by a critical's run (linked).",
                               ["reason"], registry=r)
        self.truncated = Counter("jobrunbook_webhook_alerts_truncated",
                                 "Alerts Alertmanager left out of a POST (truncatedAlerts, max_alerts).", registry=r)
        self._store = None

    def watch_store(self, store: Any) -> None:
        """The run metrics, read from ``store`` at scrape time (once per registry)."""
        if self._store is None:
            self._store = StoreCollector(store)
            self.registry.register(self._store)
