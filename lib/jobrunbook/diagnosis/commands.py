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
from dataclasses import dataclass
from typing import Any

__all__ = ["Action", "ACTIONS", "render_actions", "check_asynq_command", "ASYNQ_STATES"]

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
            " --type {task_type_q} --fingerprint {fingerprint_q}",), changes_state=True),
    Action("archive_bad", "Stop retrying the tasks that cannot succeed (exported first, dry run first)",
           ("jobrunbook remediate archive --redis-url \"$REDIS_URL\" --queue {queue_q} --state retry"
            " --type {task_type_q} --fingerprint {fingerprint_q}",), changes_state=True),
    Action("rerun_retry", "After the fix, re-run the tasks waiting in retry (dry run first)",
           ("jobrunbook remediate run --redis-url \"$REDIS_URL\" --queue {queue_q} --state retry"
            " --type {task_type_q} --fingerprint {fingerprint_q}",
            f"asynq task runall {_Q} --state=retry"), changes_state=True,
           note="The asynq CLI re-runs every retry task of the queue; jobrunbook re-runs only these."),
    Action("rerun_archived", "After the fix, re-run the archived ones too (dry run first)",
           ("jobrunbook remediate run --redis-url \"$REDIS_URL\" --queue {queue_q} --state archived"
            " --type {task_type_q} --fingerprint {fingerprint_q}",
            f"asynq task runall {_Q} --state=archived"), changes_state=True),
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


def _placeholders(values: dict[str, Any]) -> dict[str, str]:
    v = {
        "queue": "default", "task_type": "", "task_id": "<task_id>", "fingerprint": "",
        "deployment": "worker", "container": "worker", "namespace": "default",
        "pg_host": "127.0.0.1", "pg_port": "5432", "health_url": "https://api.external-service.com/health",
        "metrics_url": "http://localhost:8080/metrics",
    }
    v.update({k: str(val) for k, val in values.items() if val not in (None, "")})
    # shell-quoted forms for values that come from untrusted data
    for key in ("queue", "task_type", "fingerprint"):
        v[f"{key}_q"] = shlex.quote(v[key])
    for key in ("deployment", "container", "namespace", "pg_host", "pg_port", "health_url", "metrics_url", "task_id"):
        v[key] = shlex.quote(v[key])
    v["queue"] = shlex.quote(v["queue"])
    return v


def render_actions(keys: tuple[str, ...] | list[str], values: dict[str, Any]) -> list[dict[str, Any]]:
    """The actions ``keys`` with their commands filled from ``values`` (queue, task_type, ...).

    Every asynq command is checked against the CLI's rules; one that fails
    the check is dropped, never shown.
    """
    subst = _placeholders(values)
    out = []
    for key in keys:
        action = ACTIONS[key]
        commands = []
        for template in action.commands:
            command = template.format(**subst)
            if command.startswith("asynq "):
                try:
                    check_asynq_command(command)
                except ValueError:
                    continue
            commands.append(command)
        out.append({"key": key, "title": action.title.format(**subst), "commands": commands,
                    "note": action.note, "changes_state": action.changes_state})
    return out
