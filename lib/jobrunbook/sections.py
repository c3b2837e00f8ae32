"""The runbook's sections, one function each: what a notebook cell calls.

Each function reads one source, writes the section's findings (JSON, through
``jobrunbook.findings``) and returns a ``Section``: a table, charts and one
sentence of reading, which the notebook displays. A source that cannot be
reached is a finding ("Redis unreachable: ..."), never an exception: the run
always gets its report.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobrunbook._exceptions import JobrunbookError, redact_url
from jobrunbook.findings import RUN_DIR_ENV, write_findings

__all__ = ["Context", "Section", "context", "assess_alert", "read_worker_logs", "failing_task_types",
           "job_metrics", "check_dependencies", "diagnose_findings", "remediation_plan"]

@dataclass
class Context:
    """What every section needs: the alert, where the sources are, where the run writes."""

    alertname: str = "JobFailureRate"
    severity: str = "warning"
    queue: str = "default"
    task_type: str = ""
    starts_at: str = ""
    fingerprint: str = ""
    status: str = "firing"
    redis_url: str = ""  # never holds the password: JOBRUNBOOK_REDIS_PASSWORD does
    metrics_url: str = ""
    prometheus_url: str = ""
    alertmanager_url: str = ""
    log_source: str = ""  # a file path, docker:NAME or k8s:deployment/NAME[@namespace]
    health_urls: list[str] = field(default_factory=list)
    task_timeout_s: float | None = None
    run_dir: Path = Path("outputs/adhoc")
    now: float = field(default_factory=time.time)
    demo: dict[str, Any] | None = None
    names: dict[str, str] = field(default_factory=dict)  # deployment, container, namespace for commands

    @property
    def postgres_dsn(self) -> str | None:
        return os.environ.get("JOBRUNBOOK_POSTGRES_DSN") or (self.demo or {}).get("postgres_dsn")

    @property
    def alert(self) -> dict[str, Any]:
        return {"alertname": self.alertname, "severity": self.severity, "queue": self.queue,
                "task_type": self.task_type, "startsAt": self.starts_at, "fingerprint": self.fingerprint,
                "status": self.status}


@dataclass
class Section:
    """What a notebook shows for one runbook step."""

    name: str
    reading: str
    status: str = "ok"  # ok | degraded | failed
    table: Any = None  # a pandas DataFrame
    tables: dict[str, Any] = field(default_factory=dict)
    charts: dict[str, Any] = field(default_factory=dict)  # name -> matplotlib Figure
    commands: list[str] = field(default_factory=list)  # exact commands, shown as one code block
    findings: dict[str, Any] = field(default_factory=dict)

    def _repr_markdown_(self) -> str:
        return f"**{self.reading}**"

    def display(self) -> None:
        """Show the reading, the tables and the charts (in a notebook; a no-op without IPython)."""
        try:
            from IPython.display import Markdown, display
        except ImportError:  # pragma: no cover - IPython comes with ipykernel
            return
        import pandas as pd

        display(Markdown(f"**{_md_escape(self.reading)}**"))
        with pd.option_context("display.max_colwidth", 160, "display.max_rows", 60):
            if self.table is not None and len(self.table):
                display(self.table)
            for name, table in self.tables.items():
                if table is not None and len(table):
                    display(Markdown(f"*{name}*"))
                    display(table)
        if self.commands:
            # fenced code: copy-paste exact, nothing in it is read as Markdown
            fence = "````"
            display(Markdown(f"{fence}sh\n" + "\n".join(c.replace(fence, "") for c in self.commands) + f"\n{fence}"))
        for fig in self.charts.values():
            display(fig)


def _md_escape(text: str) -> str:
    """Untrusted text (error messages, labels) shown as Markdown: no markup, no raw HTML."""
    import html

    out = html.escape(str(text), quote=False)
    for ch in "\\`*_{}[]()#+!|<>~":
        out = out.replace(ch, "\\" + ch)
    return out


def context(*, alertname: str = "JobFailureRate", severity: str = "warning", queue: str = "default",
            task_type: str = "", starts_at: str = "", fingerprint: str = "", status: str = "firing",
            redis_url: str = "", metrics_url: str = "", prometheus_url: str = "", alertmanager_url: str = "",
            log_source: str = "", health_urls: str | list[str] = "", task_timeout_s: float | None = None,
            run_dir: str = "", outputs_dir: str = "outputs", demo_json: str | os.PathLike = "",
            **_ignored: Any) -> Context:
    """The context of one run from the notebook's parameters.

    Empty sources fall back to ``JOBRUNBOOK_*`` environment variables, then to
    the demo incident's ``demo.json`` (so a notebook opened alone runs against
    ``make demo``).
    """
    env = os.environ
    labels = {"alertname": alertname, "severity": severity, "queue": queue, "task_type": task_type}
    configured = _configured_settings(labels)
    demo = None
    if configured is None:
        demo_path = Path(demo_json or env.get("JOBRUNBOOK_DEMO_JSON") or Path(outputs_dir) / "demo" / "demo.json")
        if demo_path.is_file():
            try:
                demo = json.loads(demo_path.read_text())
            except (OSError, ValueError):
                demo = None
    d = demo or {}
    c = configured or {}
    if isinstance(health_urls, str):
        health_urls = [u for u in health_urls.split(",") if u.strip()]
    return Context(
        alertname=alertname, severity=severity, queue=queue, task_type=task_type, starts_at=starts_at,
        fingerprint=fingerprint, status=status,
        redis_url=redis_url or c.get("redis_url") or d.get("redis_url", ""),
        metrics_url=metrics_url or c.get("metrics_url") or d.get("metrics_url", ""),
        prometheus_url=prometheus_url or c.get("prometheus_url") or d.get("prometheus_url") or "",
        alertmanager_url=alertmanager_url or c.get("alertmanager_url") or "",
        log_source=log_source or c.get("log_source") or d.get("log_path", ""),
        health_urls=list(health_urls) or c.get("health_urls")
        or ([d["external_health_url"]] if d.get("external_health_url") else []),
        task_timeout_s=task_timeout_s or c.get("task_timeout_s"),
        run_dir=Path(run_dir or env.get(RUN_DIR_ENV) or Path(outputs_dir) / "adhoc"),
        demo=demo,
        names=c.get("names", {}),
    )


_SOURCE_ENV = ("JOBRUNBOOK_CONFIG", "JOBRUNBOOK_REDIS_URL", "JOBRUNBOOK_METRICS_URL", "JOBRUNBOOK_PROMETHEUS_URL",
               "JOBRUNBOOK_ALERTMANAGER_URL", "JOBRUNBOOK_LOG_SOURCE", "JOBRUNBOOK_LOG_FILE", "JOBRUNBOOK_HEALTH_URLS")


def _configured_settings(labels: dict[str, str]) -> dict[str, Any] | None:
    """The sources from the configuration (file and JOBRUNBOOK_* variables), or None when none is set.

    With nothing configured the sections fall back to the demo incident's demo.json.
    """
    if not any(os.environ.get(name) for name in _SOURCE_ENV):
        return None
    from jobrunbook.config import load_settings

    s = load_settings(labels=labels)
    log = {"docker": f"docker:{s.worker_container}", "kubectl":
           f"k8s:deployment/{s.worker_deployment}@{s.namespace or 'default'}", "file": s.log_path}.get(s.log_source, "")
    return {"redis_url": s.redis_url, "metrics_url": s.metrics_url, "prometheus_url": s.prometheus_url,
            "alertmanager_url": s.alertmanager_url, "log_source": log, "health_urls": list(s.health_urls.values()),
            "task_timeout_s": s.task_timeout_s,
            "names": {"deployment": s.worker_deployment, "container": s.worker_container,
                      "namespace": s.namespace or "default"}}


def _finish(ctx: Context, section: str, out: Section) -> Section:
    """Write the findings and the charts of a section; return it for display."""
    from jobrunbook.charts import save_chart

    data = {"status": out.status, "message": out.reading, **out.findings}
    write_findings(section, data, ctx.run_dir, status=out.status)
    for name, fig in out.charts.items():
        save_chart(fig, ctx.run_dir, name)
    return out


def _unreachable(section: str, what: str, exc: Exception | str) -> Section:
    text = str(exc)
    return Section(section, f"{what} unreachable: {text}", status="degraded", findings={"error": text})


# -- 00: the alert and the assessment -------------------------------------------------
def assess_alert(ctx: Context) -> Section:
    """Severity, thresholds, the failure rate now, how long the alert has been firing."""
    import pandas as pd

    from jobrunbook.diagnosis.escalation import escalation, format_delta
    from jobrunbook.diagnosis.evidence import parse_time

    start = parse_time(ctx.starts_at)
    ratio, ratio_source = None, "unknown"
    rows = []
    if ctx.metrics_url:
        from jobrunbook.sources import collect_worker_metrics

        r = collect_worker_metrics(ctx.metrics_url, timeout=5)
        if r.reachable:
            failure = r.data["failure"]
            cells = failure["by_queue_task_type"]
            mine = cells[(cells["queue"] == ctx.queue) & ((cells["task_type"] == ctx.task_type) if ctx.task_type else True)]
            if not mine.empty:
                ratio = float(mine["failed"].sum() / max(1, mine["processed"].sum()))
                ratio_source = "worker /metrics (since the worker started)"
    if ctx.prometheus_url:
        from jobrunbook.sources.prometheus import failure_ratio_by_task_type

        p = failure_ratio_by_task_type(ctx.prometheus_url, starts_at=ctx.starts_at or None,
                                       matchers={"queue": ctx.queue})
        if p.reachable and p.data is not None and not p.data["summary"].empty:
            summary = p.data["summary"]
            row = summary[summary["task_type"] == ctx.task_type] if ctx.task_type else summary
            if not row.empty:
                ratio, ratio_source = float(row["last"].iloc[0]), "Prometheus, rate over 5 min"
    threshold = 0.25 if ctx.severity == "critical" else 0.10
    esc = escalation(ctx.severity, start, ctx.now)
    rows = [
        ("alert", ctx.alertname), ("severity", ctx.severity), ("queue", ctx.queue), ("task type", ctx.task_type or "(all)"),
        ("started", esc["started_at_utc"] or "unknown"),
        ("firing for", format_delta(ctx.now - start).removeprefix("in ") if start else "unknown"),
        ("threshold", f"> {threshold:.0%} ({'2 min' if ctx.severity == 'critical' else '5 min'})"),
        ("failure rate now", f"{ratio:.1%} ({ratio_source})" if ratio is not None else "unknown"),
        ("escalate by", f"{esc['deadline_utc']} ({esc['deadline_relative']})"),
    ]
    table = pd.DataFrame(rows, columns=["", "value"]).set_index("")
    if ratio is None:
        reading = f"{ctx.severity.capitalize()} alert on {ctx.queue}/{ctx.task_type or 'all'}: the current failure rate could not be read."
    else:
        state = "above" if ratio > threshold else "below"
        reading = (f"{ratio:.1%} of {ctx.task_type or 'jobs'} on {ctx.queue} fail now, {state} the "
                   f"{threshold:.0%} {ctx.severity} threshold; escalate {esc['deadline_relative']}.")
    return _finish(ctx, "00_alert", Section("00_alert", reading, table=table, findings={
        "alert": ctx.alert, "failure_ratio": ratio, "failure_ratio_source": ratio_source,
        "threshold": threshold, "escalation": esc, "severity": ctx.severity,
        "sources": {"redis": redact_url(ctx.redis_url), "metrics": ctx.metrics_url, "prometheus": ctx.prometheus_url,
                    "logs": ctx.log_source}}))


# -- 01: worker logs --------------------------------------------------------------------
def _log_args(source: str) -> dict[str, Any]:
    if source.startswith("docker:"):
        return {"kind": "docker", "container": source[7:]}
    if source.startswith("k8s:") or source.startswith("kubectl:"):
        target = source.split(":", 1)[1]
        deployment, _, namespace = target.partition("@")
        return {"kind": "kubectl", "deployment": deployment.removeprefix("deployment/"),
                "namespace": namespace or "default"}
    return {"kind": "file", "path": source}


def read_worker_logs(ctx: Context, *, since: str = "1h") -> Section:
    """Runbook step 1: errors, failures and panics in the worker's log, grouped like the task errors."""
    from jobrunbook.sources import collect_worker_logs

    if not ctx.log_source:
        return _finish(ctx, "01_logs", Section("01_logs", "No log source configured (JOBRUNBOOK_LOG_SOURCE).",
                                               status="degraded"))
    r = collect_worker_logs(since=since, **_log_args(ctx.log_source))
    if not r.reachable:
        return _finish(ctx, "01_logs", _unreachable("01_logs", "worker log", r.message))
    groups = r.data["groups"]
    cols = [c for c in ("task_type", "count", "example", "last_seen") if c in groups.columns]
    top = groups.head(1).to_dict("records")
    restarts = r.data["restarts"]
    reading = (f"{int(groups['count'].sum()) if not groups.empty else 0} failure line(s) and {r.data['panics']} panic(s) "
               f"in the last {since}" + (f"; most frequent: {top[0]['task_type']}: {top[0]['example'][:100]}" if top else "")
               + (f"; the worker restarted at {', '.join(x['time'][11:19] for x in restarts[-3:])} UTC"
                  + ("" if all(x["graceful"] for x in restarts) else " (not gracefully: a crash)") if restarts else "")
               + ".")
    return _finish(ctx, "01_logs", Section("01_logs", reading, table=groups[cols].head(15), findings={
        "groups": groups.drop(columns=[c for c in ("stack",) if c in groups.columns]).head(50),
        "panics": r.data["panics"], "lines": r.data["lines"], "truncated": r.data["truncated"],
        "restarts": r.data["restarts"]}))


