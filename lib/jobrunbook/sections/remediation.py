"""Section 06: the remediation plan, dry runs only."""

from __future__ import annotations

from jobrunbook._exceptions import JobrunbookError
from jobrunbook.sections._base import Context, Section, _finish, _unreachable


def remediation_plan(ctx: Context, *, max_plans: int = 8) -> Section:
    """What the recommended actions would change, as dry runs, with the exact command to act."""
    import shlex

    import pandas as pd

    from jobrunbook.asynq.connection import connect
    from jobrunbook.findings import read_findings
    from jobrunbook.remediate import TaskFilter, plan_remediation

    diag = {}
    for name, doc in read_findings(ctx.run_dir).items():
        if str(name).startswith("05"):
            diag = (doc.get("data", doc) if isinstance(doc, dict) else {}).get("diagnosis") or {}
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
    rows = []
    for cause, cmd in commands:
        words = shlex.split(cmd)
        action = words[2]
        opts = {w[2:]: words[i + 1] for i, w in enumerate(words) if w.startswith("--") and i + 1 < len(words)}
        try:
            flt = TaskFilter(queue=opts["queue"], state=opts.get("state"), task_type=opts.get("type"),
                             fingerprint=opts.get("fingerprint"))
            plan = plan_remediation(client, action, flt, run_dir=ctx.run_dir, command=cmd + " (planned by 06)",
                                    archive_cap=ctx.settings.archive_max_size)
            warn = (plan.eviction or {}).get("message", "")
            rows.append({"cause": cause, "action": action, "queue": flt.queue, "state": flt.state,
                         "task type": flt.task_type, "fingerprint": flt.fingerprint,
                         "tasks": plan.count, "batches": plan.batches, "warning": warn,
                         "to act": f"{cmd} --confirm {plan.count}" if plan.count else "nothing matches now",
                         "asynq CLI": "; ".join(plan.asynq_commands(limit=2))})
        except JobrunbookError as exc:
            rows.append({"cause": cause, "action": action, "queue": opts.get("queue"), "state": opts.get("state"),
                         "task type": opts.get("type"), "fingerprint": opts.get("fingerprint"),
                         "tasks": 0, "batches": 0, "warning": str(exc),
                         "to act": "", "asynq CLI": ""})
    table = pd.DataFrame(rows)
    n = int(table["tasks"].sum())
    to_act = [r["to act"] for r in rows if r["to act"] and r["tasks"]]
    reading = (f"{len(rows)} dry run(s): {n} task(s) would change. Nothing was changed; act with the command "
               f"shown, which exports first and asks for the count again.")
    return _finish(ctx, "06_remediation", Section("06_remediation", reading, commands=to_act,
                                                  table=table.drop(columns=["to act", "asynq CLI", "fingerprint"]),
                                                  findings={"plans": rows}))
