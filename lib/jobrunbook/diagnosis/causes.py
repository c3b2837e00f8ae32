"""The runbook's Common Causes table, as data, with the causes it misses.

Each cause names the evidence that points to it (patterns of the error text
asynq records, probe states, related alerts, metric shapes), its resolution
from the runbook, and the actions to recommend (see ``commands.ACTIONS``).
Patterns are tried in ``CAUSES`` order: the first cause whose pattern matches
an error group explains it, so the narrow causes come before the wide ones.

asynq's releases differ in what they write and do (``jobrunbook.asynq.versions``):
a recovered panic reads ``panic [file:line]: ...`` up to v0.24.x and
``panic error cause by: panic [file:line]: ...`` from v0.25.0 (asynq.PanicError);
v0.24.x never archives an error its IsFailure calls no failure (retried
forever, never counted failed), v0.25.0+ archives it once retries are
exhausted or on SkipRetry and counts it failed. A cause whose advice depends
on that carries ``version_notes``; ``Cause.note_for(version)`` gives the one
for the version the reading assumed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Cause", "CAUSES", "CAUSES_BY_KEY", "match_cause", "classify", "check_cause_key", "UNKNOWN", "cause_label",
           "cause_colour",
           "RunbookAlert", "ALERTS",
           "SERVED_ALERTNAMES", "THRESHOLDS", "NORMAL_RATIO", "alert_for_severity", "PANIC_PATTERN", "REVOKED_PATTERN"]

# both forms of a panic asynq recovered: v0.24.x "panic [f:l]: x" (or "panic: x" when it has no caller),
# v0.25.0+ the same wrapped in asynq.PanicError: "panic error cause by: panic [f:l]: x"
PANIC_PATTERN = r"^(?:panic error cause by: )?panic(?: \[[^\]]*\])?: "
# asynq.RevokeTask (v0.25.0+): the task is done, counted processed, never failed
REVOKED_PATTERN = r"(?:^|: )revoke task$"


@dataclass(frozen=True)
class RunbookAlert:
    """One of the runbook's alerts: it fires when the failure ratio stays over ``threshold`` for ``held``."""

    name: str
    severity: str
    threshold: float
    held: str  # Prometheus duration, as in the rule's ``for:``
    held_text: str  # the same for people


# The runbook's Alerts table (and deploy/prometheus/job-failure-rate.rules.yml)
ALERTS: dict[str, RunbookAlert] = {a.name: a for a in (
    RunbookAlert("JobFailureRate", "warning", 0.10, "5m", "5 min"),
    RunbookAlert("JobFailureRateCritical", "critical", 0.25, "2m", "2 min"),
)}
SERVED_ALERTNAMES = tuple(ALERTS)
THRESHOLDS = {a.severity: a.threshold for a in ALERTS.values()}
NORMAL_RATIO = 0.05  # Quick Response Checklist, Resolve: "failure rate back under 5 %"


def alert_for_severity(severity: str | None) -> RunbookAlert:
    """The runbook alert of ``severity`` (warning when unknown)."""
    return next((a for a in ALERTS.values() if a.severity == (severity or "").lower()), ALERTS["JobFailureRate"])


@dataclass(frozen=True)
class Cause:
    key: str
    title: str
    symptoms: str
    diagnosis: str
    resolution: str
    patterns: tuple[str, ...]
    in_runbook: bool = True
    # corroboration: probe kinds whose failure (degraded/down) supports this cause
    probe_kinds: tuple[str, ...] = ()
    probe_states: tuple[str, ...] = ("down", "degraded")  # which probe states support it
    related_alerts: tuple[str, ...] = ()
    uses_durations: bool = False
    actions: tuple[str, ...] = ()
    rerun_after_fix: bool = True  # does re-running the tasks make sense once fixed?
    label: str = ""  # a few words, for tables, legends and charts
    colour: str = "#999999"  # the cause's colour in every chart and table (colour-blind safe, Okabe-Ito based)
    # asynq release -> what differs there ("v0.24" for v0.24.x, "v0.25+" for v0.25.0 and later)
    version_notes: tuple[tuple[str, str], ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)

    def matches(self, text: str) -> bool:
        return any(p.search(text) for p in self._compiled)

    def note_for(self, version: str | None) -> str:
        """The version note for asynq ``version`` (``v0.26.0``), "" when this cause has none."""
        from jobrunbook.asynq.versions import behaviour

        family = "v0.25+" if behaviour(version).archives_non_failures else "v0.24"
        return dict(self.version_notes).get(family, "")


def _cause(**kw) -> Cause:
    c = Cause(**kw)
    object.__setattr__(c, "_compiled", tuple(re.compile(p, re.IGNORECASE) for p in c.patterns))
    return c


