"""Lua scripts that change task state the way asynq's own scripts do.

Written from the semantics of asynq's internal/rdb/rdb.go (enqueue, schedule,
dequeue, done, markAsComplete, retry, archive, forward, listLeaseExpired,
deleteExpiredCompletedTasks), one atomic step per task: a task is never in two
states or in none, and the processed/failed counters, daily (expiring 90 days
after their first increment, UTC dates) and all-time, move in the same step as
the task.
"""

from __future__ import annotations

__all__ = ["ENQUEUE", "SCHEDULE", "DEQUEUE", "DONE", "COMPLETE", "RETRY", "ARCHIVE", "ARCHIVE_V024", "FORWARD",
           "LEASE_EXPIRED", "DELETE_EXPIRED_COMPLETED", "EXTEND_LEASE"]

# KEYS: task, pending | ARGV: msg, id, now_ns
ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'msg', ARGV[1], 'state', 'pending', 'pending_since', ARGV[3])
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""

# KEYS: task, scheduled | ARGV: msg, process_at, id
SCHEDULE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'msg', ARGV[1], 'state', 'scheduled')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# KEYS: pending, paused, active, lease | ARGV: lease expiry (unix s), task key prefix
DEQUEUE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return nil end
local id = redis.call('RPOPLPUSH', KEYS[1], KEYS[3])
if not id then return nil end
local key = ARGV[2] .. id
redis.call('HSET', key, 'state', 'active')
redis.call('HDEL', key, 'pending_since')
redis.call('ZADD', KEYS[4], ARGV[1], id)
return redis.call('HGET', key, 'msg')
"""

_COUNT = """
local function bump(key, expire_at)
  if tonumber(redis.call('INCR', key)) == 1 then redis.call('EXPIREAT', key, expire_at) end
end
"""

# KEYS: active, lease, task, processed:day, processed | ARGV: id, stats expire_at
DONE = _COUNT + """
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then return redis.error_reply('NOT FOUND') end
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return redis.error_reply('NOT FOUND') end
if redis.call('DEL', KEYS[3]) == 0 then return redis.error_reply('NOT FOUND') end
bump(KEYS[4], ARGV[2])
redis.call('INCR', KEYS[5])
return 1
"""

# KEYS: active, lease, completed, task, processed:day, processed | ARGV: id, stats expire_at, expires, msg
COMPLETE = _COUNT + """
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then return redis.error_reply('NOT FOUND') end
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return redis.error_reply('NOT FOUND') end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[4], 'msg', ARGV[4], 'state', 'completed')
bump(KEYS[5], ARGV[2])
redis.call('INCR', KEYS[6])
return 1
"""

# KEYS: task, active, lease, retry, processed:day, failed:day, processed, failed
# ARGV: id, msg, retry_at, stats expire_at
RETRY = _COUNT + """
if redis.call('LREM', KEYS[2], 0, ARGV[1]) == 0 then return redis.error_reply('NOT FOUND') end
if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then return redis.error_reply('NOT FOUND') end
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[1], 'msg', ARGV[2], 'state', 'retry')
bump(KEYS[5], ARGV[4])
bump(KEYS[6], ARGV[4])
redis.call('INCR', KEYS[7])
redis.call('INCR', KEYS[8])
return 1
"""

# asynq v0.25.0+'s archive: the trim deletes the hashes of the ids it drops (asynq#743)
# KEYS: task, active, lease, archived, processed:day, failed:day, processed, failed, task prefix
# ARGV: id, msg, now, cutoff (now - 90 days), max archive size, stats expire_at
ARCHIVE = _COUNT + """
if redis.call('LREM', KEYS[2], 0, ARGV[1]) == 0 then return redis.error_reply('NOT FOUND') end
if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then return redis.error_reply('NOT FOUND') end
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[4])
for _, id in ipairs(old) do redis.call('DEL', KEYS[9] .. id); redis.call('ZREM', KEYS[4], id) end
local extra = redis.call('ZRANGE', KEYS[4], 0, -tonumber(ARGV[5]))
for _, id in ipairs(extra) do redis.call('DEL', KEYS[9] .. id); redis.call('ZREM', KEYS[4], id) end
redis.call('HSET', KEYS[1], 'msg', ARGV[2], 'state', 'archived')
bump(KEYS[5], ARGV[6])
bump(KEYS[6], ARGV[6])
redis.call('INCR', KEYS[7])
redis.call('INCR', KEYS[8])
return 1
"""

# asynq v0.24.x's archive: the same, but the trim drops ids only (ZREMRANGEBYSCORE / ZREMRANGEBYRANK) and leaves
# their hashes behind (asynq#847); same KEYS and ARGV as ARCHIVE
ARCHIVE_V024 = _COUNT + """
if redis.call('LREM', KEYS[2], 0, ARGV[1]) == 0 then return redis.error_reply('NOT FOUND') end
if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then return redis.error_reply('NOT FOUND') end
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -tonumber(ARGV[5]))
redis.call('HSET', KEYS[1], 'msg', ARGV[2], 'state', 'archived')
bump(KEYS[5], ARGV[6])
bump(KEYS[6], ARGV[6])
redis.call('INCR', KEYS[7])
redis.call('INCR', KEYS[8])
return 1
"""

# KEYS: scheduled|retry, pending | ARGV: now (unix s), task prefix, now_ns
FORWARD = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, id in ipairs(ids) do
  redis.call('LPUSH', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HSET', ARGV[2] .. id, 'state', 'pending', 'pending_since', ARGV[3])
end
return #ids
"""

# KEYS: lease | ARGV: cutoff, task prefix -> msgs of tasks whose lease expired before cutoff
LEASE_EXPIRED = """
local res = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
  local msg = redis.call('HGET', ARGV[2] .. id, 'msg')
  if msg then table.insert(res, msg) end
end
return res
"""

# KEYS: completed | ARGV: now, task prefix, batch
DELETE_EXPIRED_COMPLETED = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('DEL', ARGV[2] .. id); redis.call('ZREM', KEYS[1], id) end
return #ids
"""

# KEYS: lease | ARGV: expiry, ids...
EXTEND_LEASE = """
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i]) end
return #ARGV - 1
"""
