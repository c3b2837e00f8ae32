"""Section 06: the remediation plan, dry runs only.

Each cause's remediation is one ``jobrunbook remediate OP --cause KEY``
command (section 05); its dry run here lists every queue, state, task type
and fingerprint it holds, and its total is the cause's task count.
"""

from __future__ import annotations

from jobrunbook._exceptions import JobrunbookError
from jobrunbook.sections._base import Context, Section, _finish, _unreachable

# 06 reads (and classifies) at most this many tasks again for its dry runs, over all of them: a dry run whose
# queues and states would take it past that is counted from 02's aggregate instead, which read every failed
# task of this run and classified each group as 05 does (the command re-selects under each queue's lock anyway)
SELECT_MAX = 10_000


def _scan_size(groups: list[dict], cause: str, states: list[str]) -> int:
    """How many tasks a dry run of ``cause`` reads: every task of each (queue, state) where the cause has one."""
    where = {(g.get("queue"), s) for g in groups if g.get("cause") == cause for s in states if int(g.get(s) or 0)}
    return sum(int(g.get(s) or 0) for g in groups for s in states if (g.get("queue"), s) in where)


def _counted_cause_plan(groups: list[dict], queues: list[dict], cause: str, action: str, states: list[str],
                        cap: int) -> dict:
    """A dry run of a large cause from section 02's groups (each classified as 05 classifies it): its tasks per
    queue and state, its groups, the archive warning, and asynq's whole-state commands where they would touch
    no other cause's task; no task read again."""
    import math

    from jobrunbook.asynq.ops import MAX_BATCH

    where: dict[str, int] = {}
    others: dict[str, int] = {}
    mine = []
    for g in groups:
        for state in states:
            n = int(g.get(state) or 0)
            if not n:
                continue
            key = f"{g.get('queue')}/{state}"
            if g.get("cause") == cause:
                where[key] = where.get(key, 0) + n
                mine.append({"queue": g.get("queue"), "state": state, "task_type": g.get("task_type"), "count": n,
                             "fingerprint": g.get("fingerprint")})
            else:
                others[key] = others.get(key, 0) + n
    count = sum(where.values())
    warning = ""
    if action == "archive":
        for q in queues:
            over = int(q.get("archived") or 0) + where.get(f"{q.get('queue')}/retry", 0) - (cap - 1)
            if over > 0:
                warning += (f"archiving makes asynq trim at least {over:,} task(s) from {q.get('queue')}'s archive "
                            f"(cap {cap:,}): their ids vanish from every state while the hashes stay behind; ")
    verb = {"run": "runall", "archive": "archiveall"}.get(action)
    blocked = {k: n for k, n in others.items() if k in where}
    cli = ("none: " + ", ".join(f"{k} holds {n:,} other task(s)" for k, n in blocked.items()) if blocked or not verb
           else "; ".join(f"asynq task {verb} --queue={k.split('/')[0]} --state={k.split('/')[1]}" for k in where))
    return {"count": count, "batches": math.ceil(count / MAX_BATCH), "where": where, "groups": mine,
            "warning": warning.rstrip("; "), "asynq_cli": cli,
            "note": f"{cause} counted from 02's read of all its {count:,} task(s), not read again"}


def remediation_plan(ctx: Context, *, max_plans: int = 8) -> Section:
    """What the recommended actions would change, as dry runs, with the exact command to act."""
    import shlex

    import pandas as pd

    from jobrunbook.asynq.connection import connect
    from jobrunbook.cli import build_parser
    from jobrunbook.diagnosis.causes import cause_label
    from jobrunbook.findings import read_findings
    from jobrunbook.remediate.audit import append_audit
    from jobrunbook.remediate.cli import cause_plan
    from jobrunbook.sections.diagnosis import run_diagnosis

    # the diagnosis 05 makes, made here from the same findings of 00-04: 06 runs beside 05, not after it
    diag = run_diagnosis(ctx)[0].to_dict()
    asynq = next(((doc.get("data", doc) if isinstance(doc, dict) else {}) for name, doc in
                  read_findings(ctx.run_dir).items() if str(name).startswith("02")), {})
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
    rows, groups, notes = [], [], []
    read = 0  # tasks read again so far by the dry runs
    for cause, failures, cmd in commands:
        words = shlex.split(cmd.replace('"$REDIS_URL"', ctx.redis_url or "redis://unset"))
        row = {"cause": cause, "action": words[2], "command": cmd, "tasks": 0, "cause's tasks": failures,
               "where": "", "groups": [], "warning": "", "to act": "", "asynq CLI": ""}
        args = parser.parse_args(words[1:])
        states = [args.state] if args.state else ["retry"] if words[2] == "archive" else ["retry", "archived"]
        scan = _scan_size(asynq.get("groups") or [], cause, states)
        if read + scan > SELECT_MAX and asynq.get("groups") and args.cause and not (
                args.task_type or args.fingerprint or args.error_contains):
            # a large incident: this cause's tasks counted from 02's read of every failed task (the command
            # re-selects them under each queue's lock when it acts)
            counted = _counted_cause_plan(asynq["groups"], asynq.get("queues") or [], cause, words[2], states,
                                          ctx.settings.archive_max_size)
            notes.append(counted["note"])
            row.update(tasks=counted["count"], where=", ".join(f"{k} {v:,}" for k, v in counted["where"].items()),
                       groups=counted["groups"], warning=counted["warning"], counted_from="02_asynq",
                       **{"to act": f"{cmd} --confirm {counted['count']}", "asynq CLI": counted["asynq_cli"]})
            groups += [{"cause": cause, **g} for g in counted["groups"]]
            append_audit(ctx.run_dir, {"step": "plan", "dry_run": True, "command": cmd + " (planned by 06)",
                                       "action": words[2], "cause": cause, "count": counted["count"],
                                       "by_queue_state": counted["where"], "batches": counted["batches"],
                                       "counted_from": "02_asynq", "note": counted["note"]})
            rows.append(row)
            continue
        read += scan
        try:
            plans = cause_plan(client, args, run_dir=ctx.run_dir,
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
    n_causes = len({r["cause"] for r in rows})
    per = "one per cause" if n_causes == len(rows) else f"for {n_causes} causes (a cause acting on two states has two)"
    reading = (f"{len(rows)} dry run(s), {per}: {n:,} task(s) would change. The top cause's "
               f"({cause_label(top['cause'])}) {covers}. Nothing was changed; act with the command shown, which "
               "exports first and asks for the count again."
               + (f" Counted from section 02's read of every failed task instead of read again: "
                  f"{'; '.join(notes)}." if notes else ""))
    return _finish(ctx, "06_remediation", Section(
        "06_remediation", reading, commands=to_act, table=table,
        kinds={"cause's tasks": "count", "where": "text", "warning": "text"},
        tables={"Every group each dry run holds (queue, state, task type, fingerprint)":
                pd.DataFrame(groups, columns=["cause", "queue", "state", "task_type", "count", "fingerprint"])},
        findings={"plans": rows}))
