"""Names the configuration reads and the sources use, in a module that imports no pandas or HTTP client:
the run process loads the configuration without them (the sections' kernels use the sources)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MetricNames", "LOG_KINDS", "RELATED_ALERTS"]

RELATED_ALERTS = ("JobQueueBacklog", "DBConnectionExhausted", "HighErrorRate")
LOG_KINDS = ("docker", "kubectl", "file", "command")


@dataclass(frozen=True)
class MetricNames:
    """Metric and label names, for apps that name things differently."""

    processed: str = "job_processed_total"
    duration: str = "job_duration_seconds"
    status_label: str = "status"
    failed_values: tuple[str, ...] = ("failed",)
    queue_label: str = "queue"
    type_label: str = "task_type"
    asynq_processed: str = "asynq_tasks_processed_total"
    asynq_failed: str = "asynq_tasks_failed_total"
    asynq_queue_size: str = "asynq_queue_size"
