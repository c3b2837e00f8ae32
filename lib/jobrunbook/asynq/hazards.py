"""Data health beyond one queue: what users of each asynq release trip over, and the exact repair.

- ids in a state's set whose hash says another state (asynq#1085: a v0.25+
  worker's archive script failing half way on Redis < 6.2 leaves the id in
  ``archived`` with its hash still ``state=active``; asynq then refuses to
  delete it, "cannot delete task in active state"): repaired by
  ``jobrunbook remediate fix-state`` (dry run first; it exports first);
- a Redis older than 6.2 under a v0.25+ worker: the hazard that makes them
  (the worker's archive uses ``ZRANGE ... BYSCORE``);
- queues that have keys but are missing from ``asynq:queues`` (asynq#946:
  v0.25+ producers register a queue once per process, so one removed while
  they run stays unregistered): invisible to asynq's Inspector, CLI and
  asynqmon; found by a bounded SCAN, re-registered with ``SADD``;
- orphaned hashes (beyond the archive cap, asynq#847), from ``health``.

``check_data_health`` gathers them with each queue's ``Health`` and the
version reading into one JSON-able dict; ``repair_commands`` lists what to run.
"""

from __future__ import annotations

import re
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field

import redis

from jobrunbook.asynq import keys as K
from jobrunbook.asynq.aggregate import FailureAggregate
from jobrunbook.asynq.connection import translate_errors
from jobrunbook.asynq.health import Health, check_health
from jobrunbook.asynq.versions import Behaviour, VersionReading, parse_redis_version

__all__ = ["Unregistered", "unregistered_queues", "redis_hazard", "repair_commands", "check_data_health",
           "MAX_SCAN_KEYS"]

MAX_SCAN_KEYS = 200_000  # keys looked at by the unregistered-queue SCAN before it stops and says so
_QUEUE_OF = re.compile(rb"^asynq:\{(.+?)\}:")


@dataclass
class Unregistered:
    """Queues whose keys exist but whose name is not in ``asynq:queues``."""

    queues: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> keys seen, pending, retry, archived
    keys_scanned: int = 0
    complete: bool = True  # False: the SCAN stopped at max_keys

    def to_dict(self) -> dict:
        return asdict(self)


def unregistered_queues(client: redis.Redis, *, max_keys: int = MAX_SCAN_KEYS, count: int = 1000) -> Unregistered:
    """SCAN ``asynq:{*}:*`` (at most ``max_keys`` keys, ``count`` per call) for queues asynq:queues lacks."""
    out = Unregistered()
    with translate_errors(client, doing=" looking for unregistered queues"):
        known = {m for m in client.smembers(K.ALL_QUEUES)}
        seen: dict[bytes, int] = {}
        cursor = 0
        while True:
            cursor, found = client.scan(cursor=cursor, match="asynq:{*}:*", count=count)
            out.keys_scanned += len(found)
            for key in found:
                m = _QUEUE_OF.match(key)
                if m and m.group(1) not in known:
                    seen[m.group(1)] = seen.get(m.group(1), 0) + 1
            if cursor == 0:
                break
            if out.keys_scanned >= max_keys:
                out.complete = False
                break
        for raw, n in sorted(seen.items()):
            q = raw.decode("utf-8", "backslashreplace")
            pipe = client.pipeline(transaction=False)
            pipe.llen(K.state_key(q, "pending"))
            pipe.zcard(K.state_key(q, "retry"))
            pipe.zcard(K.state_key(q, "archived"))
            pending, retry, archived = pipe.execute()
            out.queues[q] = {"keys": n, "pending": int(pending), "retry": int(retry), "archived": int(archived)}
    return out


def redis_hazard(redis_version: str | None, behaviour: Behaviour, *, assumed_by_default: bool = False) -> str | None:
    """The failed-archive hazard: a v0.25+ worker on a Redis older than its archive script needs."""
    have = parse_redis_version(redis_version)
    need = (6, 2)
    if have is None or have[:2] >= need:
        return None
    if behaviour.archive_min_redis:
        return (f"Redis {redis_version} is older than 6.2 and asynq {behaviour.version}'s archive script uses "
                f"ZRANGE ... BYSCORE: every archive fails half way (Redis does not roll a failed script back), "
                f"leaving the id in archived with its hash still state=active (asynq#1085); upgrade Redis to 6.2+ "
                f"or pin the worker to asynq v0.24.1")
    if assumed_by_default:
        return (f"Redis {redis_version} is older than 6.2: fine for asynq v0.24.x, but a v0.25+ worker's archive "
                f"fails half way on it (asynq#1085); set asynq_version to the worker's release to know")
    return None


