"""`jobrunbook diagnose`: the evidence read now, ranked into causes and actions."""

from __future__ import annotations

import argparse
import json

from jobrunbook import clock
from jobrunbook._paths import absolute, absolute_log_source
from jobrunbook.config_cli import add_source_flags, resolve_sources
from jobrunbook.diagnosis.gather import command_values, evidence_from_findings, gather_findings
from jobrunbook.diagnosis.rank import Diagnosis, diagnose

__all__ = ["add_arguments", "command", "render_text"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_flags(p, "redis", "metrics", "alertmanager", "health", "timeout")
    p.add_argument("--log-file", type=absolute, help="the worker's log file (short for --log-source FILE)")
    p.add_argument("--log-source", type=absolute_log_source, default=None,
                   help="worker logs: a file, docker:NAME, k8s:deployment/NAME[@NS] or command:ARGV")
    p.add_argument("--alert", type=absolute, help="an Alertmanager webhook body (JSON file): severity and startsAt of the first alert")
    p.add_argument("--timeout", type=float, default=None, help="seconds each source may take (default: source_timeout_s)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _alert_from_file(path: str | None) -> dict:
    if not path:
        return {}
    from jobrunbook._exceptions import ConfigError

    try:
        with open(path, encoding="utf-8") as fh:
            body = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the alert file {path!r}: {exc}", hint="it must be an Alertmanager webhook body") from None
    alerts = body.get("alerts") if isinstance(body, dict) else None
    first = (alerts or [body])[0] if isinstance(alerts or [body], list) else {}
    labels = dict(first.get("labels") or {})
    return {**labels, "startsAt": first.get("startsAt"), "status": first.get("status")}


def command(args: argparse.Namespace) -> int:
    alert = _alert_from_file(args.alert)
    src = resolve_sources(args, labels={k: v for k, v in alert.items() if k not in ("startsAt", "status")} or None)
    s, env = src.settings, src.env
    health_by_name = s.health_urls_with_secret(env)
    health = list(health_by_name.values())
    findings = gather_findings(redis_url=s.redis_url_with_secret(env) if s.redis_url else None,
                               metrics_url=s.url_with_secret("metrics_url", env) or None,
                               logs=s.log_args() or None, postgres_dsn=s.postgres_dsn(env),
                               health_urls=health, alertmanager_url=s.url_with_secret("alertmanager_url", env) or None,
                               alert=alert, task_timeout_s=s.task_timeout_s, timeout=args.timeout or s.source_timeout_s,
                               asynq_version=s.asynq_version)
    values = command_values(postgres_dsn=s.postgres_dsn(env), health_urls=health_by_name,
                            metrics_url=s.public()["metrics_url"] or None,
                            names={"deployment": s.worker_deployment, "container": s.worker_container,
                                   "namespace": s.namespace or "default"}, log_args=s.log_args())
    result = diagnose(evidence_from_findings(findings, settings=values), now=clock.now())
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(render_text(result))
    return 0


def ratio_lines(ratios: dict) -> list[str]:
    """The failure ratio twice, the app's metric and asynq's counters, and why they differ."""
    out = []
    app, asynq = ratios.get("app"), ratios.get("asynq")
    if app:
        out.append(f"failure ratio (app): {app['ratio']:.1%} ({app['source']})")
    if asynq:
        out.append(f"failure ratio (asynq): {asynq['ratio']:.1%} ({asynq['failed']:,} failed of "
                   f"{asynq['processed']:,} processed, {asynq['source']})")
    if ratios.get("differ"):
        out.append(f"  they differ: {ratios['reason']}")
    return out


def group_line(g: dict) -> str:
    """One error group: count, queue/type, the example, and how many distinct errors its fingerprint folds."""
    from jobrunbook.asynq.aggregate import DISTINCT_CAP

    n = g.get("distinct_errors") or 1
    folded = ("" if n <= 1 else f"  [{'more than ' + str(DISTINCT_CAP) if n > DISTINCT_CAP else n} distinct "
              "errors folded into this fingerprint]")
    return f"{g['count']:>6}  {g['queue']}/{g['task_type']}: {g['example_error'][:100]}{folded}"


def render_text(d: Diagnosis, *, max_causes: int = 4) -> str:
    """The diagnosis for a terminal: verdict, causes with evidence and commands, escalation."""
    out = [f"VERDICT  {d.verdict}", ""]
    if d.asynq_version_reason:
        out.append(d.asynq_version_reason)
    out += ratio_lines(d.ratios) if d.ratios else (
        [f"failure ratio now: {d.failure_ratio:.1%}"] if d.failure_ratio is not None else [])
    for i, c in enumerate([c for c in d.causes if c.failures or c.evidence][:max_causes], 1):
        out.append(f"{i}. {c.title} [{c.key}]: {c.share:.0%} of failed tasks ({c.failures}), confidence {c.level} "
                   f"({c.confidence:.2f}){'' if c.in_runbook else '  [not in the runbook table]'}")
        out.append(f"     onset: {c.onset_text or c.onset}")
        if c.type_counts:
            out.append("     task types: " + ", ".join(f"{t} {n}" for t, n in c.type_counts.items()))
        for g in c.groups[:3]:
            out.append("     " + group_line(g))
        if len(c.groups) > 3 or sum(g["count"] for g in c.groups) < c.failures:
            out.append(f"     ... {c.failures - sum(g['count'] for g in c.groups[:3])} more in smaller groups")
        for e in c.evidence:
            out.append(f"     + {e}")
        for e in c.contradictions:
            out.append(f"     - {e}")
        out.append(f"     fix: {c.resolution}")
        if c.version_note:
            out.append(f"     asynq {d.asynq_version}: {c.version_note}")
        for a in c.actions:
            out.append(f"     > {a['title']}")
            out.extend(f"         $ {cmd}" for cmd in a["commands"])
            if a.get("note"):
                out.append(f"         ({a['note']})")
    if d.unexplained["failures"]:
        out.append(f"unexplained: {d.unexplained['failures']} failed task(s) ({d.unexplained['share']:.0%})")
        for g in d.unexplained["top_groups"][:3]:
            out.append("     " + group_line(g))
    e = d.escalation
    out += ["", f"ESCALATION  {e['next_step']} (deadline {e['deadline_utc']}, {e.get('remaining') or e['deadline_relative']}; "
                f"counted from {e.get('started_from') or 'the alert'})"]
    if d.unavailable:
        out.append("not reachable: " + "; ".join(f"{k}: {v}" for k, v in sorted(d.unavailable.items())))
    return "\n".join(out)
