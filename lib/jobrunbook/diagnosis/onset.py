"""When a cause began, read from the data: its first failure against the alert's start, the worker's
(re)starts in its log, and asynq's daily counters of the week.

    new since 09:48:12 UTC, 2 s after the worker restarted (a deploy) at 09:48:10, 2 min before the alert fired
    chronic: failing since 06:10:00 UTC, 3 h 38 min before the alert fired
    chronic: the same share fails every day this week; asynq's counters (critical: 3.0 % failed a day this
    week, 3.2 % today)

The counters are per queue, not per cause: they say whether the cause's
queues fail like this every day, which the failed tasks alone cannot (asynq
keeps a retried task's last failure only).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from statistics import median

from jobrunbook.diagnosis.escalation import format_delta
from jobrunbook.diagnosis.evidence import Evidence

__all__ = ["Onset", "cause_onset", "onset_brief", "NEW_WINDOW_S", "AT_RESTART_S", "week_of"]

# an error group first seen less than this before the alert started is "new"
NEW_WINDOW_S = 30 * 60
# a first failure this soon after a (re)start of the worker began with it
AT_RESTART_S = 5 * 60


@dataclass(frozen=True)
class Onset:
    kind: str  # new | chronic | unknown
    text: str
    first: float | None = None  # the cause's first failure the data shows (unix s)


def _hms(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%H:%M:%S")


def _ago(seconds: float) -> str:
    return format_delta(seconds).removeprefix("in ")


def _at_restart(first: float, ev: Evidence) -> str:
    """", 2 s after the worker restarted (a deploy) at 09:48:10" when the first failure followed a (re)start."""
    starts = [(t, "restarted", "a deploy" if graceful else "no clean exit before it: a crash")
              for t, graceful in ev.restarts]
    if ev.worker_started and not any(abs(t - ev.worker_started) < 1 for t, _, _ in starts):
        starts.append((ev.worker_started, "started", ""))
    # asynq keeps last_failed_at in whole seconds: a failure may read up to 1 s before the start's exact time
    near = [s for s in starts if s[0] - 1 <= first <= s[0] + AT_RESTART_S]
    if not near:
        return ""
    t, what, how = max(near, key=lambda s: s[0])
    return f", {_ago(max(0.0, first - t)) if first - t >= 1 else '0 s'} after the worker {what}" \
           f"{f' ({how})' if how else ''} at {_hms(t)}"


def week_of(ev: Evidence, queues: list[str], today: str | None = None) -> dict | None:
    """asynq's daily counters of ``queues``: today's failed share and the days before (those with work)."""
    days: dict[str, list[int]] = {}
    for q in queues:
        for d in ev.daily.get(q, []):
            counts = days.setdefault(d["date"], [0, 0])
            counts[0] += d["processed"]
            counts[1] += d["failed"]
    if not days:
        return None
    newest = today or max(days)
    before = [(date, pf) for date, pf in sorted(days.items()) if date < newest and pf[0] > 0]
    now = days.get(newest, [0, 0])
    return {"today": newest, "today_ratio": now[1] / now[0] if now[0] else None,
            "days": len(before), "failing_days": sum(1 for _, pf in before if pf[1] > 0),
            "median_ratio": median(pf[1] / pf[0] for _, pf in before) if before else None}


def onset_brief(text: str) -> str:
    """The onset for a headline: its first clause, without the week's counters (said in full beside it)."""
    return text.split("; ", 1)[0]


def _week_text(week: dict | None, queues: list[str]) -> tuple[str, str]:
    """("chronic" | "new" | "", a sentence) from the week's counters; ("", "") when they say nothing."""
    if not week or week["days"] < 3 or week["median_ratio"] is None:
        return "", ""
    where = (f"{', '.join(queues[:3])}{' and others' if len(queues) > 3 else ''}: " if queues else "")
    today, usual = week["today_ratio"], week["median_ratio"]
    today_text = f", {today * 100:.1f} % today" if today is not None else ""
    text = f"asynq's counters ({where}{usual * 100:.1f} % failed a day this week{today_text})"
    if week["failing_days"] == week["days"] and (today is None or today <= 2 * max(usual, 0.01)):
        return "chronic", text
    if today is not None and today > 2 * max(usual, 0.01):
        return "new", text
    return "", text


def cause_onset(first: float | None, queues: list[str], ev: Evidence, *, today: str | None = None) -> Onset:
    """The onset of a cause whose first failure the data shows at ``first``, on ``queues`` (most failed first)."""
    start = ev.started_at
    week_kind, week_text = _week_text(week_of(ev, queues, today), queues)
    tail = f"; {week_text}" if week_text else ""
    if first is None:
        if week_kind == "chronic":
            return Onset("chronic", f"chronic: the same share fails every day this week; {week_text}")
        if week_kind == "new":
            return Onset("new", f"new today; {week_text}")
        return Onset("unknown", "unknown: the data shows no failure time for it" + tail)
    at = f"{_hms(first)} UTC"
    restart = _at_restart(first, ev)
    if start is not None:
        if first >= start - NEW_WINDOW_S:
            when = ("as the alert fired" if abs(first - start) < 60 else
                    f"{_ago(start - first)} before the alert fired" if first < start else
                    f"{_ago(first - start)} after the alert fired")
            return Onset("new", f"new since {at}{restart}, {when}{tail}", first)
        return Onset("chronic", f"chronic: failing since {at}, {_ago(start - first)} before the alert fired{tail}",
                     first)
    if restart:
        return Onset("new", f"new since {at}{restart}{tail}", first)
    if week_kind == "chronic":
        return Onset("chronic", f"chronic: the same share fails every day this week, the oldest failure kept is "
                                f"from {at}; {week_text}", first)
    if week_kind == "new":
        return Onset("new", f"new since {at}, far above the week's failures; {week_text}", first)
    if ev.log_from is not None and first - ev.log_from >= NEW_WINDOW_S:
        return Onset("new", f"new since {at}: none in the {_ago(first - ev.log_from)} of worker log before it{tail}",
                     first)
    return Onset("unknown", f"since {at} (its first failure kept); no alert start, restart or earlier history "
                            f"to tell new from chronic{tail}", first)
