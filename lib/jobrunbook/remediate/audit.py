"""The remediation record: the run directory, ``audit.jsonl``, and the recovery watch.

Every step, dry or real, is one JSON line appended to ``RUN_DIR/audit.jsonl``
(written and fsynced before the function returns): when (UTC), who (from
``$JOBRUNBOOK_ACTOR`` or ``$USER``), the command, the filter, counts before and
after, batches, errors and the export path. ``watch_recovery`` is the
runbook's Resolve step: it watches asynq's daily processed/failed counters and
the retry depth for a while and records whether the failure ratio returned to
normal.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import redis

from jobrunbook import clock as _clock
from jobrunbook._paths import absolute
from jobrunbook.asynq import keys as K
from jobrunbook.diagnosis.causes import NORMAL_RATIO

__all__ = ["default_run_dir", "actor", "append_audit", "read_audit", "watch_recovery", "export_path", "NORMAL_RATIO"]


def utc_now_iso(clock: Callable[[], float] = _clock.now) -> str:
    return _clock.iso(clock()) or ""


def default_run_dir(root: str | Path = "outputs", clock: Callable[[], float] = _clock.now) -> Path:
    """A new ``outputs/manual-<UTC stamp>/`` (absolute) for a remediation started by hand."""
    stamp = dt.datetime.fromtimestamp(clock(), dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return absolute(Path(root) / f"manual-{stamp}")


def export_path(run_dir: str | Path, action: str, queue: str, suffix: str = "") -> Path:
    """Where an export of ``action`` on ``queue`` goes: ``RUN_DIR/exports/<UTC stamp>-<action>-<queue>.jsonl``."""
    stamp = _clock.utcnow().strftime("%Y%m%dT%H%M%S%fZ")
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in queue)[:60]
    return Path(run_dir) / "exports" / f"{stamp}-{action}-{safe}{suffix}.jsonl"


def actor() -> str:
    return os.environ.get("JOBRUNBOOK_ACTOR") or os.environ.get("USER") or "unknown"


def append_audit(run_dir: str | Path, entry: dict, *, clock: Callable[[], float] = _clock.now) -> dict:
    """Append one step to ``run_dir/audit.jsonl``; returns the line written."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    line = {"ts": utc_now_iso(clock), "who": actor(), **entry}
    with open(run_dir / "audit.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return line


def read_audit(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _sample(client: redis.Redis, queue: str, when: float) -> dict:
    days = {dt.datetime.fromtimestamp(when - d, dt.timezone.utc).date() for d in (0, 86400)}
    pipe = client.pipeline(transaction=False)
    for day in sorted(days):
        pipe.get(K.processed_key(queue, day))
        pipe.get(K.failed_key(queue, day))
    pipe.zcard(K.state_key(queue, "retry"))
    values = pipe.execute()
    counters = {}
    for i, day in enumerate(sorted(days)):
        counters[str(day)] = (int(values[2 * i] or 0), int(values[2 * i + 1] or 0))
    return {"t": when, "counters": counters, "retry": int(values[-1])}


def watch_recovery(client: redis.Redis, queue: str, *, duration_s: float, interval_s: float = 15.0,
                   threshold: float = NORMAL_RATIO, clock: Callable[[], float] = time.time,
                   sleep: Callable[[float], None] = time.sleep) -> dict:
    """Watch the failure ratio (failed/processed deltas of asynq's daily counters) and the retry depth.

    Returns ``{"failure_ratio", "processed", "failed", "retry_start", "retry_end",
    "returned_to_normal", "reason", "samples"}``; the ratio is None when
    nothing was processed in the window (then it is not called normal).
    """
    samples = [_sample(client, queue, clock())]
    end = samples[0]["t"] + duration_s
    while clock() < end:
        sleep(max(0.0, min(interval_s, end - clock())))
        samples.append(_sample(client, queue, clock()))
    first, last = samples[0], samples[-1]
    processed = failed = 0
    for day, (p_end, f_end) in last["counters"].items():
        p_start, f_start = first["counters"].get(day, (0, 0))
        processed += max(0, p_end - p_start)
        failed += max(0, f_end - f_start)
    ratio = failed / processed if processed else None
    if ratio is None:
        normal, reason = False, "no task was processed during the watch: the ratio cannot be judged"
    elif ratio < threshold:
        normal, reason = True, f"failure ratio {ratio:.1%} < {threshold:.0%}"
    else:
        normal, reason = False, f"failure ratio {ratio:.1%} >= {threshold:.0%}"
    return {"queue": queue, "duration_s": duration_s, "processed": processed, "failed": failed,
            "failure_ratio": ratio, "retry_start": first["retry"], "retry_end": last["retry"],
            "returned_to_normal": normal, "reason": reason,
            "samples": [{"t": s["t"], "retry": s["retry"]} for s in samples]}