# -- 02: failing task types (asynq) ---------------------------------------------------------
def _task_timeouts(insp: Any, queues: list[str], *, sample: int = 100) -> dict[str, int]:
    """Each failing task type's timeout (seconds) as its tasks carry it, from a first page of retry/archived."""
    out: dict[str, int] = {}
    for q in queues:
        for state in ("retry", "archived"):
            for t in insp.list_tasks(q, state, size=sample):
                if t.timeout_seconds:
                    out[t.type] = max(out.get(t.type, 0), int(t.timeout_seconds))
    return out


def failing_task_types(ctx: Context) -> Section:
    """Runbook step 2: failed tasks (retry + archived) by queue, task type and error."""
    import pandas as pd

    from jobrunbook.asynq.connection import connect
    from jobrunbook.asynq.inspector import Inspector
    from jobrunbook.charts import daily_history_chart, failures_by_cause_chart, queue_depth_chart
    from jobrunbook.diagnosis.causes import match_cause

    if not ctx.redis_url:
        return _finish(ctx, "02_asynq", Section("02_asynq", "No Redis URL configured (JOBRUNBOOK_REDIS_URL).",
                                                status="degraded"))
    try:
        insp = Inspector(connect(ctx.redis_url, timeout=5))
        queues = [insp.queue_info(q) for q in insp.queues()]
        agg = insp.failures()
        history = [insp.history(q.queue, days=7) for q in queues]
        servers = insp.servers()
        timeouts = _task_timeouts(insp, [q.queue for q in queues])
    except JobrunbookError as exc:
        return _finish(ctx, "02_asynq", _unreachable("02_asynq", "asynq's Redis", exc))
    records = agg.to_records()
    for r in records:
        cause = match_cause(r["example_error"], r["fingerprint"])
        r["cause"] = cause.key if cause else "unknown"
    groups = pd.DataFrame(records, columns=["queue", "task_type", "cause", "count", "retry", "archived",
                                            "fingerprint", "first_failed_at_iso", "last_failed_at_iso", "example_ids",
                                            "example_error", "first_failed_at", "last_failed_at"])
    counts = pd.DataFrame([q.to_dict() for q in queues])
    state_cols = ["queue", "pending", "active", "scheduled", "retry", "archived", "completed", "paused",
                  "processed_today", "failed_today"]
    daily = pd.DataFrame([{"queue": h.queue, "date": d.date, "processed": d.processed, "failed": d.failed}
                          for h in history for d in h.days])
    charts = {}
    if not groups.empty:
        charts["failures_by_cause"] = failures_by_cause_chart(groups.groupby(["task_type", "cause"], as_index=False)["count"].sum())
    if not counts.empty:
        charts["queue_depth"] = queue_depth_chart(counts[["queue", "retry", "archived"]])
    if not daily.empty:
        charts["daily_history"] = daily_history_chart(daily)
    total = int(groups["count"].sum()) if not groups.empty else 0
    by_type = groups.groupby(["queue", "task_type"])["count"].sum().sort_values(ascending=False) if total else None
    if total:
        (q, t), n = next(iter(by_type.items()))
        reading = (f"{total} failed task(s) in retry and archived across {len(by_type)} task type(s); "
                   f"most: {t} on {q} ({n}), \"{groups.iloc[0]['example_error'][:90]}\".")
    else:
        reading = "No failed task in retry or archived."
    if not agg.complete:
        reading += f" Partial read: {agg.incomplete_reason}."
    shown = groups[["queue", "task_type", "cause", "count", "retry", "archived", "last_failed_at_iso",
                    "example_error"]].head(20).rename(columns={"last_failed_at_iso": "last failed"})
    shown["example_error"] = shown["example_error"].str.slice(0, 140)
    return _finish(ctx, "02_asynq", Section(
        "02_asynq", reading, status="ok" if agg.complete else "degraded", table=shown,
        tables={"queues": counts[[c for c in state_cols if c in counts.columns]].set_index("queue") if not counts.empty else counts},
        charts=charts,
        findings={"groups": records, "queues": counts, "history": daily, "servers": [s.to_dict() for s in servers],
                  "anomalies": agg.anomalies, "tasks": agg.tasks, "timeouts": timeouts,
                  "task_types": by_type.reset_index().to_dict("records") if total else []}))


