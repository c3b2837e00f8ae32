"""What the diagnosis reads: the evidence of one incident, source by source.

Every source is optional: a section that could not reach its source leaves
its field empty and names the gap in ``unavailable``, which the verdict
reports instead of guessing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ErrorGroup", "Probe", "DurationStat", "Evidence", "parse_time"]


def parse_time(value: Any) -> float | None:
    """Unix seconds from a number, an RFC 3339 string or a datetime; None if absent."""
    if value in (None, "", 0):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
    text = str(value).strip()
    if text.startswith("0001-01-01"):  # Go's zero time: Alertmanager's endsAt when unset
        return None
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Go writes nanoseconds; Python's fromisoformat takes at most microseconds
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


@dataclass(slots=True)
class ErrorGroup:
    """Failures sharing one (queue, task type, error fingerprint)."""

    queue: str
    task_type: str
    fingerprint: str
    example_error: str
    count: int
    retry: int = 0
    archived: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    example_ids: list[str] = field(default_factory=list)
    source: str = "redis"  # redis | logs | metrics
    distinct_errors: int = 1  # distinct error texts the fingerprint folds (asynq.aggregate.DISTINCT_CAP + 1: more)


@dataclass(slots=True)
class Probe:
    """One dependency probe: kind is postgres | redis | http; status ok | degraded | down."""

    name: str
    kind: str
    status: str
    message: str = ""
    target: str = ""


@dataclass(slots=True)
class DurationStat:
    """Handler durations of one task type against its timeout."""

    queue: str
    task_type: str
    p95_s: float | None = None
    timeout_s: float | None = None
    at_timeout_share: float | None = None  # share of jobs at or beyond the timeout


@dataclass
class Evidence:
    """All the evidence of one incident; every part may be empty."""

    alert: dict[str, Any] = field(default_factory=dict)  # labels + startsAt + status
    groups: list[ErrorGroup] = field(default_factory=list)  # from asynq's Redis
    log_groups: list[ErrorGroup] = field(default_factory=list)  # from worker logs
    probes: list[Probe] = field(default_factory=list)
    durations: list[DurationStat] = field(default_factory=list)
    related_alerts: list[str] = field(default_factory=list)  # alertnames firing now
    failure_ratio: float | None = None  # current, from the app's metric (the alert's series, else /metrics)
    failure_ratio_source: str = ""  # where failure_ratio comes from, and its window
    app_counts: dict[str, float] | None = None  # the app's metric since the worker started: processed, failed
    # asynq's own counters per queue: the days (newest first: date, processed, failed) and the all-time totals
    daily: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    # tasks per queue and failed state as asynq counts them (what a whole-state asynq CLI command touches)
    state_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    servers_alive: int | None = None  # asynq servers heartbeating now
    deploy_time: float | None = None  # when the worker was last deployed (a graceful restart), if known
    crashes: list[float] = field(default_factory=list)  # worker starts with no clean exit before them
    restarts: list[tuple[float, bool]] = field(default_factory=list)  # every restart in the log: (time, graceful)
    worker_started: float | None = None  # the worker's first start in the log read ("Starting processing")
    log_from: float | None = None  # the time of the first line of the log read
    unavailable: dict[str, str] = field(default_factory=dict)  # source -> why
    asynq_version: str | None = None  # the release the asynq reading assumed (section 02), None if unknown
    asynq_version_reason: str = ""  # why: VersionReading.sentence()
    revoked: int = 0  # tasks the worker's log shows revoked (asynq.RevokeTask, v0.25+): done, not failures
    settings: dict[str, Any] = field(default_factory=dict)  # container, deployment, namespace

    @property
    def started_at(self) -> float | None:
        return parse_time(self.alert.get("startsAt"))

    @property
    def total_failures(self) -> int:
        return sum(g.count for g in self.groups)

    def probe(self, kind: str) -> list[Probe]:
        return [p for p in self.probes if p.kind == kind]
