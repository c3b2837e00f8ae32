"""The durable run queue: accepted alerts, their runs and how they closed. One interface, two backends.

    SqliteStore     outputs/.jobrunbook-service.sqlite3 (WAL, synchronous=FULL): the embedded default, one host
    PostgresStore   ``JOBRUNBOOK_STORE=postgresql://...``: several ``serve`` replicas share one queue; a worker
                    claims a row with ``SELECT ... FOR UPDATE SKIP LOCKED``

An alert is *accepted* when its row is committed, before the webhook answers
2xx; so a restart or ``kill -9`` loses none. Concurrent POSTs are committed
together (``accept_batch``: one transaction, one fsync, each webhook in a
savepoint of its own). One row per firing episode, keyed by fingerprint +
startsAt: a re-sent alert hits the UNIQUE key and is counted as deduplicated.
Row life:

    queued -> running -> done | failed   a run, highest priority first (critical, warning, other), then oldest;
                                         a running row has an owner and a lease its worker renews (heartbeat);
                                         when the lease expires (the owner was killed) another worker takes it over
    capped                               recorded, not run: over the per-group cap (cap_reason 'group'), or the
                                         queue was full (cap_reason 'queue': a re-send finding room queues it)
    linked                               recorded, not run: a warning covered by its critical's run (linked_to)
    close_state: NULL -> pending -> closing -> closed   (after a resolved notification; closing has a lease too)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jobrunbook import clock as _clock
from jobrunbook._exceptions import ConfigError
from jobrunbook._urls import redact_url
from jobrunbook.webhook import Alert, Webhook, alert_key, parse_time

__all__ = ["Store", "SqliteStore", "PostgresStore", "StoreError", "AcceptPolicy", "Accepted", "Job", "STORE_NAME",
           "STORE_ENV", "open_store", "iso", "priority_of", "make_owner", "replica_name", "OPEN_STATES", "RUN_STATES"]

STORE_NAME = ".jobrunbook-service.sqlite3"
STORE_ENV = "JOBRUNBOOK_STORE"  # postgresql://... (may hold a password: read from the environment only)

RUN_STATES = ("queued", "running", "done", "failed")  # rows that are (or will be) runs
OPEN_STATES = RUN_STATES
_PRIORITY = {"critical": 0, "warning": 1}

# name, type (TEXT | INTEGER | REAL | a literal column definition); the id column is each backend's own
_COLUMNS: list[tuple[str, str]] = [
    ("key", "TEXT NOT NULL UNIQUE"),
    ("fingerprint", "TEXT NOT NULL"),
    ("starts_at", "TEXT NOT NULL"),
    ("alertname", "TEXT NOT NULL"),
    ("severity", "TEXT NOT NULL DEFAULT ''"),
    ("queue", "TEXT NOT NULL DEFAULT ''"),
    ("task_type", "TEXT NOT NULL DEFAULT ''"),
    ("group_key", "TEXT NOT NULL"),
    ("alert_json", "TEXT NOT NULL"),
    ("state", "TEXT NOT NULL"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("linked_to", "INTEGER"),
    ("run_id", "TEXT"),
    ("headline", "TEXT"),
    ("error", "TEXT"),
    ("received_at", "TEXT NOT NULL"),
    ("started_at", "TEXT"),
    ("ended_at", "TEXT"),
    ("duration_s", "REAL"),
    ("resolved_at", "TEXT"),
    ("time_to_resolve_s", "REAL"),
    ("resolved_json", "TEXT"),
    ("close_state", "TEXT"),
    ("closing_json", "TEXT"),
    # issue 15: priority, caps with a reason, links by label set, leases
    ("priority", "INTEGER NOT NULL DEFAULT 1"),
    ("starts_norm", "TEXT"),  # startsAt in one sortable form (iso), for "not later than"
    ("cap_reason", "TEXT"),
    ("group_hash", "TEXT"),  # sha256 of group_key (a groupKey may be too long to index)
    ("link_key", "TEXT"),  # sha256 of the labels but alertname and severity: a warning and its critical share it
    ("owner", "TEXT"),  # host:pid:token of the worker holding the row (running, or closing)
    ("lease_until", "TEXT"),  # iso; the row is taken over once this has passed
]
_INDEXES = [
    "CREATE INDEX IF NOT EXISTS alerts_claim ON alerts (state, priority, id)",
    "CREATE INDEX IF NOT EXISTS alerts_group_hash ON alerts (group_hash, received_at)",
    "CREATE INDEX IF NOT EXISTS alerts_link ON alerts (link_key, severity)",
    "CREATE INDEX IF NOT EXISTS alerts_fingerprint ON alerts (fingerprint, starts_norm)",
    "CREATE INDEX IF NOT EXISTS alerts_close ON alerts (close_state)",
]
_COUNTERS = """CREATE TABLE IF NOT EXISTS counters (
  name TEXT NOT NULL, labels TEXT NOT NULL, value BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (name, labels))"""


class StoreError(Exception):
    """The run queue cannot be read or written now (the webhook answers 503; Alertmanager retries)."""


def iso(t: datetime) -> str:
    return _clock.iso(t) or ""


def priority_of(severity: str) -> int:
    """0 critical, 1 warning, 2 anything else: the order runs are taken in, and who is capped first."""
    return _PRIORITY.get(severity, 2)


def replica_name(name: str | None = None) -> str:
    """This replica's name in leases: ``name`` (``--replica-name``), else the host name."""
    return (name or socket.gethostname()).replace(":", "_")[:100]


