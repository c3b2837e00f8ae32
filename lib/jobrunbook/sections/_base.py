"""What every section shares: the run's context, the Section a notebook displays, writing findings."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobrunbook import clock
from jobrunbook.findings import RUN_DIR_ENV, write_findings

__all__ = ["Context", "Section", "context", "gap"]


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
    now: float = field(default_factory=clock.now)
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
    # sources this section could not read (or read only in part), each with how to check it: the section
    # is then ``degraded`` in status.json and the report, whatever else it found
    gaps: list[str] = field(default_factory=list)

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

    if out.gaps and out.status == "ok":
        out.status = "degraded"
    data = {"status": out.status, "message": out.reading, **out.findings}
    if out.status == "degraded":
        data["degraded"] = "; ".join(out.gaps) or out.reading
    write_findings(section, data, ctx.run_dir, status=out.status)
    for name, fig in out.charts.items():
        save_chart(fig, ctx.run_dir, name)
    return out


def gap(what: str, message: str, hint: str | None = None) -> str:
    """One source this section could not read, said with how to check it."""
    return f"{what}: {message}" + (f" (check: {hint})" if hint else "")


def _unreachable(section: str, what: str, exc: Exception | str, hint: str | None = None) -> Section:
    text = getattr(exc, "message", None) or str(exc)
    hint = hint or getattr(exc, "hint", None)
    return Section(section, f"{what} unreachable: {text}", status="degraded", findings={"error": text},
                   gaps=[gap(f"{what} unreachable", text, hint)])
