"""Diagnosis on the real captures: the right cause, honest confidence, valid commands."""

from __future__ import annotations

import json
import shlex

import pytest
from conftest import ASYNQ_FIXTURES, SNAPSHOTS, fixture_dir

from jobrunbook.diagnosis import (
    ACTIONS,
    DurationStat,
    ErrorGroup,
    Evidence,
    Probe,
    check_asynq_command,
    diagnose,
    escalation,
    parse_time,
)
from jobrunbook.fingerprint import fingerprint

# calendar-sensitive (daily counters, expiries, windows, deadlines): `make test-dates` runs these under faketime
pytestmark = pytest.mark.dates

NOW = parse_time("2026-11-29T19:40:00Z")
TRUTH_TO_CAUSE = {"rate_limit": "rate_limit", "dependency": "dependency", "handler_not_found": "handler_not_found",
                  "validation": "validation", "timeout": "timeout", "panic": "panic", "bad_data": "bad_data",
                  "lease_expired": "lease_expired"}


def groups_from_inspector(name: str) -> list[ErrorGroup]:
    """Error groups from asynq's own Inspector view of a capture (the ground truth)."""
    data = json.loads((fixture_dir(name) / "inspector.json").read_text())
    groups: dict[tuple, ErrorGroup] = {}
    for q in data["queues"]:
        for state in ("retry", "archived"):  # the failed tasks (headers/ also keeps completed ones)
            for t in q["tasks"][state]:
                key = (t["queue"], t["type"], fingerprint(t["last_err"]))
                g = groups.setdefault(key, ErrorGroup(*key, example_error=t["last_err"], count=0))
                g.count += 1
                g.retry += state == "retry"
                g.archived += state == "archived"
                seen = parse_time(t["last_failed_at"])
                g.first_seen = min(g.first_seen or seen, seen)
                g.example_ids.append(t["id"])
    return list(groups.values())


def truth(name: str) -> dict:
    return json.loads((fixture_dir(name) / "truth.json").read_text())


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_top_cause_is_the_captures_dominant_cause(name):
    ev = Evidence(alert={"severity": "critical", "startsAt": "2026-11-29T19:26:00Z"}, groups=groups_from_inspector(name))
    d = diagnose(ev, now=NOW)
    assert d.top_cause == TRUTH_TO_CAUSE[truth(name)["dominant_cause"]]
    assert d.causes[0].title.split()[0] in d.verdict
    assert d.total_failures == sum(g.count for g in ev.groups)


@pytest.mark.parametrize("name", ["mixed", "v0.26/mixed"])
def test_mixed_order_follows_failed_attempts(name):
    d = diagnose(Evidence(groups=groups_from_inspector(name)), now=NOW)
    attempts = truth(name)["failed_attempts"]
    # the same workload on both versions: v0.26's "panic error cause by: panic [...]" is a panic too
    by_cause = {c.key: c.failures for c in d.causes}
    assert (by_cause["panic"], by_cause["bad_data"]) == (attempts["panic"], attempts["bad_data"]) == (7, 7)
    expected = [k for k, v in sorted(attempts.items(), key=lambda kv: -kv[1]) if v]
    got = [c.key for c in d.causes if c.failures]
    # the captures' ties (panic and bad_data both 7) may come in either order
    assert got[:4] == expected[:4]
    assert set(got) == set(expected)
    assert abs(sum(c.share for c in d.causes) + d.unexplained["share"] - 1) < 1e-3


def test_corroboration_raises_and_contradiction_lowers_confidence():
    groups = groups_from_inspector("dependency-down")
    alone = diagnose(Evidence(groups=groups), now=NOW).causes[0]
    down = diagnose(Evidence(groups=groups, probes=[Probe("postgres", "postgres", "down", "connection refused")]),
                    now=NOW).causes[0]
    up = diagnose(Evidence(groups=groups, probes=[Probe("postgres", "postgres", "ok", "accepting connections")]),
                  now=NOW).causes[0]
    assert alone.key == down.key == up.key == "dependency"
    assert down.confidence > alone.confidence > up.confidence
    assert any("postgres probe: down" in e for e in down.evidence)
    assert up.contradictions and not down.contradictions


