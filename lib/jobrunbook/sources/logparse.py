"""The worker's log lines, parsed: asynq's logger, logfmt, JSON or plain text; problems grouped like Redis's.

Lines are parsed as asynq's logger (``asynq: pid=N 2026/11/29 19:26:26.894346
WARN: ...``), logfmt (``<RFC3339> app level=error msg=...``), JSON, or plain
text. Errors, task failures and panics come out with their time, queue, task
type and task id, panics with their goroutine trace, and every message
fingerprinted with ``jobrunbook.fingerprint`` so that log groups and Redis
``last_err`` groups line up. ``worker_restarts`` finds the deploys and the
crashes. A revoked task (asynq.RevokeTask, v0.25.0+: marked done, counted
processed, never failed) is kind ``revoked``, never a failure: asynq's
``WARN: revoke task id=...`` line, or an application failure line whose error
is ``revoke task``. ``asynq_versions`` reads the release out of the stack
traces' paths (``github.com/hibiken/asynq@v0.26.0/processor.go``).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pandas as pd

from jobrunbook.fingerprint import fingerprint

__all__ = ["EVENT_COLUMNS", "GROUP_COLUMNS", "PROBLEM_KINDS", "MAX_LINES", "MAX_LINE_CHARS", "parse_logfmt",
           "parse_log_lines", "problem_events", "group_errors", "worker_restarts", "worker_started", "revoked_tasks", "asynq_versions"]

MAX_LINES = 5000
MAX_LINE_CHARS = 8192
MAX_STACK_LINES = 200
EVENT_COLUMNS = ["time", "line", "format", "level", "kind", "message", "error", "queue", "task_type", "task_id",
                 "fingerprint", "stack", "linked_line"]
GROUP_COLUMNS = ["task_type", "fingerprint", "count", "tasks", "first_seen", "last_seen", "kinds", "example",
                 "example_task_id", "stack"]
PROBLEM_KINDS = ("error", "failure", "panic", "retry_exhausted")


_ASYNQ = re.compile(r"^asynq: pid=(\d+) (\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?) "
                    r"(DEBUG|INFO|WARN|ERROR|FATAL): ?(.*)$")
_PREFIXED = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\s+"
                       r"(?:([A-Za-z][\w.-]*)\s+)?([A-Za-z_][\w.-]*=.*)$")
_LOGFMT_ONLY = re.compile(r"^[A-Za-z_][\w.-]*=")
_PAIR = re.compile(r'([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)')
_EXHAUSTED = re.compile(r"Retry exhausted for task id=(\S+)")
_REVOKED = re.compile(r"^revoke task id=(\S+)")  # processor.go (v0.25.0+): p.logger.Warnf("revoke task id=%s", ...)
_REVOKE_ERROR = re.compile(r"(?:^|: )revoke task$")  # asynq.RevokeTask returned, maybe wrapped with %w
_MODULE_VERSION = re.compile(r"github\.com/hibiken/asynq@(v\d+\.\d+\.\d+)")
_STACK_LINE = re.compile(r"^(goroutine \d+ \[|\t|\s{2,}|created by |[\w./*()\[\]{}-]+\(.*\)$|panic\(|\[signal )")
_PROBLEM_WORDS = re.compile(r"error|failed|panic", re.IGNORECASE)
_LEVELS = {"warning": "warn", "err": "error", "critical": "fatal", "crit": "fatal", "dpanic": "error",
           "panic": "fatal", "eror": "error", "dbug": "debug", "trace": "debug", "information": "info"}
_KEYS = {
    "time": ("time", "ts", "timestamp", "@timestamp", "t"),
    "level": ("level", "lvl", "severity", "log.level"),
    "message": ("msg", "message"),
    "error": ("error", "err", "last_err", "exception"),
    "queue": ("queue",),
    "task_type": ("task_type", "type", "tasktype", "task"),
    "task_id": ("task_id", "id", "taskid"),
}


def parse_logfmt(text: str) -> dict[str, str]:
    """``a=1 msg="x \\"y\\""`` -> {"a": "1", "msg": 'x "y"'}."""
    out = {}
    for key, value in _PAIR.findall(text):
        if value.startswith('"') and len(value) >= 2:
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        out[key] = value
    return out


def _pick(fields: dict, name: str):
    for key in _KEYS[name]:
        value = fields.get(key)
        if value not in (None, ""):
            return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return None


def _parse_time(value: str | None, *, asynq_tz: timezone = timezone.utc):
    if not value:
        return pd.NaT
    try:
        if "/" in value[:10]:
            return pd.Timestamp(datetime.strptime(value, "%Y/%m/%d %H:%M:%S.%f" if "." in value
                                                  else "%Y/%m/%d %H:%M:%S").replace(tzinfo=asynq_tz))
        ts = pd.Timestamp(value)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    except (ValueError, TypeError, OverflowError):
        try:  # numeric epoch seconds in JSON logs
            return pd.Timestamp(float(value), unit="s", tz="UTC")
        except (ValueError, TypeError, OverflowError):
            return pd.NaT


def _level(value: str | None) -> str:
    if not value:
        return ""
    value = value.strip().lower()
    return _LEVELS.get(value, value)


def _structured(fields: dict, fmt: str, line_no: int, time_text: str | None) -> dict:
    level = _level(_pick(fields, "level"))
    message = _pick(fields, "message") or ""
    error = _pick(fields, "error")
    task_type, task_id = _pick(fields, "task_type"), _pick(fields, "task_id")
    if error and _REVOKE_ERROR.search(error.strip()):
        kind = "revoked"  # RevokeTask: done, not failed, whatever level the application logged it at
    elif level in ("error", "fatal"):
        kind = "failure" if error and (task_type or task_id) else "error"
    elif level == "warn":
        kind = "warning"
    else:
        kind = "info"
    return _event(time=_parse_time(time_text or _pick(fields, "time")), line=line_no, format=fmt, level=level,
                  kind=kind, message=message, error=error, queue=_pick(fields, "queue"), task_type=task_type,
                  task_id=task_id)


def _event(**fields) -> dict:
    event = dict.fromkeys(EVENT_COLUMNS)
    event.update(fields)
    return event


def _parse_line(line: str, line_no: int, asynq_tz: timezone) -> dict | None:
    match = _ASYNQ.match(line)
    if match:
        _pid, when, level, message = match.groups()
        level = _level(level)
        kind = {"error": "error", "fatal": "error", "warn": "warning"}.get(level, "info")
        task_id = None
        if "recovering from panic" in message:
            kind = "panic"
        exhausted = _EXHAUSTED.search(message)
        if exhausted:
            kind, task_id = "retry_exhausted", exhausted.group(1)
        revoked = _REVOKED.match(message)
        if revoked:
            kind, task_id = "revoked", revoked.group(1)
        return _event(time=_parse_time(when, asynq_tz=asynq_tz), line=line_no, format="asynq", level=level,
                      kind=kind, message=message, task_id=task_id)
    match = _PREFIXED.match(line)
    if match:
        return _structured(parse_logfmt(match.group(3)), "logfmt", line_no, match.group(1))
    if line.startswith("{"):
        try:
            fields = json.loads(line)
        except ValueError:
            fields = None
        if isinstance(fields, dict):
            return _structured(fields, "json", line_no, None)
    if _LOGFMT_ONLY.match(line) and "level=" in line:
        return _structured(parse_logfmt(line), "logfmt", line_no, None)
    return None


def parse_log_lines(text: str, *, max_lines: int = MAX_LINES, max_line_chars: int = MAX_LINE_CHARS,
                    asynq_tz: timezone = timezone.utc) -> pd.DataFrame:
    """Every event of the newest ``max_lines`` lines: DataFrame with EVENT_COLUMNS.

    ``kind`` is failure (a task failed: error + task), error, panic (with its
    goroutine trace in ``stack``), retry_exhausted, warning, info or other.
    A panic is linked (``linked_line``) to the task failure that reports it,
    which takes its stack; ``fingerprint`` is set on problems only.
    """
    lines = text.splitlines()
    offset = max(0, len(lines) - max_lines)
    events: list[dict] = []
    current_panic: dict | None = None
    for index, raw in enumerate(lines[offset:], start=offset + 1):
        line = raw.replace("\x00", "")[:max_line_chars].rstrip("\r")
        if not line.strip():
            continue
        event = _parse_line(line, index, asynq_tz)
        if event is None:
            if current_panic is not None and _STACK_LINE.match(line) and current_panic["_n"] < MAX_STACK_LINES:
                current_panic["_stack"].append(line)
                current_panic["_n"] += 1
                continue
            if line.startswith("panic: ") or line.startswith("fatal error: "):
                event = _event(time=pd.NaT, line=index, format="text", level="fatal", kind="panic", message=line)
            elif _PROBLEM_WORDS.search(line):
                event = _event(time=pd.NaT, line=index, format="text", level="", kind="error", message=line.strip())
            else:
                event = _event(time=pd.NaT, line=index, format="text", level="", kind="other", message=line.strip())
        current_panic = None
        if event["kind"] == "panic":
            event["_stack"], event["_n"] = [], 0
            current_panic = event
        events.append(event)
    for event in events:
        if "_stack" in event:
            event["stack"] = "\n".join(event.pop("_stack")) or None
            event.pop("_n")
    _link_panics(events)
    for event in events:
        if event["kind"] in PROBLEM_KINDS and event["fingerprint"] is None:
            event["fingerprint"] = fingerprint(event["error"] or event["message"])
    frame = pd.DataFrame(events, columns=EVENT_COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame


def _link_panics(events: list[dict]) -> None:
    """Give each panic the task failure that reports it (the next few events, 'panic' error, within 1 s)."""
    taken: set[int] = set()
    for i, event in enumerate(events):
        if event["kind"] != "panic":
            continue
        for j in range(i + 1, min(i + 12, len(events))):
            other = events[j]
            if other["kind"] != "failure" or j in taken or not str(other["error"] or "").startswith("panic"):
                continue
            if pd.notna(event["time"]) and pd.notna(other["time"]) and abs(other["time"] - event["time"]) > timedelta(seconds=1):
                continue
            taken.add(j)
            for key in ("queue", "task_type", "task_id", "error"):
                event[key] = other[key]
            event["linked_line"] = other["line"]
            event["fingerprint"] = fingerprint(other["error"])
            other["stack"] = event["stack"]
            other["linked_line"] = event["line"]
            break


def problem_events(events: pd.DataFrame) -> pd.DataFrame:
    """Errors, task failures, panics and exhausted retries only."""
    return events[events["kind"].isin(PROBLEM_KINDS)].reset_index(drop=True)


def group_errors(events: pd.DataFrame) -> pd.DataFrame:
    """Failures grouped by (task_type, fingerprint), most frequent first: GROUP_COLUMNS.

    Counts task failures and errors; a panic counts only when no failure line
    reports it (otherwise the failure already does). ``tasks`` is the number
    of distinct task ids.
    """
    counted = events[(events["kind"].isin(("failure", "error")))
                     | ((events["kind"] == "panic") & events["linked_line"].isna())]
    rows = []
    for (task_type, fp), group in counted.fillna({"task_type": ""}).groupby(["task_type", "fingerprint"], sort=False):
        first = group.iloc[0]
        stacks = group["stack"].dropna()
        rows.append((task_type, fp, len(group), group["task_id"].dropna().nunique(), group["time"].min(),
                     group["time"].max(), ",".join(sorted(set(group["kind"]))), first["error"] or first["message"],
                     first["task_id"], stacks.iloc[0] if len(stacks) else None))
    frame = pd.DataFrame(rows, columns=GROUP_COLUMNS)
    return frame.sort_values(["count", "task_type", "fingerprint"], ascending=[False, True, True], ignore_index=True)


def revoked_tasks(events: pd.DataFrame) -> int:
    """How many distinct tasks the log shows revoked (asynq.RevokeTask); 0 on a v0.24 worker's log."""
    rows = events[events["kind"] == "revoked"]
    return int(rows["task_id"].dropna().nunique() or len(rows))


