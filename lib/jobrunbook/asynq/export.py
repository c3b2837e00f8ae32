"""Export task hashes before a change, and restore them byte for byte.

An export is JSONL. The first line is a header; then one ``task`` line per
task, captured atomically by a read-only Lua script just before the batch
that changes it:

    {"kind": "task", "queue", "id", "key", "fields": {name: {"b64": ...}},
     "encoding", "ttl_ms", "state", "membership": {"key", "type": "zset"|"list", "score"}
     or null (an orphan), "unique": {"key", "value": {"b64"}, "ttl_ms"} or null,
     "msg_sha1", "exported_at_ms"}

``membership`` is the set the id is in: the one its ``state`` field names,
else any other it is found in (an id whose hash names another state,
asynq#1085), so a restore puts it back where it was. ``fields`` keeps the hash's own field order and ``encoding`` its encoding,
so a restored hash has the same field order (and DUMPs identically: always
for a listpack hash, and for a hashtable one of up to 4 fields, which covers
asynq's msg/state/unique_key/pending_since). After each batch an ``applied`` line lists the ids the script
really changed; ``restore_export`` restores those only (a task skipped
because it changed meanwhile is not rolled back), unless ``everything=True``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from jobrunbook import clock
from jobrunbook._exceptions import DataError, NotFound
from jobrunbook.asynq import keys as K
from jobrunbook.asynq.ops import QueueLock

__all__ = ["capture_tasks", "ExportWriter", "read_export", "restore_export", "RestoreResult"]

_CAPTURE = """
local qp, tp, gp = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local key = tp .. id
  if redis.call("EXISTS", key) == 0 then
    out[#out + 1] = {id, 0}
  else
    local state, group, uk = unpack(redis.call("HMGET", key, "state", "group", "unique_key"))
    local mtype, mkey, score = "", "", false
    if state == "pending" or state == "active" then
      mtype, mkey = "list", qp .. state
      if redis.call("LPOS", mkey, id) then score = "" end
    elseif state == "aggregating" and group then
      mtype, mkey = "zset", gp .. group
      score = redis.call("ZSCORE", mkey, id)
    elseif state == "scheduled" or state == "retry" or state == "archived" or state == "completed" then
      mtype, mkey = "zset", qp .. state
      score = redis.call("ZSCORE", mkey, id)
    end
    if not score then
      -- not where its state field says (asynq#1085): record the set it really is in, if any
      for _, s in ipairs({"pending", "active"}) do
        if not score and redis.call("LPOS", qp .. s, id) then mtype, mkey, score = "list", qp .. s, "" end
      end
      for _, s in ipairs({"scheduled", "retry", "archived", "completed"}) do
        if not score then
          local found = redis.call("ZSCORE", qp .. s, id)
          if found then mtype, mkey, score = "zset", qp .. s, found end
        end
      end
    end
    local uval, uttl = false, -2
    if uk and uk ~= "" then
      uval = redis.call("GET", uk)
      uttl = redis.call("PTTL", uk)
    end
    out[#out + 1] = {id, 1, redis.call("HGETALL", key), redis.call("PTTL", key), mtype, mkey, score,
                     uk or "", uval, uttl, redis.call("OBJECT", "ENCODING", key)}
  end
end
return out
"""


def _b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def _raw(value: dict) -> bytes:
    if not isinstance(value, dict) or set(value) != {"b64"}:
        raise DataError(f"expected {{'b64': ...}} in export, got {str(value)[:80]!r}")
    return base64.b64decode(value["b64"], validate=True)


def _s(b) -> str:
    return b.decode("utf-8", "surrogateescape") if isinstance(b, bytes) else str(b)


def capture_tasks(client: redis.Redis, queue: str, ids: Sequence[str]) -> list[dict]:
    """Read every field, TTL, state membership and unique lock of each task, atomically."""
    if not ids:
        return []
    rows = client.eval(_CAPTURE, 0, K.queue_prefix(queue), K.task_key_prefix(queue), K.queue_prefix(queue) + "g:",
                       *ids)
    now_ms = int(clock.now() * 1000)
    records = []
    for row in rows:
        task_id = _s(row[0])
        if int(row[1]) == 0:
            continue
        flat, ttl, mtype, mkey, score, uk, uval, uttl, encoding = row[2:]
        fields = {_s(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        membership = None
        if mtype and score is not None:
            membership = {"key": _s(mkey), "type": _s(mtype), "score": _s(score) if _s(mtype) == "zset" else None}
        unique = None
        if _s(uk) and uval is not None:
            unique = {"key": _s(uk), "value": _b64(uval), "ttl_ms": int(uttl)}
        msg = fields.get("msg", b"")
        records.append({
            "kind": "task", "queue": queue, "id": task_id, "key": K.task_key(queue, task_id),
            "fields": {name: _b64(value) for name, value in fields.items()}, "encoding": _s(encoding),
            "ttl_ms": int(ttl),
            "state": _s(fields.get("state", b"")), "membership": membership, "unique": unique,
            "msg_sha1": hashlib.sha1(msg).hexdigest(), "exported_at_ms": now_ms,
        })
    return records


class ExportWriter:
    """Appends to one export file, flushing and fsyncing each write: on disk before the change."""

    def __init__(self, path: str | Path, *, queue: str, action: str, command: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.queue = queue
        self.count = 0
        self._write([{"kind": "header", "format": "jobrunbook-export/1", "queue": queue, "action": action,
                      "command": command, "created_ms": int(clock.now() * 1000)}])

    def _write(self, lines: Iterable[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            for line in lines:
                fh.write(json.dumps(line, sort_keys=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def export(self, client: redis.Redis, ids: Sequence[str], *, note: str = "") -> list[str]:
        """Capture and write ``ids``; returns their msg SHA1 in ids order ("" for a missing task)."""
        records = capture_tasks(client, self.queue, ids)
        if note:
            for rec in records:
                rec["note"] = note
        self._write(records)
        self.count += len(records)
        by_id = {rec["id"]: rec["msg_sha1"] for rec in records}
        return [by_id.get(i, "") for i in ids]

    def mark_applied(self, action: str, ids: Sequence[str]) -> None:
        if ids:
            self._write([{"kind": "applied", "action": action, "ids": list(ids)}])


def read_export(path: str | Path) -> tuple[dict, list[dict], set[str]]:
    """Return (header, task records, ids marked applied) of an export file."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"export file {path} does not exist", hint="ls RUN_DIR/exports/")
    header: dict = {}
    tasks: list[dict] = []
    applied: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not JSON ({exc.msg})", hint="an export is JSONL") from None
            kind = rec.get("kind")
            if kind == "header":
                header = rec
            elif kind == "task":
                tasks.append(rec)
            elif kind == "applied":
                applied.update(rec.get("ids", []))
    if header.get("format") != "jobrunbook-export/1":
        raise DataError(f"{path} is not a jobrunbook export (no header line)", hint=f"head -1 {path}")
    return header, tasks, applied


# KEYS: lock, task key; ARGV: token, queue prefix, group prefix, id, force, msg, target type, target key,
# score, group, ttl_ms, unique key, unique value, unique ttl, then field/value pairs
_RESTORE = """
if redis.call("GET", KEYS[1]) ~= ARGV[1] then
  return redis.error_reply("LOCKLOST remediation lock " .. KEYS[1] .. " is not held by this run")
end
local qp, gp, id, force, msg = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ttype, tkey, score, group, ttl = ARGV[7], ARGV[8], ARGV[9], ARGV[10], tonumber(ARGV[11])
local key = KEYS[2]
if redis.call("EXISTS", key) == 1 then
  if redis.call("HGET", key, "msg") ~= msg and force ~= "1" then return -7 end
  local state, cgroup = unpack(redis.call("HMGET", key, "state", "group"))
  if state == "active" then return -1 end
  if state == "pending" then
    redis.call("LREM", qp .. "pending", 0, id)
  elseif state == "aggregating" and cgroup then
    redis.call("ZREM", gp .. cgroup, id)
    if redis.call("ZCARD", gp .. cgroup) == 0 then redis.call("SREM", qp .. "groups", cgroup) end
  elseif state == "scheduled" or state == "retry" or state == "archived" or state == "completed" then
    redis.call("ZREM", qp .. state, id)
  end
  redis.call("DEL", key)
end
local pairs_ = {}
for i = 15, #ARGV do pairs_[#pairs_ + 1] = ARGV[i] end
redis.call("HSET", key, unpack(pairs_))
if ttl > 0 then redis.call("PEXPIRE", key, ttl) end
if ttype == "zset" then
  redis.call("ZADD", tkey, score, id)
  if group ~= "" and tkey == gp .. group then redis.call("SADD", qp .. "groups", group) end
elseif ttype == "list" then
  if not redis.call("LPOS", tkey, id) then redis.call("LPUSH", tkey, id) end
end
if ARGV[12] ~= "" and tonumber(ARGV[14]) > 0 and redis.call("EXISTS", ARGV[12]) == 0 then
  redis.call("SET", ARGV[12], ARGV[13], "PX", ARGV[14])
end
return 1
"""


@dataclass
class RestoreResult:
    restored: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)
    not_applied: list[str] = field(default_factory=list)

    def counts(self) -> dict:
        return {"restored": len(self.restored), "conflicts": len(self.conflicts), "active": len(self.active),
                "not_applied": len(self.not_applied)}


def restore_export(client: redis.Redis, path: str | Path, lock: QueueLock, *, force: bool = False,
                   everything: bool = False, dry_run: bool = False, now_ms: int | None = None) -> RestoreResult:
    """Put the exported tasks back: hash (same field order, TTL), state set and score, unique lock.

    A task whose current ``msg`` differs from the exported one is another task
    under the same id: it is left alone (``conflicts``) unless ``force``. An
    active task is never touched. Only ids marked applied are restored unless
    ``everything``.
    """
    header, tasks, applied = read_export(path)
    if header["queue"] != lock.queue:
        raise DataError(f"export {path} is for queue {header['queue']!r}, lock is for {lock.queue!r}")
    now_ms = int(clock.now() * 1000) if now_ms is None else now_ms
    result = RestoreResult()
    script = client.register_script(_RESTORE)
    q = lock.queue
    for rec in tasks:
        if not everything and rec["id"] not in applied:
            result.not_applied.append(rec["id"])
            continue
        fields = [(name, _raw(v)) for name, v in rec["fields"].items()]
        msg = dict(fields).get("msg", b"")
        mem = rec.get("membership") or {}
        group = _s(dict(fields).get("group", b""))
        uniq = rec.get("unique") or {}
        u_ttl = 0
        if uniq and uniq.get("ttl_ms", -2) > 0:
            u_ttl = max(0, uniq["ttl_ms"] - (now_ms - rec["exported_at_ms"]))
        argv = [lock.token, K.queue_prefix(q), K.queue_prefix(q) + "g:", rec["id"], "1" if force else "0", msg,
                mem.get("type", ""), mem.get("key", ""), mem.get("score") or "", group, rec.get("ttl_ms", -1),
                uniq.get("key", ""), _raw(uniq["value"]) if uniq else b"", u_ttl]
        # a listpack keeps insertion order; a small hashtable iterates its chains newest first, so
        # inserting in reverse gives back the same order (and the same DUMP, up to 4 fields)
        for name, value in (reversed(fields) if rec.get("encoding") == "hashtable" else fields):
            argv += [name, value]
        if dry_run:
            current = client.hget(rec["key"], "msg")
            code = -7 if current is not None and current != msg and not force else 1
        else:
            code = int(script(keys=[lock.key, rec["key"]], args=argv))
        {1: result.restored, -7: result.conflicts, -1: result.active}[code].append(rec["id"])
    return result
