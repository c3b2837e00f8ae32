"""`jobrunbook check` as a subprocess against a real redis-server, a served metrics fixture, the machine's
Postgres, and closed ports."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import ASYNQ_FIXTURES, ROOT, RedisServer, free_port, load_fixture_snapshot

from jobrunbook.check import check_config, exit_code
from jobrunbook.config import load_config

POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
MIXED = ASYNQ_FIXTURES / "mixed"


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory):
    """A local http.server serving the captured worker /metrics at /metrics."""
    root = tmp_path_factory.mktemp("metrics")
    (root / "metrics").write_bytes((MIXED / "metrics.txt").read_bytes())
    (root / "renamed").write_text((MIXED / "metrics.txt").read_text().replace("job_processed_total", "jobs_done"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_check(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNBOOK_")}
    return subprocess.run([sys.executable, "-m", "jobrunbook.cli", "check", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def lines_by_check(stdout: str) -> dict[str, dict]:
    return {line["check"]: line for line in json.loads(stdout)["checks"]}


def base_env(redis_url: str, metrics: str) -> dict[str, str]:
    return {"JOBRUNBOOK_REDIS_URL": redis_url, "JOBRUNBOOK_METRICS_URL": f"{metrics}/metrics",
            "JOBRUNBOOK_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
            "JOBRUNBOOK_ALERTMANAGER_URL": f"http://127.0.0.1:{free_port()}",
            "JOBRUNBOOK_POSTGRES_DSN": POSTGRES, "JOBRUNBOOK_LOG_SOURCE": "file",
            "JOBRUNBOOK_LOG_FILE": str(MIXED / "worker.log"), "JOBRUNBOOK_SOURCE_TIMEOUT_S": "3"}


def test_check_up_and_down(redis_url, rclient, metrics_server):
    load_fixture_snapshot(rclient, "mixed")
    env = base_env(redis_url, metrics_server)
    proc = run_check(env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    by_check = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[0] in ("ok", "PROBLEM", "warn", "skipped"):
            by_check[parts[1]] = parts[0]
    assert by_check["redis"] == "ok" and "asynq queue" in out
    assert by_check["metrics"] == "ok" and "job_processed_total present" in out
    assert by_check["postgres"] == "ok"
    assert by_check["logs"] == "ok"
    assert by_check["prometheus"] == "PROBLEM" and by_check["alertmanager"] == "PROBLEM"
    assert by_check["health"] == "skipped"
    # the down lines say what is wrong and how to fix it
    assert f"Prometheus connection refused (nothing listening) at {env['JOBRUNBOOK_PROMETHEUS_URL']}" in out
    assert "fix: start Prometheus there or set $JOBRUNBOOK_PROMETHEUS_URL" in out
    assert f"curl -s {env['JOBRUNBOOK_ALERTMANAGER_URL']}/api/v2/status" in out
    assert out.rstrip().endswith("-> exit 1")

    data = json.loads(run_check("--json", env=env).stdout)
    assert data["exit"] == 1 and data["ok"] is False
    queues = {q.decode() for q in rclient.smembers("asynq:queues")}
    redis_line = next(c for c in data["checks"] if c["check"] == "redis")
    assert all(q in redis_line["message"] for q in queues)


def test_check_all_ok_exits_zero(redis_url, rclient, metrics_server):
    load_fixture_snapshot(rclient, "mixed")
    env = base_env(redis_url, metrics_server)
    del env["JOBRUNBOOK_PROMETHEUS_URL"], env["JOBRUNBOOK_ALERTMANAGER_URL"]  # optional: skipped, not problems
    env["JOBRUNBOOK_HEALTH_URLS"] = f"metrics-host={metrics_server}/metrics"
    proc = run_check("--json", env=env)
    checks = lines_by_check(proc.stdout)
    assert proc.returncode == 0, proc.stdout
    assert checks["prometheus"]["status"] == "skipped" and "JOBRUNBOOK_PROMETHEUS_URL" in checks["prometheus"]["fix"]
    assert checks["health metrics-host"]["status"] == "ok"


def test_password_redis_empty_db_and_renamed_metric(tmp_path, metrics_server):
    server = RedisServer(tmp_path, password="chk-Secret-77")
    try:
        env = base_env(f"redis://127.0.0.1:{server.port}/0", metrics_server)
        env["JOBRUNBOOK_METRICS_URL"] = f"{metrics_server}/renamed"
        # no password: Redis refuses, and the line says where the password goes
        proc = run_check("--json", env=env)
        redis_line = lines_by_check(proc.stdout)["redis"]
        assert redis_line["status"] == "problem"
        assert "$JOBRUNBOOK_REDIS_PASSWORD (not set now)" in redis_line["fix"]
        # with the password: reachable, but no asynq:queues in this db
        env["JOBRUNBOOK_REDIS_PASSWORD"] = "chk-Secret-77"
        proc = run_check("--json", env=env)
        assert "chk-Secret-77" not in proc.stdout + proc.stderr
        checks = lines_by_check(proc.stdout)
        assert checks["redis"]["status"] == "problem" and "has no asynq:queues" in checks["redis"]["message"]
        assert "redis-cli -u redis://127.0.0.1" in checks["redis"]["fix"]
        # the worker names its counter differently (and exports no asynq metrics): a problem naming the setting
        assert checks["metrics"]["status"] == "problem"
        assert "no job_processed_total" in checks["metrics"]["message"]
        assert "JOBRUNBOOK_METRIC_PROCESSED" in checks["metrics"]["fix"]
        env["JOBRUNBOOK_METRIC_PROCESSED"] = "jobs_done"
        assert lines_by_check(run_check("--json", env=env).stdout)["metrics"]["status"] == "ok"
    finally:
        server.stop()


def test_targets_by_label_and_not_alertmanager(tmp_path, redis_url, rclient, metrics_server):
    load_fixture_snapshot(rclient, "mixed")
    closed = free_port()
    config = tmp_path / "jobrunbook.yml"
    config.write_text(textwrap.dedent(f"""
        redis_url: {redis_url}
        metrics_url: {metrics_server}/metrics
        log_source: file
        log_path: {MIXED / 'worker.log'}
        targets:
          - name: eu-1
            match: {{cluster: eu-1}}
            redis_url: redis://127.0.0.1:{closed}/0
            alertmanager_url: {metrics_server}
    """))
    env = {"JOBRUNBOOK_POSTGRES_DSN": POSTGRES, "JOBRUNBOOK_SOURCE_TIMEOUT_S": "3"}
    # the label selects eu-1 only
    proc = run_check("--config", str(config), "--label", "cluster=eu-1", "--json", env=env)
    data = json.loads(proc.stdout)
    assert {c["target"] for c in data["checks"]} == {"eu-1"}
    checks = lines_by_check(proc.stdout)
    assert checks["redis"]["status"] == "problem"
    assert f"redis_url in target 'eu-1' of {config}" in checks["redis"]["fix"]
    assert checks["alertmanager"]["status"] == "problem"
    assert "is this Alertmanager's base URL?" in checks["alertmanager"]["message"]
    assert proc.returncode == 1
    # another cluster gets the base, which is healthy
    other = run_check("--config", str(config), "--label", "cluster=us-1", env=env)
    assert other.returncode == 0, other.stdout
    assert "target default" in other.stdout and "target eu-1" not in other.stdout
    # no label: every target is probed
    every = run_check("--config", str(config), env=env)
    assert "target default" in every.stdout and "target eu-1" in every.stdout and every.returncode == 1


def test_config_errors_exit_two(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("redis_url: redis://:hunter2@redis:6379/0\n")
    proc = run_check("--config", str(bad), env={})
    assert proc.returncode == 2
    assert "hunter2" not in proc.stderr + proc.stdout
    assert "JOBRUNBOOK_REDIS_PASSWORD" in proc.stderr
    typo = tmp_path / "typo.yml"
    typo.write_text("prometheus: http://p:9090\n")
    proc = run_check("--config", str(typo), "--json", env={})
    assert proc.returncode == 2 and "unknown setting 'prometheus'" in json.loads(proc.stdout)["config_error"]
    proc = run_check(env={"JOBRUNBOOK_CONFIG": str(tmp_path / "missing.yml")})
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_check_config_in_process_matches_cli_exit(redis_url, rclient, metrics_server):
    load_fixture_snapshot(rclient, "mixed")
    env = base_env(redis_url, metrics_server)
    config = load_config(env=env)
    lines = check_config(config, env=env)
    assert exit_code(lines) == 1
    assert {line.check for line in lines if line.status == "problem"} == {"prometheus", "alertmanager"}
