"""The whole loop on the demo incident: real Prometheus scrapes the demo's worker, real Alertmanager posts to
`jobrunbook serve`'s app, the REAL section notebooks run against the demo, and resolve closes the run."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta

import requests
from _service_helpers import TOKEN, ServerThread, wait_for
from conftest import FIXTURES, ROOT, free_port

from jobrunbook.demo import start_demo
from jobrunbook.record import read_status
from jobrunbook.config import Config
from jobrunbook.service import STORE_NAME, ServiceMetrics, Store, Worker, create_app, engine_runner, prometheus_ratio

RULES = FIXTURES / "prometheus" / "job-failure-rate.fast.rules.yml"
PROMETHEUS, ALERTMANAGER = shutil.which("prometheus"), shutil.which("prometheus-alertmanager")


def test_demo_incident_fires_a_real_runbook_run_and_resolve_closes_it(tmp_path):
    assert PROMETHEUS and ALERTMANAGER, "apt-get install -y prometheus prometheus-alertmanager"
    outputs = tmp_path / "outputs"
    prom_port, am_port = free_port(), free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    log = (tmp_path / "daemons.log").open("w")
    procs = []
    demo = start_demo("dependency-down", seed=4, state_dir=tmp_path / "demo", live=True, tick_seconds=0.5,
                      prometheus=False)
    store = Store(outputs / STORE_NAME)
    metrics = ServiceMetrics()
    runner = engine_runner(notebooks_dir=ROOT / "notebooks", outputs_dir=outputs, timeout=120,
                           env={"JOBRUNBOOK_POSTGRES_DSN": demo.postgres_dsn, "JOBRUNBOOK_DEMO_JSON": str(demo.demo_json)})
    worker = Worker(store, runner, outputs_dir=outputs, concurrency=1,
                    ratio_fn=prometheus_ratio(prom_url, window="15s"),
                    config=Config(base=demo.settings()), env={})
    app = create_app(store=store, worker=worker, outputs_dir=outputs, token=TOKEN, metrics=metrics,
                     served=("JobFailureRateCritical",), max_runs_per_group=10, group_window=timedelta(hours=1))
    srv = ServerThread(app)
    host, port = demo.metrics_url.split("//", 1)[1].split("/", 1)[0].split(":")
    (tmp_path / "am.yml").write_text(f"""
route: {{receiver: runbook, group_by: [alertname, component], group_wait: 1s, group_interval: 2s, repeat_interval: 1m}}
receivers:
  - name: runbook
    webhook_configs:
      - url: {srv.url}/alerts
        send_resolved: true
        http_config: {{authorization: {{type: Bearer, credentials: {TOKEN}}}}}
""")
    # one series only, the one the demo's alert names, so that one run is started
    (tmp_path / "prom.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]}}
rule_files: ['{RULES}']
scrape_configs:
  - job_name: worker
    static_configs: [{{targets: ['{host}:{port}']}}]
    metric_relabel_configs:
      - {{source_labels: [queue, task_type], regex: 'critical;webhook:deliver', action: keep}}
""")
    try:
        procs.append(subprocess.Popen([ALERTMANAGER, f"--config.file={tmp_path / 'am.yml'}",
                                       f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                                       "--cluster.listen-address="], stdout=log, stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prom.yml'}",
                                       f"--storage.tsdb.path={tmp_path / 'prom'}",
                                       f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=log, stderr=subprocess.STDOUT))
        rows = wait_for(lambda: [r for r in store.list() if r["state"] == "done"], 120, 0.5, "a run from the webhook")
        row = rows[0]
        assert (row["queue"], row["task_type"]) == ("critical", "webhook:deliver")
        run_dir = outputs / row["run_id"]
        html = (run_dir / "report.html").read_text()
        assert "Dependency failure" in html and "pg_isready" in html
        assert read_status(run_dir)["state"] == "done"
        served = requests.get(f"{srv.url}/runs/{row['run_id']}/report.html", headers={"Authorization": f"Bearer {TOKEN}"},
                              timeout=10)
        assert served.status_code == 200 and "Dependency failure" in served.text
        demo.stop_worker()  # the incident ends: nothing processed, the ratio's window drains, the alert resolves
        wait_for(lambda: all(r["close_state"] == "closed" for r in store.list()), 90, 0.5, "resolved + closed")
        status = read_status(run_dir)
        assert status["state"] == "resolved" and status["time_to_resolve_s"] > 0
        assert "## Resolution" in (run_dir / "rca.md").read_text()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        srv.stop()
        demo.stop()
        log.close()
