"""Section 05: the diagnosis from sections 00-04's findings."""

from __future__ import annotations

from typing import Any

from jobrunbook.sections._base import Context, Section, _finish, gap

_SECTION_KEYS = {"00": "alert", "01": "logs", "02": "asynq", "03": "metrics", "04": "dependencies"}


def _command_values(ctx: Context) -> dict[str, Any]:
    from jobrunbook.diagnosis.gather import command_values

    return command_values(postgres_dsn=ctx.postgres_dsn, health_urls=ctx.settings.health_urls_with_secret(ctx.env),
                          metrics_url=ctx.settings.public()["metrics_url"] or None, names=ctx.names,
                          log_args=ctx.settings.log_args())


def run_diagnosis(ctx: Context, *, settings: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """The diagnosis of sections 00-04's findings, and those findings by key: what 05 shows, and what 06
    plans from (it derives the same diagnosis rather than wait for 05's)."""
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
    return d, by_key


def diagnose_findings(ctx: Context, *, settings: dict[str, Any] | None = None) -> Section:
    """Rank the causes from sections 00-04's findings; the verdict the report opens with."""
    import pandas as pd

    from jobrunbook.diagnosis.cli import group_line
    from jobrunbook.diagnosis.rank import types_text

    d, by_key = run_diagnosis(ctx, settings=settings)
    causes = [c for c in d.causes if c.failures or c.evidence]
    table = pd.DataFrame([{"cause": c.key, "explains": c.title, "share": c.share, "failed tasks": c.failures,
                           "confidence": c.level, "onset": c.onset_text or c.onset,
                           "task types": types_text([f"{t} ({n})" for t, n in c.type_counts.items()], 4)}
                          for c in causes])
    report_causes = [{"key": c.key, "name": c.title, "confidence": c.confidence, "level": c.level, "share": c.share,
                      "failures": c.failures, "onset": c.onset_text, "task_types": c.task_types,
                      "evidence": [group_line(g).strip() for g in c.groups[:3]]
                      + c.evidence + [f"against: {x}" for x in c.contradictions]
                      + ([f"asynq {d.asynq_version}: {c.version_note}"] if c.version_note else []),
                      "actions": [{"title": a["title"] + (f" ({a['note']})" if a["note"] else ""),
                                   "command": "\n".join(a["commands"]),
                                   "changes_state": bool(a.get("changes_state"))} for a in c.actions]}
                     for c in causes]
    alert = by_key.get("alert") or {}
    source = (alert.get("failure_ratio_source") if alert.get("failure_ratio") is not None else
              "worker /metrics, every type since the worker started" if d.failure_ratio is not None else "")
    findings = {"verdict": d.verdict, "severity": ctx.severity, "failure_ratio": d.failure_ratio,
                "failure_ratio_source": source, "ratios": d.ratios,
                "task_types": d.task_types, "causes": report_causes, "escalation": d.escalation,
                "checklist": d.checklist, "incident_update": d.incident_update, "top_cause": d.top_cause,
                "unexplained": d.unexplained, "diagnosis": d.to_dict()}
    ratios = pd.DataFrame([{"counted by": who, "failure ratio": r["ratio"], "window": r["source"]}
                           for who, r in (("the app's metric", d.ratios.get("app")),
                                          ("asynq's own counters", d.ratios.get("asynq"))) if r])
    gaps = [gap(f"made without {name}", why) for name, why in sorted(d.unavailable.items())]
    return _finish(ctx, "05_diagnosis", Section("05_diagnosis", d.verdict, table=table, gaps=gaps,
                                                kinds={"explains": "text", "onset": "text", "confidence": "id",
                                                       "task types": "text", "window": "text",
                                                       "failure ratio": "ratio"},
                                                tables={"Failure ratio, counted twice" + (
                                                            f": they differ, {d.ratios['reason']}"
                                                            if d.ratios.get("differ") else ""): ratios,
                                                        "Quick Response Checklist": pd.DataFrame(d.checklist)},
                                                findings=findings))
