"""Section 06: the remediation plan, dry runs only."""

from __future__ import annotations

from jobrunbook._exceptions import JobrunbookError
from jobrunbook.sections._base import Context, Section, _finish, _unreachable

# A (queue, state) holding more tasks than this is not read again for a dry run: its count comes from 02's
# aggregate, which read every failed task of this run (the command re-selects under the queue's lock anyway)
SELECT_MAX = 20_000


def _counted_plan(groups: list[dict], queues: list[dict], action: str, flt, size: int, cap: int) -> dict:
    """A dry run of a large selection from section 02's groups: the count, batches, sample ids, the archive
    warning; no task read again."""
    import math

    from jobrunbook.asynq.ops import MAX_BATCH

    mine = [g for g in groups if g.get("queue") == flt.queue and g.get("task_type") == flt.task_type
            and g.get("fingerprint") == flt.fingerprint]
    count = int(sum(int(g.get(flt.state) or 0) for g in mine))
    ids = [i for g in mine for i in (g.get("example_ids") or [])][:2]
    verb = {"run": "run", "archive": "archive", "delete": "delete"}[action]
    cli = [f"asynq task {verb} --queue={flt.queue} --id={i}" for i in ids]
    if count > len(ids):
        cli.append(f"# ... {count - len(ids)} more, one command per task: asynq's CLI has no filter")
    warning = ""
    if action == "archive":
        archived = next((int(q.get("archived") or 0) for q in queues if q.get("queue") == flt.queue), 0)
        over = archived + count - (cap - 1)
        if over > 0:
            warning = (f"archiving {count} task(s) makes asynq trim at least {over} task(s) from the archive "
                       f"(cap {cap:,}): their ids vanish from every state while the hashes stay behind")
    return {"count": count, "batches": math.ceil(count / MAX_BATCH), "warning": warning, "asynq_cli": cli,
            "note": f"counted from 02's read of all {size:,} {flt.state} tasks of {flt.queue}, not read again"}


def remediation_plan(ctx: Context, *, max_plans: int = 8) -> Section:
    """What the recommended actions would change, as dry runs, with the exact command to act."""
    import shlex

    import pandas as pd

    from jobrunbook.asynq import keys
    from jobrunbook.asynq.connection import connect
    from jobrunbook.findings import read_findings
    from jobrunbook.remediate import TaskFilter, plan_remediation
    from jobrunbook.remediate.audit import append_audit
    from jobrunbook.sections.diagnosis import run_diagnosis

    # the diagnosis 05 makes, made here from the same findings of 00-04: 06 runs beside 05, not after it
    diag = run_diagnosis(ctx)[0].to_dict()
    asynq = next(((doc.get("data", doc) if isinstance(doc, dict) else {}) for name, doc in
                  read_findings(ctx.run_dir).items() if str(name).startswith("02")), {})
    # (cause, command): the ranked causes' remediations, the top cause's first
    commands = [(c.get("key", ""), cmd) for c in diag.get("causes", []) for a in c.get("actions", [])
                if a.get("changes_state") for cmd in a.get("commands", [])
                if cmd.startswith("jobrunbook remediate ")][:max_plans]
    if not commands:
        return _finish(ctx, "06_remediation", Section("06_remediation", "No remediation to plan: no action changes tasks."))
    try:
        client = connect(ctx.redis_connect_url, timeout=ctx.timeout)
    except JobrunbookError as exc:
        return _finish(ctx, "06_remediation", _unreachable("06_remediation", "asynq's Redis", exc))
    rows, notes = [], []
    for cause, cmd in commands:
        words = shlex.split(cmd)
        action = words[2]
        opts = {w[2:]: words[i + 1] for i, w in enumerate(words) if w.startswith("--") and i + 1 < len(words)}
        try:
            flt = TaskFilter(queue=opts["queue"], state=opts.get("state"), task_type=opts.get("type"),
                             fingerprint=opts.get("fingerprint"))
            size = int(client.zcard(keys.state_key(flt.queue, flt.state))) if flt.state in keys.ZSET_STATES else 0
            if size > SELECT_MAX and asynq.get("groups") and flt.state in keys.FAILED_STATES:
                counted = _counted_plan(asynq["groups"], asynq.get("queues") or [], action, flt, size,
                                        ctx.settings.archive_max_size)
                count, batches, warn, cli = counted["count"], counted["batches"], counted["warning"], counted["asynq_cli"]
                notes.append(counted["note"])
                append_audit(ctx.run_dir, {"step": "plan", "dry_run": True, "command": cmd + " (planned by 06)",
                                           "action": action, "filter": flt.to_dict(), "count": count,
                                           "batches": batches, "counted_from": "02_asynq", "note": counted["note"]})
            else:
                plan = plan_remediation(client, action, flt, run_dir=ctx.run_dir, command=cmd + " (planned by 06)",
                                        archive_cap=ctx.settings.archive_max_size)
                count, batches, warn = plan.count, plan.batches, (plan.eviction or {}).get("message", "")
                cli = plan.asynq_commands(limit=2)
            rows.append({"cause": cause, "action": action, "queue": flt.queue, "state": flt.state,
                         "task type": flt.task_type, "fingerprint": flt.fingerprint,
                         "tasks": count, "batches": batches, "warning": warn,
                         "to act": f"{cmd} --confirm {count}" if count else "nothing matches now",
                         "asynq CLI": "; ".join(cli)})
        except JobrunbookError as exc:
            rows.append({"cause": cause, "action": action, "queue": opts.get("queue"), "state": opts.get("state"),
                         "task type": opts.get("type"), "fingerprint": opts.get("fingerprint"),
                         "tasks": 0, "batches": 0, "warning": str(exc),
                         "to act": "", "asynq CLI": ""})
    table = pd.DataFrame(rows)
    n = int(table["tasks"].sum())
    to_act = [r["to act"] for r in rows if r["to act"] and r["tasks"]]
    reading = (f"{len(rows)} dry run(s): {n} task(s) would change. Nothing was changed; act with the command "
               f"shown, which exports first and asks for the count again."
               + (f" {len(notes)} of them counted from section 02's read of every failed task instead of read "
                  f"again ({'; '.join(sorted(set(notes)))})." if notes else ""))
    return _finish(ctx, "06_remediation", Section("06_remediation", reading, commands=to_act,
                                                  table=table.drop(columns=["to act", "asynq CLI", "fingerprint"]),
                                                  findings={"plans": rows}))