# -- 03: job metrics ----------------------------------------------------------------------------
def job_metrics(ctx: Context) -> Section:
    """Runbook step 3: failure ratio by task type, durations against the timeout, the ratio over time."""
    from jobrunbook.charts import duration_chart, failure_ratio_chart
    from jobrunbook.sources import collect_worker_metrics

    charts: dict[str, Any] = {}
    findings: dict[str, Any] = {}
    readings = []
    status = "ok"
    table = None
    if ctx.metrics_url:
        r = collect_worker_metrics(ctx.metrics_url, task_timeout_s=ctx.task_timeout_s, timeout=5)
        if r.reachable:
            failure, durations = r.data["failure"], r.data["durations"]
            table = failure["by_queue_task_type"].sort_values("ratio", ascending=False)
            findings["failure"] = failure
            findings["durations"] = durations
            if not durations.empty:
                charts["durations"] = duration_chart(durations.rename(columns={"p50_s": "p50", "p95_s": "p95", "p99_s": "p99"}),
                                                     timeout_s=ctx.task_timeout_s)
            worst = table.head(1).to_dict("records")
            if worst:
                readings.append(f"Worst: {worst[0]['task_type']} on {worst[0]['queue']} at {worst[0]['ratio']:.0%} failed "
                                f"(overall {failure['overall']['ratio']:.0%}).")
        else:
            status = "degraded"
            readings.append(f"Worker metrics unreachable: {r.message}.")
            findings["error"] = r.message
    if ctx.prometheus_url:
        from jobrunbook.sources.prometheus import failure_ratio_by_task_type

        p = failure_ratio_by_task_type(ctx.prometheus_url, starts_at=ctx.starts_at or None)
        if p.reachable and p.data is not None:
            series = p.data["series"].rename(columns={"timestamp": "time", "value": "failure_ratio"})
            charts["failure_ratio"] = failure_ratio_chart(series, alert_start=ctx.starts_at or None)
            findings["prometheus"] = {"summary": p.data["summary"], "query": p.data["query"]}
        else:
            readings.append(f"Prometheus: {p.message}.")
            findings["prometheus_error"] = p.message
    if not ctx.metrics_url and not ctx.prometheus_url:
        status = "degraded"
        readings.append("No metrics source configured (JOBRUNBOOK_METRICS_URL, JOBRUNBOOK_PROMETHEUS_URL).")
    return _finish(ctx, "03_metrics", Section("03_metrics", " ".join(readings) or "Metrics read.", status=status,
                                              table=table, charts=charts, findings=findings))


