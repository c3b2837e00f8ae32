"""The leftovers asynq itself leaves behind (and one page of a state, for looking at them).

- ``list_tasks``: one page of a state, newest failure data decoded (the
  runbook's ``asynq task ls``). Clearing retry and deleting old archived tasks
  are plans for ``jobrunbook.remediate`` (``TaskFilter(state="retry")`` with
  action archive; ``TaskFilter(state="archived", score_before=...)`` with
  action delete), so they get the cap check, export and audit.
- ``find_orphans``: task hashes whose id is in no set at all
  (asynq#847; asynq's archive trim leaves exactly those). One whose id is in
  another state's set than its hash names (asynq#1085) is no orphan:
  ``fix_state`` repairs it. Invisible to asynq,
  they still hold memory and block their id.
- ``find_blocking_ids``: archived tasks (and orphans) whose id the producer
  chose (not a UUID): asynq refuses to enqueue that id again while the hash
  exists (ErrTaskIDConflict, asynq#492).
- ``clean_orphans``: export, then delete each orphan hash in a Lua batch that
  re-checks it is still orphaned; dry run unless confirmed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import redis

from jobrunbook._exceptions import NotFound, RemediationRefused
from jobrunbook.asynq import keys as K
from jobrunbook.asynq.export import ExportWriter
from jobrunbook.asynq.messages import decode_task
from jobrunbook.asynq.ops import MAX_BATCH, acquire_lock, apply_in_batches
from jobrunbook.fingerprint import fingerprint
from jobrunbook.remediate.audit import actor, append_audit, export_path
from jobrunbook.remediate.plan import check_queue, confirm_margin

__all__ = ["list_tasks", "find_orphans", "find_blocking_ids", "clean_orphans", "Orphan", "is_generated_id"]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_generated_id(task_id: str) -> bool:
    """asynq's default ids are UUIDs; anything else was chosen by the producer (asynq.TaskID)."""
    return bool(_UUID.match(task_id))


def list_tasks(client: redis.Redis, queue: str, state: str, *, page: int = 1, size: int = 30) -> list[dict]:
    """One page of ``state`` in asynq's order, each task decoded (payload left out)."""
    check_queue(client, queue)
    key = K.state_key(queue, state)
    start = (max(page, 1) - 1) * size
    if state in K.ZSET_STATES:
        rows = client.zrange(key, start, start + size - 1, withscores=True)
    else:
        rows = [(m, None) for m in client.lrange(key, start, start + size - 1)]
    pipe = client.pipeline(transaction=False)
    for member, _ in rows:
        pipe.hget(K.task_key(queue, member.decode()), "msg")
    out = []
    for (member, score), raw in zip(rows, pipe.execute(), strict=True):
        msg = decode_task(raw)
        row = {"id": member.decode(), "state": state, "score": int(score) if score is not None else None}
        if msg:
            row.update(type=msg.type, retried=msg.retried, retry=msg.retry, last_failed_at=msg.last_failed_at,
                       error=msg.error_msg[:300], fingerprint=fingerprint(msg.error_msg))
        else:
            row["error"] = "(hash missing or msg undecodable)"
        out.append(row)
    return out


@dataclass
class Orphan:
    id: str
    state: str | None
    type: str | None

    def to_dict(self) -> dict:
        return {"id": self.id, "state": self.state, "type": self.type}


