"""The executor: takes accepted alerts from the store and runs them, N at a time, each under a lease.

``jobrunbook serve`` runs it in a worker process of its own at a lower CPU
priority (``process.WorkerProcess``); tests may run it in their own process.
The run engine is injected: ``runner(params, alert, on_run_id, env) -> run``
where ``run`` has ``run_id``, ``run_dir``, ``state`` (done | failed),
``verdict`` and ``duration_s`` (``jobrunbook.run.Run`` does);
``on_run_id(run_id)`` is called as soon as the run directory exists, so an
interrupted run can be found by whoever takes it over; ``env`` holds the
secrets the kernels need for the alert's target. Each alert's sources are the
settings its labels choose in the service's configuration
(``config.settings_for``). ``engine_runner(...)`` builds the default, the
real ``execute_run``. A resolved alert closes its run (``close_run``): status
``resolved``, time to resolve, the failure ratio now against the thresholds,
rca.md updated.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from jobrunbook import clock
from jobrunbook.diagnosis.causes import THRESHOLDS
from jobrunbook.record import read_status
from jobrunbook.run.params import RunParams, kernel_env, params_from_alert
from jobrunbook.run.rundir import make_run_id
from jobrunbook.service.store import Job, iso, make_owner

__all__ = ["Worker", "Runner", "engine_runner", "close_run", "prometheus_ratio", "THRESHOLDS"]

log = logging.getLogger("jobrunbook.service")
Runner = Callable[[RunParams, Mapping[str, Any], Callable[[str], None], Mapping[str, str]], Any]
RatioFn = Callable[[str, str], tuple[float | None, str]]
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
_PCT = re.compile(r"(\d+(?:\.\d+)?)%")


def engine_runner(*, notebooks_dir: str | Path, outputs_dir: str | Path, pool: Any = None, timeout: float = 300.0,
                  env: Mapping[str, str] | None = None, max_parallel: int | None = None) -> Runner:
    """The real run engine (``jobrunbook.run.execute_run``) as a ``Runner``."""
    from jobrunbook.run.execute import execute_run

    outputs_dir = Path(outputs_dir).resolve()

    def run(params: RunParams, alert: Mapping[str, Any], on_run_id: Callable[[str], None],
            secrets: Mapping[str, str] | None = None) -> Any:
        first: list[datetime] = []
        told: list[str] = []

        def run_clock() -> datetime:  # the first reading names the run directory
            t = clock.utcnow()
            if not first:
                first.append(t)
            return t

        def progress(section: str, state: str, elapsed: float) -> None:
            if told or not first:
                return
            base = make_run_id(params.alertname, params.queue, params.fingerprint, now=first[0])
            found = [c for c in [base] + [f"{base}.{n}" for n in range(2, 100)] if (outputs_dir / c).is_dir()]
            if found:
                told.append(found[-1])
                on_run_id(found[-1])

        return execute_run(params, notebooks_dir=notebooks_dir, outputs_dir=outputs_dir, alert=dict(alert),
                           env={**(env or {}), **(secrets or {})}, pool=pool, timeout=timeout, max_parallel=max_parallel, clock=run_clock,
                           on_progress=progress)

    return run


def prometheus_ratio(prometheus_url: str, *, window: str = "5m") -> RatioFn:
    """The failure ratio now for one queue/task_type, by the alert's own expression shape."""
    from jobrunbook.sources.prometheus import failure_ratio_query, instant_query

    def ratio(queue: str, task_type: str) -> tuple[float | None, str]:
        matchers = {"queue": queue} | ({"task_type": task_type} if task_type else {})
        q = failure_ratio_query(window=window, matchers=matchers, by=("queue", "task_type"))
        res = instant_query(prometheus_url, q)
        if not res.ok or res.data is None or len(res.data) == 0:
            return None, f"prometheus: {res.message[:200] if not res.ok else 'no traffic in the window'}"
        value = float(res.data["value"].iloc[0])
        return (None if value != value else value), f"prometheus, rate over {window}"

    return ratio


def _ratio_from_annotation(alert: Mapping[str, Any]) -> float | None:
    m = _PCT.search(str((alert.get("annotations") or {}).get("description", "")))
    return float(m.group(1)) / 100 if m else None