CAUSES: tuple[Cause, ...] = (
    _cause(
        key="handler_not_found",
        label="Handler missing (deploy)",
        colour="#0072B2",
        title="Deploy dropped or renamed a handler",
        symptoms='"handler not found for task" for one task type, from the moment of a deploy',
        diagnosis="Compare the task types enqueued with the handlers the new build registers",
        resolution="Roll back the worker, or deploy a build that registers the handler again; then re-run the tasks",
        patterns=(r"handler not found for task",),
        in_runbook=False,
        actions=("rollout_history", "rollback", "rerun"),
    ),
    _cause(
        key="lease_expired",
        label="Worker crash",
        colour="#56B4E9",
        title="Worker crashed or was OOM-killed mid-task",
        symptoms='"asynq: task lease expired": the worker died or lost Redis while running tasks',
        diagnosis="Look for restarts, OOMKilled and lost Redis connections of the worker",
        resolution="Find why the worker died (memory limit, crash loop, node loss) and fix it; asynq retries the tasks itself",
        patterns=(r"task lease expired", r"lease expired"),
        in_runbook=False,
        probe_kinds=("redis",),
        actions=("worker_restarts", "worker_oom", "worker_logs", "rerun_after_crash"),
        rerun_after_fix=False,
    ),
    _cause(
        key="validation",
        label="Validation (SkipRetry)",
        colour="#009E73",
        title="Validation errors (SkipRetry)",
        symptoms="SkipRetry in logs: tasks archived at once, retried 0",
        diagnosis="Check the task payload",
        resolution="Fix the enqueuing code; the archived tasks will not succeed as they are",
        patterns=(r"skip retry for the task",),
        actions=("inspect_task", "list_archived", "fix_enqueuer", "delete_cause"),
        rerun_after_fix=False,
        version_notes=(
            ("v0.24", "asynq v0.24.x archives a SkipRetry task at once only when the server's IsFailure calls the "
                      "error a failure (the default); if IsFailure returns false for it, it is retried forever, "
                      "retried stays 0 and it is never counted failed: look in retry, not archived"),
            ("v0.25+", "asynq v0.25.0+ archives a SkipRetry task at once whatever IsFailure says, and counts it "
                       "failed: the tasks are in archived"),
        ),
    ),
    _cause(
        key="panic",
        label="Panic",
        colour="#D55E00",
        title="Bug in handler (panic)",
        symptoms="panic recovered by asynq, with a stack trace in the worker log",
        diagnosis="Read the stack trace in the logs",
        resolution="Fix and deploy (or roll back the build that introduced it); then re-run the tasks",
        patterns=(PANIC_PATTERN, r"\bpanic: ", r"nil pointer dereference", r"index out of range"),
        actions=("panic_trace", "rollout_history", "rollback", "rerun"),
        version_notes=(
            ("v0.24", 'asynq v0.24.x records the panic as "panic [file:line]: ..."'),
            ("v0.25+", 'asynq v0.25.0+ records it as "panic error cause by: panic [file:line]: ..." '
                       "(asynq.PanicError; asynq.IsPanicError tells it in an ErrorHandler)"),
        ),
    ),
    _cause(
        key="rate_limit",
        label="Rate limited",
        colour="#CC79A7",
        title="Rate limiting by an external API",
        symptoms="429 Too Many Requests from an external API",
        diagnosis="Check the external API's limits and its logs",
        resolution="Add backoff (a RetryDelayFunc honouring Retry-After) and lower the worker's concurrency for this task type",
        patterns=(r"\b429\b", r"too many requests", r"rate.?limit", r"quota exceeded", r"throttl"),
        probe_kinds=("http",),
        related_alerts=("HighErrorRate",),
        actions=("check_external", "add_backoff", "rerun_when_lifted"),
        version_notes=(
            ("v0.24", "if the server's IsFailure returns false for rate limits, asynq v0.24.x retries those tasks "
                      "without counting them failed or raising retried, and never archives them"),
            ("v0.25+", "if the server's IsFailure returns false for rate limits, asynq v0.25.0+ still retries them "
                       "without counting, but archives (and counts failed) a task whose retries an earlier "
                       "failure had already used up"),
        ),
    ),
    _cause(
        key="db_exhaustion",
        label="Postgres connections exhausted",
        colour="#8C6D31",
        title="Postgres connections exhausted",
        symptoms='"too many clients" / "remaining connection slots are reserved"',
        diagnosis="Compare connections in use with max_connections",
        resolution="Lower the worker's pool size or concurrency, put a pooler (pgbouncer) in front, find leaked connections",
        patterns=(r"too many clients", r"remaining connection slots", r"connection slots are reserved",
                  r"too many connections"),
        in_runbook=False,
        probe_kinds=("postgres",),
        probe_states=("degraded",),
        related_alerts=("DBConnectionExhausted",),
        actions=("pg_connections", "rerun"),
    ),
    _cause(
        key="redis_exhaustion",
        label="Redis exhausted",
        colour="#6A3D9A",
        title="Redis out of clients or memory",
        symptoms='"max number of clients reached" or "OOM command not allowed"',
        diagnosis="Check INFO clients and INFO memory on the worker's Redis",
        resolution="Raise maxclients or maxmemory, or reduce connections; check for a connection leak",
        patterns=(r"max number of clients reached", r"OOM command not allowed"),
        in_runbook=False,
        probe_kinds=("redis",),
        probe_states=("degraded",),
        actions=("redis_info", "rerun"),
    ),
    _cause(
        key="dependency",
        label="Dependency down",
        colour="#E69F00",
        title="Dependency failure",
        symptoms="Connection errors to Postgres, Redis or an external API",
        diagnosis="Check the dependencies",
        resolution="Fix the dependency (restart it, fail over); then re-run the tasks that failed on it",
        patterns=(r"connection refused", r"dial tcp", r"no such host", r"connection reset", r"broken pipe",
                  r"i/o timeout", r"network is unreachable", r"server closed the connection", r"\bEOF\b",
                  r"could not connect", r"connect: ", r"tls: ", r"x509: ", r"\b50[234]\b", r"service unavailable",
                  r"bad gateway"),
        probe_kinds=("postgres", "redis", "http"),
        related_alerts=("DBConnectionExhausted",),
        actions=("check_postgres", "restart_postgres", "check_external", "check_address", "rerun"),
        version_notes=(
            ("v0.24", "asynq v0.24.x never archives an error its IsFailure calls no failure: such tasks stay in "
                      "retry until the dependency is back"),
            ("v0.25+", "asynq v0.25.0+ archives a task once its retries are exhausted even for an error IsFailure "
                       "calls no failure: check archived too, and re-run it once fixed"),
        ),
    ),
    _cause(
        key="timeout",
        label="Timeout",
        colour="#B8A100",
        title="Timeout",
        symptoms="context deadline exceeded",
        diagnosis="Check job duration against the task's timeout",
        resolution="Find what made the handler slow; raise the task's Timeout only if the work is legitimately longer",
        patterns=(r"context deadline exceeded", r"deadline exceeded", r"context canceled", r"timed? ?out"),
        uses_durations=True,
        actions=("check_durations", "raise_timeout", "rerun"),
    ),
    _cause(
        key="bad_data",
        label="Bad data",
        colour="#4D4D4D",
        title="Bad data",
        symptoms="Specific records fail, the same ids again and again",
        diagnosis="Check the task payload and the records it names",
        resolution="Fix the data (or the handler's handling of it); archive the tasks that cannot succeed",
        patterns=(r"invalid", r"malformed", r"unmarshal", r"cannot parse", r"not found", r"unsupported",
                  r"violates", r"constraint", r"duplicate key", r"no rows in result set", r"negative",
                  r"out of range"),
        actions=("inspect_task", "fix_data", "archive_cause", "rerun_archived"),
        rerun_after_fix=True,
    ),
)

