"""Worker /metrics: the fixtures' real scrapes served by a real local HTTP server."""

from __future__ import annotations

import json
import math

import pytest
from conftest import ASYNQ_FIXTURES, SNAPSHOTS_WITH_METRICS, fixture_dir
from jobrunbook.sources.metrics import (
    MetricNames,
    collect_worker_metrics,
    counter_increases,
    duration_quantiles,
    failure_ratios,
    histogram_quantile,
    measure_rates,
    parse_metrics,
    scrape_metrics,
)
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OM_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from sources_support import HTTPStub, SilentServer, closed_port

TEXT = "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture
def stub():
    server = HTTPStub()
    yield server
    server.close()


@pytest.mark.parametrize("name", SNAPSHOTS_WITH_METRICS)
def test_failure_ratios_match_truth(stub, name):
    stub.routes["/metrics"] = (200, TEXT, (fixture_dir(name) / "metrics.txt").read_bytes())
    truth = json.loads((fixture_dir(name) / "truth.json").read_text())
    result = collect_worker_metrics(stub.url("/metrics"))
    assert result.ok, result.message
    failure = result.data["failure"]
    by_qt = failure["by_queue_task_type"]
    got = {f"{r.queue}/{r.task_type}": {"failed": r.failed, "success": r.processed - r.failed}
           for r in by_qt.itertuples()}
    assert got == {k: {"failed": float(v["failed"]), "success": float(v["success"])}
                   for k, v in truth["attempts_by_queue_type"].items()}
    assert failure["overall"]["ratio"] == pytest.approx(truth["metric_failure_ratio"], abs=0.0005)
    # the killed worker's (crash/) counters died with it: the recoverer's lease-expired failures are in no metric
    assert failure["overall"]["failed"] == truth["failed_attempts_total"] - truth["failed_attempts"]["lease_expired"]
    # per queue and per task type are the sums of the cells
    for queue, group in by_qt.groupby("queue"):
        row = failure["by_queue"].set_index("queue").loc[queue]
        assert row["failed"] == group["failed"].sum() and row["processed"] == group["processed"].sum()
    for task_type, group in by_qt.groupby("task_type"):
        row = failure["by_task_type"].set_index("task_type").loc[task_type]
        assert row["ratio"] == pytest.approx(group["failed"].sum() / group["processed"].sum())
    assert str(stub.port) in result.message and "failed" in result.message


def test_histogram_quantile_as_prometheus():
    # Values checked against Prometheus's histogram_quantile semantics
    buckets = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (math.inf, 40.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (20 - 10) / 20)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1 * 10 / 10)
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.04)
    # rank in +Inf -> the highest finite bound
    assert histogram_quantile(0.99, [(1.0, 5.0), (math.inf, 10.0)]) == 1.0
    assert math.isnan(histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))
    assert math.isnan(histogram_quantile(0.5, [(1.0, 3.0)]))
    assert histogram_quantile(1.5, buckets) == math.inf and histogram_quantile(-1, buckets) == -math.inf


def test_durations_from_fixture_and_timeout_share():
    samples = parse_metrics((ASYNQ_FIXTURES / "mixed" / "metrics.txt").read_text())
    frame = duration_quantiles(samples, task_timeout_s=2.5).set_index("task_type")
    report = frame.loc["report:generate"]
    # report:generate: 34 jobs, 26 <= 1 s, 8 in (1, 2.5]
    assert report["count"] == 34
    assert report["p50_s"] == pytest.approx(0.1 + 0.15 * (17 - 13) / 13)
    assert report["p95_s"] == pytest.approx(1 + 1.5 * (0.95 * 34 - 26) / 8)
    assert report["share_at_or_beyond_timeout"] == pytest.approx(0.0)
    at_two = duration_quantiles(samples, task_timeout_s=2.0).set_index("task_type").loc["report:generate"]
    assert at_two["share_at_or_beyond_timeout"] == pytest.approx((8 - 8 * (1.0 / 1.5)) / 34)
    # email:send is summed over both queues: 31 + 34
    assert frame.loc["email:send", "count"] == 65
    assert frame.loc["email:send", "mean_s"] == pytest.approx((1.4098617370000002 + 1.4460465179999997) / 65)
    per_queue = duration_quantiles(samples, by=("queue", "task_type"))
    assert len(per_queue) == 6


def test_openmetrics_and_configurable_names(stub):
    registry = CollectorRegistry()
    done = Counter("tasks_done", "tasks", ["q", "kind", "outcome"], registry=registry)
    done.labels("default", "email:send", "ok").inc(30)
    done.labels("default", "email:send", "error").inc(10)
    hist = Histogram("task_seconds", "d", ["kind"], buckets=(1, 5, 10), registry=registry)
    for v in (0.5, 0.5, 7, 12):
        hist.labels("email:send").observe(v)
    stub.routes["/metrics"] = (200, OM_TYPE, generate_openmetrics(registry))
    names = MetricNames(processed="tasks_done_total", duration="task_seconds", status_label="outcome",
                        failed_values=("error",), queue_label="q", type_label="kind")
    result = collect_worker_metrics(stub.url("/metrics"), names=names, task_timeout_s=10)
    assert result.ok, result.message
    assert result.data["failure"]["overall"]["ratio"] == pytest.approx(0.25)
    durations = result.data["durations"].set_index("kind")
    assert durations.loc["email:send", "share_at_or_beyond_timeout"] == pytest.approx(0.25)
    assert durations.loc["email:send", "p50_s"] == pytest.approx(1.0)


