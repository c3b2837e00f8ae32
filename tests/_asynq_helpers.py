"""Helpers shared by the inspector tests: fixture truth, hand-built asynq keys."""

from __future__ import annotations

import datetime as dt
import json

from conftest import fixture_dir
from jobrunbook.asynq import keys
from jobrunbook.asynq.messages import TaskMessage, encode_task


def truth(name: str) -> dict:
    return json.loads((fixture_dir(name) / "inspector.json").read_text())


def generated_at(name: str) -> float:
    stamp = truth(name)["generated_at"][:19]
    return dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.timezone.utc).timestamp()


def put_task(client, queue: str, tid: str, state: str, *, score: float | None = None, ttype: str = "email:send",
             error: str = "", retried: int = 0, last_failed_at: int = 0, payload: bytes = b'{"to": "a@b.c"}',
             msg: bytes | None = None, in_state: bool = True, **fields) -> bytes:
    """Write one task the way asynq does: hash with msg and state, id in the state's list/zset."""
    client.sadd(keys.ALL_QUEUES, queue)
    if msg is None:
        msg = encode_task(TaskMessage(type=ttype, id=tid, queue=queue, payload=payload, retry=3, retried=retried,
                                      error_msg=error, timeout=1800, last_failed_at=last_failed_at))
    client.hset(keys.task_key(queue, tid), mapping={"msg": msg, "state": state, **fields})
    if in_state:
        if state in ("pending", "active"):
            client.lpush(keys.state_key(queue, state), tid)
        elif state == "aggregating":
            client.zadd(keys.group_key(queue, fields["group"]), {tid: score or 0})
            client.sadd(keys.groups_key(queue), fields["group"])
        else:
            client.zadd(keys.state_key(queue, state), {tid: score or 0})
    return msg