def find_orphans(client: redis.Redis, queue: str, *, count: int = 1000) -> list[Orphan]:
    """Task hashes of ``queue`` whose id is not in the set of their ``state`` (SCAN, paged)."""
    check_queue(client, queue)
    prefix = K.task_key_prefix(queue)
    pattern = prefix.replace("[", "\\[").replace("?", "\\?").replace("*", "\\*") + "*"
    orphans: list[Orphan] = []
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, match=pattern, count=count)
        if keys:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, "state", "group", "msg")
            rows = pipe.execute()
            pipe = client.pipeline(transaction=False)
            for key, (state, group, _) in zip(keys, rows, strict=True):
                task_id = key.decode()[len(prefix):]
                s = state.decode() if state else None
                if s in ("pending", "active"):
                    pipe.lpos(K.state_key(queue, s), task_id)
                elif s == "aggregating" and group:
                    pipe.zscore(K.group_key(queue, group.decode()), task_id)
                elif s in K.ZSET_STATES:
                    pipe.zscore(K.state_key(queue, s), task_id)
                else:
                    pipe.echo("")  # no state: never a member
            for key, (state, _group, raw), member in zip(keys, rows, pipe.execute(), strict=True):
                task_id = key.decode()[len(prefix):]
                if (member is None or member == b"") and not _in_any_state(client, queue, task_id):
                    msg = decode_task(raw)
                    orphans.append(Orphan(task_id, state.decode() if state else None, msg.type if msg else None))
        if cursor == 0:
            break
    return orphans


def _in_any_state(client: redis.Redis, queue: str, task_id: str) -> bool:
    """Whether the id is in any state's list or zset (only asked for the few not where their hash says)."""
    pipe = client.pipeline(transaction=False)
    for s in ("pending", "active"):
        pipe.lpos(K.state_key(queue, s), task_id)
    for s in K.ZSET_STATES:
        pipe.zscore(K.state_key(queue, s), task_id)
    return any(v is not None for v in pipe.execute())


def find_blocking_ids(client: redis.Redis, queue: str) -> list[dict]:
    """Archived tasks and orphans whose producer-chosen id blocks enqueueing that id again (asynq#492)."""
    check_queue(client, queue)
    out = []
    start = 0
    key = K.state_key(queue, "archived")
    while True:
        rows = client.zrange(key, start, start + MAX_BATCH - 1)
        out += [{"id": m.decode(), "state": "archived", "why": "archived with a fixed id"}
                for m in rows if not is_generated_id(m.decode())]
        start += len(rows)
        if len(rows) < MAX_BATCH:
            break
    out += [{"id": o.id, "state": o.state, "why": "orphaned hash with a fixed id"}
            for o in find_orphans(client, queue) if not is_generated_id(o.id)]
    return out


def clean_orphans(client: redis.Redis, queue: str, *, run_dir: str | Path, confirm: int | None = None,
                  max_tasks: int = 10_000, command: str = "") -> dict:
    """Dry run (``confirm`` None) or export-then-delete the orphaned hashes of ``queue``; audited."""
    base = {"command": command, "action": "clean-orphans", "filter": {"queue": queue}}
    found = find_orphans(client, queue)
    if confirm is None:
        entry = {"step": "plan", "dry_run": True, **base, "count": len(found),
                 "sample": [o.to_dict() for o in found[:5]]}
        append_audit(run_dir, entry)
        return entry
    lock = acquire_lock(client, queue, who=actor(), what="clean-orphans")
    try:
        found = find_orphans(client, queue)
        if not found:
            raise NotFound(f"no orphaned task hash in queue {queue!r}")
        if abs(len(found) - confirm) > confirm_margin(confirm) or len(found) > max_tasks:
            msg = f"--confirm {confirm} / --max-tasks {max_tasks} do not fit the {len(found)} orphan(s) found now"
            append_audit(run_dir, {"step": "refused", "dry_run": False, **base, "error": msg})
            raise RemediationRefused(msg, hint="run the dry run again")
        writer = ExportWriter(export_path(run_dir, "clean-orphans", queue), queue=queue,
                              action="clean-orphans", command=command)
        outcome = apply_in_batches(
            client, lock, "delete-orphan", [o.id for o in found],
            before_batch=lambda ids: writer.export(client, ids),
            after_batch=lambda ids, codes: writer.mark_applied(
                "delete-orphan", [i for i, c in zip(ids, codes, strict=True) if c == 1]))
        entry = {"step": "done", "dry_run": False, **base, "matched": len(found), **outcome.counts(),
                 "export": str(writer.path)}
        append_audit(run_dir, entry)
        return entry
    finally:
        lock.release()