CAUSES_BY_KEY = {c.key: c for c in CAUSES}

UNKNOWN = "unknown"
UNKNOWN_COLOUR = "#999999"


def cause_label(key: str) -> str:
    """A cause's key as the few words tables and charts show ("rate_limit" -> "Rate limited")."""
    cause = CAUSES_BY_KEY.get(key)
    return cause.label if cause else ("Unknown" if key in (UNKNOWN, "", None) else str(key).replace("_", " "))


def cause_colour(key: str) -> str:
    """The colour of a cause in every chart and table."""
    cause = CAUSES_BY_KEY.get(key)
    return cause.colour if cause else UNKNOWN_COLOUR


def match_cause(error: str, fingerprint: str = "") -> Cause | None:
    """The first cause (in ``CAUSES`` order) whose patterns match the error, or None."""
    for cause in CAUSES:
        if cause.matches(error) or (fingerprint and cause.matches(fingerprint)):
            return cause
    return None


def classify(error: str, fp: str | None = None) -> str:
    """The cause key of one error text (``unknown`` when none matches): the one classifier of jobrunbook.

    The diagnosis applies it to each error group (its example error and fingerprint), ``jobrunbook
    remediate --cause`` to each task's own last error (``fp`` computed when not given), so a cause's
    commands select the tasks the diagnosis counted for it. The tasks of one group share a fingerprint
    and so a cause, unless a pattern matches only in what the fingerprint folds (a number, a quoted value).
    """
    if fp is None:
        from jobrunbook.fingerprint import fingerprint

        fp = fingerprint(error)
    cause = match_cause(error, fp)
    return cause.key if cause else UNKNOWN


def check_cause_key(key: str) -> str:
    """``key`` if it names a cause (or ``unknown``); a ConfigError listing the keys otherwise."""
    if key in CAUSES_BY_KEY or key == UNKNOWN:
        return key
    from jobrunbook._exceptions import ConfigError

    raise ConfigError(f"no cause {key!r}; one of {', '.join([*CAUSES_BY_KEY, UNKNOWN])}",
                      hint="`jobrunbook diagnose` names each cause's key in brackets, e.g. [dependency]")
