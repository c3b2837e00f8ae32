"""Section 02: failing task types, from asynq's Redis (runbook step 2), read as the worker's asynq release.

The reading says which asynq version it assumed and why (``asynq_version``
configured, or detected from the data: ``jobrunbook.asynq.versions``), and
the data health (``jobrunbook.asynq.hazards``) with the exact repair for each
problem found.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jobrunbook._exceptions import JobrunbookError
from jobrunbook.sections._base import Context, Section, _finish, _unreachable, gap

# What a run looks at beyond the ids of every state (all checked, retry and archived in the aggregate's own
# pass): the task hashes per queue searched for orphans, and the keys searched for unregistered queues. Both are
# SCANs of the whole keyspace (a check per hash for orphans), bounded so the section stays close to the
# aggregate's time on a large incident; `jobrunbook inspect` does the whole of both.
HEALTH_MAX_HASHES = 20_000
HEALTH_MAX_KEYS = 50_000


def task_timeouts(insp: Any, queues: list[str], *, sample: int = 100) -> dict[str, int]:
    """Each failing task type's timeout (seconds) as its tasks carry it, from a first page of retry/archived."""
    out: dict[str, int] = {}
    for q in queues:
        for state in ("retry", "archived"):
            for t in insp.list_tasks(q, state, size=sample):
                if t.timeout_seconds:
                    out[t.type] = max(out.get(t.type, 0), int(t.timeout_seconds))
    return out