def _closing(row: Mapping[str, Any], ratio_fn: RatioFn | None, thresholds: Mapping[str, float]) -> dict[str, Any]:
    import json

    resolved = json.loads(row.get("resolved_json") or "{}")
    value, source = (None, "no --prometheus-url")
    if ratio_fn is not None:
        try:
            value, source = ratio_fn(row["queue"], row["task_type"])
        except Exception as exc:  # noqa: BLE001 - a closing without a measurement is still a closing
            value, source = None, f"prometheus: {type(exc).__name__}"
    if value is None:
        last = _ratio_from_annotation(resolved)
        if last is not None:
            value, source = last, f"{source}; last value in the resolved alert's annotation"
    return {
        "resolved_at": row.get("resolved_at"),
        "resolved_by": row.get("resolved_by") or "Alertmanager",
        "time_to_resolve_s": row.get("time_to_resolve_s"),
        "failure_ratio_now": value,
        "failure_ratio_source": source,
        "thresholds": dict(thresholds),
        "below": {name: (value < t if value is not None else None) for name, t in thresholds.items()},
        "checked_at": iso(clock.utcnow()),
    }


def close_run(run_dir: Path, row: Mapping[str, Any], *, ratio_fn: RatioFn | None = None,
              thresholds: Mapping[str, float] = THRESHOLDS) -> dict[str, Any]:
    """Mark a finished run resolved: status.json (state, resolved_at, time_to_resolve_s, closing), then
    report.html, rca.md, report.pdf and the index rendered again with how it ended."""
    from jobrunbook.run.execute import render_all, set_run_state

    closing = _closing(row, ratio_fn, thresholds)
    status = set_run_state(run_dir, "resolved", resolved_at=closing["resolved_at"],
                           time_to_resolve_s=closing["time_to_resolve_s"], closing=closing)
    render_all(run_dir, run_dir.parent, status)
    return closing


