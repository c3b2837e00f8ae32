"""State changes on asynq tasks, in Lua, in small batches, with asynq's per-task effects.

asynq's Inspector changes a task in one Lua script (internal/rdb/inspect.go:
runTaskCmd, archiveTaskCmd, deleteTaskCmd); its run-all / archive-all /
delete-all do the same over a whole state in ONE call, which blocks Redis for
as long as the set is big. The scripts here do, for each task id they are
given, exactly what asynq's single-task script does, and take at most
``MAX_BATCH`` ids per call:

- run:     remove from its state (ZREM, or ZREM from the group zset when
           aggregating), LPUSH on pending, HSET state pending. No other field
           is touched: asynq's runTaskCmd does not set ``pending_since``.
           Refused for active and pending.
- archive: remove from its state (pending: LREM count 1), ZADD archived with
           score now, HSET state archived, then asynq's trim of the archive:
           ZREMRANGEBYSCORE -inf (now - 90 days) and ZREMRANGEBYRANK 0
           -10000 (which keeps the newest 9,999). Refused for active and
           archived. The trim runs once per batch: with one ``now`` for the
           whole operation, trimming after each task or after the batch keeps
           the same members.
- delete:  remove from its state (pending: LREM count 0), release the
           ``unique_key`` lock when it still holds this id, DEL the hash.
           Refused for active.

Unlike asynq's *-all scripts, each task is re-checked inside the script
before anything is written: the hash exists, its ``state`` is the expected
one, the id really is in that state's set (the removal is the check), and,
for archive and delete, ``msg`` still has the SHA1 of the bytes exported just
before. A task that fails a check is left untouched and reported with a code,
so a batch never half-applies a task and re-running is safe. Every script
first checks that the caller still holds the queue's remediation lock; if not
it writes nothing. Counters (processed, failed) are never touched.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis

from jobrunbook import clock
from jobrunbook._exceptions import RemediationRefused
from jobrunbook.asynq import keys as K

__all__ = [
    "MAX_BATCH",
    "ACTIONS",
    "CODES",
    "QueueLock",
    "lock_key",
    "acquire_lock",
    "BatchOutcome",
    "apply_batch",
    "apply_in_batches",
    "cutoff_for",
]

MAX_BATCH = 1000
ACTIONS = ("run", "archive", "delete", "delete-orphan")

# Per-task result codes, the same for every script.
CODES = {
    1: "done",
    0: "not found",
    -1: "active",
    -2: "already in target state",
    -3: "state changed",
    -4: "not in its state's set",
    -5: "changed since export",
    -6: "no longer orphaned",
    -8: "also in the state its hash names",
}

# The lock check every script starts with: nothing is written when it fails.
_LOCK_CHECK = """
if redis.call("GET", KEYS[1]) ~= ARGV[1] then
  return redis.error_reply("LOCKLOST remediation lock " .. KEYS[1] .. " is not held by this run")
end
"""

# ARGV[2] queue prefix, ARGV[3] task prefix, ARGV[4] group prefix,
# ARGV[5] expected state ("" = any), ARGV[6] n, ids at 7..6+n, then n sha1s ("" = no check)
_HEAD = _LOCK_CHECK + """
local qp, tp, gp, want = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local n = tonumber(ARGV[6])
local out = {}
"""

_REMOVE_FROM_STATE = """
local function remove_from_state(id, state, group, lrem_count)
  if state == "pending" then
    return redis.call("LREM", qp .. "pending", lrem_count, id) > 0
  elseif state == "aggregating" then
    if not group then return false end
    if redis.call("ZREM", gp .. group, id) == 0 then return false end
    if redis.call("ZCARD", gp .. group) == 0 then redis.call("SREM", KEYS[2], group) end
    return true
  elseif state == "scheduled" or state == "retry" or state == "archived" or state == "completed" then
    return redis.call("ZREM", qp .. state, id) > 0
  end
  return false
end
local function check(id, key, state, i, refuse_state)
  if not state then return 0 end
  if want ~= "" and state ~= want then return -3 end
  if state == "active" then return -1 end
  if state == refuse_state then return -2 end
  local sha = ARGV[6 + n + i]
  if sha and sha ~= "" then
    local msg = redis.call("HGET", key, "msg")
    if not msg or redis.sha1hex(msg) ~= sha then return -5 end
  end
  return 1
end
"""

# KEYS: lock, groups, pending
_RUN = _HEAD + _REMOVE_FROM_STATE + """
for i = 1, n do
  local id = ARGV[6 + i]
  local key = tp .. id
  local state, group = unpack(redis.call("HMGET", key, "state", "group"))
  local code = check(id, key, state, i, "pending")
  if code == 1 then
    if remove_from_state(id, state, group, 1) then
      redis.call("LPUSH", KEYS[3], id)
      redis.call("HSET", key, "state", "pending")
    else
      code = -4
    end
  end
  out[i] = code
