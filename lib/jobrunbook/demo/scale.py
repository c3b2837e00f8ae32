"""A large incident, fast: failed tasks written in bulk, as asynq writes them.

- ``inflate_failures(client, n)``: the demo's failed tasks (retry and archived
  of every queue) multiplied until there are ``n``: each new task is a copy of
  one the demo's worker failed (same queue, state, score, hash fields and
  message, a new id), taken in turn, so the scenario's groups keep their shares.
- ``write_failed_tasks(client, n, groups)``: ``n`` failed tasks spread evenly
  over ``groups`` (queue, state, task type, error), for a test's own Redis.

A message is encoded once per template and each copy splices its own id into
the bytes (a TaskMessage's id is a length-prefixed string of fixed length, 36
characters for a UUID), so a million tasks take seconds, written in pipelines
of ``batch`` tasks (one ZADD per state and batch).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import redis

from jobrunbook.asynq import keys
from jobrunbook.asynq.messages import TaskMessage, encode_task

__all__ = ["inflate_failures", "write_failed_tasks", "failed_count"]

_PLACEHOLDER = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class _Template:
    queue: str
    state: str
    score: float
    fields: Mapping[bytes, bytes]  # every field of the hash but msg
    head: bytes  # msg up to the id
    tail: bytes  # msg after the id


def failed_count(client: redis.Redis, queues: Iterable[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for q in queues:
        for state in keys.FAILED_STATES:
            pipe.zcard(keys.state_key(q, state))
    return sum(int(n) for n in pipe.execute())


def _templates(client: redis.Redis, queues: Iterable[str]) -> list[_Template]:
    out = []
    for q in queues:
        for state in keys.FAILED_STATES:
            rows = client.zrange(keys.state_key(q, state), 0, -1, withscores=True)
            pipe = client.pipeline(transaction=False)
            for tid, _ in rows:
                pipe.hgetall(keys.task_key(q, tid.decode()))
            for (tid, score), fields in zip(rows, pipe.execute(), strict=True):
                msg = fields.get(b"msg")
                at = msg.find(tid) if msg else -1
                if at < 0 or len(tid) != len(_PLACEHOLDER):
                    continue  # not a UUID id inside its message: not copied
                rest = {k: v for k, v in fields.items() if k != b"msg"}
                out.append(_Template(q, state, score, rest, msg[:at], msg[at + len(tid):]))
    return out


def _new_ids(rng: random.Random) -> Iterator[str]:
    while True:
        yield str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _write(client: redis.Redis, templates: list[_Template], count: int, rng: random.Random, batch: int) -> None:
    ids = _new_ids(rng)
    pipe = client.pipeline(transaction=False)
    zsets: dict[tuple[str, str], dict[str, float]] = {}
    for i in range(count):
        t = templates[i % len(templates)]
        tid = next(ids)
        pipe.hset(keys.task_key(t.queue, tid), mapping={**t.fields, b"msg": t.head + tid.encode() + t.tail})
        zsets.setdefault((t.queue, t.state), {})[tid] = t.score
        if (i + 1) % batch == 0 or i + 1 == count:
            for (q, state), members in zsets.items():
                pipe.zadd(keys.state_key(q, state), members)
            pipe.execute()
            zsets = {}


def inflate_failures(client: redis.Redis, n: int, *, queues: Iterable[str] | None = None, seed: int = 1,
                     batch: int = 1000) -> dict:
    """Copy the failed tasks already in ``queues`` (default: every queue) until there are ``n`` in all."""
    queues = list(queues) if queues is not None else sorted(q.decode() for q in client.smembers(keys.ALL_QUEUES))
    t0 = time.perf_counter()
    templates = _templates(client, queues)
    have = failed_count(client, queues)
    added = max(0, n - have)
    if added and not templates:
        raise ValueError("no failed task to copy: the incident has none in retry or archived")
    if added:
        _write(client, templates, added, random.Random(f"scale:{seed}"), batch)  # not the demo's own id stream
    return {"failed_tasks": have + added, "added": added, "templates": len(templates),
            "seconds": round(time.perf_counter() - t0, 2)}


def write_failed_tasks(client: redis.Redis, n: int, groups: list[Mapping[str, str]], *, seed: int = 1,
                       now: float | None = None, batch: int = 1000) -> None:
    """``n`` failed tasks over ``groups`` ({queue, state: retry|archived, type, error}), evenly, each queue
    registered in ``asynq:queues``."""
    now = time.time() if now is None else now
    templates = []
    for g in groups:
        msg = encode_task(TaskMessage(type=g["type"], id=_PLACEHOLDER, queue=g["queue"], payload=b'{"n": 1}',
                                      retry=25, retried=3, error_msg=g["error"], last_failed_at=int(now) - 60,
                                      timeout=1800))
        at = msg.find(_PLACEHOLDER.encode())
        score = now + 300 if g["state"] == "retry" else now - 60
        templates.append(_Template(g["queue"], g["state"], score, {b"state": g["state"].encode()}, msg[:at],
                                   msg[at + len(_PLACEHOLDER):]))
    client.sadd(keys.ALL_QUEUES, *sorted({g["queue"] for g in groups}))
    _write(client, templates, n, random.Random(f"scale:{seed}"), batch)
