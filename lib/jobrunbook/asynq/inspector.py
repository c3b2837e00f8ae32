"""Reading one asynq Redis the way asynq's own Inspector does (internal/rdb/inspect.go).

``Inspector(client)`` answers: which queues, how many tasks in each state,
memory use, the tasks of one state (paged), one task, daily history, live
servers and their workers, and the health of the data. Counts, memory and task
lists match asynq's Inspector on the captured fixtures exactly. It only reads:
nothing here writes to Redis (asynq's ListServers also trims stale server
entries; this one does not).

Every call goes through ``translate_errors``: Redis down or timing out raises
``RedisUnavailable``; an unknown queue raises ``NotFound`` listing the known
ones.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import redis

from jobrunbook._exceptions import ConfigError, NotFound
from jobrunbook.asynq import keys
from jobrunbook.asynq.connection import translate_errors
from jobrunbook.asynq.messages import asynq_time, decode_server, decode_task, decode_worker

__all__ = ["Inspector", "QueueInfo", "TaskInfo", "DailyStat", "History", "ServerInfo", "WorkerInfo",
           "redact_payload", "iso"]

# Queue counts in one script: (LLEN|ZCARD) per state, the four counters, paused,
# the oldest pending task's pending_since, and the aggregating groups.
_STATS_LUA = """
local out = {}
out[1] = redis.call('LLEN', KEYS[1])
out[2] = redis.call('LLEN', KEYS[2])
for i = 3, 6 do out[i] = redis.call('ZCARD', KEYS[i]) end
for i = 7, 10 do out[i] = tonumber(redis.call('GET', KEYS[i]) or '0') or 0 end
out[11] = redis.call('EXISTS', KEYS[11])
out[12] = '0'
if out[1] > 0 then
  local oldest = redis.call('LRANGE', KEYS[1], -1, -1)[1]
  out[12] = redis.call('HGET', ARGV[1] .. oldest, 'pending_since') or '0'
