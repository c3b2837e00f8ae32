"""The demo writes either asynq release's data: v0.26.0's panic texts, headers, log; read back as v0.26.0."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from conftest import ROOT, SNAPSHOTS_V026, fixture_dir
from jobrunbook.asynq import asynq_pb2
from jobrunbook.asynq.inspector import Inspector
from jobrunbook.asynq.messages import HEADERS_FIELD, decode_task, encode_task, wire_fields
from jobrunbook.demo import start_demo
from jobrunbook.demo.scenarios import classify_error
from jobrunbook.diagnosis import diagnose
from jobrunbook.diagnosis.gather import evidence_from_findings, groups_from_aggregate
from jobrunbook.sources.logs import collect_worker_logs

NOW = 1_796_215_000.0  # 2026-12-02T12:36:40Z, the v0.26.0 captures' day


@pytest.fixture(scope="module")
def demo26(tmp_path_factory):
    demo = start_demo("mixed", 11, tmp_path_factory.mktemp("v026"), now=NOW, live=False, prometheus=False,
                      asynq_version="v0.26.0")
    yield demo
    demo.stop()


def _tasks(client):
    for key in client.scan_iter("asynq:{*}:t:*", count=1000):
        h = client.hgetall(key)
        yield key.decode(), h[b"state"].decode(), h[b"msg"]


def test_v026_messages_carry_headers_like_the_capture(demo26):
    client = demo26.client()
    capture_fields: set[int] = set()
    capture_headers: set[str] = set()
    for name in SNAPSHOTS_V026:
        for line in (fixture_dir(name) / "redis.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if ":t:" in rec["key"]:
                raw = base64.b64decode(rec["value"]["msg"]["b64"])
                capture_fields |= {n for n, _ in wire_fields(raw)}
                capture_headers |= set(asynq_pb2.TaskMessage.FromString(raw).headers)
    states = Counter()
    for _key, state, raw in _tasks(client):
        states[state] += 1
        numbers = [n for n, _ in wire_fields(raw)]
        assert HEADERS_FIELD in numbers and numbers == sorted(numbers)  # where Go puts field 15: by number
        assert set(numbers) <= capture_fields, numbers
        msg = decode_task(raw)
        assert set(msg.headers) == capture_headers == {"tenant", "traceparent"}
        assert encode_task(msg) == raw  # retried and archived messages were rewritten keeping their headers
    assert states["retry"] and states["archived"] and states["pending"]
    assert demo26.info()["asynq_version"] == demo26.truth["asynq_version"] == "v0.26.0"


def test_v026_panics_are_read_as_panics_and_the_version_is_detected(demo26):
    client = demo26.client()
    errors = [decode_task(raw).error_msg for _k, state, raw in _tasks(client) if state in ("retry", "archived")]
    panics = [e for e in errors if "panic" in e]
    assert panics and all(e.startswith("panic error cause by: panic [") for e in panics)
    assert {classify_error(e) for e in panics} == {"panic"}
    reading = Inspector(client).version()
    assert (reading.version, reading.source) == ("v0.26.0", "detected")
    agg = Inspector(client).failures()
    d = diagnose(evidence_from_findings({"asynq": {"status": "ok", "groups": agg.to_records(),
                                                   "asynq_version": reading.to_dict()}}), now=NOW)
    by_cause = {c.key: c.failures for c in d.causes}
    assert by_cause["panic"] == demo26.truth["measured"]["failed_tasks_by_cause"]["panic"] == len(panics)
    assert d.asynq_version == "v0.26.0"
    assert sum(g.count for g in groups_from_aggregate(agg.to_records())) == len(errors)


def test_v026_log_is_a_v026_workers_log(demo26):
    r = collect_worker_logs("file", path=demo26.log_path, since=None)
    assert r.data["asynq_versions"] == ["v0.26.0"]
    text = demo26.log_path.read_text()
    assert "github.com/hibiken/asynq@v0.26.0/processor.go:427" in text and "/go/pkg/mod/" not in text
    assert " in goroutine " in text
    panics = r.data["events"][r.data["events"]["kind"] == "panic"]
    assert len(panics) == text.count("recovering from panic") > 0
    assert all(str(p.error).startswith("panic error cause by: ") for p in panics.itertuples())


def test_cli_writes_either_versions_data(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "lib"), os.environ.get("PYTHONPATH")) if p)}
    out = {}
    for version in ("v0.24.1", "v0.26.0"):
        state = tmp_path / version
        proc = subprocess.run([sys.executable, "-m", "jobrunbook.cli", "demo", "--once", "--no-run", "--no-prometheus",
                               "--scenario", "bad-deploy", "--seed", "3", "--asynq-version", version,
                               "--state-dir", str(state)], capture_output=True, text=True, timeout=180, env=env,
                              cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert json.loads((state / "demo.json").read_text())["asynq_version"] == version
        out[version] = proc.stdout
    assert "Read as asynq v0.26.0, detected from the data" in out["v0.26.0"]
    assert "Read as asynq v0.24.1, detected from the data" in out["v0.24.1"]
    bad = subprocess.run([sys.executable, "-m", "jobrunbook.cli", "demo", "--once", "--asynq-version", "v0.27.0"],
                         capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert bad.returncode != 0 and "v0.27.0" in bad.stderr