def asynq_versions(text: str) -> list[str]:
    """The asynq releases named in the log's stack-trace paths (``.../hibiken/asynq@v0.26.0/...``), oldest first."""
    found = set(_MODULE_VERSION.findall(text))
    return sorted(found, key=lambda v: tuple(int(p) for p in v.lstrip("v").split(".")))


def worker_restarts(events: pd.DataFrame) -> list[dict]:
    """asynq's "Starting processing" lines after the first line read: deploys and crashes.

    ``graceful`` is False when no "Exiting" line came before the start since the
    previous start: the worker died (OOM kill, crash) rather than being stopped.
    """
    out: list[dict] = []
    exited = False
    for i, row in enumerate(events.itertuples(index=False)):
        message = str(row.message or "")
        if message.startswith("Exiting"):
            exited = True
        elif message.startswith("Starting processing"):
            if i > 0 and row.time is not None and not pd.isna(row.time):
                out.append({"time": row.time.isoformat(), "graceful": exited})
            exited = False
    return out


def worker_started(events: pd.DataFrame) -> dict:
    """When the log read begins (``from``: its first timed line) and the worker's first start in it
    (``started``: asynq's first "Starting processing"), as RFC 3339 UTC or None: the onset of a failure
    that began with the worker is read against them."""
    times = events["time"].dropna() if "time" in events.columns else pd.Series(dtype=object)
    started = None
    for row in events.itertuples(index=False):
        if str(row.message or "").startswith("Starting processing") and row.time is not None and not pd.isna(row.time):
            started = row.time.isoformat()
            break
    return {"from": times.min().isoformat() if len(times) else None, "started": started}
