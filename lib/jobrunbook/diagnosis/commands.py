"""Recommended actions with exact commands, filled with the incident's values.

The runbook's own asynq commands are partly invalid (there is no state
"failed"; single-task commands need --queue and --id). Every asynq command
built here is checked by ``check_asynq_command`` against the CLI's flag rules
before it is shown, and nothing deletes without the export step before it:
deletion is only ever recommended through ``jobrunbook remediate``, which
exports what it touches first and is a dry run until confirmed.
"""

from __future__ import annotations

import shlex
import string
from dataclasses import dataclass
from typing import Any

__all__ = ["Action", "ACTIONS", "NEEDS", "render_actions", "check_asynq_command", "ASYNQ_STATES"]

# asynq CLI (tools/asynq/cmd/task.go): subcommand -> (required flags, states allowed for --state)
ASYNQ_STATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ls": (("queue", "state"), ("active", "pending", "aggregating", "scheduled", "retry", "archived", "completed")),
    "list": (("queue", "state"), ("active", "pending", "aggregating", "scheduled", "retry", "archived", "completed")),
    "inspect": (("queue", "id"), ()),
    "run": (("queue", "id"), ()),
    "archive": (("queue", "id"), ()),
    "delete": (("queue", "id"), ()),
    "runall": (("queue", "state"), ("scheduled", "retry", "archived")),
    "archiveall": (("queue", "state"), ("pending", "aggregating", "scheduled", "retry")),
    "deleteall": (("queue", "state"), ("pending", "aggregating", "scheduled", "retry", "archived", "completed")),
}


def check_asynq_command(command: str) -> None:
    """Raise ValueError unless ``command`` is a valid ``asynq task ...`` invocation."""
    words = shlex.split(command)
    if words[:2] != ["asynq", "task"] or len(words) < 3:
        raise ValueError(f"not an asynq task command: {command!r}")
    sub = words[2]
    if sub not in ASYNQ_STATES:
        raise ValueError(f"asynq task has no subcommand {sub!r}: {command!r}")
    required, states = ASYNQ_STATES[sub]
    flags: dict[str, str] = {}
    for word in words[3:]:
        if not word.startswith("--") or "=" not in word:
            raise ValueError(f"asynq task {sub} takes --flag=value only, got {word!r}")
        name, _, value = word[2:].partition("=")
        if not value:
            raise ValueError(f"empty --{name} in {command!r}")
        flags[name] = value
    missing = [f for f in required if f not in flags]
    if missing:
        raise ValueError(f"asynq task {sub} needs --{' --'.join(missing)}: {command!r}")
    if "state" in flags and flags["state"] not in states:
        raise ValueError(f"asynq task {sub} --state must be one of {', '.join(states)}, got {flags['state']!r}")
    if sub in ("deleteall", "delete"):
        raise ValueError("deletion is recommended only through `jobrunbook remediate`, which exports first")


@dataclass(frozen=True)
class Action:
    key: str
    title: str
    commands: tuple[str, ...] = ()  # templates; {placeholders} filled by render_actions
    note: str = ""
    changes_state: bool = False  # True for commands that act on the queue
    # the task state a per-group remediation acts on: rendered once per error group of the cause
    # that has tasks in this state, and left out when none has
    state: str = ""