end
return out
"""

# KEYS: lock, groups, archived; after the ids and shas: now, cutoff, max size
_ARCHIVE = _HEAD + _REMOVE_FROM_STATE + """
local now, cutoff, maxsize = ARGV[7 + 2 * n], ARGV[8 + 2 * n], ARGV[9 + 2 * n]
local moved = 0
for i = 1, n do
  local id = ARGV[6 + i]
  local key = tp .. id
  local state, group = unpack(redis.call("HMGET", key, "state", "group"))
  local code = check(id, key, state, i, "archived")
  if code == 1 then
    if remove_from_state(id, state, group, 1) then
      redis.call("ZADD", KEYS[3], now, id)
      redis.call("HSET", key, "state", "archived")
      moved = moved + 1
    else
      code = -4
    end
  end
  out[i] = code
end
if moved > 0 then
  redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", cutoff)
  redis.call("ZREMRANGEBYRANK", KEYS[3], 0, -tonumber(maxsize))
end
return out
"""

_RELEASE_UNIQUE = """
local function release_unique(id, key)
  local unique_key = redis.call("HGET", key, "unique_key")
  if unique_key and unique_key ~= "" and redis.call("GET", unique_key) == id then
    redis.call("DEL", unique_key)
  end
end
"""

# KEYS: lock, groups
_DELETE = _HEAD + _REMOVE_FROM_STATE + _RELEASE_UNIQUE + """
for i = 1, n do
  local id = ARGV[6 + i]
  local key = tp .. id
  local state, group = unpack(redis.call("HMGET", key, "state", "group"))
  local code = check(id, key, state, i, "")
  if code == 1 then
    if remove_from_state(id, state, group, 0) then
      release_unique(id, key)
      redis.call("DEL", key)
    else
      code = -4
    end
  end
  out[i] = code
end
return out
"""

# A hash whose id is in no set at all (asynq#847): deleted only if still so. An id in another state's set
# than its hash names (asynq#1085) is no orphan: ``remediate fix-state`` repairs it.
# KEYS: lock, groups
_DELETE_ORPHAN = _HEAD + _RELEASE_UNIQUE + """
local function is_member(id, state, group)
  if state == "aggregating" and group and redis.call("ZSCORE", gp .. group, id) ~= false then return true end
  for _, s in ipairs({"pending", "active"}) do
    if redis.call("LPOS", qp .. s, id) ~= false then return true end
  end
  for _, s in ipairs({"scheduled", "retry", "archived", "completed"}) do
    if redis.call("ZSCORE", qp .. s, id) ~= false then return true end
  end
  return false
end
for i = 1, n do
  local id = ARGV[6 + i]
  local key = tp .. id
  local code = 1
  if redis.call("EXISTS", key) == 0 then
    code = 0
  else
    local state, group = unpack(redis.call("HMGET", key, "state", "group"))
    if want ~= "" and state ~= want then
      code = -3
    elseif state and is_member(id, state, group) then
      code = -6
    else
      local sha = ARGV[6 + n + i]
      if sha and sha ~= "" then
        local msg = redis.call("HGET", key, "msg")
        if not msg or redis.sha1hex(msg) ~= sha then code = -5 end
      end
    end
    if code == 1 then
      release_unique(id, key)
      redis.call("DEL", key)
    end
  end
  out[i] = code
end
return out
"""

_RENEW = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
"""

_SCRIPTS = {"run": _RUN, "archive": _ARCHIVE, "delete": _DELETE, "delete-orphan": _DELETE_ORPHAN}


def lock_key(queue: str) -> str:
    """The remediation lock of one queue; same hash slot as the queue's asynq keys."""
    return f"jobrunbook:{{{queue}}}:remediation-lock"


@dataclass
class QueueLock:
    """A held remediation lock: SET NX PX with a random token, renewed and released by its owner only."""

    client: redis.Redis
    queue: str
    token: str
    ttl_ms: int = 60_000

    @property
    def key(self) -> str:
        return lock_key(self.queue)

    def renew(self) -> None:
        ok = self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms)
        if not ok:
            raise RemediationRefused(f"lost the remediation lock of queue {self.queue!r} (expired or taken over)",
                                     hint=f"redis-cli GET '{self.key}'")

    def release(self) -> bool:
        return bool(self.client.eval(_RELEASE, 1, self.key, self.token))

    def __enter__(self) -> QueueLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire_lock(client: redis.Redis, queue: str, *, who: str, what: str, ttl_ms: int = 60_000) -> QueueLock:
    """Take the queue's remediation lock or raise RemediationRefused naming the current holder."""
    token = f"{who}|{socket.gethostname()}|{os.getpid()}|{int(clock.now())}|{what}|{uuid.uuid4().hex}"
    if client.set(lock_key(queue), token, nx=True, px=ttl_ms):
        return QueueLock(client, queue, token, ttl_ms)
    holder = client.get(lock_key(queue))
    pttl = client.pttl(lock_key(queue))
    shown = (holder or b"?").decode("utf-8", "replace").rsplit("|", 1)[0]
    raise RemediationRefused(
        f"queue {queue!r} is already being remediated by {shown} (lock expires in {max(pttl, 0) / 1000:.0f} s)",
        hint=f"wait for it to finish, or inspect: redis-cli GET '{lock_key(queue)}'")


