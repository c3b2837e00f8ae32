"""The user's path is the test: `make demo`'s own run, for every scenario, read back as data.

Each scenario is run exactly as the README says (`jobrunbook demo --scenario S --once`, from the
project's folder, default paths), then its run directory's status.json and findings/*.json are
checked against what the scenario declares: every source reached, honest section states, the
declared top cause, commands aimed at this incident's own targets, dry runs that match the cause's
own tasks, and evidence that agrees with the scenario (the Postgres the failing tasks dial is down).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from _browser import ARTIFACTS, open_report
from conftest import ROOT
from jobrunbook.demo import SCENARIOS

pytestmark = pytest.mark.slow

PLACEHOLDERS = ("api.external-service.com", "<task_id>", "localhost:8080", "example.com/health")
# scenarios whose Postgres is down: the tasks dial it and the probe must find it down
DB_DOWN = {"dependency-down", "mixed"}


def _jobrunbook() -> list[str]:
    exe = Path(sys.executable).parent / "jobrunbook"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jobrunbook.cli"]


@pytest.fixture(scope="module")
def demo_runs():
    """scenario -> (run dir, demo.json, stdout), each from its own `jobrunbook demo --scenario S --once`."""
    made: dict[str, tuple[Path, dict, str]] = {}

    def get(scenario: str):
        if scenario not in made:
            proc = subprocess.run([*_jobrunbook(), "demo", "--scenario", scenario, "--once"], cwd=ROOT,
                                  capture_output=True, text=True, timeout=600,
                                  env={k: v for k, v in os.environ.items() if not k.startswith("JOBRUNBOOK_")})
            assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
            report = next(line.split(None, 1)[1] for line in proc.stdout.splitlines() if line.startswith("report:"))
            run_dir = Path(report.strip()).parent
            assert run_dir.is_absolute() and run_dir.parent == ROOT / "outputs"
            info = json.loads((ROOT / "outputs" / "demo" / "demo.json").read_text())
            assert info["scenario"] == scenario
            made[scenario] = (run_dir, info, proc.stdout)
        return made[scenario]

    return get


def findings(run_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((run_dir / "findings").glob("*.json"))}


def all_text(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in all_text(v)]
    if isinstance(value, list):
        return [t for v in value for t in all_text(v)]
    return []


def commands(f: dict[str, dict]) -> list[str]:
    diag = f["05_diagnosis"]["data"]["diagnosis"]
    out = [c for cause in diag["causes"] for a in cause["actions"] for c in a["commands"]]
    out += [p["to act"] for p in f["06_remediation"]["data"].get("plans", []) if p.get("to act")]
    return out


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_demo_run_reaches_every_source(demo_runs, scenario):
    run_dir, info, _ = demo_runs(scenario)
    status = json.loads((run_dir / "status.json").read_text())
    f = findings(run_dir)
    assert status["state"] == "done"
    assert {n: s["state"] for n, s in status["sections"].items()} == dict.fromkeys(status["sections"], "ok"), \
        {n: s.get("degraded") or s.get("error") for n, s in status["sections"].items()}
    for name, doc in f.items():
        for text in all_text(doc["data"]):
            assert "does not exist" not in text and "unreachable" not in text.lower(), (name, text[:300])
    logs = f["01_logs"]["data"]
    assert logs["lines"] > 0 and logs["groups"], "the worker log was not read"
    assert f["02_asynq"]["data"]["groups"], "asynq's Redis gave no failed task"
    assert f["03_metrics"]["data"]["failure"]["overall"]["processed"] > 0
    assert f["03_metrics"]["data"]["prometheus"]["summary"], "Prometheus was not queried"
    assert f["00_alert"]["data"]["failure_ratio_source"].startswith("Prometheus")
    probes = {p["source"]: p for p in f["04_dependencies"]["data"]["probes"]}
    assert set(probes) == {"postgres", "redis", "http"}
    assert all(p["status"] != "error" for p in probes.values()), probes
    assert urlsplit(probes["http"]["target"]).netloc == urlsplit(info["external_health_url"]).netloc
    assert probes["redis"]["status"] == "ok"
    # the report's section table shows what status.json says
    page = (run_dir / "report.html").read_text()
    shown = dict(re.findall(r'<a href="#s-([0-9a-z_]+)">[^<]+</a></td><td class="st-[a-z]+" data-state="([a-z]+)"', page))
    assert shown == {n: s["state"] for n, s in status["sections"].items()}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_demo_diagnosis_names_the_declared_cause(demo_runs, scenario):
    run_dir, info, stdout = demo_runs(scenario)
    f = findings(run_dir)
    assert f["05_diagnosis"]["data"]["top_cause"] == SCENARIOS[scenario].truth["dominant_cause"]
    assert info["truth"]["dominant_cause"] == SCENARIOS[scenario].truth["dominant_cause"]
    cmds = commands(f)
    assert cmds, "no command recommended"
    page = html.unescape((run_dir / "report.html").read_text())
    for text in [*cmds, page, stdout]:
        for placeholder in PLACEHOLDERS:
            assert placeholder not in text, (placeholder, text[:300])
    health = urlsplit(info["external_health_url"])
    for c in cmds:
        if c.startswith("curl "):
            assert f"{health.hostname}:{health.port}" in c, c
        if c.startswith(("pg_isready", "psql")):
            pg = urlsplit(info["postgres_dsn"])
            assert f"-h {pg.hostname} -p {pg.port}" in c, c


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_demo_dry_runs_cover_their_cause_exactly(demo_runs, scenario):
    run_dir, _, _ = demo_runs(scenario)
    f = findings(run_dir)
    cause_of = {(g["queue"], g["task_type"], g["fingerprint"]): g["cause"] for g in f["02_asynq"]["data"]["groups"]}
    plans = f["06_remediation"]["data"].get("plans", [])
    causes = f["05_diagnosis"]["data"]["diagnosis"]["causes"]
    recommended = {c["key"] for c in causes for a in c["actions"] if a["changes_state"]
                   and any(cmd.startswith("jobrunbook remediate ") for cmd in a["commands"])}
    assert {p["cause"] for p in plans} == recommended
    for p in plans:
        assert p["tasks"] >= 1 and not p["warning"], p
        assert " --cause " + p["cause"] in p["command"]
        # every task the dry run holds is in a group section 02 gave this cause
        assert sum(g["count"] for g in p["groups"]) == p["tasks"]
        assert {cause_of[(g["queue"], g["task_type"], g["fingerprint"])] for g in p["groups"]} == {p["cause"]}, p
    for c in causes:
        if c["key"] in recommended:  # one action per cause, and it covers exactly the cause's tasks
            assert sum(p["tasks"] for p in plans if p["cause"] == c["key"]) == c["failures"], c["key"]
    top = causes[0]
    assert top["key"] in recommended
    page = html.unescape((run_dir / "report.html").read_text())
    assert f"covers exactly its {top['failures']:,} failed task(s)" in page
    # the reading counts dry runs and causes as they are: the mixed demo's bad data has two (archive its
    # retrying tasks, re-run its archived ones), and the report once said "7 dry run(s), one per cause" for 6
    n_causes = len({p["cause"] for p in plans})
    per = "one per cause" if n_causes == len(plans) else f"for {n_causes} causes"
    assert f"{len(plans)} dry run(s), {per}" in page


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_demo_report_shows_onset_both_ratios_and_the_escalation_clock(demo_runs, scenario):
    run_dir, info, _ = demo_runs(scenario)
    diag = findings(run_dir)["05_diagnosis"]["data"]
    top = diag["diagnosis"]["causes"][0]
    page = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", (run_dir / "report.html").read_text())).split())
    verdict_box = page[:page.index("Escalation Deadline")]
    assert top["onset"] == "new" and f"Onset: {top['onset_text']}" in verdict_box
    ratios = diag["ratios"]
    assert ratios["app"] and ratios["asynq"], ratios
    assert "Failed, by asynq's count" in verdict_box and f"{ratios['asynq']['processed']:,}" in verdict_box
    if ratios["differ"]:
        assert "The failure rates differ: " in verdict_box
    esc = diag["escalation"]
    assert esc["started_from"] == "the alert's startsAt"
    assert esc["started_at_utc"][:16] == info["onset"][:16].replace("T", " ")  # the demo's alert fires at its onset
    assert "counted from the alert's startsAt" in page and esc["remaining"] in page
    # who to escalate to, said once in the escalation line (it was said twice: in the next step and after it)
    esc_line = page[page.index("Escalation Deadline"):page.index("Section State Time")]
    assert esc_line.count(esc["who"]) == 1, esc_line
    # the checklist: a dry run changes nothing, so mitigation is still to do; nothing the run knows is "unknown"
    steps = {s["step"]: s["status"] for s in diag["diagnosis"]["checklist"]}
    assert steps["Mitigate"] == "to do" and "unknown" not in steps.values(), steps
    # 03's worst ratio says whose counters and over what window (the verdict's rate is Prometheus' 5 min)
    assert "Worst by the worker's own counters (since its process started)" in page
    # "Do now" links where its claim is proved: a remediation to its dry run, a check to the diagnosis
    do_now = page[page.index("Do now"):page.index("Escalation Deadline")]
    first = next(a for a in diag["diagnosis"]["causes"][0]["actions"] if a["commands"])
    label = "(its dry run: section 06)" if first["changes_state"] else "(why: section 05)"
    assert label in do_now and "(dry runs)" not in do_now, do_now[:300]


@pytest.mark.parametrize("scenario", sorted(DB_DOWN))
def test_demo_evidence_agrees_postgres_down(demo_runs, scenario):
    run_dir, info, _ = demo_runs(scenario)
    f = findings(run_dir)
    pg = next(p for p in f["04_dependencies"]["data"]["probes"] if p["source"] == "postgres")
    assert pg["status"] == "down", pg
    addr = urlsplit(pg["target"]).netloc.rsplit("@", 1)[-1]
    assert addr == urlsplit(info["postgres_dsn"]).netloc.rsplit("@", 1)[-1]
    dialled = {m for g in f["02_asynq"]["data"]["groups"] for m in re.findall(r"dial tcp (\S+):", g["example_error"])}
    assert dialled == {addr}, dialled
    dependency = next(c for c in f["05_diagnosis"]["data"]["diagnosis"]["causes"] if c["key"] == "dependency")
    assert any("postgres probe: down" in e for e in dependency["evidence"]), dependency["evidence"]
    assert not dependency["contradictions"], dependency["contradictions"]


# --- the report as the on-call engineer reads it (issue: a report worthy of the incident review) ----------

@pytest.mark.parametrize("width", [1280, 800])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_demo_report_reads_cleanly_in_chromium(demo_runs, scenario, width):
    run_dir, _, _ = demo_runs(scenario)
    status = json.loads((run_dir / "status.json").read_text())
    page = open_report(run_dir / "report.html", width=width, screenshot=f"report-{scenario}-{width}.png")
    assert page["width"] <= width, f"horizontal overflow at {width} px: scrollWidth {page['width']}"
    assert page["images"] and all(ok and w > 0 for ok, w in page["images"]), page["images"]
    layout = page["layout"]
    assert layout["broken"] == [], f"cells broken inside a word at {width} px: {layout['broken'][:5]}"
    assert layout["indexLike"] == [], f"a table whose first column is a bare row index: {layout['indexLike']}"
    if width >= 1280:  # at a laptop's width every table fits whole; narrower, a wide table may scroll in its box
        assert layout["clipped"] == [], f"content cut off at {width} px: {layout['clipped'][:3]}"
    else:
        assert all(c["table"] for c in layout["clipped"]), f"content cut off at {width} px: {layout['clipped'][:3]}"
    assert layout["decimals"] == [], f"numbers with more than 3 decimals: {layout['decimals'][:5]}"
    assert layout["states"] == {n: s["state"] for n, s in status["sections"].items()}
    text = page["text"]
    # one share and one confidence for the top cause, said once each in the verdict box
    diag = findings(run_dir)["05_diagnosis"]["data"]["diagnosis"]
    top = diag["causes"][0]
    assert f"{top['share'] * 100:.1f} % of failed tasks" in text
    assert f"confidence {top['level']}" in text and f"{top['confidence']:.2f}" not in page["title"]


@pytest.mark.parametrize("scenario", ["mixed", "dependency-down"])
def test_demo_report_pdf_holds_the_verdict(demo_runs, scenario):
    run_dir, _, _ = demo_runs(scenario)
    pdf = run_dir / "report.pdf"
    status = json.loads((run_dir / "status.json").read_text())
    assert status["pdf"] == "report.pdf" and pdf.is_file(), status.get("pdf_skipped")
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
    assert len(status["sections"]) + 1 <= pages <= 60  # the verdict, then every section on a page of its own
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    headline = " ".join(json.loads((run_dir / "findings" / "05_diagnosis.json").read_text())["data"]["verdict"]
                        .split()[:6])
    assert headline in " ".join(text.split())
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(pdf, ARTIFACTS / f"report-{scenario}.pdf")


def test_resolving_a_demo_run_renders_how_it_ended(demo_runs, tmp_path):
    run_dir, _, _ = demo_runs("timeouts")
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)  # the other tests read the original
    before = (copy / "report.html").read_text()
    assert "How it ended" not in before
    out = subprocess.run([*_jobrunbook(), "run", "--resolve", str(copy)], capture_output=True, text=True,
                         timeout=300, env={k: v for k, v in os.environ.items() if not k.startswith("JOBRUNBOOK_")})
    assert out.returncode == 0, out.stdout + out.stderr
    status = json.loads((copy / "status.json").read_text())
    assert status["state"] == "resolved" and status["resolved_at"] and status["time_to_resolve_s"] > 0
    page = open_report(copy / "report.html", screenshot="report-resolved.png")
    resolved_at = status["resolved_at"][:19].replace("T", " ")
    assert f"Resolved at {resolved_at} UTC" in page["text"]
    assert "How it ended" in page["text"] and "Timeline (UTC)" in page["text"]
    assert "resolved by hand (jobrunbook run --resolve)" in page["text"]
    assert page["layout"]["states"] == {n: s["state"] for n, s in status["sections"].items()}
    rca = (copy / "rca.md").read_text()
    assert "## Resolution" in rca and status["resolved_at"][:16] in rca
    assert (copy / "report.pdf").stat().st_mtime >= (copy / "status.json").stat().st_mtime - 60