_Q = "--queue={queue}"
ACTIONS: dict[str, Action] = {a.key: a for a in (
    Action("inspect_task", "Look at one failing task's payload and error",
           (_Q.join(("asynq task inspect ", " --id={task_id}")),
            "jobrunbook inspect --redis-url \"$REDIS_URL\" --queue {queue_q}")),
    Action("list_archived", "List the archived (dead-letter) tasks",
           (f"asynq task ls {_Q} --state=archived",)),
    Action("list_retry", "List the tasks waiting to retry",
           (f"asynq task ls {_Q} --state=retry",)),
    Action("fix_enqueuer", "Fix the enqueuing code that builds {task_type} payloads",
           note="These tasks were archived at once (SkipRetry): re-running them fails the same way."),
    Action("fix_data", "Fix the records these tasks name, or make the handler reject them with SkipRetry",
           note="The same record ids fail again and again: see the example errors."),
    Action("delete_archived", "Once the enqueuer is fixed, remove these archived tasks (exported first, dry run first)",
           ("jobrunbook remediate delete --redis-url \"$REDIS_URL\" --queue {queue_q} --state archived"
            " --type {task_type_q} --fingerprint {fingerprint_q}",), changes_state=True, state="archived"),
    Action("archive_bad", "Stop retrying the tasks that cannot succeed (exported first, dry run first)",
           ("jobrunbook remediate archive --redis-url \"$REDIS_URL\" --queue {queue_q} --state retry"
            " --type {task_type_q} --fingerprint {fingerprint_q}",), changes_state=True, state="retry"),
    Action("rerun_retry", "After the fix, re-run the tasks waiting in retry (dry run first)",
           ("jobrunbook remediate run --redis-url \"$REDIS_URL\" --queue {queue_q} --state retry"
            " --type {task_type_q} --fingerprint {fingerprint_q}",
            f"asynq task runall {_Q} --state=retry"), changes_state=True, state="retry",
           note="The asynq CLI re-runs every retry task of the queue; jobrunbook re-runs only these."),
    Action("rerun_archived", "After the fix, re-run the archived ones too (dry run first)",
           ("jobrunbook remediate run --redis-url \"$REDIS_URL\" --queue {queue_q} --state archived"
            " --type {task_type_q} --fingerprint {fingerprint_q}",
            f"asynq task runall {_Q} --state=archived"), changes_state=True, state="archived"),
    Action("rollout_history", "See what was deployed and when",
           ("kubectl rollout history deployment/{deployment} -n {namespace}",
            "docker inspect {container} --format '{{{{.Created}}}} {{{{.Config.Image}}}}'")),
    Action("rollback", "Roll the worker back to the previous build",
           ("kubectl rollout undo deployment/{deployment} -n {namespace}",), changes_state=True),
    Action("panic_trace", "Read the panic's stack trace",
           ("kubectl logs deployment/{deployment} -n {namespace} --since=1h | grep -A 30 'recovering from panic'",
            "docker logs --since 1h {container} 2>&1 | grep -A 30 'recovering from panic'")),
    Action("worker_logs", "Read the worker's recent errors",
           ("kubectl logs deployment/{deployment} -n {namespace} --since=1h | grep -iE 'error|failed|panic'",
            "docker logs --since 1h {container} 2>&1 | grep -iE 'error|failed|panic' | tail -50")),
    Action("worker_restarts", "Check the worker for restarts",
           ("kubectl get pods -n {namespace} -l app={deployment} -o wide",
            "docker inspect {container} --format '{{{{.RestartCount}}}} {{{{.State.Status}}}}'")),
    Action("worker_oom", "Check whether the worker was OOM-killed",
           ("kubectl describe pods -n {namespace} -l app={deployment} | grep -iA3 'last state'",
            "docker inspect {container} --format '{{{{.State.OOMKilled}}}}'")),
    Action("check_postgres", "Check Postgres",
           ("pg_isready -h {pg_host} -p {pg_port}",
            "docker exec -it postgres pg_isready")),
    Action("restart_postgres", "If Postgres is down, restart it (runbook: fix the dependency)",
           ("docker restart postgres",), changes_state=True),
    Action("pg_connections", "See who holds Postgres connections",
           ("psql -h {pg_host} -p {pg_port} -c \"select state, count(*) from pg_stat_activity group by state\"",
            "psql -h {pg_host} -p {pg_port} -c 'show max_connections'")),
    Action("redis_info", "Check Redis clients and memory",
           ("redis-cli -u \"$REDIS_URL\" info clients", "redis-cli -u \"$REDIS_URL\" info memory")),
    Action("check_external", "Check the external API's health and limits",
           ("curl -sS -o /dev/null -w '%{{http_code}} %{{time_total}}s\\n' {health_url}",)),
    Action("add_backoff", "Back off: honour Retry-After in a RetryDelayFunc and lower this task type's concurrency",
           note="asynq retries these by itself; re-running them now only adds to the rate limit."),
    Action("check_durations", "Compare job durations with the timeout",
           ("curl -s {metrics_url} | grep job_duration",)),
    Action("raise_timeout", "If the work is legitimately longer, raise the task's Timeout at enqueue (asynq.Timeout)",
           note="Find the slow dependency first: a longer timeout hides it."),
)}


