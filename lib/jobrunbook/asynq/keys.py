"""asynq's Redis key names (shared/asynq-redis.md; asynq internal/base/base.go).

Every key of one queue carries the queue name in braces, a Redis Cluster hash
tag, so the whole queue lives in one slot.
"""

from __future__ import annotations

import datetime as _dt

__all__ = [
    "ALL_QUEUES",
    "ALL_SERVERS",
    "ALL_WORKERS",
    "STATES",
    "FAILED_STATES",
    "ZSET_STATES",
    "ARCHIVE_MAX_SIZE",
    "ARCHIVE_MAX_AGE_DAYS",
    "STATS_TTL_DAYS",
    "queue_prefix",
    "task_key_prefix",
    "task_key",
    "state_key",
    "lease_key",
    "paused_key",
    "processed_total_key",
    "failed_total_key",
    "processed_key",
    "failed_key",
    "groups_key",
    "group_key",
    "server_info_key",
    "workers_key",
]

ALL_QUEUES = "asynq:queues"
ALL_SERVERS = "asynq:servers"
ALL_WORKERS = "asynq:workers"

# Task states as asynq names them in the hash's `state` field. There is no
# state "failed": failed tasks are in retry or archived.
STATES = ("active", "pending", "aggregating", "scheduled", "retry", "archived", "completed")
FAILED_STATES = ("retry", "archived")
LIST_STATES = ("pending", "active")
ZSET_STATES = ("scheduled", "retry", "archived", "completed")

# asynq trims the archive on every archive: older than 90 days, beyond 10,000.
ARCHIVE_MAX_SIZE = 10_000
ARCHIVE_MAX_AGE_DAYS = 90
# daily processed/failed counters expire after 90 days
STATS_TTL_DAYS = 90


def queue_prefix(queue: str) -> str:
    return f"asynq:{{{queue}}}:"


def task_key_prefix(queue: str) -> str:
    return queue_prefix(queue) + "t:"


def task_key(queue: str, task_id: str) -> str:
    return task_key_prefix(queue) + task_id


def state_key(queue: str, state: str) -> str:
    """The list (pending, active) or zset (scheduled, retry, archived, completed) of a state."""
    if state not in LIST_STATES + ZSET_STATES:
        raise ValueError(f"state {state!r} has no key of its own; one of {', '.join(LIST_STATES + ZSET_STATES)}")
    return queue_prefix(queue) + state


def lease_key(queue: str) -> str:
    return queue_prefix(queue) + "lease"


def paused_key(queue: str) -> str:
    return queue_prefix(queue) + "paused"


def processed_total_key(queue: str) -> str:
    return queue_prefix(queue) + "processed"


def failed_total_key(queue: str) -> str:
    return queue_prefix(queue) + "failed"


def _day(day: _dt.date | _dt.datetime) -> str:
    if isinstance(day, _dt.datetime):
        day = day.astimezone(_dt.timezone.utc).date() if day.tzinfo else day.date()
    return day.strftime("%Y-%m-%d")


def processed_key(queue: str, day: _dt.date | _dt.datetime) -> str:
    """Daily processed counter; the day is taken in UTC."""
    return queue_prefix(queue) + "processed:" + _day(day)


def failed_key(queue: str, day: _dt.date | _dt.datetime) -> str:
    return queue_prefix(queue) + "failed:" + _day(day)


def groups_key(queue: str) -> str:
    return queue_prefix(queue) + "groups"


def group_key(queue: str, group: str) -> str:
    return queue_prefix(queue) + "g:" + group


def server_info_key(host: str, pid: int, server_id: str) -> str:
    return f"asynq:servers:{{{host}:{pid}:{server_id}}}"


def workers_key(host: str, pid: int, server_id: str) -> str:
    return f"asynq:workers:{{{host}:{pid}:{server_id}}}"
