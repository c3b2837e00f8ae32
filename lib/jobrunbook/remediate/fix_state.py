"""Repairing ids whose hash names another state than the set they are in (asynq#1085).

A v0.25+ worker's archive script on Redis < 6.2 fails half way: the id has
left ``active`` and ``lease`` and is in ``archived``, but the hash still says
``state=active`` (and keeps its previous ``msg``). asynq's Inspector then
refuses it ("cannot delete task in active state") and the recoverer never sees
it. The repair makes the hash say the state of the one set its id is in:

    jobrunbook remediate fix-state --queue default                 # dry run: what would change
    jobrunbook remediate fix-state --queue default --confirm 3     # export, then HSET state, in Lua batches

Each id is re-checked inside the script before the write: its hash still
names the same state, the id is still in the set, it is NOT also in the set
its hash names (an id in two states is left alone: which copy is right is not
knowable), its ``msg`` is the one exported, and the caller holds the queue's
lock. An id in ``active`` (a worker may hold it) is never repaired. The
export records where the id really was, so ``jobrunbook restore`` puts the
mismatch back byte for byte.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import redis

from jobrunbook._exceptions import NotFound, RemediationRefused
from jobrunbook.asynq import keys as K
from jobrunbook.asynq.export import ExportWriter
from jobrunbook.asynq.ops import _LOCK_CHECK, MAX_BATCH, BatchOutcome, QueueLock, acquire_lock
from jobrunbook.remediate.audit import actor, append_audit, export_path
from jobrunbook.remediate.plan import check_queue, confirm_margin

__all__ = ["Mismatch", "find_mismatches", "fix_states", "apply_fix_batch"]

_SETS = ("pending", "scheduled", "retry", "archived", "completed")  # where a repaired id may be (never active)

# For ids of one state's set: those whose hash names another state (or none): id, hash state
_FIND = """
local ids
if ARGV[2] == 'list' then ids = redis.call('LRANGE', KEYS[1], ARGV[3], ARGV[4])
else ids = redis.call('ZRANGE', KEYS[1], ARGV[3], ARGV[4]) end
local out = {}
for _, id in ipairs(ids) do
  local st = redis.call('HGET', ARGV[1] .. id, 'state')
  if st and st ~= ARGV[5] then out[#out + 1] = id; out[#out + 1] = st end
end
return {#ids, out}
"""

# KEYS: lock | ARGV: token, queue prefix, task prefix, n, then n x (id, set state, hash state, msg sha1)
_FIX = _LOCK_CHECK + """
local qp, tp, n = ARGV[2], ARGV[3], tonumber(ARGV[4])
local function member(state, id)
  if state == "pending" or state == "active" then
    if redis.call("LPOS", qp .. state, id) then return true end
    return state == "active" and redis.call("ZSCORE", qp .. "lease", id) ~= false
  elseif state == "scheduled" or state == "retry" or state == "archived" or state == "completed" then
    return redis.call("ZSCORE", qp .. state, id) ~= false
  end
  return false
end
local out = {}
for i = 1, n do
  local b = 4 + (i - 1) * 4
  local id, set_state, hash_state, sha = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local key = tp .. id
  local code = 1
  local st, msg = unpack(redis.call("HMGET", key, "state", "msg"))
  if not st then code = 0
  elseif st ~= hash_state then code = -3
  elseif not member(set_state, id) then code = -4
  elseif member(hash_state, id) then code = -8
  elseif sha ~= "" and (not msg or redis.sha1hex(msg) ~= sha) then code = -5 end
  if code == 1 then redis.call("HSET", key, "state", set_state) end
  out[i] = code
end
return out
"""


@dataclass
class Mismatch:
    id: str
    set_state: str   # the set the id is in
    hash_state: str  # what its hash's state field says

    def to_dict(self) -> dict:
        return asdict(self)


def _s(b) -> str:
    return b.decode("utf-8", "surrogateescape") if isinstance(b, bytes) else str(b)


def find_mismatches(client: redis.Redis, queue: str, *, batch: int = 1000) -> list[Mismatch]:
    """Ids of ``queue``'s pending and zset states whose hash names another state, read in slices."""
    check_queue(client, queue)
    script = client.register_script(_FIND)
    out: list[Mismatch] = []
    for state in _SETS:
        kind = "list" if state == "pending" else "zset"
        start = 0
        while True:
            n, rows = script(keys=[K.state_key(queue, state)],
                             args=[K.task_key_prefix(queue), kind, start, start + batch - 1, state])
            out += [Mismatch(_s(rows[i]), state, _s(rows[i + 1])) for i in range(0, len(rows), 2)]
            if n < batch:
                break
            start += batch
    return out


def apply_fix_batch(client: redis.Redis, lock: QueueLock, rows: list[Mismatch], shas: list[str]) -> list[int]:
    """One Lua call over at most MAX_BATCH mismatches; one code per row (``ops.CODES``)."""
    if len(rows) > MAX_BATCH:
        raise ValueError(f"{len(rows)} ids in one batch; at most {MAX_BATCH}")
    argv: list = [lock.token, K.queue_prefix(lock.queue), K.task_key_prefix(lock.queue), len(rows)]
    for row, sha in zip(rows, shas, strict=True):
        argv += [row.id, row.set_state, row.hash_state, sha]
    try:
        return [int(c) for c in client.eval(_FIX, 1, lock.key, *argv)]
    except redis.ResponseError as exc:
        if "LOCKLOST" in str(exc):
            raise RemediationRefused(f"remediation lock of queue {lock.queue!r} lost before a batch; nothing in it "
                                     "changed", hint=f"redis-cli GET '{lock.key}'") from None
        raise


def fix_states(client: redis.Redis, queue: str, *, run_dir: str | Path, confirm: int | None = None,
               max_tasks: int = 10_000, command: str = "", batch_size: int = MAX_BATCH) -> dict:
    """Dry run (``confirm`` None) or export-then-repair the mismatched ids of ``queue``; audited."""
    base = {"command": command, "action": "fix-state", "filter": {"queue": queue}}
    found = find_mismatches(client, queue)
    if confirm is None:
        entry = {"step": "plan", "dry_run": True, **base, "count": len(found),
                 "by_state": _by_state(found), "sample": [m.to_dict() for m in found[:5]],
                 "asynq_equivalent": "none: asynq's Inspector refuses these tasks (asynq#1085)"}
        append_audit(run_dir, entry)
        return entry
    lock = acquire_lock(client, queue, who=actor(), what="fix-state")
    try:
        found = find_mismatches(client, queue)
        if not found:
            raise NotFound(f"no id of queue {queue!r} whose hash names another state",
                           hint=f"jobrunbook inspect --queue {queue}")
        if abs(len(found) - confirm) > confirm_margin(confirm) or len(found) > max_tasks:
            msg = f"--confirm {confirm} / --max-tasks {max_tasks} do not fit the {len(found)} mismatch(es) found now"
            append_audit(run_dir, {"step": "refused", "dry_run": False, **base, "error": msg})
            raise RemediationRefused(msg, hint="run the dry run again")
        writer = ExportWriter(export_path(run_dir, "fix-state", queue), queue=queue, action="fix-state",
                              command=command)
        outcome = BatchOutcome()
        size = max(1, min(batch_size, MAX_BATCH))
        for start in range(0, len(found), size):
            rows = found[start:start + size]
            shas = writer.export(client, [r.id for r in rows])
            lock.renew()
            codes = apply_fix_batch(client, lock, rows, shas)
            outcome.batches += 1
            outcome.add([r.id for r in rows], codes)
            writer.mark_applied("fix-state", [r.id for r, c in zip(rows, codes, strict=True) if c == 1])
        entry = {"step": "done", "dry_run": False, **base, "matched": len(found), **outcome.counts(),
                 "by_state": _by_state(found), "export": str(writer.path)}
        append_audit(run_dir, entry)
        return entry
    finally:
        lock.release()


def _by_state(found: list[Mismatch]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in found:
        key = f"in {m.set_state}, hash says {m.hash_state}"
        out[key] = out.get(key, 0) + 1
    return out

