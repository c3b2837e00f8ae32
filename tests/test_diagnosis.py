"""Diagnosis on the real captures: the right cause, honest confidence, valid commands."""

from __future__ import annotations

import datetime
import json
import shlex

import pytest
from conftest import ASYNQ_FIXTURES, SNAPSHOTS, SNAPSHOTS_WITH_METRICS, fixture_dir

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


# --- issue 14: a diagnosis an engineer can act on blind, on every capture read live ---------------------------

def _capture_diagnosis(name: str, redis_url: str, rclient, *, with_alert: bool = True, metrics=None):
    """The capture loaded into a real redis-server, read as `jobrunbook diagnose` reads it (its Redis, log,
    /metrics), at a clock a minute after its log ends; the alert (when given) fired as the log begins."""
    from conftest import load_fixture_snapshot
    from jobrunbook import clock
    from jobrunbook.diagnosis.gather import evidence_from_findings, gather_findings
    from jobrunbook.sources import collect_worker_logs

    rclient.flushall()  # the session's private redis-server: one capture at a time
    load_fixture_snapshot(rclient, name)
    log = fixture_dir(name) / "worker.log"
    events = collect_worker_logs("file", path=str(log), since=None).data
    begins = events["from"]
    ends = max(parse_time(r["last_seen"]) for r in events["groups"].to_dict("records"))
    alert = {"severity": "critical", "queue": "critical", "startsAt": begins} if with_alert else {}
    now = ends + 60
    with clock.use(clock.FixedClock(now)):
        findings = gather_findings(redis_url=redis_url, log_file=str(log), alert=alert, metrics_url=metrics)
        d = diagnose(evidence_from_findings(findings, settings={"log_kind": "file", "log_file": str(log)}), now=now)
    return d, findings, parse_time(begins), now


@pytest.fixture
def capture(redis_url, rclient):
    from sources_support import HTTPStub

    stub = HTTPStub()

    def load(name: str, **kw):
        metrics = fixture_dir(name) / "metrics.txt"
        if metrics.exists():
            stub.routes["/metrics"] = (200, "text/plain; version=0.0.4", metrics.read_bytes())
        return _capture_diagnosis(name, redis_url, rclient, metrics=stub.url("/metrics") if metrics.exists() else None,
                                  **kw)

    yield load
    stub.close()


def _assert_by_count(d) -> None:
    from jobrunbook.diagnosis.rank import types_text

    failures = [c.failures for c in d.causes]
    assert failures == sorted(failures, reverse=True)
    for c in d.causes:
        counts = list(c.type_counts.values())
        assert counts == sorted(counts, reverse=True) and list(c.type_counts) == c.task_types
        assert sum(counts) == c.failures
        assert [g["count"] for g in c.groups] == sorted((g["count"] for g in c.groups), reverse=True)
    top = d.causes[0]
    assert f"on {types_text(top.task_types)}, e.g." in d.verdict
    assert top.groups[0]["example_error"][:60] in d.verdict  # the example comes from the largest group
    if len(top.task_types) > 3:
        assert f"and {len(top.task_types) - 3} more" in d.verdict


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_capture_orders_types_queues_and_groups_by_count(capture, name):
    d, findings, _, _ = capture(name)
    _assert_by_count(d)
    # the verdict's types are the largest: asynq's Inspector (ground truth) counts them so
    data = json.loads((fixture_dir(name) / "inspector.json").read_text())
    top = d.causes[0]
    from jobrunbook.diagnosis.causes import classify

    counts: dict[str, int] = {}
    for q in data["queues"]:
        for state in ("retry", "archived"):
            for t in q["tasks"][state]:
                if classify(t["last_err"]) == top.key:
                    counts[t["type"]] = counts.get(t["type"], 0) + 1
    assert top.type_counts == dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_capture_each_causes_commands_cover_exactly_its_tasks(capture, rclient, name):
    from diagnosis_support import cover, placeholder_in, remediation_commands

    d, findings, _, _ = capture(name)
    as_dict = d.to_dict()
    top = as_dict["causes"][0]
    assert top["key"] == TRUTH_TO_CAUSE[truth(name)["dominant_cause"]]
    for cause in as_dict["causes"]:
        if not cause["failures"]:
            continue
        commands = remediation_commands(cause)
        assert commands and all(" --cause " + cause["key"] in c for c in commands), cause["key"]
        total, foreign = cover(rclient, as_dict, cause, findings["asynq"]["groups"])
        assert total == cause["failures"], (cause["key"], total, cause["failures"])
        assert foreign == [], foreign
    for c in [c for cause in as_dict["causes"] for a in cause["actions"] for c in a["commands"]]:
        assert placeholder_in(c) is None, c


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_capture_asynq_cli_only_where_no_other_cause_is_touched(capture, rclient, name):
    d, findings, _, _ = capture(name)
    groups = findings["asynq"]["groups"]
    from jobrunbook.diagnosis.causes import classify

    for cause in d.causes:
        for a in cause.actions:
            for c in a["commands"]:
                if c.startswith("asynq task runall") or c.startswith("asynq task archiveall"):
                    q = c.split("--queue=")[1].split()[0]
                    state = c.split("--state=")[1].split()[0]
                    held = {classify(g["example_error"], g["fingerprint"]) for g in groups
                            if g["queue"] == q and g[state]}
                    assert held == {cause.key}, (c, held)
                    assert rclient.zcard(f"asynq:{{{q}}}:{state}") == sum(g[state] for g in groups if g["queue"] == q)
            if a.get("op") in ("run", "archive") and not any(c.startswith("asynq ") for c in a["commands"]):
                # not offered: one line says why, with how many other tasks it would touch
                assert "is not offered" in a["note"] and "task(s) of other causes" in a["note"], a


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_capture_onset_and_escalation_from_the_alert(capture, name):
    d, _, start, now = capture(name)
    for c in d.causes:
        if c.first_seen:
            assert c.onset in ("new", "chronic") and "since " in c.onset_text, (c.key, c.onset_text)
            hms = datetime.datetime.fromtimestamp(c.first_seen, datetime.timezone.utc).strftime("%H:%M:%S")
            assert hms in c.onset_text
    e = d.escalation
    assert e["started_from"] == "the alert's startsAt"
    assert parse_time(e["started_at_utc"].replace(" UTC", ":00Z").replace(" ", "T")) == start // 60 * 60
    deadline = start + 15 * 60  # critical: escalate after 15 min
    assert e["remaining_s"] == int(deadline - now)
    assert e["remaining"].startswith("overdue by") == (now >= deadline)


