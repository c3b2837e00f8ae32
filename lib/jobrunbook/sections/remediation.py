"""Section 06: the remediation plan, dry runs only.

Each cause's remediation is one ``jobrunbook remediate OP --cause KEY``
command (section 05); its dry run here lists every queue, state, task type
and fingerprint it holds, and its total is the cause's task count.
"""

from __future__ import annotations

from jobrunbook._exceptions import JobrunbookError
from jobrunbook.sections._base import Context, Section, _finish, _unreachable


def remediation_plan(ctx: Context, *, max_plans: int = 8) -> Section:
    """What the recommended actions would change, as dry runs, with the exact command to act."""
    import shlex

    import pandas as pd

    from jobrunbook.asynq.connection import connect
    from jobrunbook.cli import build_parser
    from jobrunbook.diagnosis.causes import cause_label
    from jobrunbook.findings import read_findings
    from jobrunbook.remediate.cli import cause_plan

    diag = {}
    for name, doc in read_findings(ctx.run_dir).items():
        if str(name).startswith("05"):
            diag = (doc.get("data", doc) if isinstance(doc, dict) else {}).get("diagnosis") or {}
    # (cause, its task count, command): the ranked causes' remediations, the top cause's first
    commands = [(c.get("key", ""), c.get("failures", 0), cmd) for c in diag.get("causes", [])
                for a in c.get("actions", []) if a.get("changes_state") for cmd in a.get("commands", [])
                if cmd.startswith("jobrunbook remediate ")][:max_plans]
    if not commands:
        return _finish(ctx, "06_remediation", Section("06_remediation", "No remediation to plan: no action changes tasks."))
    try:
        client = connect(ctx.redis_connect_url, timeout=ctx.timeout)
    except JobrunbookError as exc:
        return _finish(ctx, "06_remediation", _unreachable("06_remediation", "asynq's Redis", exc))
    parser = build_parser()
    rows, groups = [], []
    for cause, failures, cmd in commands:
        words = shlex.split(cmd.replace('"$REDIS_URL"', ctx.redis_url or "redis://unset"))
        row = {"cause": cause, "action": words[2], "command": cmd, "tasks": 0, "cause's tasks": failures,
               "where": "", "groups": [], "warning": "", "to act": "", "asynq CLI": ""}
        try:
            plans = cause_plan(client, parser.parse_args(words[1:]), run_dir=ctx.run_dir,
                               command=cmd + " (planned by 06)", archive_cap=ctx.settings.archive_max_size)
            d = plans.to_dict()
            row.update(tasks=plans.count, where=", ".join(f"{k} {v:,}" for k, v in d["by_queue_state"].items()),
                       groups=d["groups"],
                       warning="; ".join(p.eviction["message"] for p in plans.plans if p.eviction))
            row["to act"] = f"{cmd} --confirm {plans.count}"
            row["asynq CLI"] = "; ".join(d["asynq_commands"]) if len(d["asynq_commands"]) == len(plans.plans) else (
                "none: " + ", ".join(f"{k} holds {v} other task(s)" for k, v in d["others_in_state"].items() if v))
            groups += [{"cause": cause, **g} for g in d["groups"]]
        except JobrunbookError as exc:
            row["warning"] = str(exc)
        rows.append(row)
    table = pd.DataFrame([{k: r[k] for k in ("cause", "action", "tasks", "cause's tasks", "where", "warning")}
                          for r in rows])
    n = int(table["tasks"].sum())
    to_act = [r["to act"] for r in rows if r["to act"] and r["tasks"]]
    top = rows[0]
    own = top["cause's tasks"]
    covers = ("covers exactly its" if top["tasks"] == own else f"matches {top['tasks']:,} of its") + \
        f" {own:,} failed task(s)"
    reading = (f"{len(rows)} dry run(s), one per cause: {n:,} task(s) would change. The top cause's "
               f"({cause_label(top['cause'])}) {covers}. Nothing was changed; act with the command shown, which "
               "exports first and asks for the count again.")
    return _finish(ctx, "06_remediation", Section(
        "06_remediation", reading, commands=to_act, table=table,
        kinds={"cause's tasks": "count", "where": "text", "warning": "text"},
        tables={"Every group each dry run holds (queue, state, task type, fingerprint)":
                pd.DataFrame(groups, columns=["cause", "queue", "state", "task_type", "count", "fingerprint"])},
        findings={"plans": rows}))