class Worker:
    """``concurrency`` threads taking jobs from ``store``; ``wake()`` after an accept.

    Each job is leased to this worker (``owner``) for ``lease`` seconds and renewed by a heartbeat thread
    every ``lease / 5``; a worker that dies stops renewing, and any other worker (another process, another
    replica) takes the row over once the lease has passed (at once, on the same host, when the owner's pid is gone).
    """

    def __init__(self, store: Any, runner: Runner, *, outputs_dir: str | Path, config: Any = None,
                 env: Mapping[str, str] | None = None, target: str | None = None, concurrency: int = 2,
                 notifier: Any = None, public_url: str = "", ratio_fn: RatioFn | None = None,
                 thresholds: Mapping[str, float] = THRESHOLDS, max_attempts: int = 3, lease: float = 60.0,
                 poll: float = 0.5, replica: str | None = None) -> None:
        self.store, self.runner = store, runner
        self.outputs_dir = Path(outputs_dir).resolve()
        from jobrunbook.config import load_config

        self.config = config if config is not None else load_config(env={})  # where each alert's sources are
        self.env = dict(os.environ if env is None else env)  # where their secrets are
        self.target = target  # --target: every alert uses it
        self.concurrency = max(1, concurrency)
        self.notifier = notifier
        self.public_url = public_url.rstrip("/")
        self.ratio_fn, self.thresholds, self.max_attempts = ratio_fn, dict(thresholds), max_attempts
        self.lease, self.poll = float(lease), float(poll)
        self.replica = replica  # None: this host's name
        self.owner = make_owner(replica)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._held: set[int] = set()  # row ids this worker holds a lease on
        self._lost: set[int] = set()  # rows taken over by another worker while this one ran them
        self.busy = 0
        self._lock = threading.Lock()

    def start(self) -> Worker:
        try:
            expired = self.store.expire_dead_owners(self.replica)
            if expired:
                log.warning("%d run(s) held by a process that is gone: taken over now", expired)
        except Exception:  # noqa: BLE001 - the heartbeat tries again
            log.exception("cannot read the service queue")
        for n in range(self.concurrency):
            t = threading.Thread(target=self._loop, name=f"jobrunbook-run-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        hb = threading.Thread(target=self._heartbeat, name="jobrunbook-heartbeat", daemon=True)
        hb.start()
        self._threads.append(hb)
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)
        try:
            self.store.release(self.owner)  # what is still running here: taken over at once, not in a lease's time
        except Exception:  # noqa: BLE001
            log.exception("cannot release this worker's leases")

    def idle(self) -> bool:
        return self.busy == 0 and self.store.pending_work() == 0

    def _heartbeat(self) -> None:
        every = max(0.2, self.lease / 5)
        while not self._stop.wait(every):
            with self._lock:
                ids = set(self._held)
            try:
                held = self.store.heartbeat(self.owner, ids, lease=self.lease)
                self.store.expire_dead_owners(self.replica)
            except Exception:  # noqa: BLE001 - the next beat tries again; a lease outlives a few misses
                log.exception("cannot renew this worker's leases")
                continue
            gone = ids - held
            with self._lock:
                gone &= self._held  # a job that finished meanwhile is not lost
                self._lost |= gone
            for row_id in gone:
                log.warning("alert %s was taken over by another worker (this one's lease expired)", row_id)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.store.claim(self.owner, lease=self.lease, max_attempts=self.max_attempts)
            except Exception:  # noqa: BLE001 - a locked or full disk, a lost database: try again shortly
                log.exception("cannot read the service queue")
                job = None
            if job is None:
                self._wake.wait(self.poll)
                self._wake.clear()
                continue
            with self._lock:
                self.busy += 1
                self._held.add(job.id)
            try:
                self._run(job) if job.kind == "run" else self._close(job)
            except Exception:  # noqa: BLE001 - one bad job must not kill the worker
                log.exception("service job %s (%s) failed", job.id, job.kind)
            finally:
                with self._lock:
                    self.busy -= 1
                    self._held.discard(job.id)
                    self._lost.discard(job.id)
                self._wake.set()  # a finished run may unblock a pending close

    def _report_url(self, run_id: str | None) -> str:
        return f"{self.public_url}/runs/{run_id}/report.html" if run_id and self.public_url else ""

    def _run(self, job: Job) -> None:
        from jobrunbook.run.execute import set_run_state

        row = job.row
        if row.get("run_id") and _RUN_ID.match(row["run_id"]) and (self.outputs_dir / row["run_id"]).is_dir():
            try:  # an earlier attempt died with its worker: say so in its directory
                set_run_state(self.outputs_dir / row["run_id"], "failed", error="interrupted: the worker running it "
                              "stopped or was killed; it was run again")
            except Exception:  # noqa: BLE001
                pass
        t0 = time.monotonic()
        run_id = state = error = headline = None
        try:
            labels = (job.alert or {}).get("labels") or {}
            settings = self.config.target(self.target) if self.target else self.config.settings_for(labels)
            params = params_from_alert(job.alert, settings)
            run = self.runner(params, job.alert, lambda rid: self.store.set_run_id(job.id, rid, self.owner),
                              kernel_env(settings, self.env))
            run_id, state = getattr(run, "run_id", None), getattr(run, "state", "done")
            verdict = getattr(run, "verdict", None) or {}
            from jobrunbook.report import verdict_line

            headline = verdict_line(verdict) if verdict else None
        except Exception as exc:  # noqa: BLE001 - recorded on the row; the alert stays visible in /runs
            state, error = "failed", f"{type(exc).__name__}: {exc}"[:1000]
            log.warning("run for alert %s failed to execute: %s", job.id, error)
            verdict = {}
        duration = round(time.monotonic() - t0, 3)
        run_dir = self.outputs_dir / run_id if run_id and _RUN_ID.match(run_id) else None
        with self._lock:
            lost = job.id in self._lost
        if not lost and run_dir is not None and (run_dir / "status.json").exists():
            linked = self.store.get(row["linked_to"]) if row.get("linked_to") else None
            set_run_state(run_dir, state, service={"alert_id": job.id, "attempt": row["attempts"],
                                                   "group_key": row["group_key"],
                                                   "linked_run": linked.get("run_id") if linked else None})
        if lost or not self.store.finish(job.id, state=state, run_id=run_id, headline=headline, error=error,
                                         duration_s=duration, owner=self.owner):
            log.warning("alert %s: this run's result is dropped, another worker took the alert over", job.id)
            return
        if self.notifier and run_dir is not None and (run_dir / "status.json").exists():
            from jobrunbook.notify import build_event

            self.notifier.submit(build_event(read_status(run_dir), verdict, report_url=self._report_url(run_id)))

    def _close(self, job: Job) -> None:
        row = job.row
        run_id = row.get("run_id")
        closing: dict[str, Any] = {}
        if run_id and _RUN_ID.match(run_id) and (self.outputs_dir / run_id / "status.json").exists():
            run_dir = self.outputs_dir / run_id
            closing = close_run(run_dir, row, ratio_fn=self.ratio_fn, thresholds=self.thresholds)
            if self.notifier:
                from jobrunbook.findings import read_findings, summarize_verdict
                from jobrunbook.notify import build_event

                self.notifier.submit(build_event(read_status(run_dir), summarize_verdict(read_findings(run_dir)),
                                                 report_url=self._report_url(run_id), event="resolved"))
        self.store.closed(job.id, closing, self.owner)
