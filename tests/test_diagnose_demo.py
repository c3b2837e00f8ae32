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
from jobrunbook.diagnosis.gather import command_values, evidence_from_findings, gather_findings

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


# --- issue 14: on every scenario, what the engineer is told to do covers the cause and nothing else ------------

@pytest.fixture(scope="module")
def scenario_diagnosis(tmp_path_factory):
    """scenario -> (Diagnosis, findings, demo info), each read live from its own demo (not live: stable)."""
    made: dict = {}

    def get(scenario: str):
        if scenario not in made:
            tmp = tmp_path_factory.mktemp(scenario)
            demo = start_demo(scenario, seed=7, state_dir=tmp, live=False, prometheus=False)
            starts = demo.alert["alerts"][0]["startsAt"]
            findings = gather_findings(redis_url=demo.redis_url, metrics_url=demo.metrics_url,
                                       log_file=str(demo.log_path), postgres_dsn=demo.postgres_dsn,
                                       health_urls=[demo.external_health_url],
                                       alert={"severity": "critical", "startsAt": starts})
            values = command_values(postgres_dsn=demo.postgres_dsn,
                                    health_urls={"partner-api": demo.external_health_url},
                                    log_args={"kind": "file", "path": str(demo.log_path)})
            d = diagnose(evidence_from_findings(findings, settings=values))
            made[scenario] = (demo, d, findings)
        return made[scenario]

    yield get
    for demo, _, _ in made.values():
        demo.stop()


@pytest.mark.parametrize("scenario", NAMES)
def test_demo_top_causes_commands_cover_it_exactly(scenario_diagnosis, scenario):
    from diagnosis_support import cover, placeholder_in, remediation_commands

    demo, d, findings = scenario_diagnosis(scenario)
    as_dict = d.to_dict()
    top = as_dict["causes"][0]
    assert top["key"] == demo.truth["dominant_cause"]
    # the top cause's commands: their dry runs sum to its task count, and match no task of another cause
    total, foreign = cover(demo.client(), as_dict, top, findings["asynq"]["groups"])
    assert total == top["failures"] and foreign == [], (total, top["failures"], foreign[:3])
    assert remediation_commands(top) == [f'jobrunbook remediate {top["actions"][-1]["op"]} --redis-url "$REDIS_URL" '
                                         f'--cause {top["key"]}']
    # and every other cause's too
    for cause in as_dict["causes"][1:]:
        if cause["failures"] and remediation_commands(cause):
            assert cover(demo.client(), as_dict, cause, findings["asynq"]["groups"]) == (cause["failures"], [])
    for cause in as_dict["causes"]:
        for a in cause["actions"]:
            for c in a["commands"]:
                assert placeholder_in(c) is None, c


@pytest.mark.parametrize("scenario", NAMES)
def test_demo_orders_by_count_and_names_the_largest_types(scenario_diagnosis, scenario):
    from jobrunbook.diagnosis.rank import types_text

    demo, d, findings = scenario_diagnosis(scenario)
    per_type: dict[str, int] = {}
    for g in findings["asynq"]["groups"]:
        per_type[g["task_type"]] = per_type.get(g["task_type"], 0) + g["count"]
    assert d.task_types == [t for t, _ in sorted(per_type.items(), key=lambda kv: (-kv[1], kv[0]))]
    for c in d.causes:
        assert list(c.type_counts.values()) == sorted(c.type_counts.values(), reverse=True)
        assert [g["count"] for g in c.groups] == sorted((g["count"] for g in c.groups), reverse=True)
    top = d.causes[0]
    assert f" on {types_text(top.task_types)}, e.g. \"{top.groups[0]['example_error'][:60]}" in d.verdict


@pytest.mark.parametrize("scenario", NAMES)
def test_demo_onset_escalation_and_both_ratios(scenario_diagnosis, scenario):
    import datetime

    from jobrunbook.diagnosis.evidence import parse_time

    demo, d, findings = scenario_diagnosis(scenario)
    starts = parse_time(demo.alert["alerts"][0]["startsAt"])
    top = d.causes[0]
    assert top.onset == "new" and top.first_seen, top.onset_text  # every scenario's cause begins at its onset
    at = datetime.datetime.fromtimestamp(top.first_seen, datetime.timezone.utc).strftime("%H:%M:%S")
    assert top.onset_text.startswith(f"new since {at} UTC")
    assert "failed a day this week" in top.onset_text  # the 7 days of asynq's counters the demo writes
    # the headline says when it began in one clause; the week's counters stand in the onset line beside it
    assert f"New since {at} UTC" in d.verdict and "failed a day this week" not in d.verdict
    e = d.escalation
    assert e["started_from"] == "the alert's startsAt"
    deadline = parse_time(e["deadline_utc"].replace(" UTC", ":00Z").replace(" ", "T"))
    assert deadline == (starts + 15 * 60) // 60 * 60
    assert e["remaining"].endswith("left") or e["remaining"].startswith("overdue by")
    assert d.ratios["app"]["ratio"] == d.failure_ratio and d.ratios["asynq"]["processed"] > 0
    history = findings["asynq"]["history"]
    today = max(h["date"] for h in history)
    assert d.ratios["asynq"]["failed"] == sum(h["failed"] for h in history if h["date"] == today)


def test_demo_checks_aim_at_the_configured_health_url_and_the_dialled_postgres(scenario_diagnosis):
    demo, d, _ = scenario_diagnosis("rate-limited")
    rate = next(c for c in d.causes if c.key == "rate_limit")
    check = next(a for a in rate.actions if a["key"] == "check_external")
    # the 429s name no host: the configured health URL, never a placeholder
    assert check["commands"] == [f"curl -sS -o /dev/null -w '%{{http_code}} %{{time_total}}s\\n' "
                                 f"{demo.external_health_url}"]
    demo, d, _ = scenario_diagnosis("dependency-down")
    dep = d.causes[0]
    commands = [c for a in dep.actions for c in a["commands"]]
    assert f"pg_isready -h 127.0.0.1 -p {demo.postgres_addr.rsplit(':', 1)[1]}" in commands
    assert not any(c.startswith("curl") for c in commands)  # the errors dial Postgres, not an HTTP API
    # nothing aimed at a container nobody named: how this Postgres runs is not known, so no command is guessed
    assert not any("docker" in c or "kubectl" in c for c in commands), commands
    panic = next(c for c in d.causes if c.key == "panic")
    assert next(a for a in panic.actions if a["key"] == "panic_trace")["commands"] == [
        f"grep -n -A 30 'recovering from panic' {demo.log_path}"]
