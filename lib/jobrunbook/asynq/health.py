"""Health of one queue's data: what asynq itself would trip over.

- ids in a state list/zset whose task hash is missing;
- ids in a state whose hash's ``state`` field names another state;
- task hashes in no state at all (orphans, asynq#847: the archive trim drops
  ids from the archived zset but leaves their hashes behind), or with no
  ``state`` field; an id found in another state's set (a mismatch, above) is
  not an orphan;
- the archive's size against asynq's cap (10,000 unless configured:
  ``archive_max_size``; an archive keeps the newest cap - 1).

``jobrunbook.asynq.hazards`` adds the checks beyond one queue and the repairs.

Everything is read in slices: ranks of a list/zset in Lua batches of
``batch`` ids (250), task hashes with SCAN COUNT ``batch`` and a Lua check per
slice (a hash read and a set lookup per key: 500 keys a call took up to 12 ms
on a busy 2-core machine), so no single call blocks Redis for more than a few
milliseconds.
Memory is bounded: only counts and up to ``examples`` ids per finding are
kept (plus, for the orphan check of the pending/active lists, the ids of
hashes that claim those states, capped at ``max_list_candidates``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import redis

from jobrunbook.asynq import keys
from jobrunbook.asynq.connection import translate_errors

__all__ = ["Health", "check_health"]

# For ids KEYS[1][ARGV[1]..ARGV[2]] (a list when ARGV[4]=='list'): the ids
# whose hash is missing and the ids whose state field is not ARGV[5].
_STATE_SLICE_LUA = """
local ids
if ARGV[4] == 'list' then ids = redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])
else ids = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2]) end
local missing, wrong = {}, {}
for _, id in ipairs(ids) do
  local st = redis.call('HGET', ARGV[3] .. id, 'state')
  if not st then
    if redis.call('EXISTS', ARGV[3] .. id) == 0 then missing[#missing + 1] = id
    else wrong[#wrong + 1] = id; wrong[#wrong + 1] = '' end
  elseif st ~= ARGV[5] then wrong[#wrong + 1] = id; wrong[#wrong + 1] = st end
end
return {#ids, missing, wrong}
"""

# For task hash keys KEYS[i]: the state field and whether the id is in that
# state's zset (lists are checked afterwards, from the client). Returns
# triples key, state, flag (1 in its zset, 0 not, 2 list state: unchecked).
_HASH_SLICE_LUA = """
local out = {}
local plen = string.len(ARGV[1])
for _, key in ipairs(KEYS) do
  local st, grp = unpack(redis.call('HMGET', key, 'state', 'group'))
  local id = string.sub(key, plen + 1)
  local flag = 0
  if not st then st = ''
  elseif st == 'pending' or st == 'active' then flag = 2
  elseif st == 'aggregating' then
    if grp and redis.call('ZSCORE', ARGV[2] .. 'g:' .. grp, id) then flag = 1 end
  elseif st == 'scheduled' or st == 'retry' or st == 'archived' or st == 'completed' then
    if redis.call('ZSCORE', ARGV[2] .. st, id) then flag = 1 end
  end
  if flag ~= 1 then out[#out + 1] = id; out[#out + 1] = st; out[#out + 1] = flag end
end
return out
"""


@dataclass
class Finding:
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, item: str, limit: int) -> None:
        self.count += 1
        if len(self.examples) < limit:
            self.examples.append(item)


@dataclass
class Health:
    queue: str
    missing_hash: dict[str, Finding]       # state -> ids listed there whose hash is gone
    state_mismatch: dict[str, Finding]     # state -> ids there whose hash says "id=other"
    orphans: Finding                       # hashes in no state ("id (state field)")
    no_state_field: Finding
    archive_size: int
    archive_cap: int
    tasks_scanned: int
    ids_checked: int
    list_check_skipped: bool = False       # too many pending/active hashes to verify list membership
    hashes_complete: bool = True           # False: the orphan scan stopped at max_hashes task hashes

    @property
    def archive_headroom(self) -> int:
        return self.archive_cap - self.archive_size

    @property
    def ok(self) -> bool:
        return not (sum(f.count for f in self.missing_hash.values()) or
                    sum(f.count for f in self.state_mismatch.values()) or
                    self.orphans.count or self.no_state_field.count)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["archive_headroom"] = self.archive_headroom
        d["ok"] = self.ok
        return d


def _s(b: bytes | str) -> str:
    return b.decode("utf-8", "backslashreplace") if isinstance(b, bytes) else str(b)


def check_health(client: redis.Redis, queue: str, *, batch: int = 250, examples: int = 5,
                 max_list_candidates: int = 200_000, archive_cap: int = keys.ARCHIVE_MAX_SIZE,
                 max_hashes: int | None = None, known: Mapping[str, dict] | Callable[[], tuple] | None = None,
                 misplaced: set[str] | None = None, elsewhere: tuple[str, ...] = ()) -> Health:
    """Check one queue's data (see the module doc). Raises ``RedisUnavailable`` if Redis goes away.

    ``max_hashes``: look at no more task hashes than this for orphans (a runbook run bounds its time this
    way; ``hashes_complete`` then says the scan stopped); the ids of every state are checked regardless.
    ``known``: states already checked id by id elsewhere (the failed-task aggregate checks retry and
    archived in its own pass: ``FailureAggregate.state_checks[queue]``), not read again, with ``misplaced``
    the ids that check found in a set their hash does not name; or a function returning both, called once
    the rest is checked (the aggregate may still be reading meanwhile), for the states ``elsewhere`` (a
    state it does not return is checked here then)."""
    prefix = keys.task_key_prefix(queue)
    qprefix = keys.queue_prefix(queue)
    state_slice = client.register_script(_STATE_SLICE_LUA)
    hash_slice = client.register_script(_HASH_SLICE_LUA)
    missing = {s: Finding() for s in ("pending", "active") + keys.ZSET_STATES}
    mismatch = {s: Finding() for s in missing}
    orphans, no_state = Finding(), Finding()
    counts = {"ids": 0, "scanned": 0}
    list_candidates: dict[str, dict[str, bool]] = {"pending": {}, "active": {}}
    misplaced = set(misplaced or ())  # ids in a set their hash does not name: mismatches, not orphans
    # hashes in no state, or in none their state names: judged once every misplaced id is known
    suspects: list[tuple[Finding, str, str]] = []
    too_many = False
    later = set(elsewhere) if callable(known) else set(known or ())

    def check_state(state: str) -> None:
        kind = "list" if state in ("pending", "active") else "zset"
        skey = keys.state_key(queue, state)
        start = 0
        while True:
            n, gone, wrong = state_slice(keys=[skey], args=[start, start + batch - 1, prefix, kind, state])
            for tid in gone:
                missing[state].add(_s(tid), examples)
            for i in range(0, len(wrong), 2):
                mismatch[state].add(f"{_s(wrong[i])}={_s(wrong[i + 1]) or '(none)'}", examples)
                if len(misplaced) < max_list_candidates:
                    misplaced.add(_s(wrong[i]))
            counts["ids"] += n
            if n < batch:
                break
            start += batch

    with translate_errors(client, doing=f" checking the health of queue {queue!r}"):
        # 1. every id of every state (but those checked elsewhere): hash present, state field agrees
        for state in missing:
            if state not in later:
                check_state(state)
        # 2. every task hash (or the first max_hashes): in the state it names
        complete = True
        for chunk in _scan_chunks(client, prefix + "*", batch):
            if max_hashes is not None and counts["scanned"] >= max_hashes:
                complete = False
                break
            counts["scanned"] += len(chunk)
            out = hash_slice(keys=chunk, args=[prefix, qprefix])
            for i in range(0, len(out), 3):
                tid, st, flag = _s(out[i]), _s(out[i + 1]), int(out[i + 2])
                if flag == 2 and st:
                    cands = list_candidates[st]
                    if len(cands) < max_list_candidates:
                        cands[tid] = False
                    else:
                        too_many = True
                elif len(suspects) < max_list_candidates:
                    suspects.append((no_state, tid, tid) if not st else (orphans, tid, f"{tid} ({st})"))
                elif tid not in misplaced:
                    (no_state if not st else orphans).add(tid if not st else f"{tid} ({st})", examples)
        # 3. hashes that claim pending/active: look for them in the lists, in slices
        for st, cands in list_candidates.items():
            start = 0
            while cands:
                ids = client.lrange(keys.state_key(queue, st), start, start + batch - 1)
                for tid in ids:
                    t = _s(tid)
                    if t in cands:
                        cands[t] = True
                if len(ids) < batch:
                    break
                start += batch
        # 4. the states checked elsewhere, and the ids found misplaced there
        found, elsewhere_misplaced = known() if callable(known) else (known, misplaced)
        for state in later:
            done = (found or {}).get(state)
            if done is None:  # not checked after all (the aggregate stopped early): checked here
                check_state(state)
                continue
            missing[state] = Finding(done.get("missing", 0), list(done.get("missing_examples", []))[:examples])
            mismatch[state] = Finding(done.get("mismatch", 0), list(done.get("mismatch_examples", []))[:examples])
            counts["ids"] += done.get("ids", 0)
        misplaced |= set(elsewhere_misplaced or ())
        for finding, tid, text in suspects:
            if tid not in misplaced:
                finding.add(text, examples)
        for st, cands in list_candidates.items():
            for tid, seen in cands.items():
                if not seen and tid not in misplaced:
                    orphans.add(f"{tid} ({st})", examples)
        archive_size = client.zcard(keys.state_key(queue, "archived"))
    return Health(queue=queue, missing_hash=missing, state_mismatch=mismatch, orphans=orphans,
                  no_state_field=no_state, archive_size=archive_size, archive_cap=archive_cap,
                  tasks_scanned=counts["scanned"], ids_checked=counts["ids"], list_check_skipped=too_many,
                  hashes_complete=complete)


def _scan_chunks(client: redis.Redis, match: str, batch: int):
    cursor, pending = 0, []
    while True:
        cursor, found = client.scan(cursor=cursor, match=match, count=batch)
        pending.extend(found)
        while len(pending) >= batch:
            yield pending[:batch]
            pending = pending[batch:]
        if cursor == 0:
            break
    if pending:
        yield pending
