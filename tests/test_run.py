"""The run engine: real papermill runs of tests/notebooks fixtures, on fresh and on warm kernels."""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import nbformat
import pytest
from conftest import FIXTURES, ROOT
from jobrunbook._exceptions import ConfigError
from jobrunbook.findings import read_findings
from jobrunbook.kernels import KernelPool
from jobrunbook.run import cli as run_cli
from jobrunbook.config import Settings
from jobrunbook.config_cli import sources_from
from jobrunbook.run import (
    create_run_dir,
    execute_run,
    kernel_env,
    make_run_id,
    params_from_labels,
    params_from_webhook,
    plan_stages,
)

NOTEBOOKS = ROOT / "tests" / "notebooks"
ALERTS = FIXTURES / "alertmanager"
RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[A-Za-z0-9._-]+-[A-Za-z0-9._-]+-[A-Za-z0-9._-]{1,8}$")
URL_SECRET = "urlPw-9f3k2"
ENV_SECRET = "envPw-77q1x"
HOSTILE_QUEUE = 'q"; import os; os.system("touch /tmp/jr-pwned") #\\ ../../etc\x00$(id)`x`'


def _all_text(run_dir: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in run_dir.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    src = sources_from({"redis_url": f"redis://:{URL_SECRET}@127.0.0.1:6390/0"}, env={})
    params = params_from_labels(
        ["alertname=JobFailureRateCritical", "severity=critical", f"queue={HOSTILE_QUEUE}", "task_type=email:send"],
        src.settings)
    seen = []
    run = execute_run(params, notebooks_dir=NOTEBOOKS / "basic", outputs_dir=out,
                      env={"JOBRUNBOOK_SOME_TOKEN": ENV_SECRET, **kernel_env(src.settings, src.env)}, timeout=60,
                      on_progress=lambda s, st, e: seen.append((s, st)))
    return run, out, seen


def test_params_from_each_captured_webhook():
    warning = params_from_webhook(json.loads((ALERTS / "firing-warning.json").read_text()))
    assert [(p.alertname, p.queue, p.task_type, p.severity, p.fingerprint) for p in warning] == [
        ("JobFailureRate", "default", "email:send", "warning", "e4f4d901c8ab50ef")]
    assert warning[0].starts_at == "2026-11-29T18:30:27.292000Z"
    grouped = params_from_webhook((ALERTS / "firing-critical-grouped.raw-body.json").read_bytes())
    # each alert's own labels, not commonLabels (which has no queue)
    assert sorted((p.queue, p.task_type) for p in grouped) == [
        ("default", "email:send"), ("default", "webhook:deliver"), ("priority", "report:generate")]
    mixed = params_from_webhook(json.loads((ALERTS / "firing-mixed-with-resolved.json").read_text()))
    assert [(p.queue, p.task_type) for p in mixed] == [("default", "email:send"), ("priority", "email:send")]
    assert params_from_webhook(json.loads((ALERTS / "resolved.json").read_text())) == []
    other = json.loads((ALERTS / "firing-warning.json").read_text())
    other["alerts"][0]["labels"]["alertname"] = "DiskFull"
    assert params_from_webhook(other) == []


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "not JSON"),
    (json.dumps({"version": "3", "alerts": []}), "version"),
    (json.dumps({"version": "4"}), "alerts"),
    (json.dumps({"version": "4", "alerts": [{"labels": {"queue": "q"}}]}), "alertname"),
    (json.dumps({"version": "4", "alerts": [{"labels": {"alertname": "JobFailureRate"}, "startsAt": "yesterday"}]}),
     "startsAt"),
    (b"{" + b" " * (1 << 20) + b"}", "limit"),
])
def test_bad_webhook_bodies_are_config_errors(body, fragment):
    with pytest.raises(ConfigError, match=fragment):
        params_from_webhook(body)