# -- 04: dependencies ---------------------------------------------------------------------------
def check_dependencies(ctx: Context) -> Section:
    """Runbook step 4: Postgres, Redis and the external APIs, probed at once; related alerts."""
    from jobrunbook.sources import probe_dependencies

    r = probe_dependencies(postgres_dsn=ctx.postgres_dsn, redis_url=ctx.redis_url or None,
                           health_urls=ctx.health_urls, timeout=5)
    probes = r.data["probes"] if isinstance(r.data, dict) else None
    findings: dict[str, Any] = {"probes": probes}
    reading = r.message
    if ctx.alertmanager_url:
        from jobrunbook.sources import related_alerts

        ra = related_alerts(ctx.alertmanager_url, timeout=5)
        findings["related_alerts"] = ra.data if ra.reachable else {"error": ra.message}
        firing = sorted(n for n, on in ((ra.data or {}).get("firing") or {}).items() if on) if ra.reachable else []
        reading += f". Related alerts firing: {', '.join(firing) or 'none'}" if ra.reachable else f". {ra.message}"
    table = probes[["name", "status", "latency_s", "message"]] if probes is not None and not probes.empty else None
    return _finish(ctx, "04_dependencies", Section("04_dependencies", reading + ".", table=table, findings=findings))


# -- 05: diagnosis -----------------------------------------------------------------------------
_SECTION_KEYS = {"00": "alert", "01": "logs", "02": "asynq", "03": "metrics", "04": "dependencies"}