def test_durations_corroborate_or_contradict_timeouts():
    groups = [ErrorGroup("default", "report:generate", "context deadline exceeded", "context deadline exceeded", 10)]
    slow = DurationStat("default", "report:generate", p95_s=29.5, timeout_s=30, at_timeout_share=0.4)
    fast = DurationStat("default", "report:generate", p95_s=0.2, timeout_s=30, at_timeout_share=0.0)
    c_slow = diagnose(Evidence(groups=groups, durations=[slow]), now=NOW).causes[0]
    c_fast = diagnose(Evidence(groups=groups, durations=[fast]), now=NOW).causes[0]
    assert c_slow.key == c_fast.key == "timeout"
    assert c_slow.confidence > c_fast.confidence


def test_no_evidence_says_unknown_and_names_the_gap():
    d = diagnose(Evidence(unavailable={"redis": "Redis unreachable at redis://127.0.0.1:1/0"}), now=NOW)
    assert d.top_cause == "unknown"
    assert "unknown" in d.verdict and "redis" in d.verdict


def test_unexplained_remainder_is_reported_not_hidden():
    groups = [ErrorGroup("default", "x:y", "flux capacitor misaligned", "flux capacitor misaligned", 7),
              ErrorGroup("default", "x:y", "context deadline exceeded", "context deadline exceeded", 3)]
    d = diagnose(Evidence(groups=groups), now=NOW)
    assert d.unexplained["failures"] == 7
    assert d.unexplained["top_groups"][0]["example_error"] == "flux capacitor misaligned"
    assert d.top_cause == "unknown"  # 30 % with nothing else is too weak to name


def test_onset_new_versus_chronic():
    start = parse_time("2026-11-29T19:26:00Z")
    new = ErrorGroup("default", "a", "panic [<loc>]: boom", "panic [/x.go:1]: boom", 5, first_seen=start + 60)
    old = ErrorGroup("default", "b", "context deadline exceeded", "context deadline exceeded", 5,
                     first_seen=start - 6 * 3600)
    d = diagnose(Evidence(alert={"startsAt": "2026-11-29T19:26:00Z"}, groups=[new, old]), now=NOW)
    onsets = {c.key: c.onset for c in d.causes}
    assert onsets == {"panic": "new", "timeout": "chronic"}


def test_commands_follow_the_asynq_cli_rules():
    d = diagnose(Evidence(groups=groups_from_inspector("mixed"), settings={"namespace": "jobs"}), now=NOW)
    seen = 0
    for cause in d.causes:
        for action in cause.actions:
            for command in action["commands"]:
                shlex.split(command)  # every command is one valid shell line
                if command.startswith("asynq "):
                    check_asynq_command(command)
                    seen += 1
                assert "deleteall" not in command and "asynq task delete " not in command
                if " delete " in command:
                    assert command.startswith("jobrunbook remediate")
    # inspect and ls for several causes; a whole-state runall only where it touches no other cause's task
    assert seen >= 3


@pytest.mark.parametrize("bad", [
    "asynq task ls --queue=default --state=failed",  # the runbook's: there is no state failed
    "asynq task inspect 1234",
    "asynq task run --id=1234",
    "asynq task archiveall --queue=default --state=archived",
    "asynq task runall --queue=default --state=pending",
    "asynq task deleteall --queue=default --state=archived",  # no delete without export
])
def test_invalid_asynq_commands_are_refused(bad):
    with pytest.raises(ValueError):
        check_asynq_command(bad)


def test_untrusted_values_are_shell_quoted():
    ev = Evidence(groups=[ErrorGroup("q; rm -rf /", "t$(id)", "handler not found for task \"<v>\"",
                                     'handler not found for task "x"', 3, example_ids=["id`x`"])])
    for action in diagnose(ev, now=NOW).causes[0].actions:
        for command in action["commands"]:
            words = shlex.split(command)
            assert "rm" not in words and not any(w.startswith("$(") for w in words)


@pytest.mark.parametrize("severity,minutes,overdue", [("critical", 10, False), ("critical", 16, True),
                                                      ("warning", 50, False), ("warning", 61, True)])
def test_escalation_clock(severity, minutes, overdue):
    start = parse_time("2026-11-29T19:00:00Z")
    esc = escalation(severity, start, start + minutes * 60)
    assert esc["overdue"] is overdue
    deadline = parse_time(esc["deadline_utc"].replace(" UTC", ":00Z").replace(" ", "T"))
    assert deadline - start == (15 if severity == "critical" else 60) * 60
    assert ("Escalate now" in esc["next_step"]) is overdue


