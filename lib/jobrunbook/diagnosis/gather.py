"""Evidence from the sections' findings (JSON), and gathered live for `jobrunbook diagnose`.

Each runbook section writes its findings as JSON; the diagnosis reads them
back through ``evidence_from_findings``, so a report can be re-diagnosed from
its run directory alone. ``gather_findings`` produces the same dicts live,
for the command line.
"""

from __future__ import annotations

import math
from typing import Any

from jobrunbook.diagnosis.evidence import DurationStat, ErrorGroup, Evidence, Probe, parse_time

__all__ = ["evidence_from_findings", "groups_from_aggregate", "gather_findings", "command_values"]

_PROBE_STATUS = {"ok": "ok", "degraded": "degraded", "down": "down", "timeout": "down"}


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def command_values(*, postgres_dsn: str | None = None, health_urls: dict[str, str] | list[str] | None = None,
                   metrics_url: str | None = None, names: dict[str, str] | None = None,
                   log_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Values for the recommended commands, never a secret: Postgres host and port, the health URLs by name
    (redacted as every URL shown), the metrics URL, where the worker's log is (``Settings.log_args()``)."""
    from urllib.parse import urlsplit

    from jobrunbook._urls import redact_url

    if isinstance(health_urls, list | tuple):
        health_urls = {urlsplit(u).hostname or u: u for u in health_urls}
    log_args = log_args or {}
    values: dict[str, Any] = {"metrics_url": metrics_url or None,
                              "health_urls": {k: redact_url(v) for k, v in (health_urls or {}).items()},
                              "log_kind": log_args.get("kind") or None,
                              "log_file": str(log_args["path"]) if log_args.get("kind") == "file" else None}
    if postgres_dsn:
        # a URL or libpq's key=value form; only host and port are kept (never the password)
        try:
            from psycopg.conninfo import conninfo_to_dict

            params = conninfo_to_dict(postgres_dsn)
            host = str(params.get("host") or "").split(",")[0] or None
            values.update(pg_host=host, pg_port=str(params.get("port") or "5432").split(",")[0] if host else None)
        except Exception:  # noqa: BLE001 - an unparsable DSN leaves the commands without a host
            try:
                parts = urlsplit(postgres_dsn)
                values.update(pg_host=parts.hostname, pg_port=parts.port)
            except ValueError:
                pass
    values.update(names or {})
    return values


def groups_from_aggregate(records: list[dict[str, Any]]) -> list[ErrorGroup]:
    """ErrorGroups from the inspector's failure aggregate (``FailureAggregate.to_records()``)."""
    return [ErrorGroup(queue=r["queue"], task_type=r["task_type"], fingerprint=r["fingerprint"],
                       example_error=r.get("example_error") or r["fingerprint"], count=int(r["count"]),
                       retry=int(r.get("retry", 0)), archived=int(r.get("archived", 0)),
                       first_seen=_num(r.get("first_failed_at")), last_seen=_num(r.get("last_failed_at")),
                       example_ids=list(r.get("example_ids") or []), source="redis",
                       distinct_errors=int(r.get("distinct_errors") or 1))
            for r in records]


def _counters(asynq: dict[str, Any], ev: Evidence) -> None:
    """asynq's own counters (section 02's ``queues`` and ``history``) into the evidence."""
    for q in asynq.get("queues") or []:
        if not isinstance(q, dict) or not q.get("queue"):
            continue
        ev.state_counts[q["queue"]] = {"retry": int(q.get("retry") or 0), "archived": int(q.get("archived") or 0)}
        if q.get("processed_total") is not None:
            ev.totals[q["queue"]] = {"processed": int(q.get("processed_total") or 0),
                                     "failed": int(q.get("failed_total") or 0)}
    for d in asynq.get("history") or []:
        if isinstance(d, dict) and d.get("queue") and d.get("date"):
            ev.daily.setdefault(d["queue"], []).append({"date": str(d["date"]), "processed": int(d.get("processed") or 0),
                                                        "failed": int(d.get("failed") or 0)})
    for days in ev.daily.values():
        days.sort(key=lambda d: d["date"], reverse=True)


def _groups_from_logs(records: list[dict[str, Any]], queue: str = "") -> list[ErrorGroup]:
    out = []
    for r in records:
        if not r.get("fingerprint"):
            continue
        tid = r.get("example_task_id")
        out.append(ErrorGroup(queue=queue, task_type=r.get("task_type") or "", fingerprint=r["fingerprint"],
                              example_error=r.get("example") or r["fingerprint"], count=int(r.get("count") or 0),
                              first_seen=parse_time(r.get("first_seen")), last_seen=parse_time(r.get("last_seen")),
                              example_ids=[tid] if tid else [], source="logs"))
    return out


def evidence_from_findings(findings: dict[str, dict[str, Any]], *, settings: dict[str, Any] | None = None) -> Evidence:
    """Build the Evidence from the sections' findings.

    ``findings`` maps a section (alert, logs, asynq, metrics, dependencies) to
    its findings data. A section whose source failed carries ``status`` other
    than ok/degraded and a ``message``: it goes to ``Evidence.unavailable``.
    """
    ev = Evidence(settings=dict(settings or {}))
    alert = findings.get("alert") or {}
    ev.alert = dict(alert.get("alert") or {})
    ev.deploy_time = parse_time(alert.get("deploy_time"))

    for section in ("asynq", "logs", "metrics", "dependencies"):
        f = findings.get(section)
        if f is None:
            ev.unavailable[section] = "section did not run"
        elif f.get("status") not in ("ok", "degraded", None):
            ev.unavailable[section] = str(f.get("message") or f.get("status"))
        elif f.get("status") == "degraded" and f.get("error"):  # the section ran, its source did not answer
            ev.unavailable[section] = str(f.get("degraded") or f.get("error"))[:300]

    asynq = findings.get("asynq") or {}
    ev.groups = groups_from_aggregate(asynq.get("groups") or [])
    _counters(asynq, ev)
    reading = asynq.get("asynq_version") or {}
    ev.asynq_version = reading.get("version")
    ev.asynq_version_reason = reading.get("sentence") or ""
    if asynq.get("servers") is not None:
        ev.servers_alive = len(asynq["servers"])

    logs = findings.get("logs") or {}
    ev.revoked = int(logs.get("revoked") or 0)
    ev.log_groups = _groups_from_logs(logs.get("groups") or [], queue=ev.alert.get("queue", ""))
    restarts = logs.get("restarts") or []
    if ev.deploy_time is None:
        graceful = [parse_time(r.get("time")) for r in restarts if r.get("graceful")]
        ev.deploy_time = max((t for t in graceful if t), default=None)
    ev.crashes = [t for t in (parse_time(r.get("time")) for r in restarts if not r.get("graceful")) if t]
    ev.restarts = [(t, bool(r.get("graceful"))) for r in restarts if (t := parse_time(r.get("time")))]
    ev.worker_started = parse_time(logs.get("started"))
    ev.log_from = parse_time(logs.get("from"))

    metrics = findings.get("metrics") or {}
    overall = (metrics.get("failure") or {}).get("overall") or {}
    # the alert's own series now (section 00) before the worker's lifetime ratio
    ev.failure_ratio = _num(alert.get("failure_ratio"))
    ev.failure_ratio_source = str(alert.get("failure_ratio_source") or "") if ev.failure_ratio is not None else ""
    if ev.failure_ratio is None:
        ev.failure_ratio = _num(overall.get("ratio"))
        if ev.failure_ratio is not None:
            ev.failure_ratio_source = (f"{(metrics.get('failure') or {}).get('metric') or 'the job metric'} at the "
                                       "worker's /metrics, since the worker started")
    if _num(overall.get("processed")):
        ev.app_counts = {"processed": _num(overall.get("processed")), "failed": _num(overall.get("failed")) or 0.0}
    # the timeout each task carries in asynq (section 02) when the metrics section had none configured
    timeouts = asynq.get("timeouts") or {}
    for d in metrics.get("durations") or []:
        task_type = d.get("task_type") or ""
        ev.durations.append(DurationStat(queue=d.get("queue") or "", task_type=task_type,
                                         p95_s=_num(d.get("p95_s")),
                                         timeout_s=_num(d.get("timeout_s")) or _num(timeouts.get(task_type)),
                                         at_timeout_share=_num(d.get("share_at_or_beyond_timeout"))))

    deps = findings.get("dependencies") or {}
    for p in deps.get("probes") or []:
        status = _PROBE_STATUS.get(p.get("status"))
        if status:
            ev.probes.append(Probe(name=p.get("source") or p.get("name", ""), kind=p.get("source", ""),
                                   status=status, message=p.get("message", ""), target=p.get("target", "")))
    firing = (deps.get("related_alerts") or {}).get("firing") or {}
    ev.related_alerts = sorted(name for name, on in firing.items() if on)
    return ev


def _section(result, keep: tuple[str, ...]) -> dict[str, Any]:
    """A SourceResult as section findings: status, message, hint and the ``keep`` parts of its data."""
    d = result.to_dict()
    data = d.get("data") or {}
    return {"status": d["status"], "message": d["message"], "hint": d.get("hint", ""),
            **{k: data[k] for k in keep if isinstance(data, dict) and k in data}}


def gather_findings(*, redis_url: str | None, metrics_url: str | None = None, log_file: str | None = None,
                    postgres_dsn: str | None = None, health_urls: list[str] | None = None,
                    alertmanager_url: str | None = None, alert: dict[str, Any] | None = None,
                    task_timeout_s: float | None = None, timeout: float = 5.0,
                    logs: dict[str, Any] | None = None, asynq_version: str = "infer") -> dict[str, dict[str, Any]]:
    """Read every configured source now and return findings as the sections write them.

    ``logs`` is where the worker's log is, as ``collect_worker_logs`` takes it (``{"kind": "docker",
    "container": "worker"}``); ``log_file`` is the short form for a file.
    """
    if log_file and not logs:
        logs = {"kind": "file", "path": log_file}
    from jobrunbook._exceptions import JobrunbookError

    findings: dict[str, dict[str, Any]] = {"alert": {"alert": dict(alert or {})}}
    if redis_url:
        from jobrunbook.asynq.connection import connect
        from jobrunbook.asynq.inspector import Inspector

        try:
            inspector = Inspector(connect(redis_url, timeout=timeout))
            agg = inspector.failures()
            queues = inspector.queues()
            history = [inspector.history(q, days=7) for q in queues]
            findings["asynq"] = {"status": "ok" if agg.complete else "degraded",
                                 "message": agg.incomplete_reason or f"{agg.tasks} failed tasks read",
                                 "groups": agg.to_records(), "servers": [s.to_dict() for s in inspector.servers()],
                                 "asynq_version": inspector.version(configured=asynq_version).to_dict(),
                                 "queues": [inspector.queue_info(q).to_dict() for q in queues],
                                 "history": [{"queue": h.queue, "date": d.date, "processed": d.processed,
                                              "failed": d.failed} for h in history for d in h.days]}
        except JobrunbookError as exc:
            findings["asynq"] = {"status": "down", "message": str(exc)}
    if metrics_url:
        from jobrunbook.sources import collect_worker_metrics

        findings["metrics"] = _section(collect_worker_metrics(metrics_url, task_timeout_s=task_timeout_s,
                                                              timeout=timeout), ("failure", "durations"))
    if logs:
        from jobrunbook.sources import collect_worker_logs
        from jobrunbook.sources.logs import log_window

        # from before the alert, else before the first failure in Redis: never the wall clock's last 24 h
        first = min((g["first_failed_at"] for g in (findings.get("asynq") or {}).get("groups") or []
                     if g.get("first_failed_at")), default=None)
        since = log_window((alert or {}).get("startsAt"), first_seen=first)
        findings["logs"] = _section(collect_worker_logs(since=since, **logs),
                                    ("groups", "panics", "restarts", "revoked", "asynq_versions", "from",
                                     "started"))
        findings["logs"]["since"] = since
    if postgres_dsn or health_urls or redis_url:
        from jobrunbook.sources import probe_dependencies

        findings["dependencies"] = _section(
            probe_dependencies(postgres_dsn=postgres_dsn, redis_url=redis_url, health_urls=health_urls or [],
                               timeout=timeout), ("probes",))
        # a dependency being down is evidence, not a missing section
        findings["dependencies"]["status"] = "ok"
        if alertmanager_url:
            from jobrunbook.sources import related_alerts

            findings["dependencies"]["related_alerts"] = related_alerts(alertmanager_url, timeout=timeout).to_dict()["data"]
    return findings