def test_labels_are_bounded_and_run_ids_safe(tmp_path):
    nasty = ["../../etc/passwd", "a\x00b", "$(rm -rf /);`id`|&>", "é" * 5000, "..", "", "\u202e\u0000/"]
    for value in nasty:
        p = params_from_labels([f"alertname=A{value}", f"queue={value}"])
        assert len(p.queue) <= 256 and "\x00" not in p.queue
        run_id = make_run_id(p.alertname, p.queue, p.fingerprint, now=__import__("datetime").datetime.now())
        assert RUN_ID.match(run_id), run_id
        assert ".." not in run_id
        d = create_run_dir(tmp_path, run_id)
        assert d.parent == tmp_path and (d / "findings").is_dir()
    assert len(list(tmp_path.iterdir())) == len(nasty)  # a clash got a suffix, nothing escaped


def test_secrets_leave_the_parameters_for_the_kernels_environment():
    src = sources_from({"redis_url": "redis://:p%40ss@redis:6379/2", "prometheus_url": "http://bob:pw2@prom:9090"},
                       env={})
    p = params_from_labels(["queue=q"], src.settings)
    assert p.sources["redis_url"] == "redis://redis:6379/2" and p.sources["prometheus_url"] == "http://bob:***@prom:9090"
    env = kernel_env(src.settings, src.env)
    assert env == {"JOBRUNBOOK_REDIS_PASSWORD": "p@ss", "JOBRUNBOOK_PROMETHEUS_URL": "http://bob:pw2@prom:9090"}
    # in the kernel, the public settings and that environment give back what the flags said
    inside = Settings.from_public(p.sources)
    assert inside.redis_url_with_secret(env) == "redis://:p%40ss@redis:6379/2"
    assert inside.url_with_secret("prometheus_url", env) == "http://bob:pw2@prom:9090"
    bare = sources_from({"redis_url": "redis://onlysecret@h:1/0"}, env={})
    assert bare.settings.redis_url == "redis://h:1/0" and kernel_env(bare.settings, bare.env) == {
        "JOBRUNBOOK_REDIS_PASSWORD": "onlysecret"}


def test_stages_run_00_with_01_04_and_05_waits_for_them():
    names = ["06_x", "00_a", "03_c", "01_b", "05_d", "04_e", "02_f", "07_g"]
    # 00 reads only the alert: it runs alongside 01-04; 05 and 06 read all five's findings: they wait for them
    assert plan_stages(names) == [["00_a", "01_b", "02_f", "03_c", "04_e"], ["05_d", "06_x"], ["07_g"]]
    assert plan_stages(["05_d", "06_x", "08_y"]) == [["05_d", "06_x"], ["08_y"]]


def test_run_directory_contract(cold_run):
    run, out, seen = cold_run
    d = run.run_dir
    assert d.parent == out.resolve() and RUN_ID.match(d.name)
    assert d.name.split("-")[1] == "JobFailureRateCritical"
    for f in ("alert.json", "params.json", "status.json", "report.html", "rca.md"):
        assert (d / f).is_file(), f
    names = ["00_alert", "01_logs", "02_asynq", "03_metrics", "05_diagnosis", "06_remediation"]
    assert sorted(p.stem for p in (d / "notebooks").glob("*.ipynb")) == names
    assert {p.name for p in (d / "charts").glob("*.png")} == {"failure_ratio.png", "queue_depth.png"}
    status = json.loads((d / "status.json").read_text())
    assert status["state"] == "failed" == run.state and status["failed_sections"] == ["02_asynq"]
    assert {n: s["state"] for n, s in status["sections"].items()} == {n: ("failed" if n == "02_asynq" else "ok")
                                                                    for n in names}
    assert all(s["elapsed_s"] > 0 and s["started_at"] <= s["ended_at"] for s in status["sections"].values())
    assert status["report"] == "report.html" and run.report == d / "report.html"
    # progress: every section reported running then its final state
    assert ("02_asynq", "failed") in seen and ("00_alert", "running") in seen and len(seen) == 12
    # 00 starts with 01-04 (no ended section before both ran), and 05 starts only after all of them ended
    first_end = min(i for i, (_, st) in enumerate(seen) if st != "running")
    assert {s for s, st in seen[:first_end]} >= {"00_alert", "01_logs"}
    for late in ("05_diagnosis", "06_remediation"):
        starts = seen.index((late, "running"))
        assert {s for s, st in seen[:starts] if st != "running"} == {"00_alert", "01_logs", "02_asynq", "03_metrics"}
    assert {s for s, _ in seen[-4:]} == {"05_diagnosis", "06_remediation"}


