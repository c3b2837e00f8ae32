"""Runbook step 1: the worker's logs, read within bounds and parsed.

    docker logs worker 2>&1 | grep -i "error\\|failed\\|panic" | tail -50
    kubectl logs deployment/worker --tail=100 | grep -i "error\\|failed"

Sources: ``docker`` (``docker logs --since X --tail N CONTAINER``), ``kubectl``
(``kubectl logs deployment/D --since=X --tail=N -n NS``), ``file`` (the last
bytes of a file) and ``command`` (any argv). Every read is bounded: bytes
kept (the newest), lines kept, and seconds (the process is killed on
timeout). Lines are parsed as asynq's logger (``asynq: pid=N 2026/11/29
19:26:26.894346 WARN: ...``), logfmt (``<RFC3339> app level=error msg=...``),
JSON, or plain text. Errors, task failures and panics come out with their
time, queue, task type and task id, panics with their goroutine trace, and
every message fingerprinted with ``jobrunbook.fingerprint`` so that log groups
and Redis ``last_err`` groups line up.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shlex
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

from jobrunbook import clock
from jobrunbook.fingerprint import fingerprint
from jobrunbook.sources.result import SourceResult, Stopwatch

__all__ = [
    "LOG_KINDS",
    "EVENT_COLUMNS",
    "GROUP_COLUMNS",
    "build_log_command",
    "read_command",
    "read_file_tail",
    "fetch_logs",
    "parse_log_lines",
    "problem_events",
    "group_errors",
    "parse_since",
    "collect_worker_logs",
]

SOURCE = "worker_logs"
LOG_KINDS = ("docker", "kubectl", "file", "command")
MAX_BYTES = 8 * 1024 * 1024
MAX_LINES = 5000
MAX_LINE_CHARS = 8192
MAX_STACK_LINES = 200
EVENT_COLUMNS = ["time", "line", "format", "level", "kind", "message", "error", "queue", "task_type", "task_id",
                 "fingerprint", "stack", "linked_line"]
GROUP_COLUMNS = ["task_type", "fingerprint", "count", "tasks", "first_seen", "last_seen", "kinds", "example",
                 "example_task_id", "stack"]
PROBLEM_KINDS = ("error", "failure", "panic", "retry_exhausted")
_GREP = "grep -iE 'error|failed|panic' | tail -50"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,252}$")


# ---------------------------------------------------------------- reading

def build_log_command(kind: str, *, container: str = "worker", deployment: str = "worker",
                      namespace: str | None = None, context: str | None = None, since: str | None = "1h",
                      tail: int = MAX_LINES) -> list[str]:
    """The argv that reads the worker's logs, for ``docker`` or ``kubectl``."""
    for label, value in (("container", container), ("deployment", deployment), ("namespace", namespace),
                         ("context", context), ("since", since)):
        if value is not None and not _NAME.match(value):
            raise ValueError(f"invalid {label} {value[:60]!r}: letters, digits and ._/:- only")
    if kind == "docker":
        argv = ["docker", "logs"]
        if since:
            argv += ["--since", since]
        return [*argv, "--tail", str(int(tail)), container]
    if kind == "kubectl":
        argv = ["kubectl", "logs", f"deployment/{deployment}"]
        if since:
            argv.append(f"--since={since}")
        argv.append(f"--tail={int(tail)}")
        if namespace:
            argv += ["-n", namespace]
        if context:
            argv += ["--context", context]
        return argv
    raise ValueError(f"no command for log source {kind!r}")


def _trim_front(buf: bytearray, max_bytes: int) -> bool:
    """Keep the newest ``max_bytes``, starting at a line boundary. True when something was dropped."""
    if len(buf) <= max_bytes:
        return False
    del buf[: len(buf) - max_bytes]
    newline = buf.find(b"\n")
    if newline != -1:
        del buf[: newline + 1]
    return True