def failing_task_types(ctx: Context) -> Section:
    """Runbook step 2: failed tasks (retry + archived) by queue, task type and error."""
    import pandas as pd

    from jobrunbook.asynq.connection import connect
    from jobrunbook.asynq.inspector import Inspector
    from jobrunbook.chartspec import figure
    from jobrunbook.diagnosis.causes import classify

    if not ctx.redis_url:
        return _finish(ctx, "02_asynq", Section("02_asynq", "No Redis URL configured (JOBRUNBOOK_REDIS_URL).",
                                                gaps=[gap("no Redis configured", "asynq's tasks were not read",
                                                          "export JOBRUNBOOK_REDIS_URL=redis://HOST:6379/0")]))
    from jobrunbook.asynq.hazards import check_data_health

    s = ctx.settings
    try:
        insp = Inspector(connect(ctx.redis_connect_url, timeout=ctx.timeout))
        queues = [insp.queue_info(q) for q in insp.queues()]
        names = [q.queue for q in queues]
        version = insp.version(names, configured=s.asynq_version)
        # the aggregate (its pass also checks every retry and archived id's hash) and the rest of the data
        # health at once: Redis answers the scans while this kernel decodes the failed tasks
        with ThreadPoolExecutor(1, thread_name_prefix="jobrunbook-aggregate") as ex:
            reading = ex.submit(insp.failures)
            health = check_data_health(insp.client, names, version, archive_cap=s.archive_max_size,
                                       redis_url=ctx.redis_url, max_hashes=HEALTH_MAX_HASHES,
                                       max_scan_keys=HEALTH_MAX_KEYS, aggregate=reading)
            agg = reading.result()
        history = [insp.history(q, days=7) for q in names]
        servers = insp.servers()
        timeouts = task_timeouts(insp, names)
    except JobrunbookError as exc:
        return _finish(ctx, "02_asynq", _unreachable("02_asynq", "asynq's Redis", exc))
    records = agg.to_records()
    for r in records:
        r["cause"] = classify(r["example_error"], r["fingerprint"])
    groups = pd.DataFrame(records, columns=["queue", "task_type", "cause", "count", "retry", "archived",
                                            "fingerprint", "first_failed_at_iso", "last_failed_at_iso", "example_ids",
                                            "example_error", "first_failed_at", "last_failed_at", "distinct_errors"])
    counts = pd.DataFrame([q.to_dict() for q in queues])
    if not counts.empty:  # the queue with the most failed tasks first, in the table and the chart
        counts = counts.assign(_failed=counts["retry"] + counts["archived"]).sort_values(
            ["_failed", "queue"], ascending=[False, True], ignore_index=True).drop(columns="_failed")
    state_cols = ["queue", "pending", "active", "scheduled", "retry", "archived", "completed", "paused",
                  "processed_today", "failed_today"]
    daily = pd.DataFrame([{"queue": h.queue, "date": d.date, "processed": d.processed, "failed": d.failed}
                          for h in history for d in h.days])
    charts, captions = {}, {}
    if not groups.empty:
        charts["failures_by_cause"] = figure("failures_by_cause_chart",
                                             groups.groupby(["task_type", "cause"], as_index=False)["count"].sum())
        captions["failures_by_cause"] = ("Which task types fail, and why: each bar is a type's failed tasks, "
                                         "coloured by cause as in every table and chart of this report.")
    if not counts.empty:
        charts["queue_depth"] = figure("queue_depth_chart", counts[["queue", "retry", "archived"]])
        captions["queue_depth"] = ("Tasks waiting to retry and archived per queue: retry drains by itself once the "
                                   "cause is fixed; archived tasks need a decision (re-run or delete).")
    if not daily.empty:
        charts["daily_history"] = figure("daily_history_chart", daily)
        captions["daily_history"] = ("asynq's own daily counters: a failed share (line) far above the days before "
                                     "means a new problem, a steady one a chronic one.")
    total = int(groups["count"].sum()) if not groups.empty else 0
    by_type = (groups.groupby(["queue", "task_type"])["count"].sum().reset_index()
               .sort_values(["count", "queue", "task_type"], ascending=[False, True, True])
               .set_index(["queue", "task_type"])["count"] if total else None)
    if total:
        (q, t), n = next(iter(by_type.items()))
        reading = (f"{total} failed task(s) in retry and archived across {len(by_type)} task type(s); "
                   f"most: {t} on {q} ({n}), \"{groups.iloc[0]['example_error'][:90]}\".")
    else:
        reading = "No failed task in retry or archived."
    if not agg.complete:
        reading += f" Partial read: {agg.incomplete_reason}."
    reading += " " + version.sentence()
    repairs = health["repairs"]
    if health["redis_hazard"]:
        reading += " " + health["redis_hazard"] + "."
    if repairs:
        reading += " Data health: " + "; ".join(f"{r['problem']} in {r['queue']} ({r['count']:,})" for r in repairs) + \
            " (repairs below, each a dry run first)."
    bounded = [q for q, h in health["queues"].items() if not h.get("hashes_complete", True)]
    if bounded or not health["unregistered"]["complete"]:
        reading += (f" On this many tasks the keyspace was sampled: orphaned hashes looked for in the first "
                    f"{HEALTH_MAX_HASHES:,} task hashes of {', '.join(bounded) or 'no queue'}, unregistered queues in "
                    f"{health['unregistered']['keys_scanned']:,} keys (`jobrunbook inspect --redis-url "
                    f"{ctx.redis_url}` checks them all).")
    # every group: the table shows the first rows and says how many more (all of them are in the findings)
    shown = groups[["queue", "task_type", "cause", "count", "retry", "archived", "distinct_errors", "last_failed_at_iso",
                    "example_error"]].rename(columns={"last_failed_at_iso": "last failed",
                                                      "distinct_errors": "distinct errors"})
    shown["example_error"] = shown["example_error"].str.slice(0, 140)
    return _finish(ctx, "02_asynq", Section(
        "02_asynq", reading, table=shown, kinds={"distinct errors": "count"},
        gaps=[] if agg.complete else [gap("asynq's Redis read in part", str(agg.incomplete_reason),
                                          f"jobrunbook inspect --redis-url {ctx.redis_url}")],
        tables={"Tasks per queue and state (asynq's own counts)": counts[[c for c in state_cols if c in counts.columns]],
                "Data health: what asynq left inconsistent, each with its repair below":
                pd.DataFrame([{k: r[k] for k in ("queue", "problem", "count", "why")} for r in repairs])},
        commands=[c for r in repairs for c in r["commands"]],
        charts=charts, captions=captions,
        findings={"groups": records, "queues": counts, "history": daily, "servers": [s.to_dict() for s in servers],
                  "anomalies": agg.anomalies, "tasks": agg.tasks, "timeouts": timeouts,
                  "asynq_version": version.to_dict(), "data_health": health,
                  "task_types": by_type.reset_index().to_dict("records") if total else []}))