def cutoff_for(now: int) -> int:
    """asynq's archive age cutoff: now - 90 days (time.AddDate(0, 0, -90) in UTC seconds)."""
    return now - K.ARCHIVE_MAX_AGE_DAYS * 86400


@dataclass
class BatchOutcome:
    """What one or more batches did: ids done, ids skipped by reason, the calls' durations."""

    done: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    batches: int = 0
    call_seconds: list[float] = field(default_factory=list)

    def add(self, ids: Sequence[str], codes: Sequence[int]) -> None:
        for task_id, code in zip(ids, codes, strict=True):
            if code == 1:
                self.done.append(task_id)
            else:
                self.skipped.setdefault(CODES.get(int(code), f"code {code}"), []).append(task_id)

    def counts(self) -> dict:
        return {"done": len(self.done), "skipped": {k: len(v) for k, v in self.skipped.items()},
                "batches": self.batches,
                "longest_call_ms": round(max(self.call_seconds, default=0.0) * 1000, 3)}


def apply_batch(client: redis.Redis, lock: QueueLock, action: str, ids: Sequence[str], *,
                expected_state: str = "", shas: Sequence[str] | None = None, now: int | None = None,
                archive_cap: int = K.ARCHIVE_MAX_SIZE) -> list[int]:
    """Run one script over at most MAX_BATCH ids; returns one code per id (see CODES).

    An archive trims as asynq does with its cap ``archive_cap`` (keeping the newest ``archive_cap - 1``).
    """
    if action not in _SCRIPTS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    if len(ids) > MAX_BATCH:
        raise ValueError(f"{len(ids)} ids in one batch; at most {MAX_BATCH}")
    if not ids:
        return []
    q = lock.queue
    shas = list(shas) if shas is not None else [""] * len(ids)
    if len(shas) != len(ids):
        raise ValueError("one sha1 per id")
    keys = [lock.key, K.groups_key(q)]
    argv: list = [lock.token, K.queue_prefix(q), K.task_key_prefix(q), K.queue_prefix(q) + "g:",
                  expected_state, len(ids), *ids, *shas]
    if action == "run":
        keys.append(K.state_key(q, "pending"))
    elif action == "archive":
        keys.append(K.state_key(q, "archived"))
        now = int(clock.now()) if now is None else int(now)
        argv += [now, cutoff_for(now), int(archive_cap)]
    script = client.register_script(_SCRIPTS[action])
    try:
        codes = script(keys=keys, args=argv)
    except redis.ResponseError as exc:
        if "LOCKLOST" in str(exc):
            raise RemediationRefused(f"remediation lock of queue {q!r} lost before a batch; nothing in it changed",
                                     hint=f"redis-cli GET '{lock.key}'") from None
        raise
    return [int(c) for c in codes]


def apply_in_batches(client: redis.Redis, lock: QueueLock, action: str, ids: Sequence[str], *,
                     expected_state: str = "", batch_size: int = MAX_BATCH, now: int | None = None,
                     before_batch: Callable[[list[str]], list[str] | None] | None = None,
                     after_batch: Callable[[list[str], list[int]], None] | None = None,
                     timer: Callable[[], float] = time.perf_counter,
                     archive_cap: int = K.ARCHIVE_MAX_SIZE) -> BatchOutcome:
    """Apply ``action`` to ``ids`` in batches; renew the lock between batches.

    ``before_batch(ids)`` runs before each call (the export) and may return
    the msg SHA1 of each id, which the script then re-checks.
    ``after_batch(ids, codes)`` runs after it (audit, progress). An exception
    in either stops the loop between two batches: every task is then either
    fully changed or untouched.
    """
    batch_size = max(1, min(batch_size, MAX_BATCH))
    if action == "archive" and now is None:
        now = int(clock.now())
    outcome = BatchOutcome()
    for start in range(0, len(ids), batch_size):
        batch = list(ids[start:start + batch_size])
        shas = before_batch(batch) if before_batch else None
        lock.renew()
        t0 = timer()
        codes = apply_batch(client, lock, action, batch, expected_state=expected_state, shas=shas, now=now,
                            archive_cap=archive_cap)
        outcome.call_seconds.append(timer() - t0)
        outcome.batches += 1
        outcome.add(batch, codes)
        if after_batch:
            after_batch(batch, codes)
    return outcome