end
local groups = redis.call('SMEMBERS', KEYS[12])
local agg = 0
for _, g in ipairs(groups) do agg = agg + redis.call('ZCARD', ARGV[2] .. g) end
out[13] = #groups
out[14] = agg
return out
"""

# asynq's memory estimate: per state, the mean MEMORY USAGE of the first
# ARGV[2] task hashes times the state's size, plus the state key itself; then
# aggregating groups (the first ARGV[3] groups sampled). The sum is a Lua
# number that Redis truncates to an integer, as asynq's script does.
_MEMORY_LUA = """
local n_sample = tonumber(ARGV[2])
local total = 0
local function sampled(ids, size)
  if #ids == 0 then return 0 end
  local s = 0
  for _, id in ipairs(ids) do s = s + (redis.call('MEMORY', 'USAGE', ARGV[1] .. id) or 0) end
  return (s / #ids) * size
end
for i = 1, 6 do
  local ids, size
  if i <= 2 then
    ids = redis.call('LRANGE', KEYS[i], 0, n_sample - 1)
    size = redis.call('LLEN', KEYS[i])
  else
    ids = redis.call('ZRANGE', KEYS[i], 0, n_sample - 1)
    size = redis.call('ZCARD', KEYS[i])
  end
  total = total + sampled(ids, size)
  total = total + (redis.call('MEMORY', 'USAGE', KEYS[i]) or 0)
end
local groups = redis.call('SMEMBERS', KEYS[7])
if #groups > 0 then
  local count, s, n = 0, 0, 0
  for i, g in ipairs(groups) do
    count = count + redis.call('ZCARD', ARGV[4] .. g)
    if i <= tonumber(ARGV[3]) then
      for _, id in ipairs(redis.call('ZRANGE', ARGV[4] .. g, 0, n_sample - 1)) do
        local b = redis.call('MEMORY', 'USAGE', ARGV[1] .. id)
        if b then s = s + b; n = n + 1 end
      end
    end
  end
  if n > 0 then total = total + (s / n) * count end
end
return total
"""

# A page of a zset state: id, score, msg, state field.
_ZPAGE_LUA = """
local out = {}
local pairs_ = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES')
for i = 1, #pairs_, 2 do
  local h = redis.call('HMGET', ARGV[3] .. pairs_[i], 'msg', 'state')
  out[#out + 1] = pairs_[i]; out[#out + 1] = pairs_[i + 1]; out[#out + 1] = h[1]; out[#out + 1] = h[2]
end
return out
"""

# A page of a list state (pending, active): id, msg, state field.
_LPAGE_LUA = """
local out = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])) do
  local h = redis.call('HMGET', ARGV[3] .. id, 'msg', 'state')
  out[#out + 1] = id; out[#out + 1] = h[1]; out[#out + 1] = h[2]
end
return out
"""

_TASK_SAMPLE = 20   # asynq's taskSampleSize
_GROUP_SAMPLE = 5   # asynq's groupSampleSize


iso = asynq_time  # the times of asynq's Inspector JSON


def redact_payload(payload: bytes):
    """Keep the shape of a payload, not its values: JSON objects keep their keys."""
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return f"<{len(payload)} bytes>"

    def hide(v):
        if isinstance(v, dict):
            return {k: hide(x) for k, x in v.items()}
        if isinstance(v, list):
            return [hide(x) for x in v[:3]] + (["..."] if len(v) > 3 else [])
        return "***"
    return hide(value)


def _raw_payload(payload: bytes):
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return payload.decode("utf-8", "backslashreplace")


@dataclass
class QueueInfo:
    queue: str
    size: int
    pending: int
    active: int
    scheduled: int
    retry: int
    archived: int
    completed: int
    aggregating: int
    groups: int
    processed_today: int
    failed_today: int
    processed_total: int
    failed_total: int
    paused: bool
    memory_usage_bytes: int
    latency_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TaskInfo:
    """One task as asynq's Inspector shows it, plus ``archived_at``, sizes and any anomaly."""

    id: str
    queue: str
    type: str
    state: str
    payload: object
    payload_size: int
    retried: int
    max_retry: int
    last_err: str
    last_failed_at: str | None
    next_process_at: str | None
    timeout_seconds: int
    deadline: str | None
    archived_at: str | None = None
    completed_at: str | None = None
    group: str = ""
    anomaly: str | None = None  # "missing hash", "corrupt msg", "state field says X"
    headers: dict[str, str] = field(default_factory=dict)  # asynq v0.26+ (field 15); values redacted like payloads

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DailyStat:
    date: str
    processed: int
    failed: int
    failure_ratio: float | None  # failed / processed; None when nothing was processed


@dataclass
class History:
    queue: str
    days: list[DailyStat]  # newest first, UTC days
    processed_total: int
    failed_total: int

    @property
    def failure_ratio_total(self) -> float | None:
        return self.failed_total / self.processed_total if self.processed_total else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failure_ratio_total"] = self.failure_ratio_total
        return d


@dataclass
class WorkerInfo:
    task_id: str
    task_type: str
    queue: str
    started_at: str | None
    deadline: str | None


@dataclass
class ServerInfo:
    host: str
    pid: int
    server_id: str
    concurrency: int
    queues: dict[str, int]
    strict_priority: bool
    status: str
    started_at: str | None
    active_worker_count: int
    workers: list[WorkerInfo] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _int(v) -> int:
    return int(v) if v is not None else 0


class Inspector:
    """Read-only view of one asynq Redis; ``clock`` returns unix seconds (default ``time.time``)."""

    def __init__(self, client: redis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock
        self._stats = client.register_script(_STATS_LUA)
        self._memory = client.register_script(_MEMORY_LUA)
        self._zpage = client.register_script(_ZPAGE_LUA)
        self._lpage = client.register_script(_LPAGE_LUA)

    # -- queues -----------------------------------------------------------
    def queues(self) -> list[str]:
        """Every queue name in ``asynq:queues``, sorted."""
        with translate_errors(self.client, doing=" listing queues"):
            names = self.client.smembers(keys.ALL_QUEUES)
        return sorted(n.decode("utf-8", "backslashreplace") for n in names)

    def check_queue(self, queue: str) -> None:
        """Raise ``NotFound`` naming ``queue`` and the known queues if asynq does not know it."""
        with translate_errors(self.client, doing=f" checking queue {queue!r}"):
            known = self.client.sismember(keys.ALL_QUEUES, queue)
        if not known:
            names = self.queues()
            raise NotFound(f"queue {queue!r} not found; known queues: {', '.join(names) or '(none)'}",
                           hint="redis-cli SMEMBERS asynq:queues")

    def queue_info(self, queue: str) -> QueueInfo:
        """Counts per state, counters for today (UTC) and all time, paused, memory, latency."""
        self.check_queue(queue)
        now = self.clock()
        day = dt.datetime.fromtimestamp(now, dt.timezone.utc)
        p = keys.queue_prefix(queue)
        stat_keys = [p + "pending", p + "active", p + "scheduled", p + "retry", p + "archived", p + "completed",
                     keys.processed_key(queue, day), keys.failed_key(queue, day), keys.processed_total_key(queue),
                     keys.failed_total_key(queue), keys.paused_key(queue), keys.groups_key(queue)]
        with translate_errors(self.client, doing=f" reading stats of queue {queue!r}"):
            r = self._stats(keys=stat_keys, args=[keys.task_key_prefix(queue), p + "g:"])
            memory = self._memory(keys=stat_keys[:6] + [keys.groups_key(queue)],
                                  args=[keys.task_key_prefix(queue), _TASK_SAMPLE, _GROUP_SAMPLE, p + "g:"])
        pending_since = int(r[11] or 0)
        latency = max(0.0, now - pending_since / 1e9) if pending_since else 0.0
        return QueueInfo(
            queue=queue, size=sum(r[0:6]) + r[13], pending=r[0], active=r[1], scheduled=r[2], retry=r[3],
            archived=r[4], completed=r[5], aggregating=r[13], groups=r[12], processed_today=r[6],
            failed_today=r[7], processed_total=r[8], failed_total=r[9], paused=bool(r[10]),
            memory_usage_bytes=int(memory), latency_seconds=latency)

    # -- tasks ------------------------------------------------------------
    def _task(self, queue: str, state: str, tid: bytes | str, msg: bytes | None, state_field: bytes | None,
              score: float | None, raw_payload: bool) -> TaskInfo:
        tid = tid.decode("utf-8", "backslashreplace") if isinstance(tid, bytes) else tid
        m = decode_task(msg)
        anomaly = None
        if msg is None:
            anomaly = "missing hash"
        elif m is None:
            anomaly = "corrupt msg"
        elif state_field is not None and state_field.decode("utf-8", "replace") != state:
            anomaly = f"state field says {state_field.decode('utf-8', 'replace')}"
        if m is None:
            return TaskInfo(id=tid, queue=queue, type="", state=state, payload=None, payload_size=0, retried=0,
                            max_retry=0, last_err="", last_failed_at=None,
                            next_process_at=iso(score) if state in ("retry", "scheduled") else None,
                            timeout_seconds=0, deadline=None, anomaly=anomaly)
        if state in ("retry", "scheduled"):
            next_at = iso(score)
        elif state == "pending":
            next_at = iso(self.clock())
        else:
            next_at = None
        return TaskInfo(
            id=m.id, queue=m.queue, type=m.type, state=state,
            payload=_raw_payload(m.payload) if raw_payload else redact_payload(m.payload),
            payload_size=len(m.payload), retried=m.retried, max_retry=m.retry, last_err=m.error_msg,
            last_failed_at=iso(m.last_failed_at), next_process_at=next_at, timeout_seconds=m.timeout,
            deadline=iso(m.deadline), archived_at=iso(score) if state == "archived" else None,
            completed_at=iso(m.completed_at), group=m.group_key, anomaly=anomaly,
            headers=dict(m.headers) if raw_payload else dict.fromkeys(m.headers, "***"))

    def list_tasks(self, queue: str, state: str, *, page: int = 0, size: int = 50, raw_payload: bool = False,
                   group: str | None = None) -> list[TaskInfo]:
        """One page of the tasks in ``state``, in asynq's order.

        zset states by score (oldest first), pending and active oldest first
        (the dequeue order). ``aggregating`` needs ``group``. A task whose hash
        is missing or whose ``msg`` does not decode is returned with
        ``anomaly`` set (asynq skips it silently). Payloads are redacted
        unless ``raw_payload``.
        """
        if state not in keys.STATES:
            raise ConfigError(f"unknown state {state!r}; one of {', '.join(keys.STATES)}")
        if size < 1 or page < 0:
            raise ConfigError(f"page must be >= 0 and size >= 1, got page={page} size={size}")
        self.check_queue(queue)
        start, stop = page * size, page * size + size - 1
        prefix = keys.task_key_prefix(queue)
        out: list[TaskInfo] = []
        with translate_errors(self.client, doing=f" listing {state} tasks of queue {queue!r}"):
            if state in ("pending", "active"):
                data = self._lpage(keys=[keys.state_key(queue, state)], args=[-stop - 1, -start - 1, prefix])
                rows = [(data[i], data[i + 1], data[i + 2], None) for i in range(0, len(data), 3)]
                rows.reverse()
            else:
                if state == "aggregating":
                    if not group:
                        raise ConfigError("listing aggregating tasks needs a group",
                                          hint=f"redis-cli SMEMBERS {keys.groups_key(queue)}")
                    zkey = keys.group_key(queue, group)
                else:
                    zkey = keys.state_key(queue, state)
                data = self._zpage(keys=[zkey], args=[start, stop, prefix])
                rows = [(data[i], float(data[i + 1]), data[i + 2], data[i + 3]) for i in range(0, len(data), 4)]
                rows = [(tid, msg, st, score) for tid, score, msg, st in rows]
        for tid, msg, st, score in rows:
            out.append(self._task(queue, state, tid, msg, st, score, raw_payload))
        return out

    def get_task(self, queue: str, task_id: str, *, raw_payload: bool = False) -> TaskInfo:
        """One task by id; ``NotFound`` when its hash does not exist."""
        self.check_queue(queue)
        with translate_errors(self.client, doing=f" reading task {task_id!r}"):
            msg, st = self.client.hmget(keys.task_key(queue, task_id), "msg", "state")
            if msg is None and st is None:
                raise NotFound(f"task {task_id!r} not found in queue {queue!r}",
                               hint=f"redis-cli EXISTS {keys.task_key(queue, task_id)}")
            state = st.decode("utf-8", "replace") if st else "(none)"
            score = None
            if state in keys.ZSET_STATES:
                score = self.client.zscore(keys.state_key(queue, state), task_id)
        info = self._task(queue, state, task_id, msg, None, score, raw_payload)
        if msg is not None and info.anomaly is None and state in keys.ZSET_STATES and score is None:
            info.anomaly = f"not in the {state} set (orphan)"
        return info

    # -- history ----------------------------------------------------------
    def history(self, queue: str, days: int = 7) -> History:
        """Daily processed/failed for the last ``days`` UTC days, newest first, and all-time counters."""
        if days < 1:
            raise ConfigError(f"days must be positive, got {days}")
        self.check_queue(queue)
        now = dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc)
        dates = [now - dt.timedelta(days=i) for i in range(days)]
        names = []
        for d in dates:
            names += [keys.processed_key(queue, d), keys.failed_key(queue, d)]
        names += [keys.processed_total_key(queue), keys.failed_total_key(queue)]
        with translate_errors(self.client, doing=f" reading history of queue {queue!r}"):
            values = [_int(v) for v in self.client.mget(names)]
        stats = []
        for i, d in enumerate(dates):
            p, f = values[2 * i], values[2 * i + 1]
            stats.append(DailyStat(date=d.strftime("%Y-%m-%d"), processed=p, failed=f,
                                   failure_ratio=(f / p) if p else None))
        return History(queue=queue, days=stats, processed_total=values[-2], failed_total=values[-1])

    # -- servers ----------------------------------------------------------
    def servers(self) -> list[ServerInfo]:
        """Live servers (entries of ``asynq:servers`` not yet expired) and the tasks their workers run."""
        now = int(self.clock())
        out = []
        with translate_errors(self.client, doing=" listing servers"):
            server_keys = self.client.zrangebyscore(keys.ALL_SERVERS, now, "+inf")
            for skey in server_keys:
                data = self.client.get(skey)
                pb = decode_server(data) if data else None
                if pb is None:
                    continue
                info = ServerInfo(
                    host=pb.host, pid=pb.pid, server_id=pb.server_id, concurrency=pb.concurrency,
                    queues=dict(pb.queues), strict_priority=pb.strict_priority, status=pb.status,
                    started_at=iso(pb.start_time.seconds) if pb.HasField("start_time") else None,
                    active_worker_count=pb.active_worker_count)
                wkey = keys.workers_key(pb.host, pb.pid, pb.server_id)
                for _, raw in self.client.hscan_iter(wkey, count=500):
                    w = decode_worker(raw)
                    if w is None:
                        continue
                    info.workers.append(WorkerInfo(
                        task_id=w.task_id, task_type=w.task_type, queue=w.queue,
                        started_at=iso(w.start_time.seconds) if w.HasField("start_time") else None,
                        deadline=iso(w.deadline.seconds) if w.HasField("deadline") else None))
                out.append(info)
        return out

    # -- health, version and failures (their own modules) -------------------
    def version(self, queues: list[str] | None = None, *, configured: str = "infer", sample: int = 200):
        """See ``jobrunbook.asynq.versions.detect_version``: the asynq version to read ``queues`` as, and why."""
        from jobrunbook.asynq.versions import detect_version

        return detect_version(self.client, self.queues() if queues is None else queues, configured=configured,
                              sample=sample)

    def health(self, queue: str, **kwargs):
        """See ``jobrunbook.asynq.health.check_health``."""
        from jobrunbook.asynq.health import check_health

        self.check_queue(queue)
        return check_health(self.client, queue, **kwargs)

    def failures(self, queues: list[str] | str | None = None, **kwargs):
        """See ``jobrunbook.asynq.aggregate.aggregate_failures``; all queues by default."""
        from jobrunbook.asynq.aggregate import aggregate_failures

        if isinstance(queues, str):
            queues = [queues]
        if queues is None:
            queues = self.queues()
        else:
            for q in queues:
                self.check_queue(q)
        return aggregate_failures(self.client, queues, **kwargs)