def test_failed_section_keeps_notebook_banner_and_finding(cold_run):
    run, _, _ = cold_run
    nb = nbformat.read(run.run_dir / "notebooks" / "02_asynq.ipynb", as_version=4)
    assert "An Exception was encountered" in "".join(nb.cells[0].source)  # papermill's banner on top
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any(o.get("ename") == "RuntimeError" for o in outputs)
    assert not any("never reached" in str(o) for o in outputs)
    finding = read_findings(run.run_dir)["02_asynq"]
    assert finding["status"] == "failed" and finding["data"]["partial"] is True  # what it found before breaking
    assert "deliberately broken" in finding["data"]["error"]
    assert run.sections["02_asynq"].error.startswith("RuntimeError: deliberately broken")


def test_parameters_are_injected_exactly_and_no_secret_anywhere(cold_run):
    run, _, _ = cold_run
    data = read_findings(run.run_dir)["00_alert"]["data"]
    assert data["queue"] == run.params.queue  # the hostile label arrived as a plain string
    assert "os.system" in data["queue"] and not Path("/tmp/jr-pwned").exists()
    assert data["password_seen"] is True  # the secret reached the kernel, through its environment
    found = read_findings(run.run_dir)
    pids = {found[s]["data"]["pid"] for s in ("00_alert", "01_logs", "02_asynq", "05_diagnosis")}
    assert len(pids) == 4 and os.getpid() not in pids  # a fresh kernel per notebook (pre-started or not)
    assert data["redis_url"] == "redis://127.0.0.1:6390/0"
    params = json.loads((run.run_dir / "params.json").read_text())
    assert params["run_dir"] == str(run.run_dir) and "redis://127.0.0.1:6390/0" == params["sources"]["redis_url"]
    text = _all_text(run.run_dir) + (run.run_dir.parent / "index.html").read_text()
    assert URL_SECRET not in text and ENV_SECRET not in text


def test_verdict_and_headline(cold_run):
    run, _, _ = cold_run
    assert run.verdict["severity"] == "critical" and run.verdict["failure_ratio"] == 0.31
    assert run.headline.startswith("Database connection exhausted (82 %)")


def test_timeout_interrupts_and_still_reports(tmp_path):
    t = time.monotonic()
    run = execute_run(params_from_labels(["queue=slow"]), notebooks_dir=NOTEBOOKS / "slow", outputs_dir=tmp_path,
                      timeout=3)
    assert time.monotonic() - t < 30
    sec = run.sections["00_sleep"]
    assert sec.state == "timeout" and "timed out after 3s" in sec.error
    nb = nbformat.read(sec.notebook, as_version=4)
    assert "An Exception was encountered" in "".join(nb.cells[0].source)
    assert read_findings(run.run_dir)["00_sleep"]["data"]["section_state"] == "timeout"
    assert "unknown" in run.report.read_text()


def test_warm_pool_one_fresh_kernel_per_notebook(tmp_path):
    env_before = dict(os.environ)
    with KernelPool(size=3, parallel_starts=2) as pool:
        src = sources_from({"redis_url": f"redis://:{URL_SECRET}@h:1/0"}, env={})
        params = params_from_labels(["queue=warm", "severity=warning"], src.settings)
        run = execute_run(params, notebooks_dir=NOTEBOOKS / "basic", outputs_dir=tmp_path, pool=pool, timeout=60,
                          env=kernel_env(src.settings, src.env))
        started = pool.started_count
    assert dict(os.environ) == env_before  # nothing leaked into the service's own environment
    assert run.failed_sections == ["02_asynq"]
    found = read_findings(run.run_dir)
    pids = [found[s]["data"]["pid"] for s in ("00_alert", "01_logs", "02_asynq", "05_diagnosis")]
    assert len(set(pids)) == 4 and os.getpid() not in pids
    assert found["00_alert"]["data"]["password_seen"] is True
    assert started >= 6  # 3 at start + a replacement for each notebook used
    status = json.loads((run.run_dir / "status.json").read_text())
    assert status["mode"] == "warm" and status["state"] == "failed"
    assert URL_SECRET not in _all_text(run.run_dir)
    nb = nbformat.read(run.run_dir / "notebooks" / "00_alert.ipynb", as_version=4)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))  # the silent warm-up left no trace


