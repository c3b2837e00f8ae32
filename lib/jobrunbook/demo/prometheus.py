"""A real Prometheus for the demo: the simulated window backfilled, then scraping /metrics live.

    recorder = MetricsRecorder(metrics, instance="127.0.0.1:8123")
    recorder.record(t)                    # at each simulated step
    prom = start_prometheus(state_dir / "prometheus", recorder, "127.0.0.1:8123")
    prom.url, prom.pid, prom.stop()

The recorder keeps the worker's counters (``job_processed_total``) and its
``job_duration_seconds`` histogram at each step of the simulated clock and
writes them as OpenMetrics text with timestamps. ``promtool tsdb
create-blocks-from openmetrics`` turns that into TSDB blocks, then
``prometheus`` starts on that data dir scraping the demo's /metrics every
second. The backfilled series carry the ``job`` and ``instance`` labels the
scrape attaches, and the live counters continue from the recorded values, so
a range query sees one series per label set across the whole window. The
blocks end at the demo's ``now``; Prometheus's head starts after them, so the
scraped samples are never refused as out of bounds.
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from jobrunbook._exceptions import ConfigError, SourceError
from jobrunbook.demo.metrics import WorkerMetrics
from jobrunbook.demo.server import free_port

__all__ = ["JOB", "RULES_FILE", "MetricsRecorder", "DemoPrometheus", "find_binaries", "start_prometheus"]

JOB = "jobrunbook-demo"  # the scrape job's name: the `job` label of every demo series
RULES_FILE = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "job-failure-rate.rules.yml"
SCRAPE_INTERVAL = "1s"
READY_TIMEOUT = 20.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class MetricsRecorder:
    """The worker's metrics at each simulated step, as OpenMetrics text with timestamps."""

    def __init__(self, metrics: WorkerMetrics, *, instance: str, job: str = JOB) -> None:
        self.metrics = metrics
        self.target = {"job": job, "instance": instance}
        # family name -> (type, help); family -> point labels -> [(t, [(sample name, labels, value)])]
        self._meta: dict[str, tuple[str, str]] = {}
        self._points: dict[str, dict[tuple, list[tuple[float, list]]]] = {}
        self.steps = 0

    def record(self, t: float) -> None:
        """Keep every sample /metrics would serve now, stamped ``t`` (unix s)."""
        self.steps += 1
        for family in self.metrics.collect():
            self._meta.setdefault(family.name, (family.type, family.documentation))
            points = self._points.setdefault(family.name, {})
            by_point: dict[tuple, list] = {}
            for s in family.samples:
                labels = {**s.labels, **self.target}
                key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                by_point.setdefault(key, []).append((s.name, labels, s.value))
            for key, samples in by_point.items():
                points.setdefault(key, []).append((t, samples))

    def text(self) -> str:
        """OpenMetrics: each family together, each point's samples together, in time order, ``# EOF``."""
        lines: list[str] = []
        for name in sorted(self._points):
            kind, doc = self._meta[name]
            lines.append(f"# HELP {name} {_escape(doc)}")
            lines.append(f"# TYPE {name} {kind}")
            for key in sorted(self._points[name]):
                for t, samples in self._points[name][key]:
                    stamp = f"{t:.3f}"
                    lines.extend(f"{sname}{_labels(labels)} {_number(value)} {stamp}"
                                 for sname, labels, value in samples)
        lines.append("# EOF")
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.text(), encoding="utf-8")
        return path


def find_binaries() -> tuple[str, str] | str:
    """(prometheus, promtool) from PATH, or the reason they cannot be used."""
    prom, tool = shutil.which("prometheus"), shutil.which("promtool")
    missing = [n for n, p in (("prometheus", prom), ("promtool", tool)) if p is None]
    if missing:
        return f"no {' and no '.join(missing)} on PATH (Debian: apt-get install prometheus)"
    return prom, tool


class DemoPrometheus:
    """A running Prometheus on 127.0.0.1; ``url``, ``pid``, ``data_dir``, ``log_path``, ``stop()``."""

    def __init__(self, proc: subprocess.Popen, port: int, data_dir: Path, log_path: Path, blocks: str) -> None:
        self.proc = proc
        self.port = port
        self.data_dir = data_dir
        self.log_path = log_path
        self.blocks = blocks  # promtool's table of the backfilled blocks
        atexit.register(self.stop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """Terminate Prometheus and wait for it (idempotent)."""
        atexit.unregister(self.stop)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _config(target: str, rules_file: Path | None) -> dict:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                   "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules_file)] if rules_file else [],
        "scrape_configs": [{"job_name": JOB, "honor_labels": True, "metrics_path": "/metrics",
                            "static_configs": [{"targets": [target]}]}],
    }


def _wait_ready(proc: subprocess.Popen, url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"exited with {proc.returncode}" if proc.poll() is not None else f"not ready after {timeout:g}s"
            raise SourceError(f"the demo's Prometheus at {url} {state}", hint=f"tail {log_path}")
        time.sleep(0.05)


def start_prometheus(data_root: Path, recorder: MetricsRecorder, target: str, *, binaries: tuple[str, str],
                     rules_file: Path | None = RULES_FILE, timeout: float = READY_TIMEOUT) -> DemoPrometheus:
    """Backfill ``recorder``'s samples into ``data_root``/data and start Prometheus scraping ``target``.

    ``data_root`` is wiped first (a previous demo's blocks carry another instance label).
    Raises SourceError (promtool or prometheus failed; hint: the command or log to read).
    """
    prom_bin, tool_bin = binaries
    if rules_file is not None and not Path(rules_file).is_file():
        raise ConfigError(f"the rules file {rules_file} is missing", hint=f"promtool check rules {rules_file}")
    shutil.rmtree(data_root, ignore_errors=True)
    data_dir = data_root / "data"
    data_dir.mkdir(parents=True)
    om = recorder.write(data_root / "backfill.om.txt")
    cmd = [tool_bin, "tsdb", "create-blocks-from", "openmetrics", str(om), str(data_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SourceError(f"promtool could not backfill {om}: {(done.stderr or done.stdout).strip()[-300:]}",
                          hint=" ".join(cmd))
    config = data_root / "prometheus.yml"
    config.write_text(json.dumps(_config(target, rules_file), indent=2) + "\n")  # JSON is YAML
    port = free_port()
    log_path = data_root / "prometheus.log"
    args = [prom_bin, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
            "--storage.tsdb.retention.time=1d", f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    prom = DemoPrometheus(proc, port, data_dir, log_path, done.stdout)
    try:
        _wait_ready(proc, prom.url, log_path, timeout)
    except BaseException:
        prom.stop()
        raise
    return prom
