"""Snapshots: the fixtures' redis.jsonl loads, and dumping it back gives the same records."""

from __future__ import annotations

import json

import pytest
from conftest import SNAPSHOTS, fixture_dir
from jobrunbook._exceptions import ConfigError
from jobrunbook.asynq.snapshot import dump_snapshot, load_snapshot


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_load_then_dump_round_trips(rclient, tmp_path, name):
    src = fixture_dir(name) / "redis.jsonl"
    assert load_snapshot(rclient, src) == sum(1 for line in src.open() if line.strip())
    out = tmp_path / "dump.jsonl"
    dump_snapshot(rclient, out)
    want = [json.loads(line) for line in src.open()]
    got = [json.loads(line) for line in out.open()]
    assert [r["key"] for r in got] == [r["key"] for r in want]  # sorted by key, every key back
    for w, g in zip(want, got, strict=True):
        assert (g["type"], g["value"]) == (w["type"], w["value"])
        assert (g["ttl_ms"] == -1) == (w["ttl_ms"] == -1)
        if w["ttl_ms"] > 0:
            assert 0 < w["ttl_ms"] - g["ttl_ms"] < 60_000
    with pytest.raises(ConfigError, match="already holds"):
        load_snapshot(rclient, src)
    assert load_snapshot(rclient, src, force=True) == len(want)