# values a command cannot do without, and how to configure each: a command missing one is left out
# (never filled with a placeholder host), and the action says how to get it
NEEDS: dict[str, str] = {
    "health_url": "set JOBRUNBOOK_HEALTH_URLS (name=url) to the health URL of the API these tasks call",
    "pg_host": "set JOBRUNBOOK_POSTGRES_DSN to the Postgres the worker uses",
    "pg_port": "set JOBRUNBOOK_POSTGRES_DSN to the Postgres the worker uses",
    "metrics_url": "set JOBRUNBOOK_METRICS_URL to the worker's /metrics",
    "task_id": "",
}


def _placeholders(values: dict[str, Any]) -> dict[str, str]:
    v = {"queue": "default", "task_type": "", "fingerprint": "",
         "deployment": "worker", "container": "worker", "namespace": "default"}
    v.update({k: str(val) for k, val in values.items() if val not in (None, "")})
    # shell-quoted forms for values that come from untrusted data
    for key in ("queue", "task_type", "fingerprint"):
        v[f"{key}_q"] = shlex.quote(v[key])
    for key in ("deployment", "container", "namespace", "pg_host", "pg_port", "health_url", "metrics_url", "task_id"):
        if key in v:
            v[key] = shlex.quote(v[key])
    v["queue"] = shlex.quote(v["queue"])
    return v


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


MAX_GROUP_COMMANDS = 6


def _per_group(action: Action, values: dict[str, Any], groups: list[dict[str, Any]]) -> list[dict[str, str]] | None:
    """The substitutions for each group ``action`` acts on (those with tasks in its state), largest first."""
    eligible = [g for g in groups if int(g.get(action.state) or 0) > 0]
    if not eligible:
        return None
    eligible.sort(key=lambda g: -int(g.get(action.state) or 0))
    return [_placeholders({**values, "queue": g["queue"], "task_type": g["task_type"],
                           "fingerprint": g["fingerprint"]}) for g in eligible]


def render_actions(keys: tuple[str, ...] | list[str], values: dict[str, Any],
                   groups: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The actions ``keys`` with their commands filled from ``values`` (queue, task_type, ...).

    Every asynq command is checked against the CLI's rules; one that fails
    the check is dropped, never shown. A command that needs a value nobody
    configured (a health URL, the Postgres host) is dropped too, and the
    action's note says how to configure it. With ``groups`` (the cause's error
    groups: queue, task_type, fingerprint, retry, archived), a remediation
    that acts on one state gets one command per group with tasks in that
    state, and is left out when no group has any: a dry run of it would match
    nothing.
    """
    subst = _placeholders(values)
    out = []
    for key in keys:
        action = ACTIONS[key]
        commands = []
        missing: list[str] = []
        per_group = _per_group(action, values, groups) if action.state and groups is not None else None
        if action.state and groups is not None and per_group is None:
            continue
        for template in action.commands:
            if per_group is not None:
                # the jobrunbook command once per group; the asynq CLI's (a whole state) once per queue
                by_group = bool(_fields(template) & {"fingerprint_q", "task_type_q"})
                subs = per_group if by_group else list({p["queue"]: p for p in per_group}.values())
                rendered = [c for c in (template.format(**sub) for sub in subs) if _valid(c)]
                if len(rendered) > MAX_GROUP_COMMANDS:
                    missing.append(f"{len(rendered) - MAX_GROUP_COMMANDS} smaller group(s) not shown: see section 02")
                    rendered = rendered[:MAX_GROUP_COMMANDS]
                commands += rendered
                continue
            lacking = [f for f in _fields(template) if f not in subst]
            if lacking:
                missing += [NEEDS.get(f, f"no value for {f}") for f in lacking if NEEDS.get(f, "x")]
                continue
            command = template.format(**subst)
            if _valid(command):
                commands.append(command)
        note = "; ".join(x for x in dict.fromkeys([action.note, *missing]) if x)
        out.append({"key": key, "title": action.title.format_map(_Lenient(subst)), "commands": commands,
                    "note": note, "changes_state": action.changes_state})
    return out


def _valid(command: str) -> bool:
    """Every asynq command shown passes the CLI's rules; others are not asynq's to check."""
    if not command.startswith("asynq "):
        return True
    try:
        check_asynq_command(command)
    except ValueError:
        return False
    return True


class _Lenient(dict):
    def __missing__(self, key: str) -> str:
        return "?"
