"""Helpers shared by the remediation tests: loading fixtures, keyspace snapshots."""

from __future__ import annotations

import redis
from conftest import load_fixture_snapshot
from jobrunbook.asynq import keys as K
from jobrunbook.asynq.messages import TaskMessage, encode_task


def load(client: redis.Redis, name: str) -> None:
    load_fixture_snapshot(client, name)


def keyspace(client: redis.Redis, *, skip_prefix: bytes = b"jobrunbook:") -> dict[bytes, bytes]:
    """DUMP of every key: compares type, encoding, content and order (lists, hash field order)."""
    out = {}
    for key in client.scan_iter(count=1000):
        if key.startswith(skip_prefix):
            continue
        out[key] = client.dump(key)
    return out


def membership(client: redis.Redis, queue: str) -> dict[str, list[str]]:
    """Every state a task id is in (by its set/list), across all states."""
    where: dict[str, list[str]] = {}
    for state in ("pending", "active"):
        for m in client.lrange(K.state_key(queue, state), 0, -1):
            where.setdefault(m.decode(), []).append(state)
    for state in K.ZSET_STATES:
        for m in client.zrange(K.state_key(queue, state), 0, -1):
            where.setdefault(m.decode(), []).append(state)
    return where


def add_task(client: redis.Redis, queue: str, task_id: str, state: str, *, score: float = 1795980000,
             error: str = "boom", task_type: str = "email:send", last_failed_at: int = 1795980000,
             unique_key: str | None = None, extra: dict | None = None) -> None:
    msg = TaskMessage(type=task_type, id=task_id, queue=queue, payload=b'{"x":1}', retry=2, retried=1,
                      error_msg=error, last_failed_at=last_failed_at, unique_key=unique_key or "")
    fields = {"msg": encode_task(msg), "state": state}
    if unique_key:
        fields["unique_key"] = unique_key
    fields.update(extra or {})
    client.sadd(K.ALL_QUEUES, queue)
    client.hset(K.task_key(queue, task_id), mapping=fields)
    if state in ("pending", "active"):
        client.lpush(K.state_key(queue, state), task_id)
    else:
        client.zadd(K.state_key(queue, state), {task_id: score})
