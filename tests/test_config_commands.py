"""One configuration, every command: the same config file and environment choose the same target everywhere.

Two real redis-servers: the base's (the mixed capture, 72 failed tasks) and the target ``eu-1``'s (the
bad-deploy capture, 48 failed tasks, a password that only ``$EU_REDIS_PASSWORD`` holds). Each command is
run as a user runs it, as a subprocess with the same ``$JOBRUNBOOK_CONFIG``, and asked for the alert
``cluster=eu-1``: every one must read (or act on) the eu-1 Redis, and never the base's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import requests
from _service_helpers import TOKEN, ServerThread, wait_for
from conftest import ASYNQ_FIXTURES, FIXTURES, ROOT, RedisServer, load_fixture_snapshot

pytestmark = pytest.mark.slow
EU_PASSWORD = "eu-Redis-pw-31"
EU_FAILED = 48  # bad-deploy: retry + archived, as asynq's Inspector counts them
BASE_FAILED = 72  # mixed


def _failed(name: str) -> int:
    truth = json.loads((ASYNQ_FIXTURES / name / "inspector.json").read_text())
    return sum(q["counts"]["retry"] + q["counts"]["archived"] for q in truth["queues"])


@pytest.fixture(scope="module")
def two_targets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("targets")
    base, eu = RedisServer(tmp / "base"), RedisServer(tmp / "eu", password=EU_PASSWORD)
    load_fixture_snapshot(base.client(), "mixed")
    load_fixture_snapshot(eu.client(), "bad-deploy")
    assert (_failed("mixed"), _failed("bad-deploy")) == (BASE_FAILED, EU_FAILED)
    config = tmp / "jobrunbook.yml"
    config.write_text(textwrap.dedent(f"""
        redis_url: redis://127.0.0.1:{base.port}/0
        metrics_url: ""
        log_source: ""
        targets:
          - name: eu-1
            match: {{cluster: eu-1}}
            redis_url: redis://127.0.0.1:{eu.port}/0
            redis_password_env: EU_REDIS_PASSWORD
            worker_deployment: jobs-eu
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNBOOK_")}
    env.update(JOBRUNBOOK_CONFIG=str(config), EU_REDIS_PASSWORD=EU_PASSWORD)
    alert = json.loads((FIXTURES / "alertmanager" / "firing-warning.json").read_text())
    alert["alerts"][0]["labels"]["cluster"] = "eu-1"
    alert_path = tmp / "alert.json"
    alert_path.write_text(json.dumps(alert))
    yield {"env": env, "eu": eu, "base": base, "alert": alert_path, "tmp": tmp, "config": config}
    base.stop()
    eu.stop()


