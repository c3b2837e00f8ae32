"""The simulated producer and worker: asynq's task life cycle, one tick at a time.

``Worker.tick(now)`` does what an asynq server does in that moment: forward
due scheduled/retry tasks to pending, recover tasks whose lease expired, drop
expired completed tasks, finish the handlers that are done (success -> done or
completed; failure -> retry with score last_failed_at + delay, or archived
once retried >= max retry or on SkipRetry), dequeue new tasks, then let the
producer enqueue, and, when asked to, beat: write the server and its busy
workers the way asynq's heartbeater does (``jobrunbook.demo.heartbeat``; a
crash leaves them to expire, a deploy clears them, each start is a new server
id). Times are passed in, so the same code writes the incident's
history (a simulated clock) and then keeps it live (the real one).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field, replace

import redis

from jobrunbook.asynq import keys
from jobrunbook.asynq.messages import TaskMessage, decode_task, encode_task
from jobrunbook.demo import scripts
from jobrunbook.demo.heartbeat import ActiveTask, Heartbeater
from jobrunbook.demo.logs import WorkerLog
from jobrunbook.demo.metrics import WorkerMetrics
from jobrunbook.demo.scenarios import (
    LEASE_EXPIRED,
    PG_ADDR,
    QUEUES,
    TASK_TYPES,
    Conditions,
    Outcome,
    Scenario,
    classify_error,
    handle,
    make_payload,
    panic_errors,
    pick_trait,
    task_headers,
)

__all__ = ["Worker", "Timeline", "retry_delay"]

LEASE_SECONDS = 30
STATS_TTL = 90 * 86400
CONCURRENCY = {"critical": 6, "default": 4, "low": 3}  # tasks dequeued per queue per tick


def retry_delay(rng: random.Random, retried: int) -> int:
    """asynq's default retry delay: n^4 + 15 + rand(30) * (n + 1) seconds."""
    return retried ** 4 + 15 + rng.randrange(30) * (retried + 1)


@dataclass
class Timeline:
    """When things happen (unix s): the worker's start, the incident's onset, crashes."""

    start: float
    onset: float
    crashes: list[float] = field(default_factory=list)
    deploy_at: float | None = None


@dataclass
class _InFlight:
    msg: TaskMessage
    started: float
    outcome: Outcome


