"""The runbook's escalation clock, its Quick Response Checklist, and a draft incident update."""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["ESCALATION", "escalation", "checklist", "incident_update", "format_delta"]

# Escalation Timeline table of the runbook: severity -> (respond within, escalate after)
ESCALATION: dict[str, tuple[dt.timedelta, dt.timedelta]] = {
    "warning": (dt.timedelta(minutes=30), dt.timedelta(hours=1)),
    "critical": (dt.timedelta(0), dt.timedelta(minutes=15)),
}
# Escalation Path of the runbook
PATH = ("On-call engineer (PagerDuty / #oncall)", "Team lead / Senior engineer (@team-lead)", "Engineering manager")


def format_delta(seconds: float) -> str:
    """'in 12 min', '3 min ago', 'in 1 h 05 min'."""
    future = seconds >= 0
    s = int(abs(seconds))
    h, rem = divmod(s, 3600)
    m = rem // 60
    text = f"{h} h {m:02d} min" if h else (f"{m} min" if m else f"{s} s")
    return f"in {text}" if future else f"{text} ago"


def escalation(severity: str | None, started_at: float | None, now: float, *,
               started_from: str = "the alert's startsAt") -> dict[str, Any]:
    """When to escalate and to whom, counted from the incident's start (unix seconds): the alert's startsAt,
    else what ``started_from`` names (the top cause's first failure); from ``now`` when neither is known."""
    sev = (severity or "warning").lower()
    if sev not in ESCALATION:
        sev = "warning"
    respond, escalate = ESCALATION[sev]
    start = started_at if started_at is not None else now
    if started_at is None:
        started_from = "now: neither the alert's start nor a failure time is known"
    deadline = start + escalate.total_seconds()
    respond_by = start + respond.total_seconds()
    overdue = now >= deadline
    level = 1 + (1 if overdue else 0) + (1 if now >= deadline + escalate.total_seconds() + 1800 else 0)
    level = min(level, len(PATH))
    if overdue:
        next_step = f"Escalate now to {PATH[1]}: the {sev} alert has been unresolved past {format_delta(deadline - now)[:-4]}."
    elif sev == "critical":
        next_step = f"Investigate now; escalate to {PATH[1]} if unresolved by {_utc(deadline)}."
    else:
        next_step = f"Investigate by {_utc(respond_by)}; escalate to {PATH[1]} if unresolved by {_utc(deadline)}."
    remaining = deadline - now
    return {
        "severity": sev,
        "started_at_utc": _utc(start) if started_at is not None else None,
        "started_from": started_from,
        "remaining_s": int(remaining),
        "remaining": (f"{format_delta(remaining).removeprefix('in ')} left" if remaining > 0 else
                      f"overdue by {format_delta(remaining).removesuffix(' ago')}"),
        "respond_by_utc": _utc(respond_by),
        "deadline_utc": _utc(deadline),
        "deadline_relative": format_delta(deadline - now),
        "overdue": overdue,
        "who": PATH[1],
        "current_level": PATH[level - 1],
        "path": list(PATH),
        "next_step": next_step,
    }


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def checklist(*, assessed: bool, investigated: bool, cause_known: bool, mitigated: bool | None,
              resolved: bool | None, user_facing: bool | None = None) -> list[dict[str, str]]:
    """The runbook's Quick Response Checklist, each step with the status the evidence gives it."""

    def status(value: bool | None, done: str = "done", todo: str = "to do") -> str:
        return "unknown" if value is None else (done if value else todo)

    return [
        {"step": "Acknowledge", "status": "to do", "how": "Acknowledge the page (immediately for critical)"},
        {"step": "Assess", "status": status(assessed), "how": "Failure rate and affected task types: section 00 and 02"},
        {"step": "Investigate", "status": status(investigated and cause_known, "done", "in progress"),
         "how": "Failing tasks and error messages: sections 01-04, verdict above"},
        {"step": "Mitigate", "status": status(mitigated), "how": "Recommended actions below; dry run first"},
        {"step": "Communicate", "status": "to do" if user_facing is not False else "not needed",
         "how": "Post the draft update in #incidents if user-facing"},
        {"step": "Document", "status": "done" if investigated else "to do",
         "how": "rca.md in the run directory records the error patterns found"},
        {"step": "Resolve", "status": status(resolved), "how": "Failure rate back under 5 %"},
    ]


def incident_update(*, severity: str, verdict: str, task_types: list[str], failure_ratio: float | None,
                    next_update_utc: str, actions: list[str]) -> str:
    """A short message for #incidents: what is failing, impact, what we do, next update."""
    ratio = f"{failure_ratio:.0%}" if failure_ratio is not None else "an elevated share"
    types = ", ".join(task_types[:5]) or "background jobs"
    doing = actions[0] if actions else "investigating"
    return (
        f"[{severity.upper()}] Job failures: {ratio} of {types} jobs are failing. "
        f"Impact: background operations for these job types are delayed or not done (emails, payments, reports). "
        f"Likely cause: {verdict} Now: {doing}. Next update by {next_update_utc}."
    )
