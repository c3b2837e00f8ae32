"""The report's figures: one function per figure, plain data in, a matplotlib ``Figure`` out.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state, so they
are safe in threads and in a long-running service) and rendered by Agg when
saved. In a notebook, the returned figure displays inline as the cell's
result. ``save_chart`` writes ``<run_dir>/charts/<name>.png``.

Inputs (pandas DataFrames; extra columns are ignored):

    failure_ratio_chart      time (datetime), failure_ratio (0..1) [, task_type]
    failures_by_cause_chart  task_type, cause, count
    queue_depth_chart        queue, retry, archived
    daily_history_chart      date, processed, failed [, queue: summed]
    duration_chart           task_type, p50, p95, p99 (seconds) [, timeout_s]
"""

from __future__ import annotations

import io
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from jobrunbook._exceptions import ConfigError, DataError
from jobrunbook.diagnosis.causes import THRESHOLDS

__all__ = [
    "ChartFigure",
    "failure_ratio_chart",
    "failures_by_cause_chart",
    "queue_depth_chart",
    "daily_history_chart",
    "duration_chart",
    "save_chart",
    "WARNING_RATIO",
    "CRITICAL_RATIO",
]

WARNING_RATIO = THRESHOLDS["warning"]
CRITICAL_RATIO = THRESHOLDS["critical"]
_SIZE = (9.0, 3.6)
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,60}$")


class ChartFigure(Figure):
    """A ``Figure`` that shows itself as PNG in IPython without pyplot or a backend set up."""

    _png: bytes | None = None

    def png_bytes(self, dpi: int = 100) -> bytes:
        """The PNG, rendered once: the notebook's inline image and charts/NAME.png are the same bytes."""
        if self._png is None:
            buf = io.BytesIO()
            self.savefig(buf, format="png", dpi=dpi)
            self._png = buf.getvalue()
        return self._png

    def _repr_png_(self) -> bytes:
        return self.png_bytes()


def _frame(data: Any, required: tuple[str, ...], what: str):
    import pandas as pd

    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{what} needs columns {', '.join(required)}; missing {', '.join(missing)}")
    return df


def _figure(data: Any, required: tuple[str, ...], what: str):
    """The checked frame, a new figure and its one axes: how every chart starts."""
    df = _frame(data, required, what)
    fig = ChartFigure(figsize=_SIZE, layout="constrained")
    return df, fig, fig.add_subplot()


def _empty(fig: Figure, ax, message: str) -> Figure:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#555")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _legend_outside(ax, **kw) -> None:
    """The legend right of the axes: it never covers the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  frameon=False, **kw)


def failure_ratio_chart(data: Any, *, alert_start: datetime | str | None = None, warning: float = WARNING_RATIO,
                        critical: float = CRITICAL_RATIO, title: str = "Failure ratio",
                        resolved_at: datetime | str | None = None) -> Figure:
    """Failure ratio over time, the warning and critical thresholds, the alert's start (and its resolve)."""
    import pandas as pd

    df, fig, ax = _figure(data, ("time", "failure_ratio"), "failure_ratio_chart")
    if df.empty:
        return _empty(fig, ax, "no failure-ratio samples")
    df = df.assign(time=pd.to_datetime(df["time"], utc=True)).sort_values("time")
    groups = df.groupby("task_type") if "task_type" in df.columns else [("all", df)]
    for name, g in groups:
        ax.plot(g["time"], g["failure_ratio"] * 100, label=str(name), linewidth=1.6)
    ax.axhline(warning * 100, color="#d98a00", linestyle="--", linewidth=1, label=f"warning {warning:.0%}")
    ax.axhline(critical * 100, color="#c0262d", linestyle="--", linewidth=1, label=f"critical {critical:.0%}")
    ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], critical * 100 * 1.2))
    for when, label, style, side in ((alert_start, "alert fired", ":", 1), (resolved_at, "resolved", "-.", -1)):
        if when is not None:  # "resolved" is written left of its line: the right edge is the legend's
            at = pd.to_datetime(when, utc=True)
            ax.axvline(at, color="#333", linestyle=style, linewidth=1.2)
            ax.annotate(label, (at, ax.get_ylim()[1]), xytext=(4 * side, -12), textcoords="offset points",
                        fontsize=8, ha="left" if side > 0 else "right")
    ax.set_ylabel("failed %")
    ax.set_title(title)
    _legend_outside(ax)
    ax.grid(alpha=0.3)
    return fig


def failures_by_cause_chart(data: Any, *, title: str = "Failures by task type and cause") -> Figure:
    """Horizontal bars per task type, stacked by cause."""
    df, fig, ax = _figure(data, ("task_type", "cause", "count"), "failures_by_cause_chart")
    if df.empty:
        return _empty(fig, ax, "no failed task")
    from jobrunbook.diagnosis.causes import cause_colour, cause_label

    table = df.pivot_table(index="task_type", columns="cause", values="count", aggfunc="sum", fill_value=0)
    table = table.loc[table.sum(axis=1).sort_values().index]
    order = table.sum(axis=0).sort_values(ascending=False).index  # the largest cause first, in the legend too
    left = None
    for cause in order:
        values = table[cause].to_numpy()
        ax.barh(table.index.astype(str), values, left=left, label=cause_label(str(cause))[:50],
                color=cause_colour(str(cause)))
        left = values if left is None else left + values
    ax.set_xlabel("failed tasks")
    ax.set_title(title)
    _legend_outside(ax)
    return fig


