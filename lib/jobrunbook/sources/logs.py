"""Runbook step 1: the worker's logs, read within bounds and parsed.

    docker logs worker 2>&1 | grep -i "error\\|failed\\|panic" | tail -50
    kubectl logs deployment/worker --tail=100 | grep -i "error\\|failed"

Sources: ``docker`` (``docker logs --since X --tail N CONTAINER``), ``kubectl``
(``kubectl logs deployment/D --since=X --tail=N -n NS``), ``file`` (the last
bytes of a file) and ``command`` (any argv). Every read is bounded
(``sources.bounded``: bytes, lines, seconds); the lines are parsed and the
problems grouped by ``sources.logparse``. ``collect_worker_logs`` is the one
call a notebook makes.
"""

from __future__ import annotations

import re
import shlex
from datetime import datetime
from pathlib import Path

import pandas as pd

from jobrunbook import clock
from jobrunbook.sources.bounded import MAX_BYTES, PROBLEM_GREP, SOURCE, read_command, read_file_tail
from jobrunbook.sources.logparse import (
    MAX_LINES,
    asynq_versions,
    group_errors,
    parse_log_lines,
    problem_events,
    revoked_tasks,
    worker_restarts,
    worker_started,
)
from jobrunbook.sources.names import LOG_KINDS
from jobrunbook.sources.result import SourceResult

__all__ = ["LOG_KINDS", "build_log_command", "fetch_logs", "parse_since", "collect_worker_logs", "log_window",
           "LOOKBACK", "describe_window"]

LOOKBACK = "1h"  # how long before the alert (or the first failure the data shows) the log is read from

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
        if since:  # kubectl takes a duration as --since, a time as --since-time
            argv.append(f"--since-time={since}" if _is_time(since) else f"--since={since}")
        argv.append(f"--tail={int(tail)}")
        if namespace:
            argv += ["-n", namespace]
        if context:
            argv += ["--context", context]
        return argv
    raise ValueError(f"no command for log source {kind!r}")


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
                            hint=f"{shlex.join(command)} 2>&1 | {PROBLEM_GREP}")
    try:
        argv = build_log_command(kind, container=container, deployment=deployment, namespace=namespace,
                                 context=context, since=since, tail=tail)
    except ValueError as exc:
        return SourceResult(SOURCE, "error", str(exc), hint=f"{kind} logs --help")
    return read_command(argv, max_bytes=max_bytes, timeout=timeout, env=env, hint=f"{shlex.join(argv)} 2>&1 | {PROBLEM_GREP}")


def _is_time(since: str) -> bool:
    return bool(re.match(r"^\d{4}-\d{2}-\d{2}T", since))


def log_window(starts_at: str | float | None = None, *, first_seen: float | None = None,
               lookback: str = LOOKBACK) -> str | None:
    """Where the worker's log is read from: ``lookback`` before the alert started, else before the first
    failure the data shows, as an RFC 3339 UTC time; None (the bounded tail) when neither is known.

    Never relative to the wall clock: a capture diagnosed a day later keeps its log evidence.
    """
    anchor = clock.parse_when(starts_at) if starts_at not in (None, "") else None
    if anchor is None and first_seen:
        anchor = float(first_seen)
    if anchor is None:
        return None
    return clock.iso(anchor - clock.parse_duration(lookback), timespec="seconds")


def describe_window(since: str | None) -> str:
    """The window for a reading: "since 2026-11-29T18:26:00Z", "in the last 1h" or "in the last lines read"."""
    if not since:
        return "in the last lines read"
    return f"since {since}" if _is_time(since) else f"in the last {since}"


def parse_since(since: str | None, *, now: datetime | None = None) -> pd.Timestamp | None:
    """``"15m"``, ``"1h30m"``, ``"2d"``, ``"45s"`` or an RFC 3339 time -> the UTC instant it means (clock.parse_when)."""
    if not since:
        return None
    when = clock.parse_when(since, now=now.timestamp() if now is not None else None)
    return pd.Timestamp(when, unit="s", tz="UTC")


# ---------------------------------------------------------------- one call for the notebook

def collect_worker_logs(kind: str = "docker", *, since: str | None = "1h", tail: int = MAX_LINES,
                        max_bytes: int = MAX_BYTES, timeout: float = 15.0, now: datetime | None = None,
                        **where) -> SourceResult:
    """Fetch, parse, group. ``where``: container, deployment, namespace, context, path, command, env.

    data: {"events": problem events (EVENT_COLUMNS), "groups": group_errors
    (GROUP_COLUMNS), "lines": lines parsed, "panics": n, "revoked": tasks
    revoked (asynq.RevokeTask: not failures), "asynq_versions": releases named
    in stack traces, "restarts": [{time, graceful}], "from": the first line's time, "started": the worker's
    first start in the log, "truncated": bool, "bytes_read": n}.
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
    raw_text = raw.data["text"]
    events = parse_log_lines(raw_text, max_lines=tail)
    if kind in ("file", "command") and cutoff is not None:
        events = events[events["time"].isna() | (events["time"] >= cutoff)].reset_index(drop=True)
    problems = problem_events(events)
    groups = group_errors(problems)
    panics = int((problems["kind"] == "panic").sum())
    failures = int((problems["kind"] == "failure").sum())
    revoked = revoked_tasks(events)
    summary = (f"{failures} task failures, {panics} panics, {len(groups)} error groups in {len(events)} events"
               + (f"; top: {groups.iloc[0]['task_type'] or '-'} {groups.iloc[0]['fingerprint'][:80]!r} "
                  f"x{groups.iloc[0]['count']}" if len(groups) else "")
               + (f"; {revoked} task(s) revoked (RevokeTask: done, not failed)" if revoked else ""))
    if raw.status == "timeout":
        summary = f"{raw.message}; parsed what was read: {summary}"
    raw.message = summary if raw.status == "timeout" else f"{summary} ({raw.message})"
    raw.data = {"events": problems, "groups": groups, "lines": len(events), "panics": panics,
                "revoked": revoked, "asynq_versions": asynq_versions(raw_text),
                "restarts": worker_restarts(events), **worker_started(events),
                "truncated": raw.data["truncated"], "bytes_read": raw.data["bytes_read"]}
    return raw
