"""What every section shares: the run's context, the Section a notebook displays, writing findings."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobrunbook import clock
from jobrunbook.config import Settings
from jobrunbook.findings import RUN_DIR_ENV, write_findings
from jobrunbook.run.params import RunParams

__all__ = ["Context", "Section", "context", "gap"]


@dataclass
class Context:
    """What every section needs: the alert (``RunParams``), where the sources are (``Settings``), where it writes.

    URLs a section connects with carry their secrets from the environment
    (``redis_connect_url``, ``metrics_url``, ...); what a section writes down
    comes from ``settings.public()``, never from them.
    """

    params: RunParams
    settings: Settings
    run_dir: Path
    now: float = field(default_factory=clock.now)
    demo: dict[str, Any] | None = None
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)

    # the alert
    @property
    def alertname(self) -> str:
        return self.params.alertname

    @property
    def severity(self) -> str:
        return self.params.severity

    @property
    def queue(self) -> str:
        return self.params.queue

    @property
    def task_type(self) -> str:
        return self.params.task_type

    @property
    def starts_at(self) -> str:
        return self.params.starts_at

    @property
    def fingerprint(self) -> str:
        return self.params.fingerprint

    @property
    def status(self) -> str:
        return self.params.status

    @property
    def alert(self) -> dict[str, Any]:
        return {"alertname": self.alertname, "severity": self.severity, "queue": self.queue,
                "task_type": self.task_type, "startsAt": self.starts_at, "fingerprint": self.fingerprint,
                "status": self.status}

    # the sources
    @property
    def redis_url(self) -> str:
        """asynq's Redis as shown: never with its password."""
        return self.settings.redis_url

    @property
    def redis_connect_url(self) -> str:
        """asynq's Redis with the password from the environment: only for connecting."""
        return self.settings.redis_url_with_secret(self.env) if self.settings.redis_url else ""

    @property
    def metrics_url(self) -> str:
        return self.settings.url_with_secret("metrics_url", self.env)

    @property
    def prometheus_url(self) -> str:
        return self.settings.url_with_secret("prometheus_url", self.env)

    @property
    def alertmanager_url(self) -> str:
        return self.settings.url_with_secret("alertmanager_url", self.env)

    @property
    def log_source(self) -> str:
        """A file path, docker:NAME, k8s:deployment/NAME@NAMESPACE or command:ARGV ("" = none)."""
        return self.settings.log_target

    @property
    def health_urls(self) -> list[str]:
        return list(self.settings.health_urls_with_secret(self.env).values())

    @property
    def task_timeout_s(self) -> float | None:
        return self.settings.task_timeout_s

    @property
    def timeout(self) -> float:
        """How long each source may take to answer."""
        return self.settings.source_timeout_s

    @property
    def names(self) -> dict[str, str]:
        """Names used in the recommended commands (deployment, container, namespace)."""
        s = self.settings
        return {"deployment": s.worker_deployment, "container": s.worker_container,
                "namespace": s.namespace or "default"}

    @property
    def postgres_dsn(self) -> str | None:
        return self.settings.postgres_dsn(self.env) or (self.demo or {}).get("postgres_dsn")


