"""Which asynq release the data was written by: detected where the data tells, configured where it cannot."""

from __future__ import annotations

import pytest
from _asynq_helpers import put_task
from conftest import SNAPSHOTS, fixture_version, load_fixture_snapshot
from jobrunbook._exceptions import ConfigError
from jobrunbook.asynq.inspector import Inspector
from jobrunbook.asynq.versions import KNOWN_VERSIONS, behaviour, normalize_version
from jobrunbook.config import load_config

# calendar-sensitive (daily counters, expiries, windows, deadlines): `make test-dates` runs these under faketime
pytestmark = pytest.mark.dates

# what each capture's data can tell: the panic text (v0.25+ wraps it), headers (v0.26+ only); crash/ and
# dependency-down/ hold neither, so they are read as the default v0.24.1 and say so
EXPECTED = {"mixed": ("v0.24.1", "detected"), "dependency-down": ("v0.24.1", "default"),
            "bad-deploy": ("v0.24.1", "detected"), "v0.26/mixed": ("v0.25.0", "detected"),
            "v0.26/bad-deploy": ("v0.25.0", "detected"), "v0.26/crash": ("v0.24.1", "default"),
            "v0.26/headers": ("v0.26.0", "detected")}


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_each_capture_is_read_as_what_its_data_shows(rclient, name):
    load_fixture_snapshot(rclient, name)
    r = Inspector(rclient).version()
    assert (r.version, r.source) == EXPECTED[name]
    assert r.redis_version and r.redis_version.split(".")[0].isdigit()  # the fixtures' Redis is 7.x
    assert r.tasks_sampled == sum(rclient.zcard(f"asynq:{{{q}}}:{s}") for q in ("critical", "default")
                                  for s in ("retry", "archived", "completed"))
    text = r.sentence()
    assert text.startswith(f"Read as asynq {r.version}, ")
    if r.source == "default":
        assert "no trace of the version" in text and "asynq_version" in text
    # never newer than what wrote it: the reading is a lower bound the data proves
    assert behaviour(r.version).panic_wrapped <= behaviour(fixture_version(name)).panic_wrapped
    assert not r.conflicts


def test_configuration_wins_and_contradicting_data_is_said(rclient):
    load_fixture_snapshot(rclient, "v0.26/headers")
    r = Inspector(rclient).version(configured="v0.24.1")
    assert (r.version, r.source) == ("v0.24.1", "configured")
    assert "as configured" in r.sentence()
    assert r.conflicts and "needs v0.26.0+" in r.conflicts[0] and "go.mod" in r.conflicts[0]
    same = Inspector(rclient).version(configured="0.26.0")
    assert (same.version, same.conflicts) == ("v0.26.0", [])
    rclient.flushall()
    load_fixture_snapshot(rclient, "mixed")  # v0.24 panic texts
    r = Inspector(rclient).version(configured="v0.25.1")
    assert r.version == "v0.25.1" and "v0.24.x panic texts" in r.conflicts[0]


def test_both_panic_texts_mean_two_builds(rclient):
    put_task(rclient, "q", "old", "retry", error="panic [/x/main.go:1]: boom")
    put_task(rclient, "q", "new", "retry", error="panic error cause by: panic [main.go:1]: boom")
    r = Inspector(rclient).version()
    assert (r.version, r.source) == ("v0.25.0", "detected")
    assert "rolling upgrade" in r.conflicts[0]
    # a field newer than v0.26.0 is noticed (and, elsewhere, kept byte for byte)
    msg = rclient.hget("asynq:{q}:t:new", "msg")
    rclient.hset("asynq:{q}:t:new", "msg", msg + b"\x98\x06\x07")
    assert any("newer than v0.26.0" in e for e in Inspector(rclient).version().evidence)


def test_behaviour_of_each_release():
    assert [behaviour(v).panic_wrapped for v in KNOWN_VERSIONS] == [False, False, True, True, True]
    assert [behaviour(v).headers for v in KNOWN_VERSIONS] == [False, False, False, False, True]
    assert behaviour("v0.25.1").archive_min_redis == (6, 2) and behaviour("v0.24.1").archive_min_redis is None
    assert behaviour("infer").version == behaviour(None).version == "v0.24.1"
    assert normalize_version(" V0.25.1 ") == "v0.25.1" and normalize_version("") == "infer"
    with pytest.raises(ConfigError, match="asynq_version 'v0.27.0'.*one of v0.24.0"):
        normalize_version("v0.27.0")


def test_asynq_version_and_archive_cap_from_env_and_file(tmp_path):
    c = load_config(env={"JOBRUNBOOK_ASYNQ_VERSION": "0.26.0", "JOBRUNBOOK_ARCHIVE_MAX_SIZE": "500"})
    assert (c.base.asynq_version, c.base.archive_max_size) == ("v0.26.0", 500)
    d = load_config(env={})
    assert (d.base.asynq_version, d.base.archive_max_size) == ("infer", 10_000)
    with pytest.raises(ConfigError, match="JOBRUNBOOK_ASYNQ_VERSION|asynq_version 'latest'"):
        load_config(env={"JOBRUNBOOK_ASYNQ_VERSION": "latest"})
    with pytest.raises(ConfigError, match="JOBRUNBOOK_ARCHIVE_MAX_SIZE must be a whole number"):
        load_config(env={"JOBRUNBOOK_ARCHIVE_MAX_SIZE": "1"})
    f = tmp_path / "c.yml"
    f.write_text("redis_url: redis://r:6379/0\nasynq_version: v0.9.9\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f, env={})
    assert f"{f} line 2" in str(exc.value) and "asynq_version" in str(exc.value) and "go.mod" in str(exc.value)