def test_every_action_template_renders():
    from jobrunbook.diagnosis import render_actions

    values = {"queue": "default", "task_type": "email:send", "task_id": "abc", "cause": "dependency",
              "pg_host": "10.0.0.7", "pg_port": "5432", "metrics_url": "http://w:8080/metrics",
              "health_checks": ["https://api.partner.test/health"], "addresses": ["10.0.0.9 9000"]}
    groups = [{"queue": "default", "task_type": "email:send", "fingerprint": "x", "retry": 2, "archived": 1}]
    rendered = render_actions(list(ACTIONS), values, groups=groups, occupancy={})
    assert len(rendered) == len(ACTIONS)
    assert all(a["commands"] for a in rendered if ACTIONS[a["key"]].commands)
    assert all("{" not in c or "{{" in c or "'{" in c or "%{" in c for a in rendered for c in a["commands"])


def test_recommended_jobrunbook_commands_parse_with_the_real_cli():
    from jobrunbook.cli import build_parser

    parser = build_parser()
    d = diagnose(Evidence(groups=groups_from_inspector("mixed") + groups_from_inspector("bad-deploy")), now=NOW)
    checked = 0
    for cause in d.causes:
        for action in cause.actions:
            for command in action["commands"]:
                if command.startswith("jobrunbook "):
                    args = parser.parse_args(shlex.split(command.replace('"$REDIS_URL"', "redis://127.0.0.1:1/0"))[1:])
                    assert args.command in ("remediate", "inspect")
                    checked += 1
    assert checked >= 4


def _log_findings(path) -> dict:
    from jobrunbook.sources import collect_worker_logs

    r = collect_worker_logs("file", path=str(path), since=None)
    d = r.to_dict()
    return {"status": d["status"], "groups": d["data"]["groups"], "restarts": d["data"]["restarts"]}


def test_bad_deploy_capture_onset_follows_the_restart_in_the_log():
    from jobrunbook.diagnosis.gather import evidence_from_findings

    logs = _log_findings(ASYNQ_FIXTURES / "bad-deploy" / "worker.log")
    assert [r["graceful"] for r in logs["restarts"]] == [True]  # the capture's one deploy, at 15 s
    ev = evidence_from_findings({"logs": logs, "asynq": {"status": "ok", "groups": []}})
    ev.groups = groups_from_inspector("bad-deploy")
    top = diagnose(ev, now=NOW).causes[0]
    assert top.key == "handler_not_found"
    assert any("after the worker restarted (a deploy)" in e for e in top.evidence), top.evidence


def test_a_restart_without_a_clean_exit_corroborates_a_crash(tmp_path):
    from jobrunbook.diagnosis.gather import evidence_from_findings

    log = tmp_path / "worker.log"
    log.write_text(
        "asynq: pid=7 2026/11/29 19:00:00.000001 INFO: Starting processing\n"
        '2026-11-29T19:00:05.000000Z app level=error msg="task failed" queue=default task_type=a:b '
        'task_id=1 retried=0 max_retry=3 next=retry error="asynq: task lease expired"\n'
        "asynq: pid=8 2026/11/29 19:00:09.000001 INFO: Starting processing\n")
    logs = _log_findings(log)
    assert [r["graceful"] for r in logs["restarts"]] == [False]
    groups = [ErrorGroup("default", "a:b", "asynq: task lease expired", "asynq: task lease expired", 4)]
    with_log = evidence_from_findings({"logs": logs, "asynq": {"status": "ok", "groups": []}})
    with_log.groups = groups
    crash = diagnose(with_log, now=NOW).causes[0]
    alone = diagnose(Evidence(groups=groups), now=NOW).causes[0]
    assert crash.key == alone.key == "lease_expired"
    assert any("no clean exit" in e for e in crash.evidence)
    assert crash.confidence > alone.confidence


def test_version_notes_follow_the_assumed_release():
    groups = groups_from_inspector("v0.26/mixed")
    d = diagnose(Evidence(groups=groups, asynq_version="v0.25.0", asynq_version_reason="Read as asynq v0.25.0."),
                 now=NOW)
    notes = {c.key: c.version_note for c in d.causes}
    assert "v0.25.0+ archives a SkipRetry task at once whatever IsFailure says" in notes["validation"]
    assert "panic error cause by" in notes["panic"]
    old = {c.key: c.version_note for c in diagnose(Evidence(groups=groups, asynq_version="v0.24.1"), now=NOW).causes}
    assert "retried forever" in old["validation"] and old["validation"] != notes["validation"]
    assert not any(c.version_note for c in diagnose(Evidence(groups=groups), now=NOW).causes)  # version unknown
    assert d.asynq_version == "v0.25.0" and d.to_dict()["asynq_version_reason"]
