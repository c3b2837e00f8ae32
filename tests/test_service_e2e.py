"""End to end: real Prometheus and Alertmanager (Debian packages) -> the webhook -> a real run -> resolved.

A prometheus_client registry in the test exports ``job_processed_total`` with a failure ratio the test sets;
Prometheus scrapes it every second and evaluates the fast copy of the rules; Alertmanager (fast group timings)
posts to the service with a Bearer token and ``send_resolved: true``.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import requests
from _service_helpers import TOKEN, ServerThread, make_service, wait_for
from conftest import FIXTURES, free_port
from jobrunbook.notify import Notifier, Target
from jobrunbook.record import read_status
from jobrunbook.service import prometheus_ratio
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily
from test_notify import Target_

RULES = FIXTURES / "prometheus" / "job-failure-rate.fast.rules.yml"
PROMETHEUS, ALERTMANAGER = shutil.which("prometheus"), shutil.which("prometheus-alertmanager")


class Worker:
    """job_processed_total for default/email:send at 50 jobs/s, ``ratio`` of them failed."""

    def __init__(self) -> None:
        self.ratio, self.ok, self.failed = 0.02, 0.0, 0.0
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self._stop = threading.Event()
        threading.Thread(target=self._tick, daemon=True).start()

    def _tick(self) -> None:
        while not self._stop.wait(0.1):
            self.failed += 5 * self.ratio
            self.ok += 5 * (1 - self.ratio)

    def collect(self):
        c = CounterMetricFamily("job_processed", "jobs", labels=["queue", "task_type", "status"])
        c.add_metric(["default", "email:send", "success"], int(self.ok))
        c.add_metric(["default", "email:send", "failed"], int(self.failed))
        yield c

    def stop(self) -> None:
        self._stop.set()


def _start(args, log):
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)


def test_alertmanager_fires_a_run_and_resolves_it(tmp_path):
    assert PROMETHEUS and ALERTMANAGER, "apt-get install -y prometheus prometheus-alertmanager"
    worker = Worker()
    exporter_port = free_port()
    httpd, _ = start_http_server(exporter_port, addr="127.0.0.1", registry=worker.registry)
    outputs = tmp_path / "outputs"
    hook = Target_()
    prom_port, am_port = free_port(), free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    notifier = Notifier([Target("webhook", hook.url)])
    app, store, _ = make_service(outputs, ratio_fn=prometheus_ratio(prom_url, window="15s"), notifier=notifier,
                                 public_url="http://runbook.example")
    srv = ServerThread(app)
    (tmp_path / "am.yml").write_text(f"""
route:
  receiver: runbook
  group_by: [alertname, component]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1m
receivers:
  - name: runbook
    webhook_configs:
      - url: {srv.url}/alerts
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {TOKEN}
""")
    (tmp_path / "prom.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
alerting:
  alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]
rule_files: ['{RULES}']
scrape_configs:
  - job_name: worker
    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]
""")
    log = (tmp_path / "daemons.log").open("w")
    am = _start([ALERTMANAGER, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am'}",
                 f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="], log)
    prom = _start([PROMETHEUS, f"--config.file={tmp_path / 'prom.yml'}", f"--storage.tsdb.path={tmp_path / 'prom'}",
                   f"--web.listen-address=127.0.0.1:{prom_port}"], log)
    t0 = time.monotonic()
    try:
        wait_for(lambda: requests.get(prom_url + "/-/ready", timeout=2).ok if _up(prom_url) else False, 30, 0.2,
                 "prometheus")
        worker.ratio = 0.5  # above both thresholds: the critical fires after 5 s, the warning after 10 s
        rows = wait_for(lambda: [r for r in store.list() if r["state"] == "done"], 120, 0.25,
                        "a run from the webhook")  # alert rule, group_wait and 7 notebooks: slow on a loaded 2-core box
        row = rows[0]
        assert (row["queue"], row["task_type"]) == ("default", "email:send")
        run_dir = outputs / row["run_id"]
        assert (run_dir / "report.html").is_file()
        assert read_status(run_dir)["state"] == "done"
        worker.ratio = 0.0  # recovery: the 15 s window drains, the alert resolves, Alertmanager sends resolved
        # the warning fires after the critical (10 s against 5 s): it is linked to the critical's run, not run
        wait_for(lambda: all(r["resolved_at"] and (r["close_state"] == "closed" or r["state"] == "linked")
                             for r in store.list()), 60, 0.25, "resolved + closed")
        linked = [r for r in store.list() if r["state"] == "linked"]
        assert all(store.get(r["linked_to"])["severity"] == "critical" and r["severity"] == "warning" for r in linked)
        for r in store.list():
            if r["state"] == "linked":
                continue
            status = read_status(outputs / r["run_id"])
            assert status["state"] == "resolved" and status["time_to_resolve_s"] > 0
            closing = status["closing"]
            assert closing["failure_ratio_source"].startswith("prometheus")
            # each alert resolves when the ratio drops under its own threshold (the critical one first)
            assert closing["failure_ratio_now"] < {"critical": 0.25, "warning": 0.10}[r["severity"]]
            assert closing["below"][r["severity"]] is True
            assert "## Resolution" in (outputs / r["run_id"] / "rca.md").read_text()
        events = {(b["event"], b["run_id"]) for b in hook.bodies}
        assert ("completed", row["run_id"]) in events and ("resolved", row["run_id"]) in events
        assert any(b["report_url"] == f"http://runbook.example/runs/{row['run_id']}/report.html" for b in hook.bodies)
        assert time.monotonic() - t0 < 90
    finally:
        for p in (prom, am):
            p.terminate()
        for p in (prom, am):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        srv.stop()
        notifier.close()
        hook.close()
        httpd.shutdown()
        worker.stop()
        log.close()


def _up(url: str) -> bool:
    try:
        requests.get(url + "/-/ready", timeout=1)
        return True
    except requests.RequestException:
        return False
