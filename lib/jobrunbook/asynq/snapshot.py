"""Snapshots of asynq's Redis as JSON lines (the fixtures' ``redis.jsonl`` format).

One key per line, sorted by key::

    {"key": ..., "type": "string|hash|list|set|zset", "ttl_ms": PTTL or -1, "value": ...}

Raw bytes are ``{"b64": ...}``: a string is one such object, a hash maps each
field to one, a list is an array in Redis order, a set a sorted array, a zset
``[[member, score], ...]`` in rank order. Loading replays the commands in the
order a fresh load would (DEL, then HSET/RPUSH/SADD/ZADD in chunks of 500,
then PEXPIRE), so that MEMORY USAGE after a load matches the capture's check.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import redis

from jobrunbook._exceptions import ConfigError, DataError

__all__ = ["load_snapshot", "dump_snapshot"]

_CHUNK = 500
_FLUSH_EVERY = 200


def _raw(value) -> bytes:
    if not isinstance(value, dict) or set(value) != {"b64"}:
        raise DataError(f"expected {{\"b64\": ...}}, got {str(value)[:80]}")
    return base64.b64decode(value["b64"], validate=True)


def _b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def _chunks(seq: list, n: int = _CHUNK):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _queue_record(pipe, rec: dict) -> None:
    key = rec["key"].encode("utf-8")
    kind, value, ttl = rec["type"], rec["value"], rec.get("ttl_ms", -1)
    pipe.delete(key)
    if kind == "string":
        pipe.set(key, _raw(value))
    elif kind == "hash":
        items = [(f.encode("utf-8"), _raw(v)) for f, v in value.items()]
        for part in _chunks(items):
            pipe.hset(key, mapping=dict(part))
    elif kind == "list":
        for part in _chunks([_raw(v) for v in value]):
            pipe.rpush(key, *part)
    elif kind == "set":
        for part in _chunks([_raw(v) for v in value]):
            pipe.sadd(key, *part)
    elif kind == "zset":
        for part in _chunks([(_raw(m), float(s)) for m, s in value]):
            pipe.zadd(key, dict(part))
    else:
        raise DataError(f"unsupported type {kind!r} for key {rec['key']!r}")
    if isinstance(ttl, (int, float)) and ttl > 0:
        pipe.pexpire(key, int(ttl))


def load_snapshot(client: redis.Redis, path: str | Path, *, force: bool = False) -> int:
    """Load a ``redis.jsonl`` snapshot into the client's database; returns the number of keys.

    Refuses a database that already holds keys unless ``force`` (then each key
    of the snapshot replaces its namesake; other keys stay). TTLs count from
    the moment of loading.
    """
    path = Path(path)
    existing = client.dbsize()
    if existing and not force:
        raise ConfigError(f"refusing to load {path.name}: the database already holds {existing} keys",
                          hint="load into an empty database, or pass force=True")
    count = 0
    pipe = client.pipeline(transaction=False)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                _queue_record(pipe, json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{path}:{lineno}: not a snapshot record: {exc}") from None
            count += 1
            if count % _FLUSH_EVERY == 0:
                pipe.execute()
    pipe.execute()
    return count


def _dump_value(client: redis.Redis, key: bytes, kind: str):
    if kind == "string":
        return _b64(client.get(key) or b"")
    if kind == "hash":
        return {f.decode("utf-8", "backslashreplace"): _b64(v) for f, v in sorted(client.hscan_iter(key, count=500))}
    if kind == "list":
        out, start = [], 0
        while True:
            part = client.lrange(key, start, start + _CHUNK - 1)
            out.extend(_b64(v) for v in part)
            if len(part) < _CHUNK:
                return out
            start += _CHUNK
    if kind == "set":
        return [_b64(v) for v in sorted(client.sscan_iter(key, count=500))]
    if kind == "zset":
        out, start = [], 0
        while True:
            part = client.zrange(key, start, start + _CHUNK - 1, withscores=True)
            out.extend([_b64(m), int(s) if float(s).is_integer() else s] for m, s in part)
            if len(part) < _CHUNK:
                return out
            start += _CHUNK
    raise DataError(f"unsupported type {kind!r} for key {key!r}")


def dump_snapshot(client: redis.Redis, path: str | Path, match: str = "asynq:*") -> int:
    """Write every key matching ``match`` to ``path`` in the snapshot format; returns the key count.

    Keys are found with SCAN and read in slices, so no call blocks Redis for
    long. A key that vanishes during the dump is skipped.
    """
    keys = sorted(set(client.scan_iter(match=match, count=1000)))
    path = Path(path)
    count = 0
    with path.open("w", encoding="utf-8") as fh:
        for key in keys:
            kind = client.type(key).decode()
            if kind == "none":
                continue
            ttl = client.pttl(key)
            record = {"key": key.decode("utf-8", "backslashreplace"), "type": kind,
                      "ttl_ms": ttl if ttl and ttl > 0 else -1, "value": _dump_value(client, key, kind)}
            fh.write(json.dumps(record) + "\n")
            count += 1
    return count
