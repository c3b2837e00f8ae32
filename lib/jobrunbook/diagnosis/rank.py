"""Ranking the evidence into causes: shares, corroboration, onset, the verdict.

Everything is ordered by how many failed tasks it holds, largest first: the
causes, each cause's task types, queues and groups, the verdict's types. Each
cause's actions aim at what its own errors name (the Postgres they dial, the
API hosts matched to the configured health URLs) and end with one remediation
of exactly its tasks (``jobrunbook remediate OP --cause KEY``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from jobrunbook import clock
from jobrunbook.diagnosis.causes import CAUSES, NORMAL_RATIO, UNKNOWN, Cause, classify
from jobrunbook.diagnosis.commands import render_actions
from jobrunbook.diagnosis.endpoints import health_checks, named_endpoints, postgres_address
from jobrunbook.diagnosis.escalation import checklist, escalation, incident_update
from jobrunbook.diagnosis.evidence import ErrorGroup, Evidence
from jobrunbook.diagnosis.onset import NEW_WINDOW_S, cause_onset, onset_brief
from jobrunbook.diagnosis.ratios import failure_ratios

__all__ = ["diagnose", "RankedCause", "Diagnosis", "NEW_WINDOW_S", "by_count", "types_text"]

_DEP_KINDS = (
    ("postgres", re.compile(r":5432\b|postgres|\bpq: |pgx|sql: ", re.I)),
    ("redis", re.compile(r":6379\b|redis", re.I)),
    ("http", re.compile(r"https?://|status [1-5]\d\d|\b50[234]\b|tls: |x509: |no such host", re.I)),
)


@dataclass
class RankedCause:
    key: str
    title: str
    failures: int
    share: float
    confidence: float
    level: str
    evidence: list[str] = field(default_factory=list)
    contradictions: list[str] = field(default_factory=list)
    onset: str = "unknown"  # new | chronic | unknown
    first_seen: float | None = None
    task_types: list[str] = field(default_factory=list)  # most failed tasks first
    queues: list[str] = field(default_factory=list)  # most failed tasks first
    onset_text: str = ""  # the onset said from the data: "new since 09:48:12 UTC, at the restart of the worker ..."
    type_counts: dict[str, int] = field(default_factory=dict)  # task type -> failed tasks, most first
    groups: list[dict[str, Any]] = field(default_factory=list)
    resolution: str = ""
    actions: list[dict[str, Any]] = field(default_factory=list)
    in_runbook: bool = True
    version_note: str = ""  # what the assumed asynq release does differently for this cause

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Diagnosis:
    verdict: str
    top_cause: str
    causes: list[RankedCause]
    unexplained: dict[str, Any]
    total_failures: int
    task_types: list[str]
    escalation: dict[str, Any]
    checklist: list[dict[str, str]]
    incident_update: str
    sources_used: list[str]
    unavailable: dict[str, str]
    failure_ratio: float | None
    ratios: dict[str, Any] = field(default_factory=dict)  # the app's and asynq's failure ratio, and why they differ
    asynq_version: str | None = None  # the release the reading assumed (and why: asynq_version_reason)
    asynq_version_reason: str = ""
    revoked: int = 0  # revoked tasks the log shows: not counted as failures

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["causes"] = [c.to_dict() for c in self.causes]
        return d


def _level(confidence: float) -> str:
    return "high" if confidence >= 0.7 else "medium" if confidence >= 0.45 else "low"


def _group_dict(g: ErrorGroup) -> dict[str, Any]:
    return {"queue": g.queue, "task_type": g.task_type, "fingerprint": g.fingerprint,
            "example_error": g.example_error, "count": g.count, "retry": g.retry, "archived": g.archived,
            "first_seen": g.first_seen, "last_seen": g.last_seen, "example_ids": list(g.example_ids[:3]),
            "source": g.source, "distinct_errors": g.distinct_errors, "cause": classify(g.example_error, g.fingerprint)}


def _sorted_groups(groups: list[ErrorGroup]) -> list[ErrorGroup]:
    return sorted(groups, key=lambda g: (-g.count, g.queue, g.task_type, g.fingerprint))


def by_count(groups: list[ErrorGroup], attr: str) -> dict[str, int]:
    """Failed tasks per value of ``attr`` (task_type, queue), most first (ties by name)."""
    counts: dict[str, int] = defaultdict(int)
    for g in groups:
        counts[getattr(g, attr)] += g.count
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def types_text(types: list[str], shown: int = 3) -> str:
    """"webhook:deliver, email:send, payment:capture and 2 more" (the largest first), "a and b"."""
    if not types:
        return "no task type"
    if len(types) > shown:
        return ", ".join(types[:shown]) + f" and {len(types) - shown} more"
    return types[0] if len(types) == 1 else ", ".join(types[:-1]) + " and " + types[-1]


def _occupancy(ev: Evidence) -> dict[tuple[str, str], dict[str, int]] | None:
    """(queue, state) -> failed tasks by cause there, every cause; what the read did not classify
    (asynq's own count beyond the groups) as "unread". None without asynq's groups."""
    if not ev.groups:
        return None
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for g in ev.groups:
        key = classify(g.example_error, g.fingerprint)
        for state in ("retry", "archived"):
            if getattr(g, state):
                out[(g.queue, state)][key] += getattr(g, state)
    for queue, states in ev.state_counts.items():
        for state, n in states.items():
            read = sum(out.get((queue, state), {}).values())
            if n > read:
                out[(queue, state)]["unread"] += n - read
    return {k: dict(v) for k, v in out.items()}


_KIND_ACTIONS = {"postgres": ("check_postgres", "restart_postgres"), "http": ("check_external",),
                 "redis": ("redis_info",)}


def _cause_values(cause: Cause, groups: list[ErrorGroup], ev: Evidence, base: dict[str, Any]
                  ) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The values of one cause's commands (the addresses its errors name) and its action keys."""
    errors = [g.example_error for g in groups]
    known = {a: p.kind for p in ev.probes if (a := _probe_address(p.target or ""))}
    values = dict(base)
    checks, note = health_checks(errors, base.get("health_urls") or {}, known)
    values.update(health_checks=checks, health_checks_note=note)
    pg = postgres_address(errors, base.get("pg_host"), base.get("pg_port"), known)
    if pg:
        values.update(pg_host=pg[0], pg_port=pg[1])
    named = named_endpoints(errors, known)
    values["addresses"] = [f"{e.host} {e.port}" for e in named if not e.kind and e.port][:3]
    keys = cause.actions
    if cause.key == "dependency":
        kinds = _dependency_kinds(groups, ev.probes) | {e.kind for e in named if e.kind}
        if not kinds and not values["addresses"]:
            kinds = {"postgres"}  # the runbook's own first check
        wanted = {k for kind in kinds for k in _KIND_ACTIONS.get(kind, ())}
        wanted |= {"check_address"} if values["addresses"] else set()
        keys = tuple(k for k in keys if k not in {"check_postgres", "restart_postgres", "check_external",
                                                  "check_address", "redis_info"} or k in wanted)
        if "redis" in kinds and "redis_info" not in keys:
            keys = ("redis_info", *keys)
    return values, keys


def _probe_address(target: str) -> str | None:
    """``host:port`` of a probe's target URL (postgresql://u@h:5432/db, redis://h:6379/0, https://h/x)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(target)
        port = parts.port or {"postgresql": 5432, "postgres": 5432, "redis": 6379, "rediss": 6379,
                              "https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        return None
    return f"{parts.hostname}:{port}" if parts.hostname and port else None


def _dependency_kinds(groups: list[ErrorGroup], probes: list | None = None) -> set[str]:
    """Which dependencies the errors point to: by their words, or by naming a probed address."""
    kinds = set()
    addresses = {a: p.kind for p in probes or [] if (a := _probe_address(p.target or ""))}
    for g in groups:
        for kind, pattern in _DEP_KINDS:
            if pattern.search(g.example_error):
                kinds.add(kind)
        kinds.update(kind for addr, kind in addresses.items() if addr in g.example_error)
    return kinds


def _signals(cause: Cause, groups: list[ErrorGroup], ev: Evidence, log_count: int) -> tuple[list[str], list[str]]:
    """Corroborating and contradicting evidence for one cause, each a sentence an engineer can check."""
    pro: list[str] = []
    con: list[str] = []
    if log_count:
        pro.append(f"worker log: {log_count} failure line(s) of this kind")
    relevant_kinds = set(cause.probe_kinds)
    if cause.key == "dependency":
        pointed = _dependency_kinds(groups, ev.probes)
        relevant_kinds = pointed or relevant_kinds
    for probe in ev.probes:
        if probe.kind not in relevant_kinds:
            continue
        if probe.status in cause.probe_states:
            pro.append(f"{probe.name} probe: {probe.status} ({probe.message})")
        elif probe.status == "ok" and cause.key in ("dependency", "db_exhaustion", "redis_exhaustion"):
            con.append(f"{probe.name} probe: ok now ({probe.message}): the outage may be over, or the tasks reach another host")
    for name in cause.related_alerts:
        if name in ev.related_alerts:
            pro.append(f"related alert {name} is firing")
    if cause.uses_durations and ev.durations:
        types = {g.task_type for g in groups}
        for d in ev.durations:
            if d.task_type not in types:
                continue
            if d.at_timeout_share is not None and d.at_timeout_share >= 0.05:
                pro.append(f"{d.task_type}: {d.at_timeout_share:.0%} of jobs ran to the {d.timeout_s:g} s timeout")
            elif d.p95_s is not None and d.timeout_s and d.p95_s >= 0.8 * d.timeout_s:
                where = "reaches" if d.p95_s >= d.timeout_s else "is near"
                pro.append(f"{d.task_type}: p95 {d.p95_s:.2f} s {where} the {d.timeout_s:g} s timeout")
            elif d.p95_s is not None and d.timeout_s and d.p95_s < 0.5 * d.timeout_s and not d.at_timeout_share:
                con.append(f"{d.task_type}: p95 {d.p95_s:.2f} s is far below the {d.timeout_s:g} s timeout")
    if cause.key == "lease_expired" and ev.servers_alive == 0 and ev.groups:
        pro.append("no asynq server is heartbeating now: the worker is down")
    if cause.key == "lease_expired" and ev.crashes:
        pro.append(f"worker log: {len(ev.crashes)} restart(s) with no clean exit before them (a crash or OOM kill)")
    first = min((g.first_seen for g in groups if g.first_seen), default=None)
    if cause.key in ("handler_not_found", "panic") and ev.deploy_time and first:
        # asynq keeps last_failed_at in whole seconds: allow that much before the restart's exact time
        if first >= ev.deploy_time - 1:
            pro.append(f"first seen {max(0, int(first - ev.deploy_time))} s after the worker restarted (a deploy) at "
                       f"{dt.datetime.fromtimestamp(ev.deploy_time, dt.timezone.utc):%H:%M:%S} UTC")
        elif first < ev.deploy_time - 60:
            con.append("already failing before the last deploy")
    return pro, con


def diagnose(ev: Evidence, *, now: float | None = None, max_groups: int = 5, today: str | None = None) -> Diagnosis:
    """Rank the causes that explain the failures in ``ev``; never raises on missing evidence.

    ``today`` is the UTC date asynq's daily counters are read for (default: the clock's).
    """
    now = clock.now() if now is None else now
    today = today or dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%d")
    primary = ev.groups or ev.log_groups  # Redis first; the logs when Redis could not be read
    total = sum(g.count for g in primary)
    by_cause: dict[str, list[ErrorGroup]] = defaultdict(list)
    for g in primary:
        by_cause[classify(g.example_error, g.fingerprint)].append(g)
    log_by_cause: dict[str, int] = defaultdict(int)
    log_first: dict[str, float] = {}
    for g in ev.log_groups:
        key = classify(g.example_error, g.fingerprint)
        if ev.groups:
            log_by_cause[key] += g.count
        if g.first_seen and (key not in log_first or g.first_seen < log_first[key]):
            log_first[key] = g.first_seen
    occupancy = _occupancy(ev)

    ranked: list[RankedCause] = []
    for cause in CAUSES:
        groups = _sorted_groups(by_cause.get(cause.key, []))
        pro, con = _signals(cause, groups, ev, log_by_cause.get(cause.key, 0))
        failures = sum(g.count for g in groups)
        if not failures and not any("probe" in p or "alert" in p for p in pro):
            continue
        share = failures / total if total else 0.0
        confidence = 0.2 + 0.6 * share + 0.1 * min(len(pro), 3) - 0.2 * len(con)
        if not failures:
            confidence = min(confidence, 0.3)
        confidence = round(max(0.05, min(0.97, confidence)), 2)
        first = min((g.first_seen for g in groups if g.first_seen), default=None)
        if cause.key in log_first and (first is None or log_first[cause.key] < first):
            first = log_first[cause.key]
        types, queues = by_count(groups, "task_type"), by_count(groups, "queue")
        onset = cause_onset(first, list(queues), ev, today=today)
        # single-group commands (inspect a task) act on the alert's own queue and task type when this cause covers them
        mine = [g for g in groups if g.queue == ev.alert.get("queue") and
                (not ev.alert.get("task_type") or g.task_type == ev.alert.get("task_type"))]
        top = (mine or groups or [None])[0]
        values, keys = _cause_values(cause, groups, ev, {
            **ev.settings, "cause": cause.key, "queue": top.queue if top else ev.alert.get("queue"),
            "task_type": top.task_type if top else ev.alert.get("task_type"),
            "fingerprint": top.fingerprint if top else "",
            "task_id": top.example_ids[0] if top and top.example_ids else None})
        ranked.append(RankedCause(
            key=cause.key, title=cause.title, failures=failures, share=round(share, 4), confidence=confidence,
            level=_level(confidence), evidence=pro, contradictions=con, onset=onset.kind, first_seen=first,
            task_types=list(types), queues=list(queues), onset_text=onset.text, type_counts=types,
            groups=[_group_dict(g) for g in groups[:max_groups]], resolution=cause.resolution,
            actions=render_actions(keys, values, groups=[_group_dict(g) for g in groups], occupancy=occupancy),
            in_runbook=cause.in_runbook,
            version_note=cause.note_for(ev.asynq_version) if ev.asynq_version else "",
        ))
    ranked.sort(key=lambda c: (-c.failures, -c.confidence))

    unexplained_groups = _sorted_groups(by_cause.get(UNKNOWN, []))
    unexplained_n = sum(g.count for g in unexplained_groups)
    unexplained = {"failures": unexplained_n, "share": round(unexplained_n / total, 4) if total else 0.0,
                   "top_groups": [_group_dict(g) for g in unexplained_groups[:max_groups]]}

    top = ranked[0] if ranked and ranked[0].failures else None
    if top is not None and ((top.share < 0.2 and top.level == "low") or unexplained["share"] > top.share):
        top = None  # too weak to name, or most failures are unexplained: say unknown and show the data
    task_types = list(by_count(primary, "task_type"))
    verdict = _verdict(top, ranked, total, unexplained, ev)
    severity = str(ev.alert.get("severity") or "warning")
    start, started_from = ev.started_at, "the alert's startsAt"
    if start is None:
        lead = top or next((c for c in ranked if c.first_seen), None)
        if lead is not None and lead.first_seen:
            start = lead.first_seen
            started_from = (f"the first failure of the {'top ' if lead is top else ''}cause ({lead.title}), "
                            "as no alert start is known")
    esc = escalation(severity, start, now, started_from=started_from)
    first_action = next((a["title"] for a in top.actions), "") if top else ""
    return Diagnosis(
        verdict=verdict, top_cause=top.key if top else UNKNOWN, causes=ranked, unexplained=unexplained,
        total_failures=total, task_types=task_types, escalation=esc,
        checklist=checklist(assessed=bool(primary) or ev.failure_ratio is not None, investigated=bool(primary),
                            cause_known=top is not None, mitigated=False,
                            resolved=None if ev.failure_ratio is None else ev.failure_ratio < NORMAL_RATIO),
        incident_update=incident_update(severity=severity,
                                        verdict=f"{top.title} ({top.level} confidence)." if top else "not known yet.",
                                        task_types=task_types,
                                        failure_ratio=ev.failure_ratio, next_update_utc=esc["deadline_utc"],
                                        actions=[first_action] if first_action else []),
        sources_used=[s for s, present in (("redis", ev.groups), ("logs", ev.log_groups), ("probes", ev.probes),
                                           ("metrics", ev.durations or ev.failure_ratio is not None),
                                           ("alertmanager", ev.related_alerts)) if present],
        unavailable=dict(ev.unavailable), failure_ratio=ev.failure_ratio,
        ratios=failure_ratios(ev, {c.key: c.failures for c in ranked}, today=today),
        asynq_version=ev.asynq_version, asynq_version_reason=ev.asynq_version_reason, revoked=ev.revoked,
    )


def _verdict(top: RankedCause | None, ranked: list[RankedCause], total: int, unexplained: dict, ev: Evidence) -> str:
    gaps = f" Not reachable: {', '.join(sorted(ev.unavailable))}." if ev.unavailable else ""
    if ev.revoked:
        gaps = (f" {ev.revoked} task(s) the worker revoked (asynq.RevokeTask) are done, not failures, and are "
                "not counted." + gaps)
    if not total:
        if ev.unavailable.get("asynq") and not ev.log_groups:
            return (f"The failed tasks could not be read ({ev.unavailable['asynq'][:160]}), so the evidence does "
                    "not point to a cause (unknown)." + gaps)
        return ("No failed tasks were found in retry or archived, so the evidence does not point to a cause "
                "(unknown)." + gaps)
    if top is None:
        first = (unexplained["top_groups"] or [{}])[0] or (ranked[0].groups[0] if ranked and ranked[0].groups else {})
        return (f"Cause unknown: {total} failed task(s) match none of the known causes strongly; the largest "
                f"group is {first.get('task_type', '?')}: \"{first.get('example_error', '?')[:120]}\"." + gaps)
    group = top.groups[0]
    brief = onset_brief(top.onset_text)
    onset = f" {brief[0].upper()}{brief[1:]}." if top.onset != "unknown" and brief else ""
    second = next((c for c in ranked[1:] if c.failures), None)
    also = f" Second: {second.title} ({second.share * 100:.1f} %)." if second and second.share >= 0.1 else ""
    return (f"{top.title}: {top.share * 100:.1f} % of failed tasks ({top.failures:,} of {total:,}) on "
            f"{types_text(top.task_types)}, e.g. \"{group['example_error'][:120]}\".{onset}{also}{gaps}")
