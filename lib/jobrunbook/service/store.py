"""The durable queue of accepted alerts: one SQLite file under ``outputs/``.

An alert is *accepted* when its row is committed (WAL, ``synchronous=FULL``),
before the webhook answers 2xx; so a restart or ``kill -9`` loses none. One
row per firing episode, keyed by fingerprint + startsAt: a re-sent alert hits
the UNIQUE key and is counted as deduplicated. Row life:

    queued -> running -> done | failed          (a run)
    capped                                      (over the per-group cap: recorded, not run)
    close_state: NULL -> pending -> closing -> closed   (after a resolved notification)

``recover()`` at start puts rows left ``running``/``closing`` by a dead process back.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jobrunbook import clock as _clock
from jobrunbook._exceptions import ConfigError
from jobrunbook.webhook import Alert, Webhook, alert_key, parse_time

__all__ = ["Store", "Accepted", "Job", "STORE_NAME", "iso"]

STORE_NAME = ".jobrunbook-service.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  key TEXT NOT NULL UNIQUE,
  fingerprint TEXT NOT NULL,
  starts_at TEXT NOT NULL,
  alertname TEXT NOT NULL,
  severity TEXT NOT NULL DEFAULT '',
  queue TEXT NOT NULL DEFAULT '',
  task_type TEXT NOT NULL DEFAULT '',
  group_key TEXT NOT NULL,
  alert_json TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  linked_to INTEGER,
  run_id TEXT,
  headline TEXT,
  error TEXT,
  received_at TEXT NOT NULL,
  started_at TEXT,
  ended_at TEXT,
  duration_s REAL,
  resolved_at TEXT,
  time_to_resolve_s REAL,
  resolved_json TEXT,
  close_state TEXT,
  closing_json TEXT
);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state, id);
CREATE INDEX IF NOT EXISTS alerts_group ON alerts (group_key, received_at);
CREATE INDEX IF NOT EXISTS alerts_target ON alerts (queue, task_type, severity);
CREATE INDEX IF NOT EXISTS alerts_close ON alerts (close_state);
"""

OPEN_STATES = ("queued", "running", "done", "failed")


def iso(t: datetime) -> str:
    return _clock.iso(t) or ""


@dataclasses.dataclass
class Accepted:
    """What one webhook POST did to the queue (the JSON answer and the metrics)."""

    queued: list[int] = dataclasses.field(default_factory=list)
    linked: dict[int, int] = dataclasses.field(default_factory=dict)  # new id -> open warning id
    deduplicated: int = 0
    ignored: int = 0  # alertname not served
    capped: int = 0
    resolved: list[int] = dataclasses.field(default_factory=list)
    resolved_unmatched: int = 0
    resolved_duplicate: int = 0

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"linked": {str(k): v for k, v in self.linked.items()}}


@dataclasses.dataclass
class Job:
    kind: str  # "run" | "close"
    row: dict[str, Any]

    @property
    def id(self) -> int:
        return int(self.row["id"])

    @property
    def alert(self) -> dict[str, Any]:
        return json.loads(self.row["alert_json"])


