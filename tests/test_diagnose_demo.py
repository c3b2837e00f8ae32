"""Every demo scenario, read live from its Redis, metrics, log and probes, gives its expected top cause."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jobrunbook.demo import start_demo
from jobrunbook.demo.scenarios import SCENARIOS
from jobrunbook.diagnosis import diagnose
from jobrunbook.diagnosis.gather import evidence_from_findings, gather_findings

# calendar-sensitive (daily counters, expiries, windows, deadlines): `make test-dates` runs these under faketime
pytestmark = pytest.mark.dates

# the demo names causes as the fixtures' truth.json does; the diagnosis uses the same keys
NAMES = sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", NAMES)
def test_demo_scenario_gives_its_top_cause(scenario, tmp_path):
    with start_demo(scenario, seed=7, state_dir=tmp_path, live=False, prometheus=False) as demo:
        findings = gather_findings(redis_url=demo.redis_url, metrics_url=demo.metrics_url, log_file=str(demo.log_path),
                                   postgres_dsn=demo.postgres_dsn, health_urls=[demo.external_health_url],
                                   alert={"severity": "critical", "startsAt": demo.alert["alerts"][0]["startsAt"]})
        d = diagnose(evidence_from_findings(findings))
        expected = demo.truth["expected_ranking"]
        assert d.top_cause == expected[0], d.verdict
        got = [c.key for c in d.causes if c.failures]
        # the declared ranking holds in order among the causes found
        assert [k for k in got if k in expected] == expected
        if scenario == "dependency-down":
            top = d.causes[0]
            assert any("postgres probe: down" in e for e in top.evidence), top.evidence
            assert top.level == "high"
        if scenario == "rate-limited":
            assert any("probe" in e and "degraded" in e for e in d.causes[0].evidence), d.causes[0].evidence


def test_diagnose_cli_prints_verdict_and_runnable_commands(tmp_path):
    with start_demo("dependency-down", seed=3, state_dir=tmp_path, live=False, prometheus=False) as demo:
        env = dict(os.environ, JOBRUNBOOK_POSTGRES_DSN=demo.postgres_dsn)
        out = subprocess.run([sys.executable, "-m", "jobrunbook.cli", "diagnose", "--redis-url", demo.redis_url,
                              "--metrics-url", demo.metrics_url, "--alert", str(demo.alert_path), "--json"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["top_cause"] == "dependency"
        commands = [c for a in result["causes"][0]["actions"] for c in a["commands"]]
        assert any(c.startswith("pg_isready") for c in commands)
        assert any(c.startswith("jobrunbook remediate run") for c in commands)
        assert result["escalation"]["severity"] == "critical"


def test_recommended_commands_name_the_real_postgres_and_health_url(tmp_path):
    with start_demo("dependency-down", seed=3, state_dir=tmp_path, live=False, prometheus=False) as demo:
        env = dict(os.environ, JOBRUNBOOK_POSTGRES_DSN=demo.postgres_dsn)
        out = subprocess.run([sys.executable, "-m", "jobrunbook.cli", "diagnose", "--redis-url", demo.redis_url,
                              "--health-url", demo.external_health_url], capture_output=True, text=True, env=env,
                             timeout=60)
    assert out.returncode == 0, out.stderr
    port = demo.postgres_dsn.rsplit(":", 1)[1].split("/")[0]
    assert f"pg_isready -h 127.0.0.1 -p {port}" in out.stdout