def jobrunbook(*args: str, env: dict, cwd=ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "jobrunbook.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    return proc


def test_inspect_and_diagnose_read_the_targets_redis(two_targets):
    env = two_targets["env"]
    out = jobrunbook("inspect", "--label", "cluster=eu-1", "--json", env=env)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["totals"]["retry"] + summary["totals"]["archived"] == EU_FAILED
    diag = jobrunbook("diagnose", "--label", "cluster=eu-1", "--json", env=env)
    assert diag.returncode == 0, diag.stderr
    assert json.loads(diag.stdout)["total_failures"] == EU_FAILED
    # without the label, the base: the same configuration, another target
    base = json.loads(jobrunbook("inspect", "--json", env=env).stdout)
    assert base["totals"]["retry"] + base["totals"]["archived"] == BASE_FAILED
    # --target names it directly
    named = json.loads(jobrunbook("inspect", "--target", "eu-1", "--json", env=env).stdout)
    assert named["totals"] == summary["totals"]


def test_remediate_and_restore_act_on_the_targets_redis(two_targets):
    env, eu, tmp = two_targets["env"], two_targets["eu"], two_targets["tmp"]
    client = eu.client()
    before = client.zcard("asynq:{default}:retry")
    assert before > 0
    listed = jobrunbook("remediate", "ls", "--queue", "default", "--state", "retry", "--label", "cluster=eu-1",
                        "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == min(before, 30)
    run_dir = tmp / "manual"
    args = ["remediate", "archive-all", "--queue", "default", "--state", "retry", "--label", "cluster=eu-1",
            "--run-dir", str(run_dir), "--json"]
    plan = json.loads(jobrunbook(*args, env=env).stdout)
    assert plan["count"] == before
    acted = jobrunbook(*args, "--confirm", str(before), env=env)
    assert acted.returncode == 0, acted.stderr
    assert client.zcard("asynq:{default}:retry") == 0
    assert two_targets["base"].client().zcard("asynq:{default}:retry") > 0  # the base was not touched
    export = json.loads(acted.stdout)["export"]
    restored = jobrunbook("restore", export, "--label", "cluster=eu-1", env=env)
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["restored"] == before
    assert client.zcard("asynq:{default}:retry") == before


def test_check_probes_the_target_the_labels_choose(two_targets):
    out = jobrunbook("check", "--label", "cluster=eu-1", "--json", env=two_targets["env"])
    lines = json.loads(out.stdout)["checks"]
    redis = next(line for line in lines if line["check"] == "redis")
    assert {line["target"] for line in lines} == {"eu-1"}
    assert redis["status"] == "ok" and str(two_targets["eu"].port) in redis["message"], redis
    assert EU_PASSWORD not in out.stdout


def test_run_reads_the_alerts_own_target(two_targets, tmp_path):
    out = jobrunbook("run", "--alert", str(two_targets["alert"]), "--outputs", str(tmp_path), "--timeout", "120",
                     env=two_targets["env"])
    assert "target=eu-1" in out.stdout, out.stdout + out.stderr
    run_dir = next(p for p in tmp_path.iterdir() if (p / "params.json").is_file())
    params = json.loads((run_dir / "params.json").read_text())
    assert params["sources"]["target"] == "eu-1"
    assert params["sources"]["redis_url"] == f"redis://127.0.0.1:{two_targets['eu'].port}/0"
    groups = json.loads((run_dir / "findings" / "02_asynq.json").read_text())["data"]["groups"]
    assert sum(g["count"] for g in groups) == EU_FAILED  # read with the password from $EU_REDIS_PASSWORD
    assert EU_PASSWORD not in "".join(p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file())


def test_serve_gives_each_alert_its_target_and_a_flag_does_not_override_it(two_targets, tmp_path, monkeypatch):
    from jobrunbook.cli import build_parser
    from jobrunbook.service.cli import build_service

    for k, v in two_targets["env"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("JOBRUNBOOK_WEBHOOK_TOKEN", TOKEN)
    base_port = two_targets["base"].port
    # a --redis-url flag sets the base; the alert's matching target still wins (it is the more specific)
    args = build_parser(only="serve").parse_args(
        ["serve", "--outputs", str(tmp_path), "--notebooks", str(ROOT / "tests" / "notebooks" / "trivial"),
         "--redis-url", f"redis://127.0.0.1:{base_port}/0", "--port", "0"])
    app, worker = build_service(args)
    srv = ServerThread(app)  # its lifespan starts the worker process
    try:
        body = json.loads(two_targets["alert"].read_text())
        r = requests.post(f"{srv.url}/alerts", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert r.status_code in (200, 202), r.text
        run_dir = wait_for(lambda: next((p for p in tmp_path.iterdir() if (p / "report.html").is_file()), None),
                           timeout=120, what="the served run")
        params = json.loads((run_dir / "params.json").read_text())
        assert params["sources"]["target"] == "eu-1"
        assert params["sources"]["redis_url"] == f"redis://127.0.0.1:{two_targets['eu'].port}/0"
        other = json.loads((FIXTURES / "alertmanager" / "firing-warning.json").read_text())
        other["alerts"][0]["fingerprint"] = "0123456789abcdef"
        requests.post(f"{srv.url}/alerts", json=other, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        second = wait_for(lambda: next((p for p in tmp_path.iterdir() if p != run_dir and
                                        (p / "report.html").is_file()), None), timeout=120, what="the second run")
        assert json.loads((second / "params.json").read_text())["sources"]["redis_url"] == \
            f"redis://127.0.0.1:{base_port}/0"  # no label: the base, which the flag set
    finally:
        srv.stop()


def test_demo_takes_the_configuration_beside_its_own_sources(two_targets, tmp_path):
    # the demo stands up its own incident: its sources are its own, the rest of the configuration applies
    config = two_targets["tmp"] / "demo.yml"
    config.write_text("worker_deployment: jobs-eu\nnamespace: payments\nmetrics_url: http://127.0.0.1:9/metrics\n")
    env = {**two_targets["env"], "JOBRUNBOOK_CONFIG": str(config)}
    out = jobrunbook("demo", "--scenario", "bad-deploy", "--once", "--no-prometheus", "--state-dir",
                     str(tmp_path / "demo"), env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    run_dir = next(p for p in tmp_path.iterdir() if (p / "params.json").is_file())
    sources = json.loads((run_dir / "params.json").read_text())["sources"]
    demo = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert sources["redis_url"] == demo["redis_url"] and sources["metrics_url"] == demo["metrics_url"]
    assert (sources["worker_deployment"], sources["namespace"]) == ("jobs-eu", "payments")
    report = (run_dir / "report.html").read_text()
    assert "deployment/jobs-eu -n payments" in report
