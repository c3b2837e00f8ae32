"""One formatting layer for every table a notebook shows and the report embeds.

    html = render_table(df)                       # kinds from the column names
    html = render_table(df, kinds={"p95": "duration"}, caption="...", limit=20)

Each column has a kind, from its name (``COLUMN_KINDS``) unless given:

    count     integers with thousands separators, right-aligned       18,386
    ratio     a share as a percentage with one decimal, right-aligned 64.2 %
    duration  seconds shown in ms, s or min, right-aligned            19 ms, 2.4 s, 3.5 min
    time      UTC to the second, and how long ago                     2026-12-02 14:18:39 UTC (4 min ago)
    id        an identifier (queue, task type, state): never broken inside a word
    cause     a cause's key shown as its words, with the colour its charts use
    text      long text (an error): wraps
    bool      yes / no

No index column is shown (a meaningful index should be a column). The table
is rendered by one Jinja macro (``templates/table.html.j2``); its CSS lives in
the report's stylesheet and in the table's own ``<style>`` for a notebook
opened in Jupyter. A long table is cut at ``limit`` rows with "N more" said
(the whole data stays in the findings JSON).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

__all__ = ["render_table", "format_value", "column_kind", "COLUMN_KINDS", "KINDS", "Table", "relative_age",
           "format_duration", "format_count", "format_ratio", "format_time"]

KINDS = ("count", "ratio", "duration", "time", "id", "cause", "text", "bool")
# column name -> kind (names as the sections use them)
COLUMN_KINDS: dict[str, str] = {
    **dict.fromkeys(("queue", "task_type", "task type", "state", "action", "name", "source", "target", "status",
                     "alert", "severity", "step", "fingerprint_short", "section"), "id"),
    **dict.fromkeys(("count", "retry", "archived", "pending", "active", "scheduled", "completed", "processed",
                     "failed", "tasks", "batches", "failed tasks", "processed_today", "failed_today", "lines",
                     "groups", "total", "n"), "count"),
    **dict.fromkeys(("ratio", "share", "failure ratio", "failed %", "last", "max", "mean", "used_ratio"), "ratio"),
    **dict.fromkeys(("latency_s", "p50_s", "p95_s", "p99_s", "mean_s", "elapsed_s", "timeout_s", "p50", "p95",
                     "p99", "duration_s"), "duration"),
    **dict.fromkeys(("last failed", "first failed", "last_seen", "first_seen", "time", "started", "since",
                     "last_failed_at_iso", "first_failed_at_iso"), "time"),
    "cause": "cause",
    "paused": "bool",
}
_NUMERIC = ("count", "ratio", "duration")
MAX_TEXT = 240


def column_kind(name: str) -> str:
    return COLUMN_KINDS.get(str(name).strip().lower(), "text")


def _missing(value: Any) -> bool:
    import pandas as pd

    if value is None:
        return True
    try:
        result = pd.isna(value)
    except (TypeError, ValueError):
        return False
    return result is True or (type(result).__name__ == "bool_" and bool(result))


def format_count(value: Any) -> str:
    return f"{int(round(float(value))):,}"


def format_ratio(value: Any) -> str:
    return f"{float(value) * 100:.1f} %"


def format_duration(seconds: Any) -> str:
    s = float(seconds)
    if s < 1:
        ms = s * 1000
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms" if ms >= 0.1 else "< 0.1 ms"
    if s < 120:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min" if s < 600 else f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def relative_age(then: datetime, now: datetime) -> str:
    """'4 min ago', '2 h 05 min ago', 'in 12 min'."""
    seconds = (now - then).total_seconds()
    future = seconds < 0
    s = int(abs(seconds))
    if s < 60:
        text = f"{s} s"
    elif s < 3600:
        text = f"{s // 60} min"
    elif s < 86400:
        text = f"{s // 3600} h {s % 3600 // 60:02d} min"
    else:
        text = f"{s // 86400} d {s % 86400 // 3600} h"
    return f"in {text}" if future else f"{text} ago"


def _as_datetime(value: Any) -> datetime | None:
    import pandas as pd

    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    if pd.isna(ts):
        return None
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC").to_pydatetime()


def format_time(value: Any, *, now: datetime | None = None) -> str:
    t = _as_datetime(value)
    if t is None:
        return str(value)
    text = t.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{text} ({relative_age(t, now)})" if now is not None else text


def format_value(value: Any, kind: str, *, now: datetime | None = None) -> str:
    """One cell as the report shows it ("" for a missing value)."""
    if _missing(value):
        return ""
    try:
        if kind == "count":
            return format_count(value)
        if kind == "ratio":
            return format_ratio(value)
        if kind == "duration":
            return format_duration(value)
        if kind == "time":
            return format_time(value, now=now)
        if kind == "bool":
            return "yes" if bool(value) else "no"
        if kind == "cause":
            from jobrunbook.diagnosis.causes import cause_label

            return cause_label(str(value))
    except (TypeError, ValueError, OverflowError):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "\u2026"


class Table:
    """A table with its column kinds: what ``Section.display`` shows, rendered through ``render_table``."""

    def __init__(self, frame: Any, *, kinds: Mapping[str, str] | None = None, caption: str = "",
                 limit: int = 25, now: datetime | None = None) -> None:
        self.frame, self.kinds, self.caption, self.limit, self.now = frame, dict(kinds or {}), caption, limit, now

    def __len__(self) -> int:
        return len(self.frame)

    def html(self) -> str:
        return render_table(self.frame, kinds=self.kinds, caption=self.caption, limit=self.limit, now=self.now)

    def _repr_html_(self) -> str:
        return self.html()


def _columns(frame: Any):
    import pandas as pd

    df = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    if df.index.name is not None or isinstance(df.index, pd.MultiIndex):
        df = df.reset_index()  # a meaningful index becomes a column
    return df


_CLASS = re.compile(r"[^a-z0-9_-]+")


def render_table(frame: Any, *, kinds: Mapping[str, str] | None = None, caption: str = "", limit: int = 25,
                 now: datetime | None = None) -> str:
    """``frame`` (a DataFrame, or rows) as the report's HTML table; see the module's doc for the kinds."""
    from markupsafe import Markup

    from jobrunbook.report import template

    df = _columns(frame)
    now = now or datetime.now(timezone.utc)
    kinds = dict(kinds or {})
    columns = []
    for c in df.columns:
        kind = kinds.get(str(c)) or column_kind(c)
        label = str(c).removesuffix("_s") if kind == "duration" else str(c).removesuffix("_iso")
        columns.append({"name": str(c), "label": label.replace("_", " "), "kind": kind})
    shown = df.head(limit) if limit else df
    rows = []
    for record in shown.itertuples(index=False, name=None):
        cells = []
        for col, value in zip(columns, record, strict=True):
            cell = {"text": format_value(value, col["kind"], now=now), "kind": col["kind"], "title": ""}
            if col["kind"] == "time" and not _missing(value) and (t := _as_datetime(value)) is not None:
                # the timestamp and its age each stay whole; the age may go to a second line in a narrow column
                cell["text"], cell["sub"] = format_time(t), f"({relative_age(t, now)})"
            elif col["kind"] == "cause" and not _missing(value):
                cell["cause"] = _CLASS.sub("-", str(value).lower().replace("_", "-"))
                cell["title"] = str(value)
            elif col["kind"] == "text" and isinstance(value, str) and len(value) > MAX_TEXT:
                cell["title"] = value[:2000]
            cells.append(cell)
        rows.append(cells)
    more = len(df) - len(shown)
    html = template("table.html.j2").render(columns=columns, rows=rows, caption=caption, more=more,
                                            numeric=_NUMERIC)
    return str(Markup(html))
