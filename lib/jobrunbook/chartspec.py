"""Figures as data: a section hands its charts over as data, and they are drawn where it costs least.

Drawing a chart (matplotlib's import, the layout, the PNG) costs more than
most sections' own work. Run by the engine (``$JOBRUNBOOK_DEFER_CHARTS`` set in
the kernels' environment), a section does not draw: ``figure(kind, data, ...)``
returns a ``ChartSpec``, the notebook shows a placeholder output
(``CHART_MIME``, the chart's name) and ``charts/<name>.json`` holds the data.
The engine draws them (``render_specs``) in a separate process while later
sections run, and puts each PNG into the executed notebook in place of its
placeholder (``embed_charts``) before the report is built: the notebook, the
report and ``charts/<name>.png`` end up exactly as if the kernel had drawn them.
A notebook run by hand draws at once (``figure`` returns the matplotlib Figure).

This module does not import matplotlib; ``jobrunbook.charts`` is imported only to draw.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ChartSpec", "figure", "save_spec", "render_specs", "embed_charts", "pending_specs", "CHART_MIME",
           "DEFER_ENV", "KINDS"]

CHART_MIME = "application/vnd.jobrunbook.chart+json"
DEFER_ENV = "JOBRUNBOOK_DEFER_CHARTS"
SCHEMA = "jobrunbook.chart/1"
KINDS = ("failure_ratio_chart", "failures_by_cause_chart", "queue_depth_chart", "daily_history_chart",
         "duration_chart")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,60}$")


@dataclass
class ChartSpec:
    """One chart as data: which ``jobrunbook.charts`` function draws it, its data and its options."""

    kind: str
    data: Any
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown chart kind {self.kind!r}; one of {', '.join(KINDS)}")

    def draw(self):
        """The matplotlib figure (``jobrunbook.charts.ChartFigure``)."""
        from jobrunbook import charts

        return getattr(charts, self.kind)(self.data, **self.options)

    def to_json(self, name: str, section: str = "") -> dict[str, Any]:
        from jobrunbook.findings import to_jsonable

        return {"schema": SCHEMA, "name": name, "section": section, "kind": self.kind,
                "data": to_jsonable(self.data), "options": to_jsonable(self.options)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ChartSpec:
        return cls(doc["kind"], doc.get("data") or [], dict(doc.get("options") or {}))

    def bundle(self, name: str) -> dict[str, Any]:
        """What the notebook shows until the engine puts the drawn chart in its place."""
        return {CHART_MIME: {"name": name, "kind": self.kind}, "text/plain": f"[chart {name}: drawn by the run]"}


def figure(kind: str, data: Any, **options: Any):
    """The chart ``kind`` of ``data``: a ``ChartSpec`` when the run engine draws the charts, else drawn now."""
    spec = ChartSpec(kind, data, options)
    return spec if os.environ.get(DEFER_ENV) else spec.draw()


def _charts_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "charts"


def save_spec(spec: ChartSpec, run_dir: str | os.PathLike, name: str, section: str = "") -> Path:
    """Write ``<run_dir>/charts/<name>.json``, for the engine to draw."""
    from jobrunbook._exceptions import ConfigError
    from jobrunbook.record import write_json

    if not _NAME.match(name or ""):
        raise ConfigError(f"chart name must be [A-Za-z0-9_-], got {str(name)[:40]!r}")
    path = _charts_dir(run_dir) / f"{name}.json"
    write_json(path, spec.to_json(name, section))
    return path


def pending_specs(run_dir: str | os.PathLike) -> list[Path]:
    """The chart specs of ``run_dir`` not drawn yet (no PNG as new as the spec)."""
    out = []
    for spec in sorted(_charts_dir(run_dir).glob("*.json")):
        png = spec.with_suffix(".png")
        if not png.exists() or png.stat().st_mtime < spec.stat().st_mtime:
            out.append(spec)
    return out


def render_specs(run_dir: str | os.PathLike, names: list[str] | None = None) -> list[str]:
    """Draw the pending chart specs of ``run_dir`` (or those ``names``) to ``charts/<name>.png``; the names
    drawn. A spec that cannot be drawn gets ``charts/<name>.error`` with why (the placeholder then says it)."""
    drawn = []
    for path in pending_specs(run_dir):
        if names is not None and path.stem not in names:
            continue
        try:
            from jobrunbook.charts import save_chart  # matplotlib: only where something is drawn

            doc = json.loads(path.read_text(encoding="utf-8"))
            save_chart(ChartSpec.from_json(doc).draw(), run_dir, path.stem)
            drawn.append(path.stem)
        except Exception as exc:  # noqa: BLE001 - one bad chart must not cost the others, nor the report
            path.with_suffix(".error").write_text(f"{type(exc).__name__}: {exc}"[:500], encoding="utf-8")
    return drawn


def embed_charts(notebook: str | os.PathLike, run_dir: str | os.PathLike) -> int:
    """Replace each chart placeholder of an executed notebook by its drawn PNG (as the kernel would have
    shown it); the number replaced. The notebook is rewritten only when something changed."""
    path = Path(notebook)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    changed = 0
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            ref = (out.get("data") or {}).get(CHART_MIME)
            if not isinstance(ref, dict) or not _NAME.match(str(ref.get("name", ""))):
                continue
            png = _charts_dir(run_dir) / f"{ref['name']}.png"
            err = png.with_suffix(".error")
            if png.exists():
                out["data"] = {"image/png": base64.b64encode(png.read_bytes()).decode(),
                               "text/plain": f"<chart {ref['name']}>"}
            else:
                why = err.read_text(encoding="utf-8") if err.exists() else "not drawn"
                out["data"] = {"text/plain": f"chart {ref['name']} could not be drawn: {why}"}
            changed += 1
    if changed:
        tmp = path.with_suffix(".ipynb.tmp")
        tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    return changed
