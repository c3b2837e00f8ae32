"""The streaming aggregate of failed tasks, grouped by queue, task type and error fingerprint.

Failed tasks are the members of ``retry`` and ``archived`` (asynq has no state
"failed"). Their ``msg`` fields are read in server-side batches: one Lua call
returns the messages of one rank slice of the zset (``batch`` ids, 500 by
default: about 2.5 ms of Redis time on the 2-core bench machine, where 1,000
ids took about 5 ms), and the next slice is already
requested while this one is decoded, so Redis and the client work in
parallel. Memory stays bounded whatever the number of tasks: one slice at a
time, at most ``max_groups`` named groups (tasks of any further group fold
into an ``(other)`` group of their queue, counted in ``overflow_tasks``), a few example ids per group,
and the distinct error texts a group's fingerprint folds counted up to ``DISTINCT_CAP``.

Anomalies are counted, never raised: a state id whose hash is missing, ``msg``
bytes that are not a TaskMessage, error text that is not UTF-8 (decoded with
replacement characters and still grouped).

If Redis goes away before the first slice is read, ``RedisUnavailable`` is
raised; once reading has started, the result is returned as it stands with
``complete = False`` and ``incomplete_reason`` saying where and why it stopped,
so a report can still show what was read.

Slices are taken by rank, so a zset that changes during the scan (tasks
retried or archived meanwhile) can make a few tasks count twice or not at all;
the result is a view of a moving queue, not an atomic snapshot.
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass, field

import redis
from google.protobuf.message import DecodeError

from jobrunbook._exceptions import RedisUnavailable
from jobrunbook.asynq import asynq_pb2, keys
from jobrunbook.asynq.connection import describe_client, translate_errors
from jobrunbook.asynq.messages import asynq_time, read_varint
from jobrunbook.fingerprint import fingerprint

__all__ = ["FailureGroup", "FailureAggregate", "aggregate_failures", "OTHER", "BATCH_LUA", "DEFAULT_BATCH",
           "DISTINCT_CAP"]

OTHER = "(other)"
# distinct error texts counted per group (three order ids folded into "capture order <n>": 3); past this, "more than"
DISTINCT_CAP = 100
DEFAULT_BATCH = 500  # ids per Lua call: ~2.5 ms of Redis time here; 1,000 took ~5 ms on this machine
MAX_MISPLACED = 200_000  # ids kept per queue whose hash names another state (the orphan check skips them)

# The msg of every id of a rank slice, the ids whose hash is gone, and (given the set's state as ARGV[4]) the
# ids whose hash names another state, each followed by that state: the data-health check of these ids,
# made in the same pass (``FailureAggregate.state_checks``).
BATCH_LUA = """
local ids = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2])
local msgs, gone, wrong = {}, {}, {}
for _, id in ipairs(ids) do
  local h = redis.call('HMGET', ARGV[3] .. id, 'msg', 'state')
  if h[1] then
    msgs[#msgs + 1] = h[1]
    if ARGV[4] and h[2] ~= ARGV[4] then wrong[#wrong + 1] = id; wrong[#wrong + 1] = h[2] or '' end
  else gone[#gone + 1] = id end
end
return {#ids, msgs, gone, wrong}
"""


@dataclass
class FailureGroup:
    queue: str
    task_type: str
    fingerprint: str
    count: int
    retry: int
    archived: int
    first_failed_at: int | None   # unix seconds (last_failed_at of the earliest task)
    last_failed_at: int | None
    retried: dict[int, int]        # retried -> number of tasks
    example_ids: list[str]
    example_error: str
    distinct_errors: int = 1  # distinct error texts the fingerprint folds (DISTINCT_CAP + 1: more than the cap)

    def to_record(self) -> dict:
        d = asdict(self)
        d["first_failed_at_iso"] = asynq_time(self.first_failed_at)
        d["last_failed_at_iso"] = asynq_time(self.last_failed_at)
        d["retried"] = {str(k): v for k, v in sorted(self.retried.items())}
        return d


@dataclass
class FailureAggregate:
    queues: list[str]
    groups: list[FailureGroup]            # most tasks first
    tasks: int                            # tasks decoded and grouped
    by_state: dict[str, int]              # retry / archived -> ids read
    anomalies: dict[str, int]             # missing_hash, corrupt_msg, non_utf8_text
    anomaly_examples: dict[str, list[str]]
    overflow_tasks: int                   # tasks folded into "(other)" groups
    complete: bool = True
    incomplete_reason: str | None = None
    elapsed_seconds: float = 0.0
    # queue -> state -> {"missing": n, "missing_examples", "mismatch": n, "mismatch_examples" ["id=state"],
    # "ids": n read}: every id of these sets checked as ``asynq.health`` checks a state, in the same pass
    state_checks: dict[str, dict[str, dict]] = field(default_factory=dict)
    mismatched_ids: dict[str, set[str]] = field(default_factory=dict, repr=False)  # queue -> ids (bounded)

    def to_records(self) -> list[dict]:
        return [g.to_record() for g in self.groups]

    def to_frame(self):
        """The groups as a pandas DataFrame (pandas is imported only here)."""
        import pandas as pd

        cols = ["queue", "task_type", "fingerprint", "count", "retry", "archived", "first_failed_at",
                "last_failed_at", "retried", "example_ids", "example_error"]
        frame = pd.DataFrame([asdict(g) for g in self.groups], columns=cols)
        for c in ("first_failed_at", "last_failed_at"):
            frame[c] = pd.to_datetime(frame[c], unit="s", utc=True)
        return frame

    def by_task_type(self) -> list[dict]:
        """Failed tasks per (queue, task type), most first."""
        acc: dict[tuple[str, str], dict] = {}
        for g in self.groups:
            row = acc.setdefault((g.queue, g.task_type), {"queue": g.queue, "task_type": g.task_type,
                                                          "count": 0, "retry": 0, "archived": 0, "groups": 0})
            row["count"] += g.count
            row["retry"] += g.retry
            row["archived"] += g.archived
            row["groups"] += 1
        return sorted(acc.values(), key=lambda r: (-r["count"], r["queue"], r["task_type"]))

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("groups", "mismatched_ids")}
        d["groups"] = self.to_records()
        return d


# -- the fallback decoder: a TaskMessage whose text is not UTF-8 ----------------
def _decode_lenient(buf: bytes) -> tuple[str, str, int, int, str] | None:
    """(type, id, retried, last_failed_at, error_msg) read from the wire, text decoded with replacement."""
    fields: dict[int, object] = {}
    i, n = 0, len(buf)
    try:
        while i < n:
            tag, i = read_varint(buf, i)
            num, wire = tag >> 3, tag & 7
            if wire == 0:
                fields[num], i = read_varint(buf, i)
            elif wire == 2:
                size, i = read_varint(buf, i)
                if i + size > n:
                    return None
                fields[num] = buf[i:i + size]
                i += size
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            else:
                return None
        if i != n:
            return None
    except (IndexError, ValueError):
        return None

    def text(num: int) -> str:
        v = fields.get(num, b"")
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else ""

    ttype, tid = text(1), text(3)
    if not ttype and not tid:
        return None
    retried = fields.get(6, 0)
    lfa = fields.get(11, 0)
    return ttype, tid, retried if isinstance(retried, int) else 0, lfa if isinstance(lfa, int) else 0, text(7)


# -- the aggregate ---------------------------------------------------------------
class _Reader:
    """Rank slices of one zset through one connection, the next slice requested before this one is used."""

    def __init__(self, client: redis.Redis, sha: str, key: str, prefix: str, batch: int, state: str) -> None:
        self.client, self.sha, self.key, self.prefix, self.batch, self.state = client, sha, key, prefix, batch, state
        self.conn = client.connection_pool.get_connection()
        self.start = 0

    def send(self) -> None:
        self.conn.send_command("EVALSHA", self.sha, 1, self.key, self.start, self.start + self.batch - 1,
                               self.prefix, self.state)
        self.start += self.batch

    def read(self):
        return self.conn.read_response()

    def close(self, broken: bool) -> None:
        if broken:
            self.conn.disconnect()
        self.client.connection_pool.release(self.conn)


def aggregate_failures(client: redis.Redis, queues: list[str], *, batch: int = DEFAULT_BATCH, max_groups: int = 1000,
                       examples: int = 3, states: tuple[str, ...] = keys.FAILED_STATES) -> FailureAggregate:
    """Group the failed tasks of ``queues`` by (queue, task type, fingerprint of the error).

    Returns a ``FailureAggregate`` (see the module doc for memory, anomalies
    and what happens if Redis goes away mid-scan).
    """
    # The loop makes no reference cycles; the cyclic collector would only rescan the
    # growing groups again and again, so it is paused for the scan.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _aggregate(client, queues, batch=batch, max_groups=max_groups, examples=examples, states=states)
    finally:
        if gc_was_enabled:
            gc.enable()


def _aggregate(client: redis.Redis, queues: list[str], *, batch: int, max_groups: int, examples: int,
               states: tuple[str, ...]) -> FailureAggregate:
    t0 = time.perf_counter()
    with translate_errors(client, doing=" loading the failed-task script"):
        sha = client.script_load(BATCH_LUA)
    if isinstance(sha, bytes):
        sha = sha.decode()
    # stats per (queue, state, type, fp): [count, first, last, retried{}, example ids, example error, type,
    # distinct error texts (at most DISTINCT_CAP + 1)]
    stats: dict[tuple[str, str, str, str], list] = {}
    group_keys: set[tuple[str, str, str]] = set()
    anomalies = {"missing_hash": 0, "corrupt_msg": 0, "non_utf8_text": 0}
    anomaly_examples: dict[str, list[str]] = {k: [] for k in anomalies}
    by_state = dict.fromkeys(states, 0)
    state_checks: dict[str, dict[str, dict]] = {}
    mismatched_ids: dict[str, set[str]] = {}
    complete, reason = True, None
    new_message = asynq_pb2.TaskMessage
    started = False

    for queue in queues:
        prefix = keys.task_key_prefix(queue)
        for state in states:
            local: dict[str, list] = {}   # raw error -> stats entry of the type last seen with it
            reader = _Reader(client, sha, keys.state_key(queue, state), prefix, batch, state)
            check = state_checks.setdefault(queue, {}).setdefault(
                state, {"ids": 0, "missing": 0, "missing_examples": [], "mismatch": 0, "mismatch_examples": []})
            misplaced = mismatched_ids.setdefault(queue, set())
            broken = False
            try:
                reader.send()
                while True:
                    n, msgs, gone, wrong = reader.read()
                    started = True
                    if n == batch:
                        reader.send()
                    by_state[state] += n
                    check["ids"] += n
                    for tid in gone:
                        check["missing"] += 1
                        if len(check["missing_examples"]) < examples:
                            check["missing_examples"].append(tid.decode("utf-8", "backslashreplace"))
                    for i in range(0, len(wrong), 2):
                        tid = wrong[i].decode("utf-8", "backslashreplace")
                        check["mismatch"] += 1
                        if len(check["mismatch_examples"]) < examples:
                            st = wrong[i + 1].decode("utf-8", "backslashreplace") if wrong[i + 1] else "(none)"
                            check["mismatch_examples"].append(f"{tid}={st}")
                        if len(misplaced) < MAX_MISPLACED:
                            misplaced.add(tid)
                    # a fresh message per slice: upb keeps every parse's strings in the
                    # message's arena until the message is dropped
                    pb = new_message()
                    parse = pb.ParseFromString
                    for tid in gone:
                        anomalies["missing_hash"] += 1
                        if len(anomaly_examples["missing_hash"]) < examples:
                            anomaly_examples["missing_hash"].append(f"{queue}/{tid.decode('utf-8', 'replace')}")
                    for raw in msgs:
                        try:
                            parse(raw)
                            ttype, err, lfa, retried, tid = (pb.type, pb.error_msg, pb.last_failed_at,
                                                             pb.retried, pb.id)
                            if not ttype and not tid:
                                raise DecodeError("empty message")
                        except (DecodeError, ValueError, RuntimeError):
                            lenient = _decode_lenient(raw)
                            if lenient is None:
                                anomalies["corrupt_msg"] += 1
                                if len(anomaly_examples["corrupt_msg"]) < examples:
                                    anomaly_examples["corrupt_msg"].append(f"{queue}/{state}: {raw[:40]!r}")
                                continue
                            ttype, tid, retried, lfa, err = lenient
                            anomalies["non_utf8_text"] += 1
                            if len(anomaly_examples["non_utf8_text"]) < examples:
                                anomaly_examples["non_utf8_text"].append(f"{queue}/{tid}")
                        entry = local.get(err)
                        if entry is not None and entry[6] != ttype:
                            entry = None
                        if entry is None:
                            fp = fingerprint(err)
                            gkey = (queue, ttype, fp)
                            if gkey not in group_keys:
                                if len(group_keys) >= max_groups:
                                    gkey = (queue, OTHER, OTHER)
                                    fp = ttype = OTHER
                                group_keys.add(gkey)
                            skey = (queue, state, ttype, fp)
                            entry = stats.get(skey)
                            if entry is None:
                                entry = stats[skey] = [0, lfa, lfa, {}, [], err, ttype, set()]
                            if len(entry[7]) <= DISTINCT_CAP:
                                entry[7].add(err)
                            if len(local) < 100_000:
                                local[err] = entry
                        entry[0] += 1
                        if lfa < entry[1]:
                            entry[1] = lfa
                        elif lfa > entry[2]:
                            entry[2] = lfa
                        r = entry[3]
                        r[retried] = r.get(retried, 0) + 1
                        if len(entry[4]) < examples:
                            entry[4].append(tid)
                    if n < batch:
                        break
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                broken = True
                if not started:
                    with translate_errors(client, doing=" reading failed tasks"):
                        raise exc
                    raise RedisUnavailable(f"Redis at {describe_client(client)} failed: {exc}") from None
                complete = False
                reason = (f"Redis at {describe_client(client)} stopped answering while reading {queue}/{state} "
                          f"after {sum(by_state.values()):,} failed-task ids: {exc}")
                break
            finally:
                reader.close(broken)
        if not complete:
            break
    tasks = sum(e[0] for e in stats.values())
    overflow = sum(e[0] for k, e in stats.items() if k[2] == OTHER)
    groups = _merge(stats, examples)
    return FailureAggregate(queues=list(queues), groups=groups, tasks=tasks, by_state=by_state,
                            anomalies=anomalies, anomaly_examples=anomaly_examples,
                            overflow_tasks=overflow,
                            complete=complete, incomplete_reason=reason,
                            elapsed_seconds=time.perf_counter() - t0, state_checks=state_checks,
                            mismatched_ids=mismatched_ids)


def _merge(stats: dict[tuple[str, str, str, str], list], examples: int) -> list[FailureGroup]:
    merged: dict[tuple[str, str, str], FailureGroup] = {}
    texts: dict[tuple[str, str, str], set[str]] = {}
    for (queue, state, ttype, fp), (count, first, last, retried, ids, err, _type, distinct) in stats.items():
        g = merged.get((queue, ttype, fp))
        if g is None:
            g = merged[(queue, ttype, fp)] = FailureGroup(
                queue=queue, task_type=ttype, fingerprint=fp, count=0, retry=0, archived=0,
                first_failed_at=first or None, last_failed_at=last or None, retried={}, example_ids=[],
                example_error=err)
        seen = texts.setdefault((queue, ttype, fp), set())
        for text in distinct:
            if len(seen) > DISTINCT_CAP:
                break
            seen.add(text)
        g.distinct_errors = len(seen)
        g.count += count
        if state == "retry":
            g.retry += count
        elif state == "archived":
            g.archived += count
        if first and (g.first_failed_at is None or first < g.first_failed_at):
            g.first_failed_at = first
        if last and (g.last_failed_at is None or last > g.last_failed_at):
            g.last_failed_at = last
        for k, v in retried.items():
            g.retried[k] = g.retried.get(k, 0) + v
        g.example_ids.extend(ids[: max(0, examples - len(g.example_ids))])
    return sorted(merged.values(), key=lambda g: (-g.count, g.queue, g.task_type, g.fingerprint))
