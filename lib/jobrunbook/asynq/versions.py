"""Which asynq release wrote the data, and what that release does differently.

Key names did not change from v0.24.1 to v0.26.0; behaviour did (asynq's own
source, ``git diff v0.24.1 v0.26.0``):

- v0.25.0: a recovered panic is recorded as ``panic error cause by: panic
  [file:line]: ...`` (asynq.PanicError); ``RevokeTask`` marks a task done
  (counted processed, never failed); an error IsFailure calls no failure is
  archived once retries are exhausted or on SkipRetry (counted failed; v0.24
  retried it forever); the worker's archive deletes the hashes it trims and
  uses ``ZRANGE ... BYSCORE`` (Redis >= 6.2); queue registration
  (``SADD asynq:queues``) is done once per process (asynq#946).
- v0.26.0: TaskMessage field 15, ``map<string,string> headers``.

What the data can tell is read from it (``detect_version``): headers on a
task's message, the panic text of failed tasks, and the Redis server's own
version; the rest comes from the configuration (``asynq_version``: a release,
or ``infer``, the default, which falls back to v0.24.1 when the data shows
nothing). ``VersionReading.sentence()`` says which version was assumed and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import redis

from jobrunbook._exceptions import ConfigError
from jobrunbook.asynq import keys as K
from jobrunbook.asynq.connection import translate_errors
from jobrunbook.asynq.messages import HEADERS_FIELD, decode_task, wire_fields

__all__ = ["KNOWN_VERSIONS", "DEFAULT_VERSION", "INFER", "Behaviour", "behaviour", "normalize_version",
           "VersionReading", "detect_version", "redis_version", "parse_redis_version", "version_key"]

KNOWN_VERSIONS = ("v0.24.0", "v0.24.1", "v0.25.0", "v0.25.1", "v0.26.0")
DEFAULT_VERSION = "v0.24.1"  # the most common in the field (asynqmon's last release pins it)
INFER = "infer"
_STATES = ("retry", "archived", "completed", "pending", "scheduled")
_WORKER_STATES = ("retry", "archived", "completed")  # messages the worker itself wrote last


def version_key(version: str) -> tuple[int, int, int]:
    a, b, c = version.lstrip("v").split(".")
    return int(a), int(b), int(c)


def normalize_version(text: str | None) -> str:
    """``0.26.0``, ``v0.26.0`` -> ``v0.26.0``; ``infer``/empty -> ``infer``; anything else: ConfigError."""
    value = (text or INFER).strip().lower()
    if value in ("infer", "auto", ""):
        return INFER
    value = "v" + value.lstrip("v")
    if value not in KNOWN_VERSIONS:
        raise ConfigError(f"asynq_version {text!r} is not a release jobrunbook knows "
                          f"(one of {', '.join(KNOWN_VERSIONS)}, or infer)",
                          hint="the worker's go.mod names it: grep hibiken/asynq go.mod; "
                               "or leave asynq_version unset to infer it from the data")
    return value


@dataclass(frozen=True)
class Behaviour:
    """What one asynq release does that jobrunbook depends on."""

    version: str
    panic_wrapped: bool            # "panic error cause by: ..." (v0.25.0+)
    revoke_task: bool              # asynq.RevokeTask exists (v0.25.0+)
    headers: bool                  # TaskMessage field 15 (v0.26.0+)
    archive_deletes_trimmed: bool  # the worker's archive deletes the hashes it trims (v0.25.0+)
    archive_min_redis: tuple[int, int] | None  # the worker's archive script needs this Redis (ZRANGE BYSCORE)
    queue_registration_cached: bool  # SADD asynq:queues once per process (v0.25.0+, asynq#946)
    archives_non_failures: bool    # exhausted / SkipRetry tasks archived whatever IsFailure says (v0.25.0+)

    def to_dict(self) -> dict:
        return asdict(self)


def behaviour(version: str | None) -> Behaviour:
    """The behaviour of ``version`` (``infer`` or None: the default, v0.24.1)."""
    v = normalize_version(version)
    v = DEFAULT_VERSION if v == INFER else v
    new = version_key(v) >= (0, 25, 0)
    return Behaviour(version=v, panic_wrapped=new, revoke_task=new, headers=version_key(v) >= (0, 26, 0),
                     archive_deletes_trimmed=new, archive_min_redis=(6, 2) if new else None,
                     queue_registration_cached=new, archives_non_failures=new)


def parse_redis_version(text: str | None) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in str(text).split(".")[:3])
    except (TypeError, ValueError):
        return None


def redis_version(client: redis.Redis) -> str | None:
    """The server's ``redis_version`` (INFO server); None when INFO is not allowed."""
    try:
        return str(client.info("server").get("redis_version") or "") or None
    except redis.ResponseError:  # INFO renamed or forbidden by an ACL
        return None


