"""The demo's own Prometheus: the simulated window backfilled, /metrics scraped live, one series throughout."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT
from jobrunbook.demo import start_demo
from jobrunbook.demo.metrics import WorkerMetrics
from jobrunbook.demo.prometheus import JOB, MetricsRecorder
from jobrunbook.sources.prometheus import evaluate_alert_expression, failure_ratio_by_task_type, instant_query
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families as parse_text



@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with start_demo("mixed", 5, tmp_path_factory.mktemp("prom-demo"), live=False) as d:
        yield d


def _target(demo) -> tuple[str, str, pd.Timestamp]:
    alert = demo.alert["alerts"][0]
    return alert["labels"]["queue"], alert["labels"]["task_type"], pd.Timestamp(alert["startsAt"])


def test_range_query_shows_the_ratio_rising_at_the_onset(demo):
    assert demo.prometheus_url and json.loads(demo.demo_json.read_text())["prometheus_url"] == demo.prometheus_url
    queue, task_type, onset = _target(demo)
    result = failure_ratio_by_task_type(demo.prometheus_url, starts_at=onset, matchers={"queue": queue})
    assert result.status == "ok", result.message
    series = result.data["series"].dropna(subset=["value"])
    mine = series[series["task_type"] == task_type]
    start = pd.Timestamp(demo.timeline.start, unit="s", tz="UTC")
    before = mine[mine["timestamp"] < onset]
    after = mine[mine["timestamp"] >= onset + pd.Timedelta("5m")]
    # the backfill covers the window from its first minutes, the incident's whole length after the onset
    assert before["timestamp"].min() < start + pd.Timedelta("2m") and len(before) > 20
    assert after["timestamp"].max() > onset + pd.Timedelta("11m") and len(after) > 20
    assert before["value"].max() < 0.10, before["value"].describe()
    assert after["value"].min() > 0.25, after["value"].describe()


def test_backfilled_counters_are_the_simulations(demo):
    """The counter at the onset is the number of attempts the worker finished by then (its own record)."""
    queue, task_type, _onset = _target(demo)
    at = demo.timeline.onset  # on the 5 s grid of the simulated steps
    got = instant_query(demo.prometheus_url, f'job_processed_total{{queue="{queue}",task_type="{task_type}"}}', at=at)
    assert got.status == "ok", got.message
    by_status = dict(zip(got.data["status"], got.data["value"], strict=True))
    attempts = [ok for ts, q, t, ok in demo.worker.attempts if q == queue and t == task_type and ts <= at]
    assert by_status.get("success", 0) == sum(attempts)
    assert by_status.get("failed", 0) == len(attempts) - sum(attempts)
    assert set(got.data["job"]) == {JOB} and set(got.data["instance"]) == {demo.http.base_url[len("http://"):]}


def test_alert_expression_fires_for_the_alerts_series(demo):
    queue, task_type, _onset = _target(demo)
    result = evaluate_alert_expression(demo.prometheus_url, "JobFailureRateCritical")
    assert result.status == "ok", result.message
    firing = {(q, t): v for q, t, v in zip(result.data["queue"], result.data["task_type"], result.data["value"],
                                           strict=True)}
    assert firing[(queue, task_type)] > 0.25
    rules = json.loads(urllib.request.urlopen(demo.prometheus_url + "/api/v1/rules", timeout=5).read())
    names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
    assert {"JobFailureRate", "JobFailureRateCritical"} <= names


def test_live_scrapes_continue_the_backfilled_series(demo):
    demo.step()  # the worker catches up to the real clock: counters grow past the backfilled values
    want = {(q, t, s): n for (q, t, s), n in demo.metrics.processed.items()}
    deadline = time.monotonic() + 25
    while True:  # Prometheus reloads targets every 5 s: the first scrape comes a few seconds after ready
        got = instant_query(demo.prometheus_url, "job_processed_total").data
        seen = {(q, t, s): v for q, t, s, v in zip(got["queue"], got["task_type"], got["status"], got["value"],
                                                     strict=True)} if len(got) else {}
        if seen == want:
            break
        assert time.monotonic() < deadline, f"no scrape of the live counters: {seen} != {want}"
        time.sleep(0.5)
    url = demo.prometheus_url
    per_set = instant_query(url, "count by (queue, task_type, status) (count_over_time(job_processed_total[40m]))")
    assert len(per_set.data) == len(want) and set(per_set.data["value"]) == {1}  # one series per label set
    assert instant_query(url, "sum(resets(job_processed_total[40m]))").data["value"].tolist() == [0]
    last = instant_query(url, "min(timestamp(job_processed_total))").data["value"].iloc[0]
    first = instant_query(url, "max(job_processed_total offset 29m)").data
    assert last > demo.worker.timeline.start + 30 * 60 and len(first)  # scraped now, backfilled 29 min ago
    assert demo.prometheus.log_path.read_text().count("out of bounds") == 0
    buckets = instant_query(url, "count by (queue, task_type, le) (count_over_time(job_duration_seconds_bucket[40m]))")
    assert len(buckets.data) > 20 and set(buckets.data["value"]) == {1}  # the histogram joins up too


def test_recorder_writes_openmetrics_promtool_accepts(tmp_path):
    metrics = WorkerMetrics()
    recorder = MetricsRecorder(metrics, instance="127.0.0.1:9")
    metrics.observe("critical", "webhook:deliver", True, 0.3)
    recorder.record(1000.0)
    metrics.observe("critical", "webhook:deliver", False, 2.0)
    metrics.observe("low", "report:generate", True, 7.25)
    recorder.record(1005.0)
    lines = recorder.text().splitlines()
    assert lines[-1] == "# EOF" and "# TYPE job_processed counter" in lines
    rx = re.compile(r'^(\w+)\{(.*)\} (\S+) (\S+)$')
    samples = [(m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2))), float(m.group(3)), float(m.group(4)))
               for m in map(rx.match, lines) if m]
    assert len(samples) == len(lines) - 5  # every other line is a sample with a timestamp
    assert all(lab["job"] == JOB and lab["instance"] == "127.0.0.1:9" for _n, lab, _v, _t in samples)
    counters = {(lab["status"], lab["task_type"], t): v for n, lab, v, t in samples if n == "job_processed_total"}
    assert counters[("success", "webhook:deliver", 1000.0)] == 1 and counters[("failed", "webhook:deliver", 1000.0)] == 0
    assert counters[("failed", "webhook:deliver", 1005.0)] == 1 and ("success", "report:generate", 1000.0) not in counters
    buckets = {(lab["le"], lab["task_type"]): v for n, lab, v, t in samples if n.endswith("_bucket") and t == 1005.0}
    assert buckets[("5", "report:generate")] == 0 and buckets[("10", "report:generate")] == 1
    exposed = {s.labels["le"] for f in parse_text(generate_latest(metrics.registry).decode())
               for s in f.samples if "le" in s.labels}
    assert {le for le, _t in buckets} == exposed  # the scrape's le strings, so the bucket series join up
    out = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(recorder.write(tmp_path / "om")),
                          str(tmp_path / "data")], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    row = out.stdout.splitlines()[1].split()  # ULID, min, max, duration, samples, chunks, series, size
    assert (int(row[1]), int(row[2])) == (1_000_000, 1_005_001) and int(row[4]) == len(samples)


def test_no_prometheus_disabled_or_missing(tmp_path, monkeypatch, capsys):
    with start_demo("validation", 2, tmp_path / "off", live=False, window_minutes=2, onset_minutes=1,
                    prometheus=False) as demo:
        assert demo.prometheus_url is None and demo.info()["prometheus_url"] is None
        assert not (tmp_path / "off" / "prometheus").exists()
    assert "Prometheus" not in capsys.readouterr().err
    bin_dir = tmp_path / "bin"  # a PATH with redis-server and no prometheus/promtool
    bin_dir.mkdir()
    (bin_dir / "redis-server").symlink_to(shutil.which("redis-server"))
    monkeypatch.setenv("PATH", str(bin_dir))
    with start_demo("validation", 2, tmp_path / "missing", live=False, window_minutes=2, onset_minutes=1) as demo:
        assert demo.prometheus_url is None
        assert json.loads(demo.demo_json.read_text())["prometheus_url"] is None
    err = capsys.readouterr().err
    assert "no prometheus and no promtool on PATH" in err and len(err.strip().splitlines()) == 1


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_cli_sigterm_stops_prometheus(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "lib"), os.environ.get("PYTHONPATH")) if p)}
    port_file = tmp_path / "ports.json"
    with open(tmp_path / "out.txt", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jobrunbook.cli", "demo", "--scenario", "rate-limited",
                                 "--seed", "3", "--state-dir", str(tmp_path / "state"), "--port-file",
                                 str(port_file), "--no-run"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 40
        while not port_file.exists() or not port_file.read_text().endswith("}\n"):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "out.txt").read_text()
            time.sleep(0.2)
        info = json.loads(port_file.read_text())
        assert urllib.request.urlopen(info["prometheus_url"] + "/-/ready", timeout=5).status == 200
        assert _alive(info["prometheus_pid"]) and _alive(info["redis_pid"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "out.txt").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not _alive(info["prometheus_pid"]), "prometheus left running"
    assert not _alive(info["redis_pid"]), "redis-server left running"
    assert "prometheus   http://127.0.0.1:" in (tmp_path / "out.txt").read_text()