@dataclass
class Section:
    """What a notebook shows for one runbook step."""

    name: str
    reading: str
    status: str = "ok"  # ok | degraded | failed
    table: Any = None  # a pandas DataFrame
    tables: dict[str, Any] = field(default_factory=dict)  # caption -> DataFrame
    charts: dict[str, Any] = field(default_factory=dict)  # name -> matplotlib Figure, or a ChartSpec (chartspec)
    captions: dict[str, str] = field(default_factory=dict)  # chart name -> what to read from it, one line
    kinds: dict[str, str] = field(default_factory=dict)  # column -> kind, where the name does not say it
    commands: list[str] = field(default_factory=list)  # exact commands, shown as one code block
    findings: dict[str, Any] = field(default_factory=dict)
    # sources this section could not read (or read only in part), each with how to check it: the section
    # is then ``degraded`` in status.json and the report, whatever else it found
    gaps: list[str] = field(default_factory=list)
    now: float | None = None  # the moment the section read its sources: tables say "N min ago" from it

    def _repr_markdown_(self) -> str:
        return f"**{self.reading}**"

    def display(self) -> None:
        """Show the reading, the tables and the charts (in a notebook; a no-op without IPython)."""
        try:
            from IPython.display import HTML, Markdown, display
        except ImportError:  # pragma: no cover - IPython comes with ipykernel
            return
        import datetime as dt

        from jobrunbook.tables import render_table

        now = dt.datetime.fromtimestamp(self.now, dt.timezone.utc) if self.now else None
        display(Markdown(f"**{_md_escape(self.reading)}**"))
        if self.table is not None and len(self.table):
            display(HTML(render_table(self.table, kinds=self.kinds, now=now)))
        for name, table in self.tables.items():
            if table is not None and len(table):
                display(HTML(render_table(table, kinds=self.kinds, caption=name, now=now)))
        if self.commands:
            # fenced code: copy-paste exact, nothing in it is read as Markdown
            fence = "````"
            display(Markdown(f"{fence}sh\n" + "\n".join(c.replace(fence, "") for c in self.commands) + f"\n{fence}"))
        from jobrunbook.chartspec import ChartSpec

        for name, fig in self.charts.items():
            if isinstance(fig, ChartSpec):  # the run engine draws it and puts it here
                display(fig.bundle(name), raw=True)
            else:
                display(fig)
            if self.captions.get(name):
                display(Markdown(f"*{_md_escape(self.captions[name])}*"))


def _md_escape(text: str) -> str:
    """Untrusted text (error messages, labels) shown as Markdown: no markup, no raw HTML."""
    import html

    out = html.escape(str(text), quote=False)
    for ch in "\\`*_{}[]()#+!|<>~":
        out = out.replace(ch, "\\" + ch)
    return out


def context(**parameters: Any) -> Context:
    """The context of one run from a notebook's parameters (``RunParams``: an unknown name is an error).

    With ``sources`` empty (a notebook opened alone), the sources are the
    configuration's (``$JOBRUNBOOK_CONFIG``, ``JOBRUNBOOK_*``) when any is set,
    else the demo incident's (``make demo``'s ``demo.json``), else none: each
    section then says what to configure.
    """
    from jobrunbook.run.params import build_params

    params = build_params(parameters)
    outputs = _outputs_dir()
    demo = None
    if params.sources:
        settings = Settings.from_public(params.sources)
    elif _configured():
        from jobrunbook.config import load_settings

        settings = load_settings(labels=params.labels or params.model_dump(include={"alertname", "severity",
                                                                                      "queue", "task_type"}))
    else:
        demo = _demo_info(outputs)
        settings = Settings.from_public(demo["sources"]) if demo and demo.get("sources") else _NOTHING
    run_dir = Path(params.run_dir or os.environ.get(RUN_DIR_ENV) or outputs / "adhoc")
    return Context(params=params, settings=settings, run_dir=run_dir, demo=demo)


# a notebook run alone with nothing configured and no demo: no source at all (never the machine's 6379)
_NOTHING = Settings(redis_url="", metrics_url="", log_source="")


def _outputs_dir() -> Path:
    """The nearest ``outputs/`` folder from here up (a notebook runs in notebooks/), else ./outputs."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "outputs").is_dir():
            return folder / "outputs"
    return here / "outputs"


def _demo_info(outputs: Path) -> dict[str, Any] | None:
    path = Path(os.environ.get("JOBRUNBOOK_DEMO_JSON") or outputs / "demo" / "demo.json")
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _configured() -> bool:
    from jobrunbook.config import CONFIG_ENV, ENV_NAMES

    return any(os.environ.get(name) for name in (CONFIG_ENV, *ENV_NAMES.values()))


def _finish(ctx: Context, section: str, out: Section) -> Section:
    """Write the findings and the charts of a section (drawn, or as data for the engine to draw)."""
    from jobrunbook.chartspec import ChartSpec, save_spec

    if out.gaps and out.status == "ok":
        out.status = "degraded"
    if out.now is None:
        out.now = ctx.now
    data = {"status": out.status, "message": out.reading, **out.findings}
    if out.status == "degraded":
        data["degraded"] = "; ".join(out.gaps) or out.reading
    write_findings(section, data, ctx.run_dir, status=out.status)
    for name, fig in out.charts.items():
        if isinstance(fig, ChartSpec):
            save_spec(fig, ctx.run_dir, name, section)
        else:
            from jobrunbook.charts import save_chart

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
