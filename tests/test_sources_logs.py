"""Worker logs: the fixtures' real worker.log through file, docker and kubectl (stand-ins on PATH)."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

import pandas as pd
import pytest
from conftest import ASYNQ_FIXTURES, ROOT, SNAPSHOTS, fixture_dir
from jobrunbook import fingerprint
from jobrunbook._exceptions import ConfigError
from jobrunbook.sources.bounded import read_command, read_file_tail
from jobrunbook.sources.logparse import EVENT_COLUMNS, GROUP_COLUMNS, group_errors, parse_log_lines, parse_logfmt
from jobrunbook.sources.logs import build_log_command, collect_worker_logs, parse_since

# calendar-sensitive (daily counters, expiries, windows, deadlines): `make test-dates` runs these under faketime
pytestmark = pytest.mark.dates

BIN = ROOT / "tests" / "bin"


def inspector_tasks(name: str) -> list[dict]:
    data = json.loads((fixture_dir(name) / "inspector.json").read_text())
    return [t for q in data["queues"] for tasks in q["tasks"].values() for t in tasks]


@pytest.fixture
def stand_ins(monkeypatch):
    """docker and kubectl on PATH are the tests' stand-ins printing the fixtures' logs."""
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("JOBRUNBOOK_FAKE_DOCKER", ",".join(f"{n.replace('/', '-')}-worker={fixture_dir(n) / 'worker.log'}"
                                                          for n in SNAPSHOTS) + f",worker={ASYNQ_FIXTURES / 'mixed' / 'worker.log'}")
    monkeypatch.setenv("JOBRUNBOOK_FAKE_KUBECTL", f"prod/worker={ASYNQ_FIXTURES / 'bad-deploy' / 'worker.log'}")
    monkeypatch.setenv("JOBRUNBOOK_FAKE_NOW", "2026-11-29T19:27:04Z")


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_log_groups_line_up_with_redis_groups(name):
    result = collect_worker_logs("file", path=fixture_dir(name) / "worker.log", since=None)
    assert result.ok, result.message
    events, groups = result.data["events"], result.data["groups"]
    tasks = inspector_tasks(name)
    redis_groups = {}
    # a task whose lease expired failed in a process that was killed: no line of its own (crash/)
    for task in (t for t in tasks if t["last_err"] and "lease expired" not in t["last_err"]):
        key = (task["type"], fingerprint(task["last_err"]))
        redis_groups[key] = redis_groups.get(key, 0) + 1
    assert set(zip(groups["task_type"], groups["fingerprint"], strict=True)) == set(redis_groups)
    # each task's last failure in the log is the last_err Redis kept: same groups, same counts
    failures = events[events["kind"] == "failure"]
    last = failures.groupby("task_id").last().groupby(["task_type", "fingerprint"]).size().to_dict()
    assert last == redis_groups
    # every failed attempt is in the log: the counts match the worker's own metric
    truth = json.loads((fixture_dir(name) / "truth.json").read_text())
    attempts = truth["failed_attempts"]
    logged = truth.get("failed_attempts_total", sum(attempts.values())) - attempts.get("lease_expired", 0)
    assert groups["count"].sum() == logged == len(failures)
    assert groups["count"].tolist() == sorted(groups["count"], reverse=True)
    # asynq's "Retry exhausted" lines name exactly the archived tasks
    archived = {t["id"] for t in tasks if t["state"] == "archived"}
    assert set(events.loc[events["kind"] == "retry_exhausted", "task_id"]) == archived
    assert list(events.columns) == EVENT_COLUMNS and list(groups.columns) == GROUP_COLUMNS
    assert events["time"].notna().all() and str(events["time"].dt.tz) == "UTC"


@pytest.mark.parametrize("name", ["mixed", "bad-deploy", "v0.26/mixed", "v0.26/bad-deploy"])
def test_panics_carry_their_stack_and_task(name):
    events = collect_worker_logs("file", path=fixture_dir(name) / "worker.log", since=None).data["events"]
    panics = events[events["kind"] == "panic"]
    truth = json.loads((fixture_dir(name) / "truth.json").read_text())
    assert len(panics) == truth["failed_attempts"]["panic"] > 0
    for panic in panics.itertuples():
        assert panic.stack.startswith("goroutine ") and "asynq.(*processor).perform" in panic.stack
        assert "recovering from panic" in panic.message
        failure = events[events["line"] == panic.linked_line].iloc[0]
        assert failure["kind"] == "failure" and failure["task_id"] == panic.task_id
        assert failure["error"].startswith("panic") and failure["stack"] == panic.stack
        assert panic.fingerprint == fingerprint(failure["error"])
    # linked panics are not counted twice
    groups = group_errors(events)
    assert groups["count"].sum() == (events["kind"] == "failure").sum()


def test_docker_stand_in_merges_streams_and_bounds(stand_ins):
    full = collect_worker_logs("docker", container="mixed-worker", since=None, tail=100000)
    assert full.ok, full.message
    from_file = collect_worker_logs("file", path=ASYNQ_FIXTURES / "mixed" / "worker.log", since=None)
    pd.testing.assert_frame_equal(full.data["groups"], from_file.data["groups"])
    assert full.data["panics"] == 7  # asynq's panic lines came through stderr
    assert full.hint.startswith("docker logs --tail 100000 mixed-worker 2>&1 | grep")
    recent = collect_worker_logs("docker", container="mixed-worker", since="10s")
    times = recent.data["events"]["time"]
    assert len(times) and times.min() >= pd.Timestamp("2026-11-29T19:26:54Z")
    assert recent.data["groups"]["count"].sum() < full.data["groups"]["count"].sum()
    tailed = collect_worker_logs("docker", container="mixed-worker", since=None, tail=40)
    assert tailed.data["lines"] <= 40


def test_docker_failures_are_results(stand_ins, monkeypatch):
    missing = collect_worker_logs("docker", container="nope")
    assert missing.status == "error" and "No such container: nope" in missing.message
    assert missing.hint.startswith("docker logs --since 1h --tail")
    bad_name = collect_worker_logs("docker", container="--privileged")
    assert bad_name.status == "error" and "invalid container" in bad_name.message
    monkeypatch.setenv("JOBRUNBOOK_FAKE_DOCKER_DOWN", "1")
    down = collect_worker_logs("docker")
    assert down.status == "down" and "Docker daemon" in down.message
    monkeypatch.setenv("PATH", "/nonexistent")
    absent = collect_worker_logs("docker")
    assert absent.status == "error" and "not on PATH" in absent.message


def test_kubectl_stand_in(stand_ins):
    result = collect_worker_logs("kubectl", deployment="worker", namespace="prod", since="1h")
    assert result.ok, result.message
    assert result.target == "kubectl logs deployment/worker --since=1h --tail=5000 -n prod"
    top = result.data["groups"].iloc[0]
    assert (top["task_type"], top["fingerprint"]) == ("payment:capture", 'handler not found for task "<v>"')
    assert top["count"] == 31
    missing = collect_worker_logs("kubectl", deployment="worker", namespace="staging")
    assert missing.status == "error" and 'deployments.apps "worker" not found' in missing.message


def test_fifty_megabytes_of_junk_is_bounded(tmp_path):
    started = time.monotonic()
    junk = collect_worker_logs("command", command=["head", "-c", str(50 * 1024 * 1024), "/dev/urandom"],
                               since=None, max_bytes=2 * 1024 * 1024, timeout=20)
    assert junk.ok, junk.message
    assert junk.data["truncated"] and junk.data["lines"] <= 5000
    line = '2026-11-29T19:26:25.892149Z app level=error msg="task failed" queue=q task_type=t:x task_id=a error="dial tcp 10.0.0.1:5432: connect: connection refused"'
    flood = collect_worker_logs("command", command=["sh", "-c", f"yes '{line}' | head -n 340000"],
                                since=None, max_bytes=1024 * 1024, tail=2000, timeout=20)
    assert flood.ok and flood.data["truncated"] and flood.data["bytes_read"] > 50_000_000
    assert flood.data["groups"][["task_type", "fingerprint", "count"]].values.tolist() == [
        ["t:x", "dial tcp <addr>: connect: connection refused", 2000]]
    assert time.monotonic() - started < 30
    big = tmp_path / "big.log"
    with big.open("wb") as fh:
        fh.write(b"x" * (30 * 1024 * 1024) + b"\n" + line.encode() + b"\n")
    tail = read_file_tail(big, max_bytes=4096)
    assert tail.ok and tail.data["truncated"] and tail.data["text"] == line + "\n"


def test_timeout_kills_and_keeps_what_was_read():
    started = time.monotonic()
    line = '2026-11-29T19:26:25Z app level=error msg="task failed" task_type=a:b task_id=1 error="boom 42"'
    result = collect_worker_logs("command", command=["sh", "-c", f"echo '{line}'; exec sleep 30"], since=None,
                                 timeout=1)
    assert time.monotonic() - started < 5
    assert result.status == "timeout" and "did not finish in 1 s" in result.message
    assert result.data["groups"]["fingerprint"].tolist() == ["boom <n>"]
    failed = read_command(["sh", "-c", "echo oops >&2; exit 3"])
    assert failed.status == "error" and "exited 3: oops" in failed.message


def test_json_logfmt_text_and_invalid_utf8():
    text = (
        b'{"time":"2026-11-29T19:26:25.5Z","level":"ERROR","msg":"task failed","task_type":"email:send",'
        b'"task_id":"t1","queue":"default","error":"smtp 421 from mx1.example.com:25"}\n'
        b'{"ts":1795980385.5,"level":"info","msg":"ok"}\n'
        b'level=warning msg="slow" task_type=x\n'
        b'2026-11-29T19:26:26Z app level=error msg="db down" error="pq: too many clients \\"x\\""\n'
        b'\xff\xfe\x00binary \xc3\x28 junk with error inside\n'
        b'panic: runtime error: invalid memory address or nil pointer dereference\n'
        b'[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4]\n\n'
        b'goroutine 1 [running]:\nmain.main()\n\t/app/main.go:10 +0x1d\n'
        b'{"not json\n'
    ).decode("utf-8", errors="replace")
    events = parse_log_lines(text).set_index("line")
    assert events.loc[1, "kind"] == "failure" and events.loc[1, "task_id"] == "t1"
    assert events.loc[1, "time"] == pd.Timestamp("2026-11-29T19:26:25.5Z")
    assert events.loc[1, "fingerprint"] == fingerprint("smtp 421 from mx1.example.com:25")
    assert events.loc[2, "kind"] == "info" and events.loc[2, "time"] == pd.Timestamp(1795980385.5, unit="s", tz="UTC")
    assert events.loc[3, "level"] == "warn"
    assert events.loc[4, "kind"] == "error" and events.loc[4, "error"] == 'pq: too many clients "x"'
    assert events.loc[5, "kind"] == "error" and "\x00" not in events.loc[5, "message"]
    assert events.loc[6, "kind"] == "panic" and events.loc[6, "stack"].splitlines() == [
        "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4]", "goroutine 1 [running]:",
        "main.main()", "\t/app/main.go:10 +0x1d"]
    assert events.loc[len(text.splitlines()), "kind"] == "other"
    assert parse_logfmt('a=1 msg="x \\"y\\"" b= c') == {"a": "1", "msg": 'x "y"', "b": ""}


def test_since_and_commands():
    now = datetime(2026, 11, 29, 20, 0, tzinfo=timezone.utc)
    assert parse_since("1h30m", now=now) == pd.Timestamp("2026-11-29T18:30:00Z")
    assert parse_since("2026-11-29T19:00:00Z") == pd.Timestamp("2026-11-29T19:00:00Z")
    with pytest.raises(ConfigError, match="yesterday"):
        parse_since("yesterday")
    assert build_log_command("kubectl", deployment="worker", namespace="jobs", context="eu-1", since="15m", tail=10) == [
        "kubectl", "logs", "deployment/worker", "--since=15m", "--tail=10", "-n", "jobs", "--context", "eu-1"]
    file_result = collect_worker_logs("file", path=ASYNQ_FIXTURES / "mixed" / "worker.log", since="5s",
                                      now=datetime(2026, 11, 29, 19, 27, 4, tzinfo=timezone.utc))
    assert file_result.data["events"]["time"].min() >= pd.Timestamp("2026-11-29T19:26:59Z")
    assert collect_worker_logs("file", path="/nonexistent/worker.log").status == "error"
    assert collect_worker_logs("journal").status == "error"
