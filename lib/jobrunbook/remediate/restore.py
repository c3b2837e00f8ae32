"""`jobrunbook restore EXPORT`: put exported tasks back byte for byte, in their state.

Takes the queue's remediation lock; a task whose current ``msg`` differs (a
different task under the same id) is left alone unless ``--force``; only the
tasks the remediation really changed are restored unless ``--all``. Audited in
the export's run directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jobrunbook._paths import absolute
from jobrunbook.config_cli import add_source_flags, resolve_sources

__all__ = ["add_arguments", "command"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("export", type=absolute, help="an export file, RUN_DIR/exports/*.jsonl")
    add_source_flags(parser, "redis")
    parser.add_argument("--force", action="store_true", help="overwrite a different task under the same id")
    parser.add_argument("--all", dest="everything", action="store_true",
                        help="restore every exported task, not only those the remediation changed")
    parser.add_argument("--dry-run", action="store_true", help="say what would be restored")


def command(args: argparse.Namespace) -> int:
    from jobrunbook.asynq.connection import connect
    from jobrunbook.asynq.export import read_export, restore_export
    from jobrunbook.asynq.ops import acquire_lock
    from jobrunbook.remediate.audit import actor, append_audit

    header, _, _ = read_export(args.export)
    src = resolve_sources(args)
    client = connect(src.settings.redis_url_with_secret(src.env))
    run_dir = Path(args.export).resolve().parent.parent
    with acquire_lock(client, header["queue"], who=actor(), what="restore") as lock:
        res = restore_export(client, args.export, lock, force=args.force, everything=args.everything,
                             dry_run=args.dry_run)
    append_audit(run_dir, {"step": "restore", "dry_run": args.dry_run, "command": f"jobrunbook restore {args.export}",
                           "filter": {"queue": header["queue"]}, "export": str(args.export), **res.counts(),
                           "conflict_ids": res.conflicts[:20], "active_ids": res.active[:20]})
    print(json.dumps({"export": str(args.export), "dry_run": args.dry_run, **res.counts()}))
    return 0 if not res.conflicts and not res.active else 1
