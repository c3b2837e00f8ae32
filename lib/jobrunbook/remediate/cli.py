"""`jobrunbook remediate ...`: dry run by default, acts only with --confirm N.

    jobrunbook remediate run --queue default --state retry --type email:send \\
        --error-contains "connection refused" --failed-since 1h          # dry run
    jobrunbook remediate run ... --confirm 42 --max-tasks 100             # acts
    jobrunbook remediate run --cause dependency                           # every queue, retry and archived: the
                                                                          # tasks the diagnosis counts for the cause
    jobrunbook remediate archive-all --queue default --state retry --confirm 55
    jobrunbook remediate clear-retry --queue default                      # archive retry, cap-checked
    jobrunbook remediate purge-archived --queue default --older-than-days 30
    jobrunbook remediate ls --queue default --state archived
    jobrunbook remediate orphans --queue default [--confirm N]
    jobrunbook remediate blocking-ids --queue default [--confirm N]
    jobrunbook remediate fix-state --queue default [--confirm N]          # ids whose hash names another state
    jobrunbook remediate verify --queue default --for 300
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from jobrunbook import clock
from jobrunbook._exceptions import ConfigError
from jobrunbook._paths import absolute
from jobrunbook.config_cli import add_source_flags, resolve_sources

__all__ = ["add_arguments", "command", "cause_plan"]
_ACTIONS = {"run": "run", "archive": "archive", "delete": "delete",
            "run-all": "run", "archive-all": "archive", "delete-all": "delete",
            "clear-retry": "archive", "purge-archived": "delete", "blocking-ids": "delete"}


def _common(p: argparse.ArgumentParser, *, queue_required: bool = True) -> None:
    add_source_flags(p, "redis")
    p.add_argument("--queue", "-q", required=queue_required,
                   help="asynq queue" + ("" if queue_required else " (with --cause: default every queue)"))
    p.add_argument("--run-dir", type=absolute, default=None, help="run directory for audit.jsonl and exports/ "
                                                   "(default: a new outputs/manual-<UTC stamp>/)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _acting(p: argparse.ArgumentParser) -> None:
    p.add_argument("--confirm", type=int, default=None, metavar="N",
                   help="act: the task count the dry run showed (without it: dry run only)")
    p.add_argument("--max-tasks", type=int, default=10_000, help="refuse when more tasks match (default 10000)")
    p.add_argument("--batch-size", type=int, default=1000, help="tasks per Lua call, at most 1000")
    p.add_argument("--allow-archive-eviction", action="store_true",
                   help="archive even if asynq's archive cap (archive_max_size, default 10,000) trims tasks "
                        "(they are exported first)")
    p.add_argument("--verify-for", type=float, default=0, metavar="SECONDS",
                   help="after acting, watch the failure ratio and retry depth this long")
    p.add_argument("--verify-interval", type=float, default=15)


def _selection(p: argparse.ArgumentParser, *, state_only: bool = False) -> None:
    p.add_argument("--state", "-s", required=state_only,
                   help="retry | archived | scheduled | pending | completed (asynq has no 'failed')")
    if state_only:
        return
    p.add_argument("--id", "-i", action="append", default=[], dest="ids", help="task id (repeatable)")
    p.add_argument("--type", "-t", dest="task_type", help="task type, e.g. email:send")
    p.add_argument("--fingerprint", help="error fingerprint (as `jobrunbook inspect` groups them)")
    p.add_argument("--cause", help="the tasks of one cause of `jobrunbook diagnose` (its key: dependency, "
                                   "rate_limit, ...), classified as the diagnosis does; across every queue unless "
                                   "--queue, in retry and archived unless --state")
    p.add_argument("--error-contains", help="substring of the task's last error")
    p.add_argument("--failed-since", help="last failure at or after: 1h, 30m, 2d, ISO time or unix s")
    p.add_argument("--failed-before", help="last failure before: same forms")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name in ("run", "archive", "delete"):
        p = sub.add_parser(name, help=f"{name} tasks by id or by filter")
        _common(p, queue_required=False), _selection(p), _acting(p)
    for name in ("run-all", "archive-all", "delete-all"):
        p = sub.add_parser(name, help=f"{name.split('-')[0]} every task of one state, in batches")
        _common(p), _selection(p, state_only=True), _acting(p)
    p = sub.add_parser("clear-retry", help="archive every retry task (with the archive-cap check)")
    _common(p), _acting(p)
    p = sub.add_parser("purge-archived", help="delete archived tasks older than N days (exported first)")
    _common(p), _acting(p)
    p.add_argument("--older-than-days", type=float, required=True)
    p = sub.add_parser("ls", help="list retry or archived tasks")
    _common(p)
    p.add_argument("--state", "-s", default="retry")
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--size", type=int, default=30)
    p = sub.add_parser("orphans", help="find (and with --confirm, export and delete) orphaned task hashes")
    _common(p), _acting(p)
    p = sub.add_parser("fix-state", help="make each hash name the state its id is in (asynq#1085); exported first")
    _common(p), _acting(p)
    p = sub.add_parser("blocking-ids", help="archived/orphaned tasks whose fixed id blocks re-enqueueing")
    _common(p), _acting(p)
    p = sub.add_parser("verify", help="watch the failure ratio and retry depth; record if back to normal")
    _common(p)
    p.add_argument("--for", dest="duration", type=float, default=300, metavar="SECONDS")
    p.add_argument("--interval", type=float, default=15)


def _print(args, data, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def command(args: argparse.Namespace) -> int:
    from jobrunbook.asynq.connection import connect
    from jobrunbook.remediate.audit import append_audit, default_run_dir, watch_recovery
    from jobrunbook.remediate.leftovers import clean_orphans, find_blocking_ids, list_tasks
    from jobrunbook.remediate.plan import execute_remediation, format_plan, plan_remediation
    from jobrunbook.remediate.select import TaskFilter, parse_when

    src = resolve_sources(args)
    client = connect(src.settings.redis_url_with_secret(src.env))
    run_dir = args.run_dir or str(default_run_dir())
    cmdline = "jobrunbook remediate " + " ".join(shlex.quote(a) for a in sys.argv[2:] if a) if sys.argv else ""
    action = args.action
    if action == "ls":
        rows = list_tasks(client, args.queue, args.state, page=args.page, size=args.size)
        _print(args, rows, "\n".join(json.dumps(r, default=str) for r in rows) or "(none)")
        return 0
    if action == "verify":
        res = watch_recovery(client, args.queue, duration_s=args.duration, interval_s=args.interval)
        append_audit(run_dir, {"step": "verify", "command": cmdline, **res})
        _print(args, res, f"verify {args.queue}: {res['reason']}; retry {res['retry_start']} -> {res['retry_end']}")
        return 0 if res["returned_to_normal"] else 1
    if action == "fix-state":
        from jobrunbook.remediate.fix_state import fix_states

        res = fix_states(client, args.queue, run_dir=run_dir, confirm=args.confirm, max_tasks=args.max_tasks,
                         command=cmdline, batch_size=args.batch_size)
        head = ("DRY RUN: fix-state" if args.confirm is None else "fix-state") + f" {args.queue}: "
        text = head + json.dumps(res, default=str)
        if args.confirm is None and res["count"]:
            text += f"\n  to act: add --confirm {res['count']} (exports first; undo: jobrunbook restore EXPORT)"
        _print(args, res, text + f"\naudit: {run_dir}/audit.jsonl")
        return 0
    if action == "orphans":
        res = clean_orphans(client, args.queue, run_dir=run_dir, confirm=args.confirm,
                            max_tasks=args.max_tasks, command=cmdline)
        _print(args, res, json.dumps(res, default=str) + f"\naudit: {run_dir}/audit.jsonl")
        return 0
    if action in ("run", "archive", "delete") and args.cause:
        return _by_cause(args, client, src, run_dir, cmdline)
    if not args.queue:
        raise ConfigError("a queue is required", hint="--queue NAME (asynq:queues lists them), or --cause KEY "
                                                      "for a cause's tasks across queues")
    flt_kw: dict = {"queue": args.queue}
    if action in ("run", "archive", "delete"):
        flt_kw.update(state=args.state, ids=tuple(args.ids), task_type=args.task_type, fingerprint=args.fingerprint,
                      error_contains=args.error_contains, failed_since=parse_when(args.failed_since),
                      failed_before=parse_when(args.failed_before))
    elif action in ("run-all", "archive-all", "delete-all"):
        flt_kw["state"] = args.state
    elif action == "clear-retry":
        flt_kw["state"] = "retry"
    elif action == "purge-archived":
        flt_kw.update(state="archived", score_before=int(clock.now() - args.older_than_days * 86400))
    elif action == "blocking-ids":
        ids = tuple(b["id"] for b in find_blocking_ids(client, args.queue))
        if not ids:
            print(f"no archived or orphaned task with a fixed id in queue {args.queue!r}")
            return 0
        flt_kw["ids"] = ids
    else:  # pragma: no cover - argparse guards it
        raise ConfigError(f"unknown action {action}")
    flt = TaskFilter(**flt_kw)
    op = _ACTIONS[action]
    plan = plan_remediation(client, op, flt, run_dir=run_dir, batch_size=args.batch_size, command=cmdline,
                            archive_cap=src.settings.archive_max_size)
    if args.confirm is None:
        _print(args, plan.to_dict(), format_plan(plan) + f"\naudit: {run_dir}/audit.jsonl")
        return 0
    result = execute_remediation(client, plan, confirm=args.confirm, max_tasks=args.max_tasks, run_dir=run_dir,
                                 allow_archive_eviction=args.allow_archive_eviction, command=cmdline)
    d = result.to_dict()
    text = (f"{op}: {d['done']} task(s) done, skipped {d['skipped'] or 'none'}, {d['batches']} batch(es), "
            f"longest call {d['longest_call_ms']} ms\n  before: {d['counts_before']}\n  after:  {d['counts_after']}"
            + (f"\n  export: {d['export']} (undo: jobrunbook restore {d['export']})" if d["export"] else "")
            + f"\n  audit: {run_dir}/audit.jsonl")
    _print(args, d, text)
    if args.verify_for > 0:
        res = watch_recovery(client, args.queue, duration_s=args.verify_for, interval_s=args.verify_interval)
        append_audit(run_dir, {"step": "verify", "command": cmdline, **res})
        print(f"verify {args.queue}: {res['reason']}; retry {res['retry_start']} -> {res['retry_end']}")
    return 0


def cause_plan(client, args: argparse.Namespace, *, run_dir: str | None = None, command: str = "",
               archive_cap: int | None = None):
    """The dry run (a ``PlanSet``) of ``jobrunbook remediate run|archive|delete --cause KEY ...`` as parsed."""
    from jobrunbook.asynq import keys as K
    from jobrunbook.diagnosis.causes import CAUSES_BY_KEY, check_cause_key
    from jobrunbook.remediate.plan import cause_filters, plan_across
    from jobrunbook.remediate.select import parse_when

    if args.ids:
        raise ConfigError("--cause selects tasks by their error; it does not combine with --id",
                          hint="drop --id, or drop --cause and give --queue")
    cause = check_cause_key(args.cause)
    op = _ACTIONS[args.action]
    narrower = {k: v for k, v in (("task_type", args.task_type), ("fingerprint", args.fingerprint),
                                  ("error_contains", args.error_contains),
                                  ("failed_since", parse_when(args.failed_since)),
                                  ("failed_before", parse_when(args.failed_before))) if v is not None}
    filters = cause_filters(client, op, cause=cause, queues=[args.queue] if args.queue else None,
                            states=[args.state] if args.state else None, **narrower)
    title = CAUSES_BY_KEY[cause].title if cause in CAUSES_BY_KEY else "no known cause"
    return plan_across(client, op, filters, run_dir=run_dir, batch_size=args.batch_size, command=command,
                       archive_cap=archive_cap or K.ARCHIVE_MAX_SIZE, what=f"cause {cause} ({title})")


def _by_cause(args: argparse.Namespace, client, src, run_dir: str, cmdline: str) -> int:
    """``--cause KEY``: the cause's tasks across queues and states, one dry run listing every group; acts on
    all of them with ``--confirm`` the total."""
    from jobrunbook.remediate.plan import execute_across, format_plans

    plans = cause_plan(client, args, run_dir=run_dir, command=cmdline, archive_cap=src.settings.archive_max_size)
    if args.confirm is None:
        _print(args, plans.to_dict(), format_plans(plans) + f"\naudit: {run_dir}/audit.jsonl")
        return 0
    results = execute_across(client, plans, confirm=args.confirm, max_tasks=args.max_tasks, run_dir=run_dir,
                             allow_archive_eviction=args.allow_archive_eviction, command=cmdline)
    d = {"action": plans.action, "done": sum(r.done for r in results), "results": [r.to_dict() for r in results]}
    lines = [f"{plans.action}: {d['done']} task(s) done of {plans.what}"]
    for r in results:
        f = r.plan.filter
        lines.append(f"  {f.queue}/{f.state}: {r.done} done, skipped {r.skipped or 'none'}"
                     + (f", export {r.export_path} (undo: jobrunbook restore {r.export_path})" if r.export_path else ""))
    _print(args, d, "\n".join(lines) + f"\n  audit: {run_dir}/audit.jsonl")
    return 0
