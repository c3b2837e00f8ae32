"""Safe remediation: a dry run first, the count confirmed, every task exported before it changes, audited.

    plan = plan_remediation(client, "run", TaskFilter(queue="default", state="retry", task_type="email:send"),
                            run_dir=run_dir)              # the dry run, in the audit log
    result = execute_remediation(client, plan, confirm=plan.count, max_tasks=1000, run_dir=run_dir)
    restore_export(client, result.export_path, lock)      # undo (jobrunbook.asynq.export)

    select.py     TaskFilter and its selection, read in server-side pages
    plan.py       plan_remediation (the dry run) and execute_remediation (under the queue's lock, in batches)
    audit.py      audit.jsonl, the run directory of a manual remediation, export_path, the recovery watch
    leftovers.py  what asynq leaves behind: orphaned hashes (asynq#847), ids that block a re-enqueue (asynq#492)
    fix_state.py  ids whose hash names another state than their set (asynq#1085): found, exported, repaired
    cli.py        `jobrunbook remediate ...`
    restore.py    `jobrunbook restore EXPORT`
"""

from jobrunbook.remediate.audit import (
    actor,
    append_audit,
    default_run_dir,
    export_path,
    read_audit,
    watch_recovery,
)
from jobrunbook.remediate.fix_state import Mismatch, find_mismatches, fix_states
from jobrunbook.remediate.leftovers import Orphan, clean_orphans, find_blocking_ids, find_orphans, list_tasks
from jobrunbook.remediate.plan import (
    VALID_STATES,
    Plan,
    Result,
    check_queue,
    confirm_margin,
    execute_remediation,
    format_plan,
    plan_remediation,
)
from jobrunbook.remediate.select import TaskFilter, parse_when, select_tasks, state_counts

__all__ = [
    "TaskFilter", "parse_when", "select_tasks", "state_counts",
    "Plan", "Result", "VALID_STATES", "plan_remediation", "execute_remediation", "format_plan", "confirm_margin",
    "check_queue", "Mismatch", "find_mismatches", "fix_states",
    "append_audit", "read_audit", "default_run_dir", "export_path", "actor", "watch_recovery",
    "Orphan", "find_orphans", "find_blocking_ids", "clean_orphans", "list_tasks",
]