def make_owner(name: str | None = None) -> str:
    """``replica:pid:token``: who holds a lease; a worker of the same replica can tell whether that pid is alive."""
    return f"{replica_name(name)}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _col(text: str) -> str:
    """A label value as an indexed column: no NUL (Postgres text cannot hold one)."""
    return text.replace("\x00", "\ufffd")


def link_key(labels: Mapping[str, str]) -> str:
    """The labels that make a warning and its critical the same incident: all but alertname and severity."""
    rest = {k: v for k, v in labels.items() if k not in ("alertname", "severity")}
    return _sha(json.dumps(rest, sort_keys=True, ensure_ascii=False))


def _norm_time(value: str) -> str:
    try:
        t = parse_time(value)
    except ValueError:
        t = None
    return iso(t) if t else ""


@dataclasses.dataclass(frozen=True)
class AcceptPolicy:
    """What ``accept`` applies: which alertnames run, the per-group cap per window, the global cap on queued runs."""

    served: frozenset[str] = frozenset({"JobFailureRate", "JobFailureRateCritical"})
    max_per_group: int = 10
    window: timedelta = timedelta(hours=1)
    max_queued: int | None = None  # None: unbounded


@dataclasses.dataclass
class Accepted:
    """What one webhook POST did to the queue (the JSON answer and the metrics)."""

    queued: list[int] = dataclasses.field(default_factory=list)
    linked: dict[int, int] = dataclasses.field(default_factory=dict)  # new critical id -> open warning id
    covered: dict[int, int] = dataclasses.field(default_factory=dict)  # new warning id -> its critical's id (not run)
    deduplicated: int = 0
    ignored: int = 0  # alertname not served
    capped: int = 0  # recorded, not run: group cap or full queue
    queue_full: int = 0  # of capped: the global cap
    displaced: list[int] = dataclasses.field(default_factory=list)  # queued lower-priority rows capped for a critical
    resolved: list[int] = dataclasses.field(default_factory=list)
    resolved_unmatched: int = 0
    resolved_duplicate: int = 0

    def as_json(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies every field (a fifth of the accept path's CPU in a storm)
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return out | {"linked": {str(k): v for k, v in self.linked.items()},
                      "covered": {str(k): v for k, v in self.covered.items()}}


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


class _Db:
    """One transaction's connection: ``all``/``one`` return dict rows, ``run`` the row count."""

    def __init__(self, cur: Any, sql: Callable[[str], str]) -> None:
        self.cur, self.sql = cur, sql

    def all(self, q: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        self.cur.execute(self.sql(q), tuple(args))
        return [dict(r) for r in self.cur.fetchall()]

    def one(self, q: str, args: Sequence[Any] = ()) -> dict[str, Any] | None:
        self.cur.execute(self.sql(q), tuple(args))
        row = self.cur.fetchone()
        return dict(row) if row is not None else None

    def run(self, q: str, args: Sequence[Any] = ()) -> int:
        self.cur.execute(self.sql(q), tuple(args))
        return self.cur.rowcount


class _Batch:
    """One accept transaction: its connection, the policy, the time, and the queued count once read (kept up to
    date by the batch itself: accepts are serial)."""

    def __init__(self, db: _Db, policy: AcceptPolicy, now: datetime) -> None:
        self.db, self.policy, self.now = db, policy, now
        self.now_iso, self.since_iso = iso(now), iso(now - policy.window)
        self.queued: int | None = None


class _SqlStore:
    """The queue's logic, written once; a backend gives connections, transactions and its SQL dialect."""

    kind = "sql"
    lock_rows = ""  # appended to a claim's SELECT (Postgres: FOR UPDATE SKIP LOCKED)
    errors: tuple[type[BaseException], ...] = ()

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or _clock.utcnow
        self._local = threading.local()

    # -- backend -------------------------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    @contextlib.contextmanager
    def _begin(self, conn: Any, mode: str) -> Iterator[_Db]:
        """``mode``: read (no transaction), write, or serial (a write that also excludes every other serial one,
        across replicas)."""
        raise NotImplementedError
        yield  # pragma: no cover

    def _sql(self, q: str) -> str:
        return q

    def _id_column(self) -> str:
        raise NotImplementedError

    def _type(self, decl: str) -> str:
        return decl

    def _existing_columns(self, db: _Db) -> set[str]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _drop_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def _tx(self, mode: str = "write") -> Iterator[_Db]:
        """A transaction (``_begin``'s modes); a backend error becomes a StoreError naming the store."""
        try:
            with self._begin(self._conn(), mode) as db:
                yield db
        except self.errors as exc:
            self._lost(exc)
            raise StoreError(f"{self.describe()}: {type(exc).__name__}: {self._scrub(str(exc))[:300]}") from None

    def _read(self, q: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._tx("read") as db:
            return db.all(q, args)

    def _lost(self, exc: BaseException) -> None:
        """After an error: a backend drops a broken connection so the next call opens a new one."""

    def _scrub(self, text: str) -> str:
        """An error message without a secret the backend's own messages may quote."""
        return redact_url(text)

    # -- schema ------------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self._tx("serial") as db:
            cols = ",\n  ".join([self._id_column()] + [f"{n} {self._type(t)}" for n, t in _COLUMNS])
            db.run(f"CREATE TABLE IF NOT EXISTS alerts (\n  {cols}\n)")
            have = self._existing_columns(db)
            added = []
            for name, decl in _COLUMNS:
                if name not in have:
                    db.run(f"ALTER TABLE alerts ADD COLUMN {name} {self._type(decl.replace(' UNIQUE', ''))}")
                    added.append(name)
            if "priority" in added:
                db.run("UPDATE alerts SET priority = CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 "
                       "ELSE 2 END")
            for row in db.all("SELECT id, starts_at, group_key, alert_json FROM alerts WHERE starts_norm IS NULL"):
                labels = json.loads(row["alert_json"]).get("labels") or {}
                db.run("UPDATE alerts SET starts_norm = ?, group_hash = ?, link_key = ? WHERE id = ?",
                       (_norm_time(row["starts_at"]), _sha(row["group_key"]), link_key(labels), row["id"]))
            for q in _INDEXES:
                db.run(q)
            db.run(_COUNTERS)

    # -- the webhook side -----------------------------------------------------------------------
    def accept(self, hook: Webhook, *, served: Iterable[str], max_per_group: int = 10,
               window: timedelta = timedelta(hours=1), max_queued: int | None = None) -> Accepted:
        """Record every alert of ``hook``; committed when this returns."""
        policy = AcceptPolicy(frozenset(served), max_per_group, window, max_queued)
        out = self.accept_batch([hook], policy)[0]
        if isinstance(out, BaseException):
            raise out
        return out

    def accept_batch(self, hooks: Sequence[Webhook], policy: AcceptPolicy) -> list[Accepted | BaseException]:
        """Several webhooks in one transaction (one durable write). Should one of them fail, the batch is rolled
        back and each is written on its own: the failing one gets its exception in its place, the others commit."""
        try:
            with self._tx("serial") as db:
                batch = _Batch(db, policy, self.clock())
                return [self._accept_one(batch, hook) for hook in hooks]
        except (StoreError, ValueError, TypeError) as exc:
            if len(hooks) == 1:
                return [exc if isinstance(exc, StoreError) else StoreError(f"{type(exc).__name__}: {str(exc)[:200]}")]
        return [self.accept_batch([hook], policy)[0] for hook in hooks]

    def _accept_one(self, b: _Batch, hook: Webhook) -> Accepted:
        out = Accepted()
        for alert in hook.alerts:
            if alert.alertname not in b.policy.served:
                out.ignored += 1
            elif alert.status == "firing":
                self._accept_firing(b, alert, hook.groupKey, out)
            else:
                self._accept_resolved(b, alert, out)
        return out

    def _admit(self, b: _Batch, priority: int, out: Accepted) -> bool:
        """Room for one more queued run of ``priority``: under the global cap, or by capping the newest queued
        run of a lower priority (a critical never waits behind warnings)."""
        if b.policy.max_queued is None:
            return True
        if b.queued is None:
            b.queued = b.db.one("SELECT COUNT(*) AS n FROM alerts WHERE state = 'queued'")["n"]
        if b.queued < b.policy.max_queued:
            b.queued += 1
            return True
        if priority >= 2:
            return False  # nothing is of lower priority
        victim = b.db.one("SELECT id FROM alerts WHERE state = 'queued' AND priority > ? ORDER BY priority DESC, "
                          "id DESC LIMIT 1", (priority,))
        if victim is None:
            return False
        b.db.run("UPDATE alerts SET state = 'capped', cap_reason = 'queue', error = 'the queue was full: left for a "
                 "higher-severity alert (runs when re-sent with room)' WHERE id = ?", (victim["id"],))
        out.displaced.append(victim["id"])
        return True

    def _accept_firing(self, b: _Batch, alert: Alert, group_key: str, out: Accepted) -> None:
        db, policy = b.db, b.policy
        labels = alert.labels
        severity = labels.get("severity", "")
        priority = priority_of(severity)
        key = alert_key(alert)
        known = db.one("SELECT id, state, cap_reason FROM alerts WHERE key = ?", (key,))
        if known is not None:
            # capped only because the queue was full: a re-send that finds room now runs it
            if known["state"] == "capped" and known["cap_reason"] == "queue" and self._admit(b, priority, out):
                db.run("UPDATE alerts SET state = 'queued', cap_reason = NULL, error = NULL, received_at = ? "
                       "WHERE id = ?", (b.now_iso, known["id"]))
                out.queued.append(known["id"])
            else:
                out.deduplicated += 1
            return
        ghash, lkey = _sha(group_key), link_key(labels)
        state, cap_reason, linked = "queued", None, None
        if severity == "warning":
            # its critical's run (open, or ended within the window) already covers it: recorded and linked, not run
            crit = db.one("SELECT id FROM alerts WHERE link_key = ? AND severity = 'critical' AND state IN "
                          f"{RUN_STATES!r} AND (resolved_at IS NULL OR resolved_at >= ?) ORDER BY id DESC LIMIT 1",
                          (lkey, b.since_iso))
            if crit is not None:
                state, linked = "linked", crit["id"]
        if state == "queued" and db.one("SELECT COUNT(*) AS n FROM alerts WHERE group_hash = ? AND received_at >= ? "
                                        f"AND state IN {RUN_STATES!r}", (ghash, b.since_iso))["n"] >= policy.max_per_group:
            state, cap_reason = "capped", "group"
        if state == "queued" and not self._admit(b, priority, out):
            state, cap_reason = "capped", "queue"
        if state == "queued" and severity == "critical":
            warn = db.one("SELECT id FROM alerts WHERE link_key = ? AND severity = 'warning' AND resolved_at IS NULL "
                          f"AND state IN {RUN_STATES!r} ORDER BY id DESC LIMIT 1", (lkey,))
            linked = warn["id"] if warn else None
        row = db.one(
            "INSERT INTO alerts (key, fingerprint, starts_at, alertname, severity, queue, task_type, group_key, "
            "alert_json, state, linked_to, received_at, priority, starts_norm, cap_reason, group_hash, link_key) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
            (key, alert.fingerprint.lower(), alert.startsAt, _col(alert.alertname), _col(severity),
             _col(labels.get("queue", "")), _col(labels.get("task_type", "")), _col(group_key),
             json.dumps(alert.as_dict(), ensure_ascii=False), state, linked, b.now_iso, priority,
             _norm_time(alert.startsAt), cap_reason, ghash, lkey))
        new_id = row["id"]
        if state == "capped":
            out.capped += 1
            out.queue_full += cap_reason == "queue"
        elif state == "linked":
            out.covered[new_id] = linked
        else:
            out.queued.append(new_id)
            if linked is not None:
                out.linked[new_id] = linked

    def _accept_resolved(self, b: _Batch, alert: Alert, out: Accepted) -> None:
        """Closes every open row of this fingerprint whose startsAt is not later than the resolved one's (the
        same episode, and earlier ones whose resolved notification never came)."""
        starts = _norm_time(alert.startsAt)
        rows = b.db.all("SELECT id, state, resolved_at, starts_at FROM alerts WHERE fingerprint = ? AND "
                        "starts_norm <= ?", (alert.fingerprint.lower(), starts))
        if not rows:
            out.resolved_unmatched += 1
            return
        still_open = [r for r in rows if r["resolved_at"] is None]
        if not still_open:
            out.resolved_duplicate += 1
            return
        ends = parse_time(alert.endsAt) or b.now
        body = json.dumps(alert.as_dict(), ensure_ascii=False)
        for row in still_open:
            began = parse_time(row["starts_at"])
            ttr = round((ends - began).total_seconds(), 3) if began else None
            close = "pending" if row["state"] in RUN_STATES else None  # capped / linked: nothing to close
            b.db.run("UPDATE alerts SET resolved_at = ?, time_to_resolve_s = ?, resolved_json = ?, close_state = ? "
                     "WHERE id = ?", (iso(ends), ttr, body, close, row["id"]))
            out.resolved.append(row["id"])

    # -- the worker side --------------------------------------------------------------------------
    def claim(self, owner: str = "", *, lease: float = 60.0, max_attempts: int = 3) -> Job | None:
        """The next job for ``owner``: a run whose owner's lease expired (taken over), else the next queued run
        (critical first, then oldest), else a close of a finished run. The row is leased for ``lease`` s."""
        now = self.clock()
        until = iso(now + timedelta(seconds=lease))
        with self._tx() as db:
            while True:
                row = db.one("SELECT * FROM alerts WHERE state = 'running' AND COALESCE(lease_until, '') < ? ORDER BY priority, id "
                             f"LIMIT 1{self.lock_rows}", (iso(now),))
                if row is None or row["attempts"] < max_attempts:
                    break
                db.run("UPDATE alerts SET state = 'failed', owner = NULL, lease_until = NULL, ended_at = ?, error = "
                       "? WHERE id = ?", (iso(now), f"interrupted {row['attempts']} times (the worker holding it "
                                                    "stopped or was killed)", row["id"]))
            if row is None:
                row = db.one(f"SELECT * FROM alerts WHERE state = 'queued' ORDER BY priority, id LIMIT 1{self.lock_rows}")
            if row is not None:
                db.run("UPDATE alerts SET state = 'running', attempts = attempts + 1, started_at = ?, owner = ?, "
                       "lease_until = ? WHERE id = ?", (iso(now), owner, until, row["id"]))
                return Job("run", row | {"state": "running", "attempts": row["attempts"] + 1, "owner": owner})
            row = db.one("SELECT * FROM alerts WHERE state IN ('done', 'failed') AND (close_state = 'pending' OR "
                         f"(close_state = 'closing' AND COALESCE(lease_until, '') < ?)) ORDER BY id LIMIT 1{self.lock_rows}",
                         (iso(now),))
            if row is not None:
                db.run("UPDATE alerts SET close_state = 'closing', owner = ?, lease_until = ? WHERE id = ?",
                       (owner, until, row["id"]))
                return Job("close", row | {"close_state": "closing", "owner": owner})
        return None

    def heartbeat(self, owner: str, ids: Iterable[int], *, lease: float = 60.0) -> set[int]:
        """Renew the leases ``owner`` holds on ``ids``; the ids it still holds (others were taken over)."""
        ids = list(ids)
        if not ids:
            return set()
        until = iso(self.clock() + timedelta(seconds=lease))
        marks = ",".join("?" * len(ids))
        with self._tx() as db:
            db.run(f"UPDATE alerts SET lease_until = ? WHERE owner = ? AND id IN ({marks}) AND (state = 'running' OR "
                   "close_state = 'closing')", (until, owner, *ids))
            held = db.all(f"SELECT id FROM alerts WHERE owner = ? AND id IN ({marks}) AND (state = 'running' OR "
                          "close_state = 'closing')", (owner, *ids))
        return {r["id"] for r in held}

    def expire_dead_owners(self, name: str | None = None) -> int:
        """Leases held by a process of this replica (``name``: this host's) that is gone (``kill -9``, a crash):
        expired now, not in a lease's time. Other replicas' are left to their lease."""
        host = replica_name(name)
        with self._tx() as db:
            rows = db.all("SELECT id, owner FROM alerts WHERE (state = 'running' OR close_state = 'closing') AND "
                          "owner LIKE ?", (f"{host}:%",))
            dead = [r["id"] for r in rows if not _pid_alive(int((r["owner"].split(":") + ["0", "0"])[1] or 0))]
            for row_id in dead:
                db.run("UPDATE alerts SET lease_until = '' WHERE id = ?", (row_id,))
        return len(dead)

    def release(self, owner: str) -> int:
        """A worker that stops: its leases expire at once, so another takes its rows over."""
        with self._tx() as db:
            return db.run("UPDATE alerts SET lease_until = '' WHERE owner = ? AND (state = 'running' OR "
                          "close_state = 'closing')", (owner,))

    def set_run_id(self, row_id: int, run_id: str, owner: str = "") -> None:
        with self._tx() as db:
            db.run("UPDATE alerts SET run_id = ? WHERE id = ? AND COALESCE(owner, '') = ?", (run_id, row_id, owner))

    def finish(self, row_id: int, *, state: str, run_id: str | None, headline: str | None = None,
               error: str | None = None, duration_s: float | None = None, owner: str = "") -> bool:
        """Record a run's end; False when ``owner`` no longer holds the row (another worker took it over)."""
        with self._tx() as db:
            return db.run("UPDATE alerts SET state = ?, run_id = COALESCE(?, run_id), headline = ?, error = ?, "
                          "ended_at = ?, duration_s = ?, owner = NULL, lease_until = NULL WHERE id = ? AND "
                          "state = 'running' AND COALESCE(owner, '') = ?",
                          (state, run_id, headline, error, iso(self.clock()), duration_s, row_id, owner)) == 1

    def closed(self, row_id: int, closing: dict[str, Any], owner: str = "") -> bool:
        with self._tx() as db:
            return db.run("UPDATE alerts SET close_state = 'closed', closing_json = ?, owner = NULL, lease_until = "
                          "NULL WHERE id = ? AND close_state = 'closing' AND COALESCE(owner, '') = ?",
                          (json.dumps(closing, default=str), row_id, owner)) == 1

    def bump(self, name: str, labels: str, by: int = 1) -> None:
        """A durable counter (``/metrics`` reads it in whichever process serves it)."""
        with self._tx() as db:
            db.run("INSERT INTO counters (name, labels, value) VALUES (?, ?, ?) ON CONFLICT (name, labels) DO UPDATE "
                   "SET value = counters.value + excluded.value", (name, labels, by))

    # -- reads --------------------------------------------------------------------------------------
    def get(self, row_id: int) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM alerts WHERE id = ?", (row_id,))
        return rows[0] if rows else None

    def list(self, *, limit: int = 100, states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        if states is not None:
            states = tuple(states)
            marks = ",".join("?" * len(states))
            return self._read(f"SELECT * FROM alerts WHERE state IN ({marks}) ORDER BY received_at DESC, id DESC "
                              "LIMIT ?", (*states, limit))
        return self._read("SELECT * FROM alerts ORDER BY received_at DESC, id DESC LIMIT ?", (limit,))

    def count(self, state: str) -> int:
        return self._read("SELECT COUNT(*) AS n FROM alerts WHERE state = ?", (state,))[0]["n"]

    def pending_work(self) -> int:
        return self._read("SELECT COUNT(*) AS n FROM alerts WHERE state IN ('queued', 'running') OR "
                          "close_state IN ('pending', 'closing')")[0]["n"]

    def stats(self, buckets: Sequence[float]) -> dict[str, Any]:
        """What ``/metrics`` shows of the queue and the runs, from the records (every process and replica's)."""
        with self._tx("read") as db:
            states = {r["state"]: r["n"] for r in db.all("SELECT state, COUNT(*) AS n FROM alerts GROUP BY state")}
            outcomes = {r["outcome"]: r["n"] for r in db.all(
                "SELECT CASE WHEN state = 'failed' AND run_id IS NULL AND error IS NOT NULL THEN 'error' ELSE state "
                "END AS outcome, COUNT(*) AS n FROM alerts WHERE state IN ('done', 'failed') GROUP BY 1")}
            capped = {r["cap_reason"] or "": r["n"] for r in db.all(
                "SELECT cap_reason, COUNT(*) AS n FROM alerts WHERE state = 'capped' GROUP BY cap_reason")}
            cols = ", ".join(f"SUM(CASE WHEN duration_s <= {float(b)!r} THEN 1 ELSE 0 END) AS b{i}"
                             for i, b in enumerate(buckets))
            hist = db.one(f"SELECT COUNT(duration_s) AS n, COALESCE(SUM(duration_s), 0) AS s, {cols} FROM alerts "
                          "WHERE state IN ('done', 'failed') AND duration_s IS NOT NULL")
            closed = db.one("SELECT COUNT(*) AS n FROM alerts WHERE close_state = 'closed'")["n"]
            counters = db.all("SELECT name, labels, value FROM counters")
        return {"states": states, "outcomes": outcomes, "capped": capped, "closed": closed, "counters": counters,
                "duration": {"count": hist["n"], "sum": float(hist["s"]),
                             "buckets": [(b, int(hist[f"b{i}"] or 0)) for i, b in enumerate(buckets)]}}

    def close(self) -> None:
        self._drop_conn()


class SqliteStore(_SqlStore):
    """The embedded queue: one SQLite file (WAL, ``synchronous=FULL``); every process on the host may open it."""

    kind = "sqlite"
    errors = (sqlite3.Error,)

    CHECKPOINT_EVERY = 1.0  # seconds between checkpoints of the WAL into the database file

    def __init__(self, path: str | Path, *, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(clock=clock)
        self.path = Path(path)
        self._checkpointer: threading.Thread | None = None
        self._closing = threading.Event()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._migrate()
        except (OSError, StoreError) as exc:
            raise ConfigError(f"cannot open the service queue {self.path}: {exc}",
                              hint=f"is {self.path.parent} writable? ls -ld {self.path.parent}") from None

    def describe(self) -> str:
        return f"the service queue {self.path}"

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        # no checkpoint inside a commit (SQLite's default every 1,000 pages: a stall of every POST waiting on that
        # commit); a thread of this store checkpoints instead, beside the writers (_checkpoints)
        db.execute("PRAGMA wal_autocheckpoint=0")
        return db

    def _checkpoints(self) -> None:
        conn = self._connect()
        try:
            while not self._closing.wait(self.CHECKPOINT_EVERY):
                with contextlib.suppress(sqlite3.Error):  # busy (another process checkpoints): the next time
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def _wrote(self) -> None:
        if self._checkpointer is None or not self._checkpointer.is_alive():
            self._checkpointer = threading.Thread(target=self._checkpoints, name="jobrunbook-checkpoint", daemon=True)
            self._checkpointer.start()

    def close(self) -> None:
        self._closing.set()
        super().close()

    @contextlib.contextmanager
    def _begin(self, conn: sqlite3.Connection, mode: str) -> Iterator[_Db]:
        if mode == "read":  # WAL: readers see the last commit and never wait for the writer
            yield _Db(conn.cursor(), self._sql)
            return
        conn.execute("BEGIN IMMEDIATE")  # one writer at a time: serial by nature
        try:
            yield _Db(conn.cursor(), self._sql)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if self._checkpointer is None:
            self._wrote()

    def _id_column(self) -> str:
        return "id INTEGER PRIMARY KEY AUTOINCREMENT"

    def _existing_columns(self, db: _Db) -> set[str]:
        return {r["name"] for r in db.all("PRAGMA table_info(alerts)")}


class PostgresStore(_SqlStore):
    """The shared queue: Postgres, for several ``serve`` replicas (psycopg 3; one connection per thread)."""

    kind = "postgres"
    lock_rows = " FOR UPDATE SKIP LOCKED"
    _SERIAL_LOCK = 0x6A6F6272  # pg_advisory_xact_lock key: accepts (caps, dedup) are one at a time across replicas

    def __init__(self, dsn: str, *, clock: Callable[[], datetime] | None = None, connect_timeout: float = 5.0) -> None:
        import psycopg

        super().__init__(clock=clock)
        self.errors = (psycopg.Error,)
        self._dsn, self.connect_timeout = dsn, connect_timeout
        try:
            self._migrate()
        except StoreError as exc:
            raise ConfigError(f"cannot open the service queue in Postgres: {exc}",
                              hint=f"is ${STORE_ENV} right? pg_isready -d \"${STORE_ENV}\"; psql \"${STORE_ENV}\" "
                                   "-c 'select 1'") from None

    def describe(self) -> str:
        return f"the service queue in Postgres ({redact_url(self._dsn)})"

    def _scrub(self, text: str) -> str:
        """``text`` without the DSN's password (psycopg quotes a malformed DSN whole in its message)."""
        m = re.search(r"://[^:/@\s]*:([^@\s]+)@", self._dsn)
        text = text.replace(self._dsn, redact_url(self._dsn))
        return text.replace(m.group(1), "***") if m else text

    def _connect(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        try:
            return psycopg.connect(self._dsn, autocommit=True, row_factory=dict_row,
                                   connect_timeout=max(1, int(self.connect_timeout)), application_name="jobrunbook")
        except psycopg.Error as exc:
            raise StoreError(f"{self.describe()}: cannot connect: {self._scrub(str(exc))[:300]}") from None

    def _sql(self, q: str) -> str:
        return q.replace("%", "%%").replace("?", "%s")

    @contextlib.contextmanager
    def _begin(self, conn: Any, mode: str) -> Iterator[_Db]:
        if mode == "read":  # autocommit: each statement on its own
            with conn.cursor() as cur:
                yield _Db(cur, self._sql)
            return
        with conn.transaction(), conn.cursor() as cur:
            if mode == "serial":
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._SERIAL_LOCK,))
            yield _Db(cur, self._sql)

    def _lost(self, exc: BaseException) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and (conn.closed or conn.broken):
            self._drop_conn()

    def _id_column(self) -> str:
        return "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"

    def _type(self, decl: str) -> str:
        return decl.replace("REAL", "DOUBLE PRECISION").replace("INTEGER", "BIGINT")

    def _existing_columns(self, db: _Db) -> set[str]:
        return {r["column_name"] for r in db.all(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND "
            "table_name = 'alerts'")}


Store = SqliteStore  # the embedded default, by its old name


def open_store(outputs_dir: str | Path, environ: Mapping[str, str] | None = None, *,
               clock: Callable[[], datetime] | None = None) -> _SqlStore:
    """``$JOBRUNBOOK_STORE`` (``postgresql://...``) when set, else SQLite under ``outputs_dir``."""
    spec = (os.environ if environ is None else environ).get(STORE_ENV, "").strip()
    if not spec:
        return SqliteStore(Path(outputs_dir) / STORE_NAME, clock=clock)
    if spec.startswith(("postgresql://", "postgres://")):
        return PostgresStore(spec, clock=clock)
    raise ConfigError(f"${STORE_ENV} is not a postgresql:// URL ({redact_url(spec)})",
                      hint=f"export {STORE_ENV}=postgresql://USER@HOST:5432/DB, or unset it for SQLite under --outputs")

