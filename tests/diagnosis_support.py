"""What the diagnosis tests share: a diagnosis read live from a Redis, and the dry runs of a cause's commands."""

from __future__ import annotations

import re
import shlex
from typing import Any

from jobrunbook.asynq import keys as K
from jobrunbook.asynq.messages import decode_task
from jobrunbook.fingerprint import fingerprint

PLACEHOLDERS = ("api.external-service.com", "<task_id>", "localhost:8080", "example.com/health")
_UNFILLED = re.compile(r"(?<![{%])\{[a-z_]+\}(?!\})")  # a template field left in ({queue}); not docker's {{.X}} nor curl's %{x}


def placeholder_in(command: str) -> str | None:
    """The placeholder host or unfilled template field ``command`` holds, None when it has none."""
    found = next((p for p in PLACEHOLDERS if p in command), None)
    return found or (m.group(0) if (m := _UNFILLED.search(command)) else None)


def remediation_commands(cause: dict[str, Any]) -> list[str]:
    """The ``jobrunbook remediate`` commands recommended for one cause (a RankedCause as a dict)."""
    return [c for a in cause["actions"] if a.get("changes_state") for c in a["commands"]
            if c.startswith("jobrunbook remediate ")]


def dry_run(client, command: str):
    """The dry run of one recommended command, parsed by the real CLI (a PlanSet)."""
    from jobrunbook.cli import build_parser
    from jobrunbook.remediate.cli import cause_plan

    words = shlex.split(command.replace('"$REDIS_URL"', "redis://unused:1/0"))
    args = build_parser().parse_args(words[1:])
    assert args.cause, f"a cause's command that is not by cause: {command}"
    return cause_plan(client, args)


def group_causes(diagnosis: dict[str, Any]) -> dict[tuple[str, str, str], str]:
    """(queue, task type, fingerprint) -> the cause the diagnosis gave that group, every group of every cause."""
    from jobrunbook.diagnosis.causes import classify

    out = {}
    for c in diagnosis["causes"]:
        for g in c["groups"]:
            out[(g["queue"], g["task_type"], g["fingerprint"])] = c["key"]
    for g in diagnosis["unexplained"]["top_groups"]:
        out[(g["queue"], g["task_type"], g["fingerprint"])] = classify(g["example_error"], g["fingerprint"])
    return out


def cover(client, diagnosis: dict[str, Any], cause: dict[str, Any], all_groups: list[dict[str, Any]]
          ) -> tuple[int, list[str]]:
    """(tasks the dry runs of ``cause``'s commands match in all, what they match of another cause).

    Each matched task is looked up in Redis and placed in the diagnosis's own group for its (queue, task
    type, fingerprint): the group's cause, as the diagnosis gave it, must be ``cause``.
    """
    from jobrunbook.diagnosis.causes import classify

    by_group = {(g["queue"], g["task_type"], g["fingerprint"]): classify(g["example_error"], g["fingerprint"])
                for g in all_groups}
    total, foreign = 0, []
    seen: set[tuple[str, str]] = set()
    for command in remediation_commands(cause):
        plans = dry_run(client, command)
        total += plans.count
        for plan in plans.plans:
            pipe = client.pipeline(transaction=False)
            for task_id in plan.ids:
                pipe.hget(K.task_key(plan.filter.queue, task_id), "msg")
            for task_id, raw in zip(plan.ids, pipe.execute(), strict=True):
                assert (plan.filter.queue, task_id) not in seen, f"{task_id} matched by two commands"
                seen.add((plan.filter.queue, task_id))
                msg = decode_task(raw)
                key = (plan.filter.queue, msg.type, fingerprint(msg.error_msg))
                if by_group.get(key) != cause["key"]:
                    foreign.append(f"{plan.filter.queue}/{task_id} {msg.type}: {msg.error_msg[:80]} "
                                   f"(group's cause {by_group.get(key)})")
    return total, foreign
