"""asynq's whole-state approach, rewritten: ONE Lua call over every id of a state.

This is what asynq's Inspector does for run-all / archive-all / delete-all
(inspect.go: runAllCmd, archiveAllCmd, deleteAllCmd), re-expressed here from
their documented effects. It blocks Redis for the whole set. jobrunbook never
remediates with it: the tests use it as the reference the batched scripts in
``ops`` must match key for key, and the bench as the baseline.
"""

from __future__ import annotations

import redis

from jobrunbook.asynq import keys as K
from jobrunbook.asynq.ops import cutoff_for

__all__ = ["run_all_oneshot", "archive_all_oneshot", "delete_all_oneshot"]

# KEYS: source zset, pending list; ARGV: task key prefix
_RUN_ALL = """
local members = redis.call("ZRANGE", KEYS[1], 0, -1)
for _, m in ipairs(members) do
  redis.call("LPUSH", KEYS[2], m)
  redis.call("HSET", ARGV[1] .. m, "state", "pending")
end
redis.call("DEL", KEYS[1])
return #members
"""

# KEYS: source zset, archived zset; ARGV: now, cutoff, max size, task key prefix
_ARCHIVE_ALL = """
local members = redis.call("ZRANGE", KEYS[1], 0, -1)
for _, m in ipairs(members) do
  redis.call("ZADD", KEYS[2], ARGV[1], m)
  redis.call("HSET", ARGV[4] .. m, "state", "archived")
end
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", ARGV[2])
redis.call("ZREMRANGEBYRANK", KEYS[2], 0, -tonumber(ARGV[3]))
redis.call("DEL", KEYS[1])
return #members
"""

# KEYS: zset; ARGV: task key prefix
_DELETE_ALL = """
local members = redis.call("ZRANGE", KEYS[1], 0, -1)
for _, m in ipairs(members) do
  local tkey = ARGV[1] .. m
  local lock = redis.call("HGET", tkey, "unique_key")
  if lock and lock ~= "" and redis.call("GET", lock) == m then
    redis.call("DEL", lock)
  end
  redis.call("DEL", tkey)
end
redis.call("DEL", KEYS[1])
return #members
"""


def run_all_oneshot(client: redis.Redis, queue: str, state: str) -> int:
    return int(client.eval(_RUN_ALL, 2, K.state_key(queue, state), K.state_key(queue, "pending"),
                           K.task_key_prefix(queue)))


def archive_all_oneshot(client: redis.Redis, queue: str, state: str, now: int) -> int:
    return int(client.eval(_ARCHIVE_ALL, 2, K.state_key(queue, state), K.state_key(queue, "archived"),
                           now, cutoff_for(now), K.ARCHIVE_MAX_SIZE, K.task_key_prefix(queue)))


def delete_all_oneshot(client: redis.Redis, queue: str, state: str) -> int:
    return int(client.eval(_DELETE_ALL, 1, K.state_key(queue, state), K.task_key_prefix(queue)))