def read_command(argv: list[str], *, max_bytes: int = MAX_BYTES, timeout: float = 15.0, env: dict | None = None,
                 source: str = SOURCE, hint: str = "", clock=time.monotonic) -> SourceResult:
    """Run ``argv`` (stderr merged into stdout, as ``2>&1``), keeping its newest ``max_bytes``.

    The process is killed when ``timeout`` seconds pass. data: {"text",
    "truncated", "bytes_read", "exit_code", "argv"}; status ok, timeout (with
    what was read), error (non-zero exit, not found) or down (daemon or
    cluster unreachable).
    """
    watch = Stopwatch(clock)
    shown = shlex.join(argv)
    hint = hint or shown
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    except FileNotFoundError:
        return SourceResult(source, "error", f"{argv[0]} is not installed or not on PATH", hint=f"which {argv[0]}",
                            elapsed_s=watch.elapsed, target=shown)
    except OSError as exc:
        return SourceResult(source, "error", f"cannot run {argv[0]}: {exc.strerror}", hint=hint,
                            elapsed_s=watch.elapsed, target=shown)
    buf, read, truncated, timed_out = bytearray(), 0, False, False
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                remaining = timeout - watch.elapsed
                if remaining <= 0:
                    timed_out = True
                    break
                if not sel.select(min(remaining, 0.5)):
                    continue
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                buf += chunk
                read += len(chunk)
                if len(buf) > 2 * max_bytes:
                    truncated |= _trim_front(buf, max_bytes)
        if not timed_out:
            try:
                proc.wait(max(0.1, timeout - watch.elapsed))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        if proc.poll() is None:
            _kill(proc)
        proc.stdout.close()
    truncated |= _trim_front(buf, max_bytes)
    text = buf.decode("utf-8", errors="replace")
    data = {"text": text, "truncated": truncated, "bytes_read": read, "exit_code": proc.returncode, "argv": argv}
    if timed_out:
        return SourceResult(source, "timeout", f"`{shown}` did not finish in {timeout:g} s (killed; "
                            f"{read} bytes read)", hint=hint, elapsed_s=watch.elapsed, data=data, target=shown)
    if proc.returncode != 0:
        last = next((line for line in reversed(text.strip().splitlines()) if line.strip()), "no output")[:300]
        low = text.lower()
        unreachable = any(s in low for s in ("cannot connect", "connection refused", "unable to connect",
                                             "is the docker daemon running", "no such host"))
        return SourceResult(source, "down" if unreachable else "error",
                            f"`{shown}` exited {proc.returncode}: {last}", hint=hint, elapsed_s=watch.elapsed,
                            data=data, target=shown)
    kept = f", kept the newest {len(buf)}" if truncated else ""
    return SourceResult(source, "ok", f"read {read} bytes from `{shown}`{kept}", hint=hint,
                        elapsed_s=watch.elapsed, data=data, target=shown)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we created with start_new_session
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def read_file_tail(path: str | Path, *, max_bytes: int = MAX_BYTES, source: str = SOURCE,
                   clock=time.monotonic) -> SourceResult:
    """The last ``max_bytes`` of a file (from a line boundary), never reading the rest."""
    watch = Stopwatch(clock)
    path = Path(path)
    hint = f"tail -n {MAX_LINES} {shlex.quote(str(path))} | {_GREP}"
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            fh.seek(start)
            buf = bytearray(fh.read(max_bytes))
    except FileNotFoundError:
        return SourceResult(source, "error", f"log file {path} does not exist", hint=f"ls -l {shlex.quote(str(path))}",
                            elapsed_s=watch.elapsed, target=str(path))
    except OSError as exc:
        return SourceResult(source, "error", f"cannot read log file {path}: {exc.strerror}",
                            hint=f"ls -l {shlex.quote(str(path))}", elapsed_s=watch.elapsed, target=str(path))
    if start > 0:
        newline = buf.find(b"\n")
        del buf[: newline + 1 if newline != -1 else len(buf)]
    data = {"text": buf.decode("utf-8", errors="replace"), "truncated": start > 0, "bytes_read": len(buf),
            "exit_code": None, "argv": None}
    return SourceResult(source, "ok", f"read the last {len(buf)} of {size} bytes of {path}", hint=hint,
                        elapsed_s=watch.elapsed, data=data, target=str(path))