class Worker:
    def __init__(self, client: redis.Redis, scenario: Scenario, rng: random.Random, timeline: Timeline,
                 log: WorkerLog, metrics: WorkerMetrics, rate_per_second: float = 0.8,
                 heartbeat: Heartbeater | None = None, pg_addr: str = PG_ADDR,
                 asynq_version: str = "v0.24.1") -> None:
        from jobrunbook.asynq.versions import behaviour

        self.client = client
        # the release whose data this worker writes: panic texts, headers, the archive's trim
        self.asynq = behaviour(asynq_version)
        self._panics = panic_errors(self.asynq.version)
        self.pg_addr = pg_addr  # host:port of the Postgres the handlers dial
        self.scenario = scenario
        self.rng = rng
        self.timeline = timeline
        self.log = log
        self.metrics = metrics
        self.rate = rate_per_second
        self.heartbeat = heartbeat or Heartbeater(client, rng=random.Random(0))
        self.inflight: dict[str, _InFlight] = {}
        self.last_tick: float | None = None
        self._crashes = sorted(timeline.crashes)
        self._deployed = False
        # what the worker did, for the truth and the tests
        self.failed_attempts: dict[str, int] = {}
        self.failed_by_queue_type: dict[str, dict[str, int]] = {}
        self.enqueued = 0
        self.attempts: list[tuple[float, str, str, bool]] = []  # (time, queue, type, ok) as the metrics saw them
        self._s = {name: client.register_script(getattr(scripts, name)) for name in scripts.__all__}
        types = list(TASK_TYPES)
        self._types, self._weights = types, [TASK_TYPES[t][1] for t in types]

    # -- conditions -------------------------------------------------------
    def conditions(self, now: float) -> Conditions:
        on = now >= self.timeline.onset
        active = self.scenario.conditions if on else frozenset()
        return Conditions(db_down="db_down" in active, db_down_partial="db_down_partial" in active,
                          rate_limited="rate_limited" in active, slow="slow" in active, deployed="deployed" in active)

    # -- producer ---------------------------------------------------------
    def new_message(self, now: float) -> TaskMessage:
        task_type = self.rng.choices(self._types, self._weights)[0]
        queue, _w, max_retry, timeout, retention = TASK_TYPES[task_type]
        mix = self.scenario.incident if now >= self.timeline.onset else self.scenario.baseline
        trait = pick_trait(self.rng, task_type, mix)
        payload = make_payload(self.rng, task_type, trait)
        task_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        return TaskMessage(type=task_type, id=task_id, queue=queue, payload=payload, retry=max_retry,
                           timeout=timeout, retention=retention, headers=task_headers(self.rng, self.asynq.version))

    def produce(self, now: float, seconds: float, pipe) -> None:
        expected = self.rate * seconds
        n = int(expected) + (1 if self.rng.random() < expected - int(expected) else 0)
        for _ in range(n):
            msg = self.new_message(now)
            self.enqueued += 1
            pipe.sadd(keys.ALL_QUEUES, msg.queue)
            if self.rng.random() < 0.08:  # scheduled for later: reminders, nightly reports
                at = int(now) + self.rng.randint(120, 3 * 3600)
                self._s["SCHEDULE"](keys=[keys.task_key(msg.queue, msg.id), keys.state_key(msg.queue, "scheduled")],
                                    args=[encode_task(msg), at, msg.id], client=pipe)
            else:
                self._s["ENQUEUE"](keys=[keys.task_key(msg.queue, msg.id), keys.state_key(msg.queue, "pending")],
                                   args=[encode_task(msg), msg.id, int(now * 1e9)], client=pipe)

    # -- the server's loops -----------------------------------------------
    def _forward(self, now: float) -> None:
        for q in QUEUES:
            for state in ("scheduled", "retry"):
                while self._s["FORWARD"](keys=[keys.state_key(q, state), keys.state_key(q, "pending")],
                                         args=[int(now), keys.task_key_prefix(q), int(now * 1e9)]) == 100:
                    pass

    def _recover(self, now: float) -> None:
        for q in QUEUES:
            raw = self._s["LEASE_EXPIRED"](keys=[keys.lease_key(q)], args=[int(now) - LEASE_SECONDS,
                                                                          keys.task_key_prefix(q)])
            for data in raw:
                msg = decode_task(data)
                if msg is None or msg.id in self.inflight:
                    continue
                # the recoverer writes no app line: the worker that ran the task is gone
                self._fail(msg, now, LEASE_EXPIRED, skip_retry=False, log=False)

    def _janitor(self, now: float) -> None:
        for q in QUEUES:
            self._s["DELETE_EXPIRED_COMPLETED"](keys=[keys.state_key(q, "completed")],
                                                args=[int(now), keys.task_key_prefix(q), 100])

    def _stats_expiry(self, now: float) -> int:
        return int(now) + STATS_TTL

    def _fail(self, msg: TaskMessage, now: float, error: str, *, skip_retry: bool, log: bool = True) -> None:
        q = msg.queue
        cause = classify_error(error)
        self.failed_attempts[cause] = self.failed_attempts.get(cause, 0) + 1
        qt = self.failed_by_queue_type.setdefault(f"{q}/{msg.type}", {})
        qt[cause] = qt.get(cause, 0) + 1
        counters = [keys.processed_key(q, _utc(now)), keys.failed_key(q, _utc(now)),
                    keys.processed_total_key(q), keys.failed_total_key(q)]
        archive = skip_retry or msg.retried >= msg.retry
        if log:
            self.log.task_failed(now, q, msg.type, msg.id, msg.retried, msg.retry,
                                 "archive" if archive else "retry", error)
        if archive:
            if log:
                self.log.asynq(now, "WARN", f"Retry exhausted for task id={msg.id}")
            updated = replace(msg, error_msg=error, last_failed_at=int(now))
            archive = self._s["ARCHIVE" if self.asynq.archive_deletes_trimmed else "ARCHIVE_V024"]
            archive(keys=[keys.task_key(q, msg.id), keys.state_key(q, "active"), keys.lease_key(q),
                                     keys.state_key(q, "archived"), *counters, keys.task_key_prefix(q)],
                               args=[msg.id, encode_task(updated), int(now), int(now) - 90 * 86400,
                                     keys.ARCHIVE_MAX_SIZE, self._stats_expiry(now)])
        else:
            updated = replace(msg, retried=msg.retried + 1, error_msg=error, last_failed_at=int(now))
            retry_at = int(now) + retry_delay(self.rng, msg.retried)
            self._s["RETRY"](keys=[keys.task_key(q, msg.id), keys.state_key(q, "active"), keys.lease_key(q),
                                   keys.state_key(q, "retry"), *counters],
                             args=[msg.id, encode_task(updated), retry_at, self._stats_expiry(now)])

    def _finish(self, job: _InFlight, now: float) -> None:
        msg, out = job.msg, job.outcome
        q = msg.queue
        self.metrics.observe(q, msg.type, out.error is None, out.duration)
        self.attempts.append((now, q, msg.type, out.error is None))
        if out.error is None:
            if msg.retention > 0:
                done = replace(msg, completed_at=int(now))
                self._s["COMPLETE"](keys=[keys.state_key(q, "active"), keys.lease_key(q),
                                          keys.state_key(q, "completed"), keys.task_key(q, msg.id),
                                          keys.processed_key(q, _utc(now)), keys.processed_total_key(q)],
                                    args=[msg.id, self._stats_expiry(now), int(now) + msg.retention,
                                          encode_task(done)])
            else:
                self._s["DONE"](keys=[keys.state_key(q, "active"), keys.lease_key(q), keys.task_key(q, msg.id),
                                      keys.processed_key(q, _utc(now)), keys.processed_total_key(q)],
                                args=[msg.id, self._stats_expiry(now)])
            return
        if out.panic_kind:
            self.log.panic(now, out.panic_kind)
        self._fail(msg, now, out.error, skip_retry=out.skip_retry)

    def _restart(self, now: float, reason: str) -> None:
        if reason == "deploy":
            self.log.app(now, "info", "deploy: restarting worker", build="v2")
            self.log.asynq(now, "INFO", "Starting graceful shutdown")
            self.log.asynq(now, "INFO", "Waiting for all workers to finish...")
            self.log.asynq(now, "INFO", "All workers have finished")
            self.log.asynq(now, "INFO", "Exiting")
            self.heartbeat.clear()
        self.log.pid += self.rng.randint(50, 900)
        self.log.asynq(now, "INFO", "Starting processing")
        build = {"build": "v2"} if self._deployed else {}
        self.log.app(now, "info", "worker-daemon started", **build)
        self.heartbeat.start(now, self.log.pid)

    def start(self, now: float, redis_addr: str, metrics_addr: str) -> None:
        self.log.asynq(now, "INFO", "Starting processing")
        self.log.app(now, "info", "worker-daemon started", redis=redis_addr, metrics=metrics_addr,
                     max_retry="per-task", retry_delay="asynq-default")
        self.heartbeat.start(now, self.log.pid)
        self.last_tick = now

    def active_tasks(self) -> list[ActiveTask]:
        """What the worker's goroutines are running now, in start order."""
        jobs = sorted(self.inflight.values(), key=lambda j: (j.started, j.msg.id))
        return [ActiveTask(j.msg, j.started) for j in jobs]

    def tick(self, now: float, beat: bool = True) -> None:
        """Everything the worker and the producer do up to ``now``; with ``beat``, then its heartbeat."""
        prev = self.last_tick if self.last_tick is not None else now
        while self._crashes and self._crashes[0] <= now:
            at = self._crashes.pop(0)
            # the worker is killed: its in-flight tasks stay active until their lease expires
            self.inflight.clear()
            self.heartbeat.crash(at)
            self._restart(at, "crash")
        if self.timeline.deploy_at is not None and not self._deployed and now >= self.timeline.deploy_at:
            self._deployed = True
            self._restart(self.timeline.deploy_at, "deploy")
        self._forward(now)
        self._recover(now)
        self._janitor(now)
        done = sorted((j for j in self.inflight.values() if j.started + j.outcome.duration <= now),
                      key=lambda j: (j.started + j.outcome.duration, j.msg.id))
        for job in done:
            del self.inflight[job.msg.id]
            self._finish(job, job.started + job.outcome.duration)
        cond = self.conditions(now)
        for q in QUEUES:
            for _ in range(CONCURRENCY[q]):
                data = self._s["DEQUEUE"](keys=[keys.state_key(q, "pending"), keys.paused_key(q),
                                                keys.state_key(q, "active"), keys.lease_key(q)],
                                          args=[int(now) + LEASE_SECONDS, keys.task_key_prefix(q)])
                if data is None:
                    break
                msg = decode_task(data)
                if msg is None:
                    continue
                self.inflight[msg.id] = _InFlight(msg, now, handle(self.rng, msg.type, msg.payload, msg.timeout, cond,
                                                                          pg_addr=self.pg_addr, panics=self._panics))
        if self.inflight:
            by_queue: dict[str, list[str]] = {}
            for job in self.inflight.values():
                by_queue.setdefault(job.msg.queue, []).append(job.msg.id)
            for q, ids in by_queue.items():
                self._s["EXTEND_LEASE"](keys=[keys.lease_key(q)], args=[int(now) + LEASE_SECONDS, *ids])
        pipe = self.client.pipeline(transaction=False)
        self.produce(now, max(0.0, now - prev), pipe)
        pipe.execute()
        if beat:
            self.heartbeat.beat(now, self.active_tasks())
        self.last_tick = now


def _utc(ts: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)