class Store:
    """Thread-safe: one SQLite connection per thread, writes serialised by ``BEGIN IMMEDIATE``."""

    def __init__(self, path: str | Path, *, clock: Callable[[], datetime] | None = None) -> None:
        self.path = Path(path)
        self.clock = clock or _clock.utcnow
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db().executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the service queue {self.path}: {exc}",
                              hint=f"is {self.path.parent} writable?") from None

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, *_: object) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self) -> Store._Tx:
        return Store._Tx(self._db())

    # -- the webhook side -------------------------------------------------------------------

    def accept(self, hook: Webhook, *, served: Iterable[str], max_per_group: int = 10,
               window: timedelta = timedelta(hours=1)) -> Accepted:
        """Record every alert of ``hook`` in one transaction; committed when this returns."""
        served = set(served)
        now = self.clock()
        out = Accepted()
        with self._tx() as db:
            for alert in hook.alerts:
                if alert.alertname not in served:
                    out.ignored += 1
                elif alert.status == "firing":
                    self._accept_firing(db, alert, hook.groupKey, now, max_per_group, window, out)
                else:
                    self._accept_resolved(db, alert, now, out)
        return out

    def _accept_firing(self, db, alert: Alert, group_key: str, now: datetime, cap: int, window: timedelta,
                       out: Accepted) -> None:
        labels = alert.labels
        key = alert_key(alert)
        if db.execute("SELECT 1 FROM alerts WHERE key = ?", (key,)).fetchone():
            out.deduplicated += 1
            return
        recent = db.execute("SELECT COUNT(*) FROM alerts WHERE group_key = ? AND received_at >= ? AND state != "
                            "'capped'", (group_key, iso(now - window))).fetchone()[0]
        state = "capped" if recent >= cap else "queued"
        linked = None
        severity = labels.get("severity", "")
        if severity == "critical":
            row = db.execute(
                "SELECT id FROM alerts WHERE queue = ? AND task_type = ? AND severity = 'warning' AND "
                f"resolved_at IS NULL AND state IN {OPEN_STATES!r} ORDER BY id DESC LIMIT 1",
                (labels.get("queue", ""), labels.get("task_type", ""))).fetchone()
            linked = row[0] if row else None
        cur = db.execute(
            "INSERT INTO alerts (key, fingerprint, starts_at, alertname, severity, queue, task_type, group_key, "
            "alert_json, state, linked_to, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (key, alert.fingerprint.lower(), alert.startsAt, alert.alertname, severity, labels.get("queue", ""),
             labels.get("task_type", ""), group_key, json.dumps(alert.as_dict(), ensure_ascii=False), state,
             linked, iso(now)))
        if state == "capped":
            out.capped += 1
            return
        out.queued.append(cur.lastrowid)
        if linked is not None:
            out.linked[cur.lastrowid] = linked

    def _accept_resolved(self, db, alert: Alert, now: datetime, out: Accepted) -> None:
        row = db.execute("SELECT id, state, resolved_at FROM alerts WHERE key = ?", (alert_key(alert),)).fetchone()
        if row is None:
            out.resolved_unmatched += 1
            return
        if row["resolved_at"] is not None:
            out.resolved_duplicate += 1
            return
        ends = parse_time(alert.endsAt) or now
        starts = parse_time(alert.startsAt)
        ttr = round((ends - starts).total_seconds(), 3) if starts else None
        close = None if row["state"] == "capped" else "pending"
        db.execute("UPDATE alerts SET resolved_at = ?, time_to_resolve_s = ?, resolved_json = ?, close_state = ? "
                   "WHERE id = ?", (iso(ends), ttr, json.dumps(alert.as_dict(), ensure_ascii=False), close,
                                    row["id"]))
        out.resolved.append(row["id"])

    # -- the worker side --------------------------------------------------------------------

    def claim(self) -> Job | None:
        """The next queued run (oldest first), else the next pending close of a finished run."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM alerts WHERE state = 'queued' ORDER BY id LIMIT 1").fetchone()
            if row is not None:
                db.execute("UPDATE alerts SET state = 'running', attempts = attempts + 1, started_at = ? "
                           "WHERE id = ?", (iso(self.clock()), row["id"]))
                return Job("run", dict(row) | {"state": "running", "attempts": row["attempts"] + 1})
            row = db.execute("SELECT * FROM alerts WHERE close_state = 'pending' AND state IN ('done', 'failed') "
                             "ORDER BY id LIMIT 1").fetchone()
            if row is not None:
                db.execute("UPDATE alerts SET close_state = 'closing' WHERE id = ?", (row["id"],))
                return Job("close", dict(row) | {"close_state": "closing"})
        return None

    def set_run_id(self, row_id: int, run_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE alerts SET run_id = ? WHERE id = ?", (run_id, row_id))

    def finish(self, row_id: int, *, state: str, run_id: str | None, headline: str | None = None,
               error: str | None = None, duration_s: float | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE alerts SET state = ?, run_id = COALESCE(?, run_id), headline = ?, error = ?, "
                       "ended_at = ?, duration_s = ? WHERE id = ?",
                       (state, run_id, headline, error, iso(self.clock()), duration_s, row_id))

    def closed(self, row_id: int, closing: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("UPDATE alerts SET close_state = 'closed', closing_json = ? WHERE id = ?",
                       (json.dumps(closing, default=str), row_id))

    def recover(self, *, max_attempts: int = 3) -> dict[str, int]:
        """Rows a dead process left mid-way: back to the queue (or failed after ``max_attempts``)."""
        with self._tx() as db:
            failed = db.execute("UPDATE alerts SET state = 'failed', error = 'interrupted ' || attempts || ' times "
                                "(service restarts)', close_state = CASE WHEN close_state IS NULL THEN NULL ELSE "
                                "'pending' END WHERE state = 'running' AND attempts >= ?", (max_attempts,)).rowcount
            requeued = db.execute("UPDATE alerts SET state = 'queued' WHERE state = 'running'").rowcount
            closes = db.execute("UPDATE alerts SET close_state = 'pending' WHERE close_state = 'closing'").rowcount
        return {"requeued": requeued, "failed": failed, "closes": closes}

    # -- reads ------------------------------------------------------------------------------

    def get(self, row_id: int) -> dict[str, Any] | None:
        row = self._db().execute("SELECT * FROM alerts WHERE id = ?", (row_id,)).fetchone()
        return dict(row) if row else None

    def list(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        rows = self._db().execute("SELECT * FROM alerts ORDER BY received_at DESC, id DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]

    def count(self, state: str) -> int:
        return self._db().execute("SELECT COUNT(*) FROM alerts WHERE state = ?", (state,)).fetchone()[0]

    def pending_work(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM alerts WHERE state IN ('queued', 'running') OR "
                                  "close_state IN ('pending', 'closing')").fetchone()[0]

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