def fetch_logs(kind: str = "docker", *, container: str = "worker", deployment: str = "worker",
               namespace: str | None = None, context: str | None = None, path: str | Path | None = None,
               command: list[str] | None = None, since: str | None = "1h", tail: int = MAX_LINES,
               max_bytes: int = MAX_BYTES, timeout: float = 15.0, env: dict | None = None) -> SourceResult:
    """Read raw log text from one source; data as ``read_command``."""
    if kind not in LOG_KINDS:
        return SourceResult(SOURCE, "error", f"unknown log source {kind!r} (one of {', '.join(LOG_KINDS)})",
                            hint="set JOBRUNBOOK_LOG_SOURCE to docker, kubectl, file or command")
    if kind == "file":
        if not path:
            return SourceResult(SOURCE, "error", "log source 'file' needs a path", hint="set JOBRUNBOOK_LOG_FILE")
        return read_file_tail(path, max_bytes=max_bytes)
    if kind == "command":
        if not command:
            return SourceResult(SOURCE, "error", "log source 'command' needs an argv", hint="set JOBRUNBOOK_LOG_COMMAND")
        return read_command(list(command), max_bytes=max_bytes, timeout=timeout, env=env,
                            hint=f"{shlex.join(command)} 2>&1 | {_GREP}")
    try:
        argv = build_log_command(kind, container=container, deployment=deployment, namespace=namespace,
                                 context=context, since=since, tail=tail)
    except ValueError as exc:
        return SourceResult(SOURCE, "error", str(exc), hint=f"{kind} logs --help")
    return read_command(argv, max_bytes=max_bytes, timeout=timeout, env=env, hint=f"{shlex.join(argv)} 2>&1 | {_GREP}")


# ---------------------------------------------------------------- parsing

_ASYNQ = re.compile(r"^asynq: pid=(\d+) (\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?) "
                    r"(DEBUG|INFO|WARN|ERROR|FATAL): ?(.*)$")
_PREFIXED = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\s+"
                       r"(?:([A-Za-z][\w.-]*)\s+)?([A-Za-z_][\w.-]*=.*)$")
_LOGFMT_ONLY = re.compile(r"^[A-Za-z_][\w.-]*=")
_PAIR = re.compile(r'([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)')
_EXHAUSTED = re.compile(r"Retry exhausted for task id=(\S+)")
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
    if level in ("error", "fatal"):
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


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_since(since: str | None, *, now: datetime | None = None) -> pd.Timestamp | None:
    """``"15m"``, ``"1h30m"``, ``"45s"`` or an RFC 3339 time -> the UTC instant it means."""
    if not since:
        return None
    match = _DURATION.match(since)
    if match and any(match.groups()):
        h, m, s = (int(g or 0) for g in match.groups())
        return pd.Timestamp(now or clock.utcnow()) - timedelta(hours=h, minutes=m, seconds=s)
    ts = _parse_time(since)
    if pd.isna(ts):
        raise ValueError(f"since {since[:40]!r} is neither a duration like 15m nor an RFC 3339 time")
    return ts


# ---------------------------------------------------------------- one call for the notebook

def collect_worker_logs(kind: str = "docker", *, since: str | None = "1h", tail: int = MAX_LINES,
                        max_bytes: int = MAX_BYTES, timeout: float = 15.0, now: datetime | None = None,
                        **where) -> SourceResult:
    """Fetch, parse, group. ``where``: container, deployment, namespace, context, path, command, env.

    data: {"events": problem events (EVENT_COLUMNS), "groups": group_errors
    (GROUP_COLUMNS), "lines": lines parsed, "panics": n, "truncated": bool,
    "bytes_read": n}.
    The file and command sources filter by ``since`` on the lines' own times.
    A timeout still parses what was read.
    """
    try:
        cutoff = parse_since(since, now=now)
    except ValueError as exc:
        return SourceResult(SOURCE, "error", str(exc), hint="use e.g. --since 1h")
    raw = fetch_logs(kind, since=since, tail=tail, max_bytes=max_bytes, timeout=timeout, **where)
    if raw.data is None or (raw.status not in ("ok", "timeout")):
        return raw
    events = parse_log_lines(raw.data["text"], max_lines=tail)
    if kind in ("file", "command") and cutoff is not None:
        events = events[events["time"].isna() | (events["time"] >= cutoff)].reset_index(drop=True)
    problems = problem_events(events)
    groups = group_errors(problems)
    panics = int((problems["kind"] == "panic").sum())
    failures = int((problems["kind"] == "failure").sum())
    summary = (f"{failures} task failures, {panics} panics, {len(groups)} error groups in {len(events)} events"
               + (f"; top: {groups.iloc[0]['task_type'] or '-'} {groups.iloc[0]['fingerprint'][:80]!r} "
                  f"x{groups.iloc[0]['count']}" if len(groups) else ""))
    if raw.status == "timeout":
        summary = f"{raw.message}; parsed what was read: {summary}"
    raw.message = summary if raw.status == "timeout" else f"{summary} ({raw.message})"
    raw.data = {"events": problems, "groups": groups, "lines": len(events), "panics": panics,
                "restarts": worker_restarts(events),
                "truncated": raw.data["truncated"], "bytes_read": raw.data["bytes_read"]}
    return raw


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