def repair_commands(health: dict[str, Health], unregistered: Unregistered, *, redis_url: str = "",
                    archive_cap: int = K.ARCHIVE_MAX_SIZE) -> list[dict]:
    """What to run for each problem found: {problem, queue, count, commands}; every change a dry run first."""
    flag = f" --redis-url {redis_url}" if redis_url else ""
    cli = f"redis-cli -u {redis_url}" if redis_url else "redis-cli"
    out = []
    for q, h in health.items():
        mismatched = sum(f.count for f in h.state_mismatch.values())
        if mismatched:
            out.append({"problem": "state mismatch", "queue": q, "count": mismatched,
                        "why": "ids in a state whose hash names another state (asynq#1085): asynq's Inspector "
                               "cannot delete or run them",
                        "commands": [f"jobrunbook remediate fix-state --queue {q}{flag}",
                                     f"jobrunbook remediate fix-state --queue {q}{flag} --confirm {mismatched}"]})
        if h.orphans.count:
            out.append({"problem": "orphaned hashes", "queue": q, "count": h.orphans.count,
                        "why": f"task hashes in no state (asynq#847: asynq's archive trim past the {archive_cap:,} "
                               "cap leaves them; a v0.25+ worker's own archive deletes them)",
                        "commands": [f"jobrunbook remediate orphans --queue {q}{flag}",
                                     f"jobrunbook remediate orphans --queue {q}{flag} --confirm {h.orphans.count}"]})
    for q, info in unregistered.queues.items():
        out.append({"problem": "unregistered queue", "queue": q, "count": info["keys"],
                    "why": f"{info['keys']:,} key(s) (pending {info['pending']:,}, retry {info['retry']:,}, archived "
                           f"{info['archived']:,}) but not in asynq:queues (asynq#946): asynq's Inspector, CLI and "
                           "asynqmon do not show it",
                    "commands": [f"{cli} SADD {K.ALL_QUEUES} {q}"]})
    return out


def check_data_health(client: redis.Redis, queues: list[str], reading: VersionReading, *,
                      archive_cap: int = K.ARCHIVE_MAX_SIZE, redis_url: str = "",
                      max_scan_keys: int = MAX_SCAN_KEYS, max_hashes: int | None = None,
                      aggregate: FailureAggregate | Future | None = None) -> dict:
    """Every check above, as one JSON-able dict: version, hazards, per-queue health, unregistered, repairs.
    ``max_hashes``: per queue, the task hashes looked at for orphans (None: all). ``aggregate``: the failed
    tasks' aggregate of these queues, whose pass checks every retry and archived id (not read again here),
    or the future of one still reading: the rest is checked meanwhile and its result awaited at the end."""

    def from_aggregate(queue: str):
        def known() -> tuple[dict | None, set | None]:
            agg = aggregate.result() if isinstance(aggregate, Future) else aggregate
            if not agg.complete:  # stopped early: its states are checked here instead
                return None, None
            return agg.state_checks.get(queue), agg.mismatched_ids.get(queue)
        return known

    health = {q: check_health(client, q, archive_cap=archive_cap, max_hashes=max_hashes,
                              known=from_aggregate(q) if aggregate is not None else None,
                              elsewhere=K.FAILED_STATES if aggregate is not None else ())
              for q in queues}
    unregistered = unregistered_queues(client, max_keys=max_scan_keys)
    hazard = redis_hazard(reading.redis_version, reading.behaviour, assumed_by_default=reading.source == "default")
    repairs = repair_commands(health, unregistered, redis_url=redis_url, archive_cap=archive_cap)
    return {"asynq_version": reading.to_dict(), "redis_version": reading.redis_version, "redis_hazard": hazard,
            "queues": {q: h.to_dict() for q, h in health.items()}, "unregistered": unregistered.to_dict(),
            "repairs": repairs, "archive_cap": archive_cap,
            "ok": not hazard and not repairs and all(h.ok for h in health.values())}