def test_cli_runs_first_firing_alert_and_prints_verdict(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    run_cli.add_arguments(parser)
    args = parser.parse_args(["--alert", str(ALERTS / "firing-critical-grouped.json"), "--notebooks",
                              str(NOTEBOOKS / "trivial"), "--outputs", str(tmp_path), "--timeout", "60"])
    assert run_cli.command(args) == 0
    out = capsys.readouterr().out
    assert "JobFailureRateCritical queue=default task_type=email:send" in out
    assert re.search(r"\[ok\] 04_dependencies\s+ok\s+\d+\.\d+s", out)
    assert "verdict: unknown" in out
    report = Path(re.search(r"report: (\S+)", out).group(1))
    assert report.is_file() and report.parent.parent == tmp_path.resolve()
    alert = json.loads((report.parent / "alert.json").read_text())
    assert alert["labels"]["task_type"] == "email:send" and alert["fingerprint"]
    args = parser.parse_args(["--alert", str(ALERTS / "resolved.json"), "--notebooks", str(NOTEBOOKS / "trivial"),
                              "--outputs", str(tmp_path)])
    with pytest.raises(ConfigError, match="no firing"):
        run_cli.command(args)


def _kernelspec(tmp_path: Path, name: str, script: str) -> str:
    """A kernel spec ``name`` under tmp_path (the JUPYTER_PATH returned) whose argv is ``script`` (a shell line),
    then the real ipykernel."""
    import sys

    spec = tmp_path / "share" / "jupyter" / "kernels" / name
    spec.mkdir(parents=True)
    argv = ["/bin/sh", "-c", f"{script}; exec {sys.executable} -m ipykernel_launcher -f \"$0\"", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": "python"}))
    return str(tmp_path / "share" / "jupyter")


def test_pool_tries_a_failed_kernel_start_again(tmp_path, monkeypatch):
    marker = tmp_path / "first-start"
    # the first start dies at once (as a kernel killed while starting); the second is a real kernel
    monkeypatch.setenv("JUPYTER_PATH", _kernelspec(
        tmp_path, "flaky", f"if [ ! -e {marker} ]; then touch {marker}; exit 3; fi"))
    with KernelPool(size=1, kernel_name="flaky", start_timeout=20, warmup_code="") as pool:
        km = pool.acquire(timeout=60)
        pool.release(km)
        assert marker.exists() and pool.started_count >= 1
        assert any("start 1/3" in e for e in pool.errors)


def test_pool_that_cannot_start_a_kernel_says_why_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", _kernelspec(tmp_path, "broken", "exit 3"))
    pool = KernelPool(size=1, kernel_name="broken", start_timeout=5, warmup_code="", attempts=2).start(wait=False)
    try:
        t = time.monotonic()
        with pytest.raises(Exception, match=r"no kernel could be started \(last errors: start 1/2.*start 2/2"):
            pool.acquire(timeout=300)
        assert time.monotonic() - t < 60  # the reason, not a 300 s wait
    finally:
        pool.close()


def test_report_first_then_its_pdf_and_a_new_render_waits_for_it(tmp_path):
    from jobrunbook.run.execute import render_all

    run = execute_run(params_from_labels(["queue=pdf"]), notebooks_dir=NOTEBOOKS / "trivial", outputs_dir=tmp_path,
                      timeout=60)
    assert run.report is not None and run.report.is_file()  # returned with report.html, the PDF printing after
    # rendering again (as the resolve does) right away waits for that print, then prints its own
    status = json.loads((run.run_dir / "status.json").read_text())
    render_all(run.run_dir, tmp_path, status)
    assert run.wait_pdf(timeout=120)
    final = json.loads((run.run_dir / "status.json").read_text())
    assert "pdf_pending" not in final and final["pdf"] == "report.pdf", final.get("pdf_skipped")
    assert final["state"] == "done" and final["report"] == "report.html"
    pdf = run.run_dir / "report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_mtime >= run.report.stat().st_mtime
