"""The simulated worker's heartbeat: the server and worker state asynq keeps in Redis.

Written from the semantics of asynq's heartbeat.go and internal/rdb/rdb.go
(WriteServerState, ClearServerState). Each beat of a live server writes:

- ``asynq:servers`` and ``asynq:workers``: zsets whose members are the server's
  two keys, scored by the moment they expire (unix s, truncated);
- ``asynq:servers:{host:pid:server_id}``: the ServerInfo protobuf, expiring
  ``ttl`` (twice the 5 s heartbeat interval) after the beat;
- ``asynq:workers:{host:pid:server_id}``: a hash task id -> WorkerInfo protobuf
  of the tasks being run, rewritten whole on every beat, with the same expiry
  (absent while the server runs nothing).

A graceful shutdown removes both members and both keys; a killed server
leaves them to expire. Times are passed in, so the key expiry is set as an
absolute time (now + ttl): on the real clock that is asynq's SETEX/EXPIRE ttl,
and a beat on a simulated clock in the past leaves only the stale zset members.
"""

from __future__ import annotations

import os
import random
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from google.protobuf.timestamp_pb2 import Timestamp

from jobrunbook.asynq import asynq_pb2, keys
from jobrunbook.asynq.messages import TaskMessage

__all__ = ["Heartbeater", "ActiveTask", "HEARTBEAT_INTERVAL", "SERVER_TTL", "SERVER_QUEUES", "SERVER_CONCURRENCY",
           "DEFAULT_TIMEOUT"]

HEARTBEAT_INTERVAL = 5  # asynq's heartbeater interval (s)
SERVER_TTL = 2 * HEARTBEAT_INTERVAL  # long enough to survive until the next beat, short enough to expire on a kill
SERVER_QUEUES = {"critical": 6, "default": 3, "low": 1}  # asynq's README example priorities
SERVER_CONCURRENCY = 20
DEFAULT_TIMEOUT = 30 * 60  # asynq's deadline for a task with neither timeout nor deadline

# KEYS: server key, workers key | ARGV: expire at (unix ms), server info, then task id, worker info pairs
_WRITE = """
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
for i = 3, #ARGV - 1, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIREAT', KEYS[2], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class ActiveTask:
    """A task a worker goroutine is running: the message and when it started (unix s)."""

    msg: TaskMessage
    started: float


def _ts(t: float) -> Timestamp:
    out = Timestamp()
    out.FromNanoseconds(int(round(t * 1e9)))
    return out


def deadline_of(msg: TaskMessage, started: float) -> float:
    """The deadline asynq's processor gives a task it starts: timeout after start, capped by the message's deadline."""
    if msg.timeout and msg.deadline:
        return float(min(int(started) + msg.timeout, msg.deadline))
    if msg.timeout:
        return started + msg.timeout
    if msg.deadline:
        return float(msg.deadline)
    return started + DEFAULT_TIMEOUT


class Heartbeater:
    """One server instance at a time: ``start`` it, ``beat`` it, then ``clear`` (graceful) or ``crash`` it."""

    def __init__(self, client: redis.Redis, *, host: str | None = None, rng: random.Random | None = None,
                 queues: dict[str, int] | None = None, concurrency: int = SERVER_CONCURRENCY,
                 ttl: float = SERVER_TTL) -> None:
        self.client = client
        self.host = host or socket.gethostname() or "unknown-host"
        self.rng = rng or random.Random()
        self.queues = dict(queues or SERVER_QUEUES)
        self.concurrency = concurrency
        self.ttl = ttl
        self.pid = os.getpid()
        self.server_id = ""
        self.started = 0.0
        self.last_beat: float | None = None
        self.dead: list[tuple[str, int, str]] = []  # (host, pid, server id) of the instances that were killed
        self._write = client.register_script(_WRITE)

    # -- the instance -----------------------------------------------------
    def start(self, now: float, pid: int) -> None:
        """A new server process: its own pid and a fresh server id (a UUID)."""
        self.pid = pid
        self.server_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.started = now
        self.last_beat = None

    @property
    def server_key(self) -> str:
        return keys.server_info_key(self.host, self.pid, self.server_id)

    @property
    def workers_key(self) -> str:
        return keys.workers_key(self.host, self.pid, self.server_id)

    def server_info(self, active: int) -> bytes:
        return asynq_pb2.ServerInfo(
            host=self.host, pid=self.pid, server_id=self.server_id, concurrency=self.concurrency, queues=self.queues,
            strict_priority=False, status="active", start_time=_ts(self.started), active_worker_count=active,
        ).SerializeToString()

    def worker_info(self, task: ActiveTask) -> bytes:
        m = task.msg
        return asynq_pb2.WorkerInfo(
            host=self.host, pid=self.pid, server_id=self.server_id, task_id=m.id, task_type=m.type,
            task_payload=m.payload, queue=m.queue, start_time=_ts(task.started),
            deadline=_ts(deadline_of(m, task.started)),
        ).SerializeToString()

    # -- Redis ------------------------------------------------------------
    def beat(self, now: float, tasks: Iterable[ActiveTask]) -> None:
        """Write the server's state as of ``now``, with ``tasks`` as its busy workers."""
        if not self.server_id:
            return
        tasks = list(tasks)
        expire_at = now + self.ttl
        args: list = [int(expire_at * 1000), self.server_info(len(tasks))]
        for task in tasks:
            args += [task.msg.id, self.worker_info(task)]
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(keys.ALL_SERVERS, {self.server_key: int(expire_at)})
        pipe.zadd(keys.ALL_WORKERS, {self.workers_key: int(expire_at)})
        self._write(keys=[self.server_key, self.workers_key], args=args, client=pipe)
        pipe.execute()
        self.last_beat = now

    def crash(self, at: float) -> None:
        """The process is killed at ``at``: nothing is cleared, its entries expire on their own.

        An instance that never beat in Redis (it died during the simulated
        history) still leaves what a real one would: its zset members, scored by
        the expiry of its last beat (every HEARTBEAT_INTERVAL since its start).
        """
        if self.last_beat is None and self.server_id:
            last = at - (at - self.started) % HEARTBEAT_INTERVAL
            expire_at = int(last + self.ttl)
            self.client.zadd(keys.ALL_SERVERS, {self.server_key: expire_at})
            self.client.zadd(keys.ALL_WORKERS, {self.workers_key: expire_at})
        if self.server_id:
            self.dead.append((self.host, self.pid, self.server_id))
        self.server_id = ""

    def clear(self) -> None:
        """Graceful shutdown: remove the zset members and both keys (asynq's ClearServerState)."""
        if not self.server_id:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(keys.ALL_SERVERS, self.server_key)
        pipe.zrem(keys.ALL_WORKERS, self.workers_key)
        pipe.delete(self.server_key, self.workers_key)
        pipe.execute()
        self.server_id = ""