@dataclass
class VersionReading:
    """The asynq version a reading assumed, where it came from, and the traces behind it."""

    version: str
    source: str                     # configured | detected | default
    configured: str                 # asynq_version as set: a release or "infer"
    evidence: list[str] = field(default_factory=list)   # what the data showed
    conflicts: list[str] = field(default_factory=list)  # data that contradicts the assumption
    redis_version: str | None = None
    tasks_sampled: int = 0

    @property
    def behaviour(self) -> Behaviour:
        return behaviour(self.version)

    def sentence(self) -> str:
        """One sentence for a report: the version assumed and why."""
        if self.source == "configured":
            why = "as configured (asynq_version)"
        elif self.source == "detected":
            why = "detected from the data: " + "; ".join(self.evidence[:2])
        else:
            why = ("the default: the data shows no trace of the version "
                   "(set asynq_version or JOBRUNBOOK_ASYNQ_VERSION to say it)")
        text = f"Read as asynq {self.version}, {why}."
        if self.source == "detected" and self.version == "v0.25.0" and not self.behaviour.headers:
            text += " (v0.25.0 to v0.26.0 read and change the same; only headers tell v0.26.)"
        if self.conflicts:
            text += " Note: " + "; ".join(self.conflicts[:2]) + "."
        return text

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sentence"] = self.sentence()
        d["behaviour"] = self.behaviour.to_dict()
        return d


# the msg of the first ARGV[2] ids of one state (a list when ARGV[1] == 'list')
_SAMPLE_LUA = """
local ids
if ARGV[1] == 'list' then ids = redis.call('LRANGE', KEYS[1], -tonumber(ARGV[2]), -1)
else ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1) end
local out = {}
for _, id in ipairs(ids) do
  local m = redis.call('HGET', ARGV[3] .. id, 'msg')
  if m then out[#out + 1] = m end
end
return out
"""


def _traces(client: redis.Redis, queues: list[str], sample: int) -> tuple[dict[str, int], int]:
    script = client.register_script(_SAMPLE_LUA)
    seen = dict.fromkeys(("headers_worker", "headers_producer", "unknown_fields", "panic_wrapped", "panic_old"), 0)
    n = 0
    for q in queues:
        for state in _STATES:
            kind = "list" if state == "pending" else "zset"
            for raw in script(keys=[K.state_key(q, state)], args=[kind, sample, K.task_key_prefix(q)]):
                msg = decode_task(raw)
                if msg is None:
                    continue
                n += 1
                try:
                    numbers = {num for num, _ in wire_fields(raw)}
                except ValueError:
                    numbers = set()
                if HEADERS_FIELD in numbers:
                    seen["headers_worker" if state in _WORKER_STATES else "headers_producer"] += 1
                if any(num > HEADERS_FIELD for num in numbers):
                    seen["unknown_fields"] += 1
                err = msg.error_msg
                if err.startswith("panic error cause by: "):
                    seen["panic_wrapped"] += 1
                elif err.startswith(("panic [", "panic: ")):
                    seen["panic_old"] += 1
    return seen, n


def detect_version(client: redis.Redis, queues: list[str], *, configured: str | None = INFER,
                   sample: int = 200) -> VersionReading:
    """Read the version traces of ``queues`` (the first ``sample`` tasks of each state) and decide.

    ``configured`` (a release) wins; the traces are still read and any that
    contradict it are listed in ``conflicts``. With ``infer``: the newest
    version the traces need, else v0.24.1 when only a v0.24 panic text is
    seen (detected) or nothing is (default).
    """
    wanted = normalize_version(configured)
    with translate_errors(client, doing=" reading the asynq version traces"):
        seen, n = _traces(client, queues, sample)
        server = redis_version(client)
    evidence: list[str] = []
    lower = None  # the lowest release the traces allow
    if seen["headers_worker"]:
        evidence.append(f"{seen['headers_worker']} failed or completed task(s) carry headers (TaskMessage field 15), "
                        "which only a v0.26.0+ worker keeps")
        lower = "v0.26.0"
    elif seen["headers_producer"]:
        evidence.append(f"{seen['headers_producer']} pending or scheduled task(s) carry headers (field 15): the "
                        "producer is v0.26.0+ (the worker is taken to be the same)")
        lower = "v0.26.0"
    if seen["panic_wrapped"]:
        evidence.append(f"{seen['panic_wrapped']} failed task(s) record a panic as \"panic error cause by: ...\" "
                        "(asynq.PanicError, v0.25.0+)")
        lower = lower or "v0.25.0"
    if seen["panic_old"]:
        evidence.append(f"{seen['panic_old']} failed task(s) record a panic as \"panic [file:line]: ...\" "
                        "(v0.24.x)")
    if seen["unknown_fields"]:
        evidence.append(f"{seen['unknown_fields']} task(s) carry TaskMessage fields newer than v0.26.0 "
                        "(kept byte for byte, not read)")
    conflicts: list[str] = []
    if lower and seen["panic_old"]:
        conflicts.append("both panic texts are present: a rolling upgrade, or two worker builds on one Redis")
    if wanted != INFER:
        version, source = wanted, "configured"
        if lower and version_key(wanted) < version_key(lower):
            conflicts.append(f"configured {wanted}, but the data needs {lower}+ ({evidence[0]}); check the worker's "
                             "go.mod (grep hibiken/asynq go.mod)")
        elif seen["panic_old"] and not lower and behaviour(wanted).panic_wrapped:
            conflicts.append(f"configured {wanted}, but failed tasks carry v0.24.x panic texts; check the worker's "
                             "go.mod (grep hibiken/asynq go.mod)")
    elif lower:
        version, source = lower, "detected"
    elif seen["panic_old"]:
        version, source = DEFAULT_VERSION, "detected"
    else:
        version, source = DEFAULT_VERSION, "default"
    return VersionReading(version=version, source=source, configured=wanted, evidence=evidence,
                          conflicts=conflicts, redis_version=server, tasks_sampled=n)