def _command_values(ctx: Context) -> dict[str, Any]:
    from jobrunbook.diagnosis.gather import command_values

    return command_values(postgres_dsn=ctx.postgres_dsn, health_urls=ctx.health_urls, metrics_url=ctx.metrics_url,
                          names=ctx.names)


def diagnose_findings(ctx: Context, *, settings: dict[str, Any] | None = None) -> Section:
    """Rank the causes from sections 00-04's findings; the verdict the report opens with."""
    import pandas as pd

    from jobrunbook.diagnosis import diagnose
    from jobrunbook.diagnosis.gather import evidence_from_findings
    from jobrunbook.findings import read_findings

    found = read_findings(ctx.run_dir)
    by_key = {}
    for name, doc in found.items():
        key = _SECTION_KEYS.get(str(name)[:2])
        if key:
            by_key[key] = doc.get("data", doc) if isinstance(doc, dict) else {}
    by_key.setdefault("alert", {"alert": ctx.alert})
    d = diagnose(evidence_from_findings(by_key, settings={**_command_values(ctx), **(settings or {})}), now=ctx.now)
    causes = [c for c in d.causes if c.failures or c.evidence]
    table = pd.DataFrame([{"cause": c.title, "share": f"{c.share:.0%}", "failed tasks": c.failures,
                           "confidence": f"{c.level} ({c.confidence:.2f})", "onset": c.onset,
                           "task types": ", ".join(c.task_types[:4])} for c in causes])
    report_causes = [{"name": c.title, "confidence": c.confidence, "share": c.share,
                      "evidence": [f"{g['count']} × {g['queue']}/{g['task_type']}: {g['example_error'][:160]}" for g in c.groups[:3]]
                      + c.evidence + [f"against: {x}" for x in c.contradictions],
                      "actions": [{"title": a["title"] + (f" ({a['note']})" if a["note"] else ""),
                                   "command": "\n".join(a["commands"])} for a in c.actions]}
                     for c in causes]
    findings = {"verdict": d.verdict, "severity": ctx.severity, "failure_ratio": d.failure_ratio,
                "task_types": d.task_types, "causes": report_causes, "escalation": d.escalation,
                "checklist": d.checklist, "incident_update": d.incident_update, "top_cause": d.top_cause,
                "unexplained": d.unexplained, "diagnosis": d.to_dict()}
    return _finish(ctx, "05_diagnosis", Section("05_diagnosis", d.verdict, table=table,
                                                tables={"checklist": pd.DataFrame(d.checklist)}, findings=findings))


