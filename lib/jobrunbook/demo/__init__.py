"""A live simulated incident: asynq's Redis, a worker's /metrics and log, an alert.

    with start_demo("dependency-down", seed=7, state_dir=tmp) as demo:
        demo.redis_url, demo.metrics_url, demo.prometheus_url, demo.log_path, demo.truth

``start_demo`` starts a private Redis and an HTTP server (/metrics, /health,
/external/health), writes 7 days of counters, simulates the last
``window_minutes`` of the worker (baseline, then the incident from the onset)
with asynq's own state transitions, writes ``demo.json`` and ``alert.json``
into ``state_dir``, and, when ``live``, keeps the worker ticking every
``tick_seconds`` until ``stop()``. From the end of the window on, the worker is a
live asynq server: its heartbeat (ServerInfo, and WorkerInfo for each running
task) is written on every tick and cleared by ``stop()``. ``asynq_version`` picks the release whose
data the worker writes (v0.24.1 by default; v0.25+: panics as asynq.PanicError, the archive trim
deleting hashes; v0.26.0: headers on every task). With ``prometheus`` and ``promtool`` on
PATH it also starts a real Prometheus holding the simulated window (backfilled
from the metrics recorded at each step) and scraping /metrics live.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
from pathlib import Path

import redis

from jobrunbook import clock
from jobrunbook._exceptions import JobrunbookError
from jobrunbook.clock import iso
from jobrunbook.config import Settings
from jobrunbook.demo.heartbeat import Heartbeater
from jobrunbook.demo.logs import WorkerLog
from jobrunbook.demo.metrics import DemoHTTPServer, WorkerMetrics
from jobrunbook.demo.prometheus import DemoPrometheus, MetricsRecorder, find_binaries, start_prometheus
from jobrunbook.demo.scenarios import PG_ADDR, QUEUES, SCENARIOS, Scenario, get_scenario
from jobrunbook.demo.server import PrivateRedis, RefusingPort, start_redis
from jobrunbook.demo.worker import Timeline, Worker
from jobrunbook.demo.writer import build_alert, measure_truth, write_history

__all__ = ["Demo", "start_demo", "SCENARIOS", "Scenario", "get_scenario", "DEFAULT_STATE_DIR", "REAL_POSTGRES_DSN"]

DEFAULT_STATE_DIR = Path("outputs/demo")
REAL_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SIM_TICK = 5.0  # seconds between steps of the simulated history


class Demo:
    """A running demo incident. Use as a context manager, or call ``stop()``."""

    def __init__(self, scenario: Scenario, seed: int, state_dir: Path, redis_server: PrivateRedis,
                 http: DemoHTTPServer, worker: Worker, log: WorkerLog, timeline: Timeline,
                 postgres_dsn: str, history: dict, prometheus: DemoPrometheus | None = None,
                 prometheus_note: str | None = None, refusing: RefusingPort | None = None,
                 asynq_version: str = "v0.24.1") -> None:
        self.scenario = scenario
        self.asynq_version = asynq_version  # the release whose data the worker writes
        self.seed = seed
        self.state_dir = state_dir
        self.redis = redis_server
        self.http = http
        self.worker = worker
        self.metrics = worker.metrics
        self.log = log
        self.timeline = timeline
        self.postgres_dsn = postgres_dsn
        self.history = history
        self.prometheus = prometheus
        self.prometheus_note = prometheus_note  # why there is no Prometheus, when there is none
        self._refusing = refusing  # the down Postgres's port, held until stop()
        self.truth: dict = {}
        self.alert: dict = {}
        self.scale: dict | None = None  # what start_demo(failed_tasks=N) added
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stopped = False

    # -- where things are ---------------------------------------------------
    @property
    def redis_url(self) -> str:
        return self.redis.url

    @property
    def metrics_url(self) -> str:
        return self.http.base_url + "/metrics"

    @property
    def health_url(self) -> str:
        return self.http.base_url + "/health"

    @property
    def external_health_url(self) -> str:
        return self.http.base_url + "/external/health"

    @property
    def prometheus_url(self) -> str | None:
        """The demo's own Prometheus (window backfilled, /metrics scraped every second), or None."""
        return self.prometheus.url if self.prometheus is not None else None

    @property
    def postgres_addr(self) -> str:
        """host:port of the Postgres the handlers dial (a refusing port when the scenario has it down)."""
        return self.worker.pg_addr

    @property
    def log_path(self) -> Path:
        return self.log.path

    @property
    def demo_json(self) -> Path:
        return self.state_dir / "demo.json"

    @property
    def alert_path(self) -> Path:
        return self.state_dir / "alert.json"

    def client(self):
        """A new redis-py client on the demo's Redis."""
        return self.redis.client()

    # -- running --------------------------------------------------------------
    def step(self, now: float | None = None) -> None:
        """Advance the worker to ``now`` (default: the clock) in one tick."""
        with self._lock:
            self.worker.tick(clock.now() if now is None else now)

    def _run(self, tick_seconds: float) -> None:
        while not self._stop.wait(tick_seconds):
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 (a live demo reports and keeps going)
                self.log.app(clock.now(), "error", "demo worker tick failed", error=str(exc))

    def start_live(self, tick_seconds: float = 1.0) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(tick_seconds,), name="demo-worker", daemon=True)
            self._thread.start()

    def stop_worker(self) -> None:
        """Shut the worker down gracefully, leaving Redis up: no more ticks, its server state cleared
        (asynq's ClearServerState). Idempotent; ``stop()`` calls it first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            try:
                self.worker.heartbeat.clear()
            except redis.RedisError as exc:
                self.log.app(clock.now(), "error", "clearing the server state failed", error=str(exc))

    def stop(self) -> None:
        """Stop the worker, Prometheus, the HTTP server and the private Redis (idempotent)."""
        if self.stopped:
            return
        self.stopped = True
        self.stop_worker()
        if self.prometheus is not None:
            self.prometheus.stop()
        self.http.stop()
        self.log.close()
        self.redis.stop()
        if self._refusing is not None:
            self._refusing.close()

    def __enter__(self) -> Demo:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def source_settings(self) -> dict:
        """The incident's sources as settings (what ``make demo`` runs the runbook with), never a secret."""
        return {"redis_url": self.redis_url, "metrics_url": self.metrics_url,
                "prometheus_url": self.prometheus_url or "", "log_source": "file", "log_path": str(self.log_path),
                "health_urls": {"partner-api": self.external_health_url}}

    def settings(self) -> Settings:
        """``Settings`` pointing at this incident (the configuration's other settings left at their defaults)."""
        return Settings().replace(**self.source_settings())

    # -- records ----------------------------------------------------------------
    def info(self) -> dict:
        """The content of demo.json."""
        return {
            "scenario": self.scenario.name,
            "description": self.scenario.description,
            "seed": self.seed,
            "asynq_version": self.asynq_version,
            "redis_url": self.redis_url,
            "redis_kind": self.redis.kind,
            "redis_pid": self.redis.pid,
            "metrics_url": self.metrics_url,
            "prometheus_url": self.prometheus_url,
            "prometheus_pid": self.prometheus.pid if self.prometheus is not None else None,
            "health_url": self.health_url,
            "external_health_url": self.external_health_url,
            "log_path": str(self.log_path),
            "postgres_dsn": self.postgres_dsn,
            "postgres_addr": self.postgres_addr,
            "alert_path": str(self.alert_path),
            "queues": ["critical", "default", "low"],
            "window_start": iso(self.timeline.start),
            "onset": iso(self.timeline.onset),
            "deploy_at": iso(self.timeline.deploy_at),
            "truth": self.truth,
            "scale": self.scale,
            "demo_pid": os.getpid(),
            # a notebook opened alone runs against these (jobrunbook.sections.context)
            "sources": self.settings().public(),
        }

    def write_records(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.demo_json.write_text(json.dumps(self.info(), indent=2) + "\n")
        self.alert_path.write_text(json.dumps(self.alert, indent=2) + "\n")


def start_demo(scenario: str = "mixed", seed: int = 1, state_dir: str | Path = DEFAULT_STATE_DIR, *,
               now: float | None = None, live: bool = True, tick_seconds: float = 1.0,
               window_minutes: float = 30.0, onset_minutes: float = 12.0, rate_per_second: float = 0.8,
               redis_binary: str | None = None, prometheus: bool = True,
               postgres_addr: str | None = None, asynq_version: str = "v0.24.1", failed_tasks: int = 0) -> Demo:
    """Stand up the incident ``scenario`` (a name in SCENARIOS), reproducible by ``seed``.

    ``now`` fixes the clock of the simulated history (same seed and now give
    identical data; default: ``jobrunbook.clock.now()``); ``live=False`` leaves
    the worker still until ``step()``. ``prometheus=False`` skips the demo's
    Prometheus (``demo.prometheus_url`` is then None, as it is when the
    binaries are missing or it fails to start). ``state_dir`` may be relative:
    it is resolved here, so every path the demo records is absolute.

    In a scenario where Postgres is down, the handlers dial a Postgres that
    really refuses connections: a port the demo holds bound and never listens
    on (``postgres_addr`` names another, e.g. to repeat a run byte for byte),
    and ``demo.postgres_dsn`` points there, so the probe sees what the tasks saw.
    Otherwise they dial the machine's Postgres on 127.0.0.1:5432.

    ``failed_tasks``: a large incident, the simulated failed tasks copied (new ids, same groups in the same
    shares) until retry and archived hold that many in all (``jobrunbook.demo.scale``); ``demo.scale`` says
    how many were added.
    """
    from jobrunbook.asynq.versions import behaviour

    sc = get_scenario(scenario)
    asynq_version = behaviour(asynq_version).version  # a ConfigError for a release jobrunbook does not know
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    now = clock.now() if now is None else float(now)
    start = now - window_minutes * 60
    onset = now - onset_minutes * 60
    incident = onset_minutes * 60
    timeline = Timeline(start=start, onset=onset, crashes=[onset + f * incident for f in sc.crashes],
                        deploy_at=onset if "deployed" in sc.conditions else None)
    rng = random.Random(seed)
    refusing = None
    db_down = bool({"db_down", "db_down_partial"} & sc.conditions)
    if db_down and postgres_addr is None:
        refusing = RefusingPort()
        postgres_addr = refusing.addr
    pg_addr = postgres_addr or PG_ADDR
    redis_server = start_redis(state_dir / "redis", redis_binary)
    metrics = WorkerMetrics()
    log_path = state_dir / "worker.log"
    log_path.unlink(missing_ok=True)
    log = WorkerLog(log_path, pid=17000 + rng.randrange(3000), rng=random.Random(seed + 1), asynq_version=asynq_version)
    binaries = find_binaries() if prometheus else "disabled (prometheus=False)"
    http = prom = None
    try:
        client = redis_server.client()
        http = DemoHTTPServer(metrics, rate_limited=lambda: False).start()
        heartbeat = Heartbeater(client, rng=random.Random(seed + 3))
        worker = Worker(client, sc, rng, timeline, log, metrics, rate_per_second, heartbeat, pg_addr=pg_addr,
                        asynq_version=asynq_version)
        http.rate_limited = lambda: worker.conditions(clock.now()).rate_limited
        history = write_history(client, random.Random(seed + 2), start, rate_per_second)
        target = http.base_url.removeprefix("http://")
        worker.start(start, f"127.0.0.1:{redis_server.port}", target)
        recorder = MetricsRecorder(metrics, instance=target) if isinstance(binaries, tuple) else None
        t = start
        while t < now:
            t = min(now, t + SIM_TICK)
            worker.tick(t, beat=t >= now)  # the server is live from the end of the window on
            if recorder is not None:
                recorder.record(t)
        note = None if recorder is not None else binaries
        if recorder is not None:
            try:
                prom = start_prometheus(state_dir / "prometheus", recorder, target, binaries=binaries)
            except JobrunbookError as exc:
                note = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
        if note and prometheus:
            print(f"jobrunbook demo: no Prometheus: {note}", file=sys.stderr)
        dsn = f"postgresql://postgres@{pg_addr}/postgres" if db_down else REAL_POSTGRES_DSN
        demo = Demo(sc, seed, state_dir, redis_server, http, worker, log, timeline, dsn, history, prom, note,
                    refusing=refusing, asynq_version=asynq_version)
        demo.truth = {**sc.truth, "scenario": sc.name, "asynq_version": asynq_version, "onset": iso(onset), "deploy_at": iso(timeline.deploy_at),
                      "measured": measure_truth(client, worker.failed_attempts)}
        demo.alert = build_alert(worker.attempts, sc, onset, now)
        if failed_tasks:
            from jobrunbook.demo.scale import inflate_failures

            demo.scale = inflate_failures(client, failed_tasks, queues=QUEUES, seed=seed)
        demo.write_records()
    except BaseException:
        if prom is not None:
            prom.stop()
        if http is not None:
            http.stop()
        log.close()
        redis_server.stop()
        if refusing is not None:
            refusing.close()
        raise
    if live:
        demo.start_live(tick_seconds)
    return demo