def queue_depth_chart(data: Any, *, title: str = "Retry and archived depth per queue") -> Figure:
    """Grouped bars: retry and archived task counts per queue."""
    import numpy as np

    df, fig, ax = _figure(data, ("queue", "retry", "archived"), "queue_depth_chart")
    if df.empty:
        return _empty(fig, ax, "no queue")
    x = np.arange(len(df))
    ax.bar(x - 0.2, df["retry"], width=0.4, label="retry", color="#d98a00")
    ax.bar(x + 0.2, df["archived"], width=0.4, label="archived", color="#c0262d")
    ax.set_xticks(x, [str(q)[:30] for q in df["queue"]])
    ax.set_ylabel("tasks")
    ax.set_title(title)
    _legend_outside(ax)
    return fig


def daily_history_chart(data: Any, *, title: str = "Daily processed and failed (asynq counters)") -> Figure:
    """Processed and failed per day, with the failed share on a second axis."""
    import pandas as pd

    df, fig, ax = _figure(data, ("date", "processed", "failed"), "daily_history_chart")
    if df.empty:
        return _empty(fig, ax, "no daily counters")
    daily = df.assign(date=pd.to_datetime(df["date"])).groupby("date")[["processed", "failed"]].sum().sort_index()
    labels = [d.strftime("%m-%d") for d in daily.index]
    ax.bar(labels, daily["processed"], label="processed", color="#6c8ebf")
    ax.bar(labels, daily["failed"], label="failed", color="#c0262d")
    share = (daily["failed"] / daily["processed"].where(daily["processed"] > 0)).fillna(0) * 100
    ax2 = ax.twinx()
    ax2.plot(labels, share, color="#333", marker="o", linewidth=1, label="failed %")
    ax2.set_ylabel("failed %")
    ax2.set_ylim(bottom=0)
    ax.set_ylabel("tasks")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(handles + h2, labels + l2, fontsize=8, loc="upper left", bbox_to_anchor=(1.08, 1.0),
              borderaxespad=0, frameon=False)
    return fig


LOG_SPAN = 50  # durations spanning more than this factor are drawn on a log axis, so every type's bars show


def duration_chart(data: Any, *, timeout_s: float | None = None, timeouts: dict[str, float] | None = None,
                   title: str = "Duration percentiles per task type vs timeout") -> Figure:
    """p50/p95/p99 per task type as bars, and each type's timeout as a line over its bars.

    The timeout is the type's own (``timeouts``: the timeout its tasks carry in
    asynq, or a ``timeout_s`` column), else ``timeout_s`` for all; a type with
    no duration samples is left out rather than drawn as an empty slot. When
    the durations span more than ``LOG_SPAN`` times, the axis is logarithmic.
    """
    import math

    import numpy as np

    df, fig, ax = _figure(data, ("task_type", "p50", "p95", "p99"), "duration_chart")
    df = df[df[["p50", "p95", "p99"]].notna().any(axis=1)].reset_index(drop=True)
    if df.empty:
        return _empty(fig, ax, "no duration samples")
    x = np.arange(len(df))
    for i, (col, color) in enumerate((("p50", "#6c8ebf"), ("p95", "#d98a00"), ("p99", "#c0262d"))):
        ax.bar(x + (i - 1) * 0.27, df[col].fillna(0), width=0.27, label=col, color=color)
    from jobrunbook.tables import format_duration

    own = df["timeout_s"] if "timeout_s" in df.columns else [None] * len(df)
    tallest = max(float(df[["p50", "p95", "p99"]].max().max()), 1e-3)
    drawn = 0
    for xi, task_type, t in zip(x, df["task_type"], own, strict=True):
        limit = t if t is not None and not (isinstance(t, float) and math.isnan(t)) else \
            (timeouts or {}).get(str(task_type), timeout_s)
        if not limit:
            continue
        if limit <= 3 * tallest:  # near the durations: a line over the type's bars
            ax.hlines(limit, xi - 0.45, xi + 0.45, colors="#000", linestyles="--", linewidth=1.2)
            ax.annotate(f"timeout {format_duration(limit)}", (xi, limit), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7, color="#333")
            drawn += 1
        else:  # far above them: said, not drawn (it would flatten every bar)
            ax.annotate(f"timeout {format_duration(limit)}", (xi, tallest * 1.02), ha="center", va="bottom",
                        fontsize=7, color="#333")
    top = max(tallest, float(ax.get_ylim()[1])) if drawn else tallest  # a drawn timeout line stays in view
    values = df[["p50", "p95", "p99"]].to_numpy(dtype=float).ravel()
    positive = values[values > 0]
    shortest = float(positive.min()) if positive.size else tallest
    if tallest / shortest > LOG_SPAN:  # a 20 ms type beside a 10 s one: on a linear axis its bars vanish
        ax.set_yscale("log")
        ax.set_ylim(shortest / 2, top * 2)
        ax.set_ylabel("seconds (log scale)")
    else:
        ax.set_ylim(0, top * 1.15)
        ax.set_ylabel("seconds")
    if drawn:
        ax.plot([], [], "k--", label="timeout")
    ax.set_xticks(x, [str(t)[:30] for t in df["task_type"]])
    ax.set_title(title)
    _legend_outside(ax)
    return fig


def save_chart(fig: Figure, run_dir: str | os.PathLike | None, name: str, *, dpi: int = 100) -> Path:
    """Save ``fig`` as ``<run_dir>/charts/<name>.png`` (run_dir defaults to ``$JOBRUNBOOK_RUN_DIR``)."""
    from jobrunbook.findings import RUN_DIR_ENV

    if not _NAME.match(name or ""):
        raise ConfigError(f"chart name must be [A-Za-z0-9_-], got {str(name)[:40]!r}")
    base = Path(run_dir or os.environ.get(RUN_DIR_ENV) or Path("outputs") / "adhoc")
    path = base / "charts" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(fig, ChartFigure):
        path.write_bytes(fig.png_bytes(dpi))
    else:
        fig.savefig(path, dpi=dpi, format="png")
    return path