# -- 06: remediation plan (dry run only) -----------------------------------------------------------
def remediation_plan(ctx: Context, *, max_plans: int = 4) -> Section:
    """What the recommended actions would change, as dry runs, with the exact command to act."""
    import shlex

    import pandas as pd

    from jobrunbook.asynq.connection import connect
    from jobrunbook.findings import read_findings
    from jobrunbook.remediate import plan_remediation
    from jobrunbook.remediate_select import TaskFilter

    diag = {}
    for name, doc in read_findings(ctx.run_dir).items():
        if str(name).startswith("05"):
            diag = (doc.get("data", doc) if isinstance(doc, dict) else {}).get("diagnosis") or {}
    commands = [cmd for c in diag.get("causes", []) for a in c.get("actions", []) if a.get("changes_state")
                for cmd in a.get("commands", []) if cmd.startswith("jobrunbook remediate ")][:max_plans]
    if not commands:
        return _finish(ctx, "06_remediation", Section("06_remediation", "No remediation to plan: no action changes tasks."))
    try:
        client = connect(ctx.redis_url, timeout=5)
    except JobrunbookError as exc:
        return _finish(ctx, "06_remediation", _unreachable("06_remediation", "asynq's Redis", exc))
    rows = []
    for cmd in commands:
        words = shlex.split(cmd)
        action = words[2]
        opts = {w[2:]: words[i + 1] for i, w in enumerate(words) if w.startswith("--") and i + 1 < len(words)}
        try:
            flt = TaskFilter(queue=opts["queue"], state=opts.get("state"), task_type=opts.get("type"),
                             fingerprint=opts.get("fingerprint"))
            plan = plan_remediation(client, action, flt, run_dir=ctx.run_dir, command=cmd + " (planned by 06)")
            warn = (plan.eviction or {}).get("message", "")
            rows.append({"action": action, "queue": flt.queue, "state": flt.state, "task type": flt.task_type,
                         "tasks": plan.count, "batches": plan.batches, "warning": warn,
                         "to act": f"{cmd} --confirm {plan.count}" if plan.count else "nothing matches now",
                         "asynq CLI": "; ".join(plan.asynq_commands(limit=2))})
        except JobrunbookError as exc:
            rows.append({"action": action, "queue": opts.get("queue"), "state": opts.get("state"),
                         "task type": opts.get("type"), "tasks": 0, "batches": 0, "warning": str(exc),
                         "to act": "", "asynq CLI": ""})
    table = pd.DataFrame(rows)
    n = int(table["tasks"].sum())
    to_act = [r["to act"] for r in rows if r["to act"] and r["tasks"]]
    reading = (f"{len(rows)} dry run(s): {n} task(s) would change. Nothing was changed; act with the command "
               f"shown, which exports first and asks for the count again.")
    return _finish(ctx, "06_remediation", Section("06_remediation", reading, commands=to_act,
                                                  table=table.drop(columns=["to act", "asynq CLI"]),
                                                  findings={"plans": rows}))
