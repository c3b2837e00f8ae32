"""The demo incident against the real captures: same keys, same messages, asynq's semantics."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from conftest import ASYNQ_FIXTURES, FIXTURES, ROOT, SNAPSHOTS, SNAPSHOTS_V024, fixture_dir
from jobrunbook.asynq import asynq_pb2
from jobrunbook.asynq.messages import decode_task, encode_task
from jobrunbook.demo import SCENARIOS, start_demo
from jobrunbook.demo.logs import APP_LINE, ASYNQ_LINE
from prometheus_client.parser import text_string_to_metric_families

# calendar-sensitive (daily counters, expiries, windows, deadlines): `make test-dates` runs these under faketime
pytestmark = pytest.mark.dates

NOW = 1_795_980_000.0  # 2026-11-29T18:40:00Z, the fixtures' capture day
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
DAY = re.compile(r"\d{4}-\d{2}-\d{2}$")
# the test's own reading of the error strings (independent of the demo's classifier)
CAUSE_OF = [("handler not found for task", "handler_not_found"), ("task lease expired", "lease_expired"),
            ("skip retry for the task", "validation"), ("panic [", "panic"),
            ("context deadline exceeded", "timeout"), ("429 Too Many Requests", "rate_limit"),
            ("connect: connection refused", "dependency"), ("invalid amount_cents", "bad_data")]


def cause_of(error: str) -> str:
    return next((c for s, c in CAUSE_OF if s in error), "other")


def pattern(key: str) -> str:
    """A key with its queue, task id and date replaced: the shape asynq gives it."""
    key = re.sub(r"^asynq:\{[^}]+\}:", "asynq:{Q}:", key)
    key = re.sub(r":t:.*$", ":t:ID", key)
    return DAY.sub("DAY", key)


def fixture_records(name: str) -> list[dict]:
    return [json.loads(line) for line in (fixture_dir(name) / "redis.jsonl").read_text().splitlines()]


def b(v: dict) -> bytes:
    return base64.b64decode(v["b64"])


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    made: dict = {}

    def get(scenario: str, seed: int = 11):
        if (scenario, seed) not in made:
            made[(scenario, seed)] = start_demo(scenario, seed, tmp_path_factory.mktemp(f"{scenario}-{seed}"),
                                                now=NOW, live=False, prometheus=False)
        return made[(scenario, seed)]

    yield get
    for demo in made.values():
        demo.stop()


def task_hashes(client) -> dict[str, dict[bytes, bytes]]:
    return {k.decode(): client.hgetall(k) for k in client.scan_iter("asynq:{*}:t:*", count=1000)}


def assert_one_state_each(client) -> dict[str, str]:
    """Every task hash is in exactly the state its `state` field names, and every state id has a hash."""
    where: dict[str, list[str]] = {}
    for q in ("critical", "default", "low"):
        for state in ("pending", "active"):
            for tid in client.lrange(f"asynq:{{{q}}}:{state}", 0, -1):
                where.setdefault(f"asynq:{{{q}}}:t:{tid.decode()}", []).append(state)
        for state in ("scheduled", "retry", "archived", "completed"):
            for tid in client.zrange(f"asynq:{{{q}}}:{state}", 0, -1):
                where.setdefault(f"asynq:{{{q}}}:t:{tid.decode()}", []).append(state)
        assert set(client.lrange(f"asynq:{{{q}}}:active", 0, -1)) == set(client.zrange(f"asynq:{{{q}}}:lease", 0, -1))
    hashes = task_hashes(client)
    assert set(hashes) == set(where), "task hashes in no state, or state ids without a hash"
    for key, states in where.items():
        assert len(states) == 1, f"{key} is in {states}"
        assert hashes[key][b"state"].decode() == states[0]
    return {k: v[0] for k, v in where.items()}


def test_keys_types_and_fields_match_the_fixtures(demos):
    demo = demos("mixed")
    client = demo.client()
    fixture_types: dict[str, str] = {}
    fixture_fields: set[str] = set()
    fixture_msg_fields: set[str] = set()
    fixture_payload_keys: dict[str, set[str]] = {}
    for name in SNAPSHOTS_V024:  # the demo writes v0.24.1's data by default (v0.26.0's: test_demo_versions)
        for rec in fixture_records(name):
            fixture_types[pattern(rec["key"])] = rec["type"]
            if ":t:" in rec["key"]:
                fixture_fields |= set(rec["value"])
                pb = asynq_pb2.TaskMessage()
                pb.ParseFromString(b(rec["value"]["msg"]))
                fixture_msg_fields |= {f.name for f, _ in pb.ListFields()}
                fixture_payload_keys.setdefault(pb.type, set()).update(json.loads(pb.payload))
    demo_types = {pattern(k.decode()): client.type(k).decode() for k in client.scan_iter("asynq:*", count=1000)}
    # every kind of key the real asynq wrote is there, with the same Redis type
    for pat, typ in fixture_types.items():
        assert demo_types.get(pat) == typ, pat
    # and the demo's extra kinds are asynq's own (states the fixtures had no task in; the server state that
    # the fixtures' worker cleared at its graceful exit, here only its zsets: NOW's server keys have expired)
    extra = set(demo_types) - set(fixture_types)
    assert extra <= {"asynq:{Q}:pending", "asynq:{Q}:active", "asynq:{Q}:lease", "asynq:{Q}:scheduled",
                     "asynq:{Q}:completed", "asynq:servers", "asynq:workers"}, extra
    assert {"asynq:{Q}:pending", "asynq:{Q}:active", "asynq:{Q}:lease", "asynq:{Q}:scheduled",
            "asynq:{Q}:completed", "asynq:{Q}:retry", "asynq:{Q}:archived"} <= set(demo_types)
    assert client.smembers("asynq:queues") == {b"critical", b"default", b"low"}

    states = assert_one_state_each(client)
    assert set(states.values()) == {"pending", "active", "scheduled", "retry", "archived", "completed"}
    for key, h in task_hashes(client).items():
        raw = h[b"msg"]
        assert encode_task(decode_task(raw)) == raw  # byte-identical protobuf, as Go writes it
        pb = asynq_pb2.TaskMessage()
        pb.ParseFromString(raw)
        names = {f.name for f, _ in pb.ListFields()}
        msg = decode_task(raw)
        assert UUID4.match(msg.id) and key.endswith(msg.id) and f"{{{msg.queue}}}" in key
        assert json.loads(msg.payload).keys() <= fixture_payload_keys[msg.type], msg.payload
        state = states[key]
        expect_fields = {"msg", "state", "pending_since"} if state == "pending" else {"msg", "state"}
        assert {f.decode() for f in h} == expect_fields
        assert expect_fields - {"pending_since"} <= fixture_fields
        if state == "pending":
            assert abs(int(h[b"pending_since"]) / 1e9 - NOW) < 3 * 3600
        if state in ("retry", "archived"):
            assert names <= fixture_msg_fields | {"retention"}, names
            assert msg.error_msg and msg.last_failed_at
        elif state == "completed":
            assert "completed_at" in names and msg.retention > 0
        elif state == "scheduled":
            assert not msg.error_msg and not msg.retried  # pending/active retries keep their last error
        assert msg.timeout in (5, 1800)


def test_scores_follow_asynq(demos):
    demo = demos("mixed")
    client = demo.client()
    checked = Counter()
    for q in ("critical", "default", "low"):
        for tid, score in client.zrange(f"asynq:{{{q}}}:retry", 0, -1, withscores=True):
            msg = decode_task(client.hget(f"asynq:{{{q}}}:t:{tid.decode()}", "msg"))
            n = msg.retried - 1  # the retried count the delay was computed from
            delay = int(score) - msg.last_failed_at
            assert n ** 4 + 15 <= delay <= n ** 4 + 15 + 29 * (n + 1), (msg, score)
            assert 1 <= msg.retried <= msg.retry
            checked["retry"] += 1
        for tid, score in client.zrange(f"asynq:{{{q}}}:archived", 0, -1, withscores=True):
            msg = decode_task(client.hget(f"asynq:{{{q}}}:t:{tid.decode()}", "msg"))
            assert int(score) == msg.last_failed_at  # archived at the failure
            if msg.error_msg.endswith(": skip retry for the task"):
                assert msg.retried == 0
            else:
                assert msg.retried == msg.retry
            checked["archived"] += 1
        for tid, score in client.zrange(f"asynq:{{{q}}}:completed", 0, -1, withscores=True):
            msg = decode_task(client.hget(f"asynq:{{{q}}}:t:{tid.decode()}", "msg"))
            assert int(score) == msg.completed_at + msg.retention
            checked["completed"] += 1
        for _tid, score in client.zrange(f"asynq:{{{q}}}:lease", 0, -1, withscores=True):
            assert NOW - 60 <= score <= NOW + 31
    assert min(checked.values()) > 0 and len(checked) == 3


def test_counters_are_consistent(demos):
    demo = demos("dependency-down")
    client = demo.client()
    assert_one_state_each(client)
    metric_totals = demo.metrics.totals()
    for q in ("critical", "default", "low"):
        daily_p = {k.decode(): int(client.get(k)) for k in client.scan_iter(f"asynq:{{{q}}}:processed:*")}
        daily_f = {k.decode(): int(client.get(k)) for k in client.scan_iter(f"asynq:{{{q}}}:failed:*")}
        assert len(daily_p) == 7
        total_p, total_f = int(client.get(f"asynq:{{{q}}}:processed")), int(client.get(f"asynq:{{{q}}}:failed"))
        assert total_p == sum(daily_p.values()) and total_f == sum(daily_f.values())
        for key in list(daily_p) + list(daily_f):
            # asynq sets an absolute expiry (EXPIREAT at the day's first increment + 90 days): read it
            # against the demo's own clock, not the wall clock this test happens to run at
            ttl = client.expiretime(key) - NOW
            day = key.rsplit(":", 1)[1]
            assert 83 * 86400 < ttl <= 91 * 86400, (key, ttl)
            assert day <= "2026-11-29"
        for day, p in ((k.rsplit(":", 1)[1], v) for k, v in daily_p.items()):
            f = daily_f.get(f"asynq:{{{q}}}:failed:{day}", 0)
            assert 0 <= f <= p
            if day < "2026-11-29":
                assert 0.005 <= f / p <= 0.05  # the normal baseline before the incident
        # the window's attempts: what the worker's /metrics counted, plus lease expiries (no handler saw them)
        hist_p = sum(d["processed"] for d in demo.history[q].values())
        hist_f = sum(d["failed"] for d in demo.history[q].values())
        lease = sum(c.get("lease_expired", 0) for k, c in demo.worker.failed_by_queue_type.items()
                    if k.startswith(q + "/"))
        assert total_p - hist_p == metric_totals[q]["processed"] + lease
        assert total_f - hist_f == metric_totals[q]["failed"] + lease
    today_ratio = (sum(int(client.get(f"asynq:{{{q}}}:failed:2026-11-29")) for q in ("critical", "default"))
                   / sum(int(client.get(f"asynq:{{{q}}}:processed:2026-11-29")) for q in ("critical", "default")))
    assert today_ratio > 0.02


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_dominant_error_matches_the_declared_truth(demos, scenario):
    demo = demos(scenario)
    client = demo.client()
    causes = Counter()
    for h in task_hashes(client).values():
        if h[b"state"] in (b"retry", b"archived"):
            causes[cause_of(decode_task(h[b"msg"]).error_msg)] += 1
    ranking = [c for c, _ in causes.most_common()]
    truth = json.loads(demo.demo_json.read_text())["truth"]
    assert ranking[0] == truth["dominant_cause"] == SCENARIOS[scenario].truth["dominant_cause"]
    assert ranking[: len(truth["expected_ranking"])] == truth["expected_ranking"]
    assert causes["other"] == 0
    alert = json.loads(demo.alert_path.read_text())
    targets = {(a["labels"]["queue"], a["labels"]["task_type"]) for a in alert["alerts"]}
    assert SCENARIOS[scenario].alert_target in targets


def test_bad_deploy_starts_at_the_deploy_time(demos):
    demo = demos("bad-deploy")
    info = json.loads(demo.demo_json.read_text())
    deploy = demo.timeline.deploy_at
    assert info["deploy_at"] and info["truth"]["missing_handler"] == "payment:capture"
    seen = Counter()
    for _key, h in task_hashes(demo.client()).items():
        msg = decode_task(h[b"msg"])
        if msg.error_msg.startswith("handler not found") or "nil pointer" in msg.error_msg:
            assert msg.last_failed_at >= int(deploy)
            seen[msg.error_msg.split(":")[0]] += 1
    assert seen['handler not found for task "payment'] > 10 and seen["panic [/usr/lib/go-1.19/src/runtime/panic.go"]
    log = demo.log_path.read_text()
    assert 'msg="deploy: restarting worker" build=v2' in log


def dump(client) -> list:
    out = []
    for key in sorted(client.scan_iter("asynq:*", count=1000)):
        typ = client.type(key)
        value = {b"string": client.get, b"list": lambda k: client.lrange(k, 0, -1),
                 b"set": lambda k: sorted(client.smembers(k)), b"zset": lambda k: client.zrange(k, 0, -1, withscores=True),
                 b"hash": lambda k: sorted(client.hgetall(k).items())}[typ](key)
        out.append((key, typ, value, client.expiretime(key)))  # absolute: the same whenever it is read
    return out


def test_same_seed_same_data(demos, tmp_path):
    # the same seed and clock, and the same (down) Postgres the handlers dial: the same bytes
    again = start_demo("mixed", 11, tmp_path, now=NOW, live=False, prometheus=False,
                       postgres_addr=demos("mixed").postgres_addr)
    with again:
        assert dump(again.client()) == dump(demos("mixed").client())
        assert again.alert == demos("mixed").alert
    ids = {k for k, *_ in dump(demos("mixed").client()) if b":t:" in k}
    assert ids.isdisjoint(k for k, *_ in dump(demos("mixed", seed=12).client()) if b":t:" in k)


def test_live_worker_moves_tasks_with_asynq_semantics(tmp_path):
    now = time.time()
    with start_demo("rate-limited", 3, tmp_path, now=now, live=False, prometheus=False) as demo:
        client = demo.client()
        before = {q: (int(client.get(f"asynq:{{{q}}}:processed")), int(client.get(f"asynq:{{{q}}}:failed")))
                  for q in ("critical", "default", "low")}
        lines = len(demo.log_path.read_text().splitlines())
        for i in range(1, 25):  # two minutes of the worker, as the live thread would run it
            demo.step(now + 5 * i)
            assert_one_state_each(client)
        after = {q: (int(client.get(f"asynq:{{{q}}}:processed")), int(client.get(f"asynq:{{{q}}}:failed")))
                 for q in ("critical", "default", "low")}
        assert all(after[q][0] > before[q][0] and after[q][1] >= before[q][1] for q in after)
        assert after["critical"][1] > before["critical"][1]
        grown_p = sum(after[q][0] - before[q][0] for q in after)
        grown_f = sum(after[q][1] - before[q][1] for q in after)
        assert 0 < grown_f < grown_p
        assert len(demo.log_path.read_text().splitlines()) > lines
        # and the real thread, on the real clock
        p0 = sum(int(client.get(f"asynq:{{{q}}}:processed")) for q in after)
        demo.start_live(0.2)
        deadline = time.monotonic() + 10
        while sum(int(client.get(f"asynq:{{{q}}}:processed")) for q in after) == p0:
            assert time.monotonic() < deadline, "the live worker processed nothing"
            time.sleep(0.2)
        with demo._lock:
            assert_one_state_each(client)


def test_metrics_endpoint_parses_and_agrees(demos):
    demo = demos("timeouts")
    text = urllib.request.urlopen(demo.metrics_url, timeout=5).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    processed = Counter()
    for s in families["job_processed"].samples:
        assert s.labels["status"] in ("success", "failed")
        processed[(s.labels["queue"], s.labels["status"])] += s.value
    totals = demo.metrics.totals()
    for q, t in totals.items():
        assert processed[(q, "success")] + processed[(q, "failed")] == t["processed"]
    fixture = {f.name: f for f in text_string_to_metric_families((ASYNQ_FIXTURES / "mixed" / "metrics.txt").read_text())}
    les = sorted({s.labels["le"] for s in fixture["job_duration_seconds"].samples if "le" in s.labels})
    assert sorted({s.labels["le"] for s in families["job_duration_seconds"].samples if "le" in s.labels}) == les
    assert families["job_processed"].documentation == fixture["job_processed"].documentation
    # timeouts pile up at the task timeout (5 s): between the 5 and 10 s buckets of report:generate
    b = {s.labels["le"]: s.value for s in families["job_duration_seconds"].samples
         if s.name.endswith("_bucket") and s.labels["task_type"] == "report:generate"}
    assert b["10"] - b["5"] >= demo.worker.failed_by_queue_type["low/report:generate"]["timeout"] > 5
    assert b["5"] - b["2.5"] == 0
    # the worker and the partner API answer
    assert urllib.request.urlopen(demo.health_url, timeout=5).status == 200
    assert urllib.request.urlopen(demo.external_health_url, timeout=5).status == 200


def test_external_api_rate_limits_in_rate_limited(tmp_path):
    with start_demo("rate-limited", 2, tmp_path, live=False, window_minutes=2, onset_minutes=1, prometheus=False) as demo:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(demo.external_health_url, timeout=5)
        assert err.value.code == 429
        assert demo.postgres_dsn.endswith(":5432/postgres")


def test_dependency_down_dsn_refuses(demos):
    demo = demos("dependency-down")
    port = int(re.search(r":(\d+)/", demo.postgres_dsn).group(1))
    assert port != 5432
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def classify_line(line: str) -> str:
    if re.match(ASYNQ_LINE, line):
        return "asynq"
    if re.match(APP_LINE, line):
        return "app"
    # a v0.24.1 (Go 1.19) trace has absolute paths, a v0.26.0 (-trimpath, Go 1.27) one relative paths and
    # "created by ... in goroutine N"
    if re.match(r"^(goroutine \d+ \[running\]:|\t\S+\.go:\d+ \+0x[0-9a-f]+|created by \S+(?: in goroutine \d+)?|"
                r"[\w./*()@-]+\(.*\))$", line):
        return "stack"
    return "unknown"


def test_log_lines_parse_like_the_fixtures(demos):
    for name in SNAPSHOTS:  # the grammar reads the real logs of both versions completely
        kinds = Counter(classify_line(line) for line in (fixture_dir(name) / "worker.log").read_text().splitlines())
        assert kinds["unknown"] == 0 and kinds["app"] and kinds["asynq"]
    demo = demos("mixed")
    lines = demo.log_path.read_text().splitlines()
    kinds = Counter(classify_line(line) for line in lines)
    assert kinds["unknown"] == 0 and kinds["stack"] > 20
    failed = [re.match(APP_LINE, x) for x in lines if 'msg="task failed"' in x]
    fields = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')
    parsed = [dict(fields.findall(m.group(4))) for m in failed]
    assert all(p.keys() == {"queue", "task_type", "task_id", "retried", "max_retry", "next", "error"} for p in parsed)
    assert len(parsed) == sum(v for (q, s), v in _metric_status(demo).items() if s == "failed")
    panics = sum(1 for x in lines if "recovering from panic" in x)
    assert panics == sum(1 for p in parsed if p["error"].startswith('"panic ['))
    exhausted = sum(1 for x in lines if "WARN: Retry exhausted for task id=" in x)
    assert exhausted == sum(1 for p in parsed if p["next"] == "archive")


def _metric_status(demo) -> Counter:
    out = Counter()
    for (q, _t, s), n in demo.metrics.processed.items():
        out[(q, s)] += n
    return out


def test_cli_once_exits_and_leaves_no_redis(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "lib"), os.environ.get("PYTHONPATH"))
                                                       if p)}
    port_file = tmp_path / "ports.json"
    # what `make demo ARGS=--once` does: the incident, then the whole runbook against it, then the report's path
    proc = subprocess.run([sys.executable, "-m", "jobrunbook.cli", "demo", "--once", "--scenario", "validation",
                           "--seed", "4", "--state-dir", str(tmp_path / "state"), "--port-file", str(port_file),
                           "--notebooks", str(ROOT / "notebooks")],
                          capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    lines = proc.stdout.splitlines()
    report = Path(next(line for line in lines if line.startswith("report:")).split()[1])
    assert report.is_file() and report.parent.parent == tmp_path
    assert "Validation errors (SkipRetry)" in next(line for line in lines if line.startswith("verdict:"))
    info = json.loads((tmp_path / "state" / "demo.json").read_text())
    assert json.loads(port_file.read_text())["redis_url"] == info["redis_url"]
    assert info["scenario"] == "validation" and info["seed"] == 4
    assert "invalid payload: missing field" in proc.stdout
    assert not Path(f"/proc/{info['redis_pid']}").exists(), "redis-server left running"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(info["redis_url"].rsplit(":", 1)[1].split("/")[0])), timeout=1)
    alert = json.loads((tmp_path / "state" / "alert.json").read_text())
    fixture = json.loads((FIXTURES / "alertmanager" / "firing-critical-grouped.json").read_text())
    assert alert.keys() == fixture.keys()
    assert alert["alerts"][0].keys() == fixture["alerts"][0].keys()
    labels = alert["alerts"][0]["labels"]
    assert labels.keys() == {"alertname", "queue", "task_type", "severity", "component"}
    assert alert["alerts"][0]["startsAt"] == info["onset"]
