"""The demo's history and its records: 7 days of counters, the alert, the truth.

- ``write_history``: the daily processed/failed counters of the days before the
  simulated window (a baseline of a few % failures), each with the expiry asynq
  gives it (90 days after that day's first increment), and the all-time
  counters equal to their sum; the window's own attempts then add to both.
- ``build_alert``: the Alertmanager webhook body (shaped like
  tests/fixtures/alertmanager/firing-critical-grouped.json) the incident fires.
- ``measure_truth``: what the Redis data shows, next to the declared truth.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import random
from urllib.parse import quote_plus

import redis

from jobrunbook.asynq import keys
from jobrunbook.asynq.messages import decode_task
from jobrunbook.clock import iso
from jobrunbook.demo.scenarios import CAUSES, QUEUES, TASK_TYPES, Scenario, classify_error
from jobrunbook.diagnosis.causes import ALERTS

__all__ = ["write_history", "build_alert", "measure_truth", "HISTORY_DAYS"]

HISTORY_DAYS = 7
_DAY = 86400


def _queue_rates(rate: float) -> dict[str, float]:
    out = dict.fromkeys(QUEUES, 0.0)
    for _t, (queue, weight, *_rest) in TASK_TYPES.items():
        out[queue] += rate * weight
    return out


def write_history(client: redis.Redis, rng: random.Random, window_start: float, rate: float,
                  days: int = HISTORY_DAYS) -> dict[str, dict[str, dict[str, int]]]:
    """Write the counters of the ``days`` UTC days up to ``window_start``; return {queue: {day: {processed, failed}}}."""
    start_day = _dt.datetime.fromtimestamp(window_start, _dt.timezone.utc).date() - _dt.timedelta(days=days - 1)
    history: dict[str, dict[str, dict[str, int]]] = {}
    pipe = client.pipeline(transaction=False)
    for queue, qrate in _queue_rates(rate).items():
        total_p = total_f = 0
        history[queue] = {}
        for i in range(days):
            day = start_day + _dt.timedelta(days=i)
            day_start = _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.timezone.utc).timestamp()
            covered = max(0.0, min(day_start + _DAY, window_start) - day_start)
            processed = int(qrate * covered * rng.uniform(0.85, 1.15))
            if processed <= 0:
                continue
            failed = int(processed * rng.uniform(0.01, 0.04))
            first = day_start + rng.randint(0, 59)  # the day's first increment set its expiry
            history[queue][day.isoformat()] = {"processed": processed, "failed": failed}
            pipe.set(keys.processed_key(queue, day), processed)
            pipe.expireat(keys.processed_key(queue, day), int(first) + 90 * _DAY)
            if failed:
                pipe.set(keys.failed_key(queue, day), failed)
                pipe.expireat(keys.failed_key(queue, day), int(first) + 90 * _DAY + rng.randint(0, 3600))
            total_p += processed
            total_f += failed
        pipe.sadd(keys.ALL_QUEUES, queue)
        pipe.set(keys.processed_total_key(queue), total_p)
        pipe.set(keys.failed_total_key(queue), total_f)
    pipe.execute()
    return history


def _expr(threshold: float) -> str:
    return ('(sum by (queue, task_type) (rate(job_processed_total{status="failed"}[5m])) / sum by (queue, task_type) '
            f'(rate(job_processed_total[5m]))) > {threshold} and on (queue, task_type) sum by (queue, task_type) '
            '(rate(job_processed_total[5m])) > 0')


def build_alert(attempts: list[tuple[float, str, str, bool]], scenario: Scenario, onset: float, now: float,
                window: float = 300.0) -> dict:
    """The webhook body Alertmanager would send for the failure ratios of the last ``window`` seconds."""
    counts: dict[tuple[str, str], list[int]] = {}
    for ts, queue, task_type, ok in attempts:
        if ts >= now - window:
            c = counts.setdefault((queue, task_type), [0, 0])
            c[0] += 1
            c[1] += 0 if ok else 1
    ratios = {k: f / n for k, (n, f) in counts.items() if n}
    rule, firing = ALERTS["JobFailureRate"], [scenario.alert_target]
    for candidate in sorted(ALERTS.values(), key=lambda a: -a.threshold):  # the critical alert first
        over = sorted((k for k, r in ratios.items() if r > candidate.threshold), key=lambda k: -ratios[k])
        if over:
            rule, firing = candidate, over
            break
    alertname, severity, threshold, held = rule.name, rule.severity, rule.threshold, rule.held
    gen = "http://127.0.0.1:9090/graph?g0.expr=" + quote_plus(_expr(threshold)) + "&g0.tab=1"
    alerts = []
    for queue, task_type in firing:
        labels = {"alertname": alertname, "component": "worker", "queue": queue, "severity": severity,
                  "task_type": task_type}
        pct = ratios.get((queue, task_type), 0.0) * 100
        word = "Critical" if severity == "critical" else "High"
        alerts.append({
            "status": "firing",
            "labels": labels,
            "annotations": {
                "description": f"{pct:.4g}% of {task_type} jobs on queue {queue} failed over the last 5m "
                               f"(threshold {threshold * 100:.0f}% for {held}).",
                "runbook_url": "https://runbooks.example.com/worker/job-failure-rate",
                "summary": f"{word} job failure rate for {task_type} on queue {queue}",
            },
            "startsAt": iso(onset),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": gen,
            "fingerprint": hashlib.sha256(repr(sorted(labels.items())).encode()).hexdigest()[:16],
        })
    return {
        "receiver": "runbook-webhook",
        "status": "firing",
        "alerts": alerts,
        "groupLabels": {"alertname": alertname, "component": "worker"},
        "commonLabels": {"alertname": alertname, "component": "worker", "severity": severity},
        "commonAnnotations": {"runbook_url": "https://runbooks.example.com/worker/job-failure-rate"},
        "externalURL": "http://127.0.0.1:9093",
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alertname}", component="worker"}}',
        "truncatedAlerts": 0,
    }


def measure_truth(client: redis.Redis, failed_attempts: dict[str, int]) -> dict:
    """Failed tasks now in retry/archived by cause, and failed attempts by cause, with the dominant ones."""
    tasks: dict[str, int] = dict.fromkeys(CAUSES, 0)
    for queue in QUEUES:
        for state in ("retry", "archived"):
            ids = client.zrange(keys.state_key(queue, state), 0, -1)
            pipe = client.pipeline(transaction=False)
            for task_id in ids:
                pipe.hget(keys.task_key(queue, task_id.decode()), "msg")
            for data in pipe.execute():
                msg = decode_task(data)
                if msg is not None:
                    tasks[classify_error(msg.error_msg)] += 1
    attempts = {c: failed_attempts.get(c, 0) for c in CAUSES}
    total_attempts = sum(attempts.values())
    ranking = [c for c in sorted(tasks, key=lambda c: -tasks[c]) if tasks[c]]
    dominant = ranking[0] if ranking else None
    return {
        "failed_tasks_by_cause": tasks,
        "failed_attempts": attempts,
        "failed_attempts_total": total_attempts,
        "ranking": ranking,
        "dominant_cause": dominant,
        "dominant_share": round(attempts.get(dominant, 0) / total_attempts, 3) if total_attempts and dominant else 0.0,
    }