@pytest.mark.parametrize("name", ["bad-deploy", "v0.26/bad-deploy", "v0.26/crash", "dependency-down"])
def test_capture_onset_and_escalation_without_an_alert(capture, name):
    d, _, _, now = capture(name, with_alert=False)
    top = d.causes[0]
    assert top.onset == "new", top.onset_text
    if "bad-deploy" in name:
        assert "after the worker restarted (a deploy)" in top.onset_text
    elif "crash" in name:
        assert "after the worker restarted (no clean exit before it: a crash)" in top.onset_text
    else:
        assert "after the worker started" in top.onset_text
    e = d.escalation
    assert e["started_from"].startswith("the first failure of the top cause")
    assert e["remaining_s"] == int(top.first_seen + 15 * 60 - now) if e["severity"] == "critical" else \
        e["remaining_s"] == int(top.first_seen + 3600 - now)
    assert e["deadline_relative"] != "in 1 h 00 min"


@pytest.mark.parametrize("name", SNAPSHOTS_WITH_METRICS)
def test_capture_failure_ratio_from_the_app_and_from_asynq(capture, name):
    d, _, _, _ = capture(name)
    r = d.ratios
    t = truth(name)
    assert abs(r["app"]["ratio"] - t["metric_failure_ratio"]) < 0.001
    redis_counts = {}
    for line in (fixture_dir(name) / "redis.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for kind in ("processed", "failed"):
            if rec["key"].endswith(f"}}:{kind}"):
                import base64

                redis_counts[kind] = redis_counts.get(kind, 0) + int(base64.b64decode(rec["value"]["b64"]))
    assert (r["asynq"]["processed"], r["asynq"]["failed"]) == (redis_counts["processed"], redis_counts["failed"])
    if name == "v0.26/crash":
        # the app's metric never sees a task whose worker died: 2.5 % next to 81 % lease expired
        assert r["differ"] and "34 lease expiration(s)" in r["reason"]
        assert r["asynq"]["ratio"] > 3 * r["app"]["ratio"]
    else:
        assert not r["differ"], r


def test_capture_groups_say_how_many_distinct_errors_they_fold(capture):
    from jobrunbook.diagnosis.cli import render_text

    d, _, _, _ = capture("dependency-down")
    data = json.loads((fixture_dir("dependency-down") / "inspector.json").read_text())
    folded = {}
    for q in data["queues"]:
        for state in ("retry", "archived"):
            for t in q["tasks"][state]:
                folded.setdefault((q["queue"], t["type"], fingerprint(t["last_err"])), set()).add(t["last_err"])
    bad = next(c for c in d.causes if c.key == "bad_data").groups[0]
    n = len(folded[(bad["queue"], bad["task_type"], bad["fingerprint"])])
    assert bad["distinct_errors"] == n > 1
    assert f"[{n} distinct errors folded into this fingerprint]" in render_text(d)
    single = next(c for c in d.causes if c.key == "dependency").groups[0]
    assert single["distinct_errors"] == 1 and "folded" not in render_text(d).split(single["example_error"][:60])[1][:120]


def test_capture_checks_aim_at_what_the_errors_name(capture):
    d, _, _, _ = capture("dependency-down")
    dep = next(c for c in d.causes if c.key == "dependency")
    commands = [c for a in dep.actions for c in a["commands"]]
    # no DSN configured: the Postgres the failing tasks dial, read from their errors
    assert "pg_isready -h 127.0.0.1 -p 5432" in commands
    d, _, _, _ = capture("mixed")
    rate = next(c for c in d.causes if c.key == "rate_limit")
    check = next(a for a in rate.actions if a["key"] == "check_external")
    assert check["commands"] == [] and "set JOBRUNBOOK_HEALTH_URLS" in check["note"]
    panic = next(c for c in d.causes if c.key == "panic")
    trace = next(a for a in panic.actions if a["key"] == "panic_trace")
    log = fixture_dir("mixed") / "worker.log"
    assert trace["commands"] == [f"grep -n -A 30 'recovering from panic' {log}"]
