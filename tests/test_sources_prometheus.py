"""Prometheus HTTP API against a real Prometheus scraping a local exporter once a second."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from conftest import FIXTURES, ROOT, free_port
from jobrunbook.sources.prometheus import (
    DEFAULT_RULES_FILE,
    evaluate_alert_expression,
    failure_ratio_by_task_type,
    failure_ratio_query,
    instant_query,
    load_alert_rules,
    range_query,
)
from prometheus_client import CollectorRegistry, Counter, generate_latest
from sources_support import HTTPStub, SilentServer, closed_port, find_binary, wait_for_http

DEPLOY = ROOT / "deploy" / "prometheus"
FAST_RULES = FIXTURES / "prometheus" / "job-failure-rate.fast.rules.yml"


class Exporter:
    """A worker-like exporter: webhook:deliver fails 40 %, email:send never."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counter = Counter("job_processed_total", "attempts", ["queue", "task_type", "status"],
                               registry=self.registry)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.http = HTTPStub()
        self.http.routes["/metrics"] = self._serve
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _serve(self, _handler):
        with self.lock:
            return 200, "text/plain; version=0.0.4", generate_latest(self.registry)

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            with self.lock:
                self.counter.labels("critical", "webhook:deliver", "success").inc(3)
                self.counter.labels("critical", "webhook:deliver", "failed").inc(2)
                self.counter.labels("default", "email:send", "success").inc(10)
                self.counter.labels("default", "email:send", "failed").inc(0)

    def close(self) -> None:
        self.stop.set()
        self.http.close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    binary = find_binary("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    exporter = Exporter()
    shutil.copy(FAST_RULES, tmp / "rules.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp / "rules.yml")],
        "scrape_configs": [{"job_name": "worker", "static_configs": [{"targets": [f"127.0.0.1:{exporter.http.port}"]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/-/ready", 20, proc)
        deadline = time.monotonic() + 15
        query = failure_ratio_query(window="10s")
        while time.monotonic() < deadline:  # until rate() has two samples of every series
            result = instant_query(url, query)
            if result.ok and len(result.data.dropna(subset=["value"])) == 2:
                break
            time.sleep(0.3)
        else:
            raise RuntimeError("Prometheus scraped no usable samples in 15 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        exporter.close()


def test_instant_and_range_queries(prometheus):
    result = instant_query(prometheus, 'job_processed_total{status="failed"}')
    assert result.ok, result.message
    frame = result.data
    assert set(frame["task_type"]) == {"webhook:deliver", "email:send"}
    assert {"queue", "status", "job", "instance", "timestamp", "value"} <= set(frame.columns)
    assert (frame.set_index("task_type").loc["webhook:deliver", "value"] > 0)
    now = datetime.now(timezone.utc)
    ranged = range_query(prometheus, "sum(job_processed_total)", start=now - timedelta(seconds=4), end=now, step=1)
    assert ranged.ok, ranged.message
    values = ranged.data.sort_values("timestamp")["value"].tolist()
    assert len(values) >= 2 and values == sorted(values) and values[-1] > values[0]
    assert str(ranged.data["timestamp"].dt.tz) == "UTC"


def test_failure_ratio_by_task_type_around_alert(prometheus):
    starts_at = (datetime.now(timezone.utc) - timedelta(seconds=2)).isoformat().replace("+00:00", "Z")
    result = failure_ratio_by_task_type(prometheus, starts_at=starts_at, before=timedelta(seconds=3),
                                        window="10s", step=1)
    assert result.ok, result.message
    summary = result.data["summary"].set_index("task_type")
    assert summary.loc["webhook:deliver", "max"] == pytest.approx(0.4, abs=0.05)
    assert summary.loc["email:send", "max"] == pytest.approx(0.0, abs=1e-9)
    assert result.data["summary"].iloc[0]["task_type"] == "webhook:deliver"
    assert "webhook:deliver" in result.message
    assert (result.data["end"] - result.data["start"]).total_seconds() == pytest.approx(5, abs=1)
    only = failure_ratio_by_task_type(prometheus, matchers={"queue": "default"}, window="10s",
                                      before=timedelta(seconds=3), step=1)
    assert set(only.data["summary"]["task_type"]) == {"email:send"}


def test_alert_expression_from_shipped_rules(prometheus):
    rules = load_alert_rules()
    assert set(rules) == {"JobFailureRate", "JobFailureRateCritical"} and rules["JobFailureRate"]["for"] == "5m"
    for name in ("JobFailureRate", "JobFailureRateCritical"):
        result = evaluate_alert_expression(prometheus, name)
        assert result.ok, result.message
        assert result.data[["queue", "task_type"]].values.tolist() == [["critical", "webhook:deliver"]]
        assert result.data["value"].iloc[0] == pytest.approx(0.4, abs=0.05)
        assert "true for 1 series" in result.message
    missing = evaluate_alert_expression(prometheus, "NoSuchAlert")
    assert missing.status == "error" and "JobFailureRate" in missing.message


def test_fast_rules_loaded_and_alert_goes_pending(prometheus):
    deadline = time.monotonic() + 8
    while True:
        result = instant_query(prometheus, 'ALERTS{alertname="JobFailureRateCritical"}')
        if result.ok and len(result.data):
            break
        assert time.monotonic() < deadline, "the fast rule never went pending"
        time.sleep(0.5)
    assert result.data["task_type"].tolist() == ["webhook:deliver"]
    assert result.data["alertstate"].iloc[0] in ("pending", "firing")


def test_bad_promql_is_a_clear_result(prometheus):
    result = instant_query(prometheus, "sum by (task_type (rate(job_processed_total[5m]))")
    assert result.status == "error"
    assert "400" in result.message and "bad_data" in result.message and "parse error" in result.message
    assert result.hint.startswith("curl -sG") and "query=" in result.hint


def test_prometheus_down_timeout_and_5xx():
    down = instant_query(f"http://127.0.0.1:{closed_port()}", "up", timeout=2)
    assert down.status == "down" and "refused" in down.message
    silent = SilentServer()
    try:
        started = time.monotonic()
        slow = instant_query(silent.url(), "up", timeout=0.5)
        assert time.monotonic() - started < 3
    finally:
        silent.close()
    assert slow.status == "timeout" and "did not answer in 0.5 s" in slow.message
    stub = HTTPStub()
    stub.routes["/api/v1/query"] = (502, "text/html", "<html>Bad Gateway</html>")
    stub.routes["/api/v1/query_range"] = (
        422, "application/json", '{"status":"error","errorType":"execution","error":"many-to-many matching not allowed"}')
    try:
        bad_gateway = instant_query(stub.url(), "up")
        exec_error = failure_ratio_by_task_type(stub.url())
    finally:
        stub.close()
    assert bad_gateway.status == "down" and "502" in bad_gateway.message and "Bad Gateway" in bad_gateway.message
    assert exec_error.status == "error" and "many-to-many" in exec_error.message
    secret = instant_query(f"http://u:topsecret@127.0.0.1:{closed_port()}", "up")
    assert "topsecret" not in str(secret.to_dict())


def test_shipped_rules_pass_promtool():
    promtool = find_binary("promtool")
    assert DEFAULT_RULES_FILE == DEPLOY / "job-failure-rate.rules.yml"
    check = subprocess.run([promtool, "check", "rules", "job-failure-rate.rules.yml"], cwd=DEPLOY,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "2 rules found" in check.stdout
    test = subprocess.run([promtool, "test", "rules", "job-failure-rate.rules.test.yml"], cwd=DEPLOY,
                          capture_output=True, text=True, timeout=60)
    assert test.returncode == 0, test.stdout + test.stderr
    # the shipped file is the captured production definition, not the fast demo copy
    assert load_alert_rules(DEPLOY / "job-failure-rate.rules.yml") == load_alert_rules(
        FIXTURES / "prometheus" / "job-failure-rate.rules.yml")
    assert Path(DEPLOY / "job-failure-rate.rules.test.yml").is_file()
