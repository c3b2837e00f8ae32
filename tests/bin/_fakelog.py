"""Shared by the docker/kubectl stand-ins: print a recorded log, honouring --since and --tail.

Not a command itself. The stand-ins exist only because docker and kubectl
cannot run in the tests; they print real captured worker logs.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime, timedelta, timezone

_STAMP = re.compile(rb"^(?:asynq: pid=\d+ (\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}\.\d+)|(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z))")
_DUR = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def _now() -> datetime:
    fixed = os.environ.get("JOBRUNBOOK_FAKE_NOW")
    return datetime.fromisoformat(fixed.replace("Z", "+00:00")) if fixed else datetime.now(timezone.utc)


def since_cutoff(value: str) -> datetime:
    m = _DUR.match(value)
    if m and any(m.groups()):
        h, mi, s = (int(g or 0) for g in m.groups())
        return _now() - timedelta(hours=h, minutes=mi, seconds=s)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _stamp(line: bytes):
    m = _STAMP.match(line)
    if not m:
        return None
    if m.group(1):
        return datetime.strptime(m.group(1).decode(), "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(m.group(2).decode().replace("Z", "+00:00"))


def emit(path: str, since: str | None, tail: int | None, split_streams: bool) -> None:
    with open(path, "rb") as fh:
        lines = fh.read().splitlines(keepends=True)
    if since:
        cutoff = since_cutoff(since)
        kept, keep = [], True
        for line in lines:
            when = _stamp(line)
            if when is not None:
                keep = when >= cutoff
            if keep:  # stack-trace lines follow the line they belong to
                kept.append(line)
        lines = kept
    if tail is not None and tail >= 0:
        lines = lines[-tail:] if tail else []
    out, err = sys.stdout.buffer, sys.stderr.buffer
    in_asynq = False
    for line in lines:
        if line.startswith(b"asynq: "):
            in_asynq = True
        elif _stamp(line) is not None:
            in_asynq = False
        # Go's log package writes to stderr, the app's logfmt to stdout, as a container's streams
        stream = err if (split_streams and in_asynq) else out
        stream.write(line)
        stream.flush()


def mapping(env_name: str) -> dict[str, str]:
    out = {}
    for item in os.environ.get(env_name, "").split(","):
        if "=" in item:
            key, _, value = item.partition("=")
            out[key.strip()] = value.strip()
    return out