def test_asynq_exporter_fallback(stub):
    text = """# TYPE asynq_tasks_processed_total counter
asynq_tasks_processed_total{queue="critical"} 136
asynq_tasks_processed_total{queue="default"} 105
# TYPE asynq_tasks_failed_total counter
asynq_tasks_failed_total{queue="critical"} 42
asynq_tasks_failed_total{queue="default"} 37
# TYPE asynq_queue_size gauge
asynq_queue_size{queue="critical"} 38
asynq_queue_size{queue="default"} 34
"""
    stub.routes["/metrics"] = (200, TEXT, text)
    result = collect_worker_metrics(stub.url("/metrics"))
    assert result.ok
    failure = result.data["failure"]
    assert failure["metric"] == "asynq_tasks_processed_total"
    assert failure["overall"]["ratio"] == pytest.approx(79 / 241)
    assert failure["by_queue"].set_index("queue").loc["critical", "ratio"] == pytest.approx(42 / 136)
    assert failure["queue_size"].set_index("queue")["size"].to_dict() == {"critical": 38, "default": 34}
    assert failure["by_task_type"].empty


def test_rates_from_two_scrapes_with_reset(stub):
    registry = CollectorRegistry()
    counter = Counter("job_processed_total", "x", ["queue", "task_type", "status"], registry=registry)
    counter.labels("default", "email:send", "success").inc(1000)
    counter.labels("default", "email:send", "failed").inc(500)
    stub.routes["/metrics"] = lambda handler: (200, TEXT, generate_latest(registry))
    clock = [100.0]

    def sleep(seconds):
        clock[0] += seconds
        # in between: 90 successes, and the failed counter resets (worker restart) and reaches 10
        counter.labels("default", "email:send", "success").inc(90)
        counter.labels("default", "email:send", "failed")._value.set(10)

    result = measure_rates(stub.url("/metrics"), interval_s=10, sleep=sleep, clock=lambda: clock[0])
    assert result.ok, result.message
    rates = result.data["rates"].set_index("task_type")
    assert rates.loc["email:send", "processed_per_s"] == pytest.approx(10.0)
    assert rates.loc["email:send", "failed_per_s"] == pytest.approx(1.0)
    assert rates.loc["email:send", "ratio"] == pytest.approx(0.1)
    assert "10.0 s" in result.message


def test_counter_increases_skips_gauges():
    before = parse_metrics('# TYPE g gauge\ng 5\n# TYPE c counter\nc_total{a="1"} 3\n')
    after = parse_metrics('# TYPE g gauge\ng 9\n# TYPE c counter\nc_total{a="1"} 7\nc_total{a="2"} 2\n')
    inc = counter_increases(before, after)
    assert sorted(zip(inc["sample"], [d["a"] for d in inc["labels"]], inc["value"], strict=True)) == [
        ("c_total", "1", 4.0), ("c_total", "2", 2.0)]


def test_failure_modes_are_results(stub):
    stub.routes["/bad"] = (200, TEXT, "job_processed_total{queue=\"a\" 1\n\x00\xff garbage {{{\n")
    stub.routes["/500"] = (500, TEXT, "boom")
    stub.routes["/nothing"] = (200, TEXT, "# TYPE up gauge\nup 1\n")
    bad = collect_worker_metrics(stub.url("/bad"))
    assert bad.status == "error" and "malformed" in bad.message
    assert collect_worker_metrics(stub.url("/500")).status == "down"
    nothing = collect_worker_metrics(stub.url("/nothing"))
    assert nothing.status == "error" and "job_processed_total" in nothing.message
    down = collect_worker_metrics(f"http://127.0.0.1:{closed_port()}/metrics")
    assert down.status == "down" and "refused" in down.message and down.hint.startswith("curl -s")
    silent = SilentServer()
    try:
        slow = scrape_metrics(silent.url("/metrics"), timeout=0.5)
    finally:
        silent.close()
    assert slow.status == "timeout" and "0.5 s" in slow.message and slow.elapsed_s < 3
    secret = collect_worker_metrics(f"http://admin:hunter2@127.0.0.1:{closed_port()}/metrics")
    assert "hunter2" not in json.dumps(secret.to_dict()) and "***" in secret.message


def test_size_cap(stub):
    stub.routes["/big"] = (200, TEXT, "# TYPE x counter\n" + "x_total 1\n" * 200_000)
    result = scrape_metrics(stub.url("/big"), max_bytes=100_000)
    assert result.status == "error" and "larger than" in result.message


def test_to_dict_is_json(stub):
    stub.routes["/metrics"] = (200, TEXT, (ASYNQ_FIXTURES / "mixed" / "metrics.txt").read_bytes())
    result = collect_worker_metrics(stub.url("/metrics"), task_timeout_s=1)
    as_json = json.loads(json.dumps(result.to_dict()))
    assert as_json["status"] == "ok"
    assert {r["task_type"] for r in as_json["data"]["durations"]} >= {"report:generate"}
    assert failure_ratios is not None
