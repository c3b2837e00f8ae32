"""Recommended actions with exact commands, filled with the incident's values.

The runbook's own asynq commands are partly invalid (there is no state
"failed"; single-task commands need --queue and --id). Every asynq command
built here is checked by ``check_asynq_command`` against the CLI's flag rules
before it is shown, and nothing deletes without the export step before it:
deletion is only ever recommended through ``jobrunbook remediate``, which
exports what it touches first and is a dry run until confirmed.

A remediation covers exactly one cause: ``jobrunbook remediate OP --cause
KEY`` selects the tasks whose last error the diagnosis's own classifier
(``causes.classify``) puts in that cause, across queues, task types and
fingerprints. asynq's CLI acts on a whole queue and state; it is offered as
the alternative only where that holds no task of another cause.
"""

from __future__ import annotations

import shlex
import string
from dataclasses import dataclass
from typing import Any

__all__ = ["Action", "ACTIONS", "NEEDS", "render_actions", "check_asynq_command", "ASYNQ_STATES", "covered"]

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
    # a remediation of the cause's own tasks: ``jobrunbook remediate OP --cause KEY`` over the failed states
    # ``covers`` (rendered only when the cause has tasks there), with the asynq CLI's whole-state command as
    # an alternative only where it touches no task of another cause
    op: str = ""
    covers: tuple[str, ...] = ()
    # the commands, instead of ``commands``, when the worker's log is read this way (file, docker, kubectl)
    by_log: tuple[tuple[str, tuple[str, ...]], ...] = ()
    each: str = ""  # a values key holding a list: each command rendered once per item, as {item}


_Q = "--queue={queue}"
_REMEDIATE = 'jobrunbook remediate {op} --redis-url "$REDIS_URL" --cause {cause}'
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
    Action("delete_cause", "Once the enqueuer is fixed, delete this cause's tasks (exported first, dry run first)",
           (_REMEDIATE,), changes_state=True, op="delete", covers=("retry", "archived"),
           note="They fail the same way if re-run; the export keeps them (jobrunbook restore)."),
    Action("archive_cause", "Stop retrying this cause's tasks: they cannot succeed (exported first, dry run first)",
           (_REMEDIATE,), changes_state=True, op="archive", covers=("retry",)),
    Action("rerun_archived", "Once the records are fixed, re-run this cause's archived tasks (dry run first)",
           (_REMEDIATE + " --state archived",), changes_state=True, op="run", covers=("archived",)),
    Action("rerun", "After the fix, re-run this cause's failed tasks (dry run first)",
           (_REMEDIATE,), changes_state=True, op="run", covers=("retry", "archived")),
    Action("rerun_when_lifted", "Once the limit is lifted (or backoff is deployed), re-run this cause's failed "
           "tasks (dry run first)", (_REMEDIATE,), changes_state=True, op="run", covers=("retry", "archived"),
           note="Re-running them before that only adds to the rate limit; asynq retries the retry ones by itself."),
    Action("rerun_after_crash", "Once the worker stays up, re-run this cause's failed tasks instead of waiting "
           "out their backoff (dry run first)", (_REMEDIATE,), changes_state=True, op="run",
           covers=("retry", "archived"), note="asynq retries the retry ones by itself; the archived ones it does not."),
    Action("rollout_history", "See what was deployed and when",
           ("kubectl rollout history deployment/{deployment} -n {namespace}",
            "docker inspect {container} --format '{{{{.Created}}}} {{{{.Config.Image}}}}'")),
    Action("rollback", "Roll the worker back to the previous build",
           ("kubectl rollout undo deployment/{deployment} -n {namespace}",), changes_state=True),
    Action("panic_trace", "Read the panic's stack trace",
           ("kubectl logs deployment/{deployment} -n {namespace} --since=1h | grep -A 30 'recovering from panic'",
            "docker logs --since 1h {container} 2>&1 | grep -A 30 'recovering from panic'"),
           by_log=(("file", ("grep -n -A 30 'recovering from panic' {log_file}",)),
                   ("docker", ("docker logs --since 1h {container} 2>&1 | grep -A 30 'recovering from panic'",)),
                   ("kubectl", ("kubectl logs deployment/{deployment} -n {namespace} --since=1h | "
                                "grep -A 30 'recovering from panic'",)))),
    Action("worker_logs", "Read the worker's recent errors",
           ("kubectl logs deployment/{deployment} -n {namespace} --since=1h | grep -iE 'error|failed|panic'",
            "docker logs --since 1h {container} 2>&1 | grep -iE 'error|failed|panic' | tail -50"),
           by_log=(("file", ("grep -niE 'error|failed|panic|Starting processing|Exiting' {log_file} | tail -50",)),
                   ("docker", ("docker logs --since 1h {container} 2>&1 | grep -iE 'error|failed|panic' | tail -50",)),
                   ("kubectl", ("kubectl logs deployment/{deployment} -n {namespace} --since=1h | "
                                "grep -iE 'error|failed|panic'",)))),
    Action("worker_restarts", "Check the worker for restarts",
           ("kubectl get pods -n {namespace} -l app={deployment} -o wide",
            "docker inspect {container} --format '{{{{.RestartCount}}}} {{{{.State.Status}}}}'")),
    Action("worker_oom", "Check whether the worker was OOM-killed",
           ("kubectl describe pods -n {namespace} -l app={deployment} | grep -iA3 'last state'",
            "docker inspect {container} --format '{{{{.State.OOMKilled}}}}'")),
    Action("check_postgres", "Check the Postgres the tasks dial",
           ("pg_isready -h {pg_host} -p {pg_port}",)),
    # how that Postgres runs (a container, a managed service, a host) is not known here: no command is guessed
    Action("restart_postgres", "If Postgres is down, bring it back where it runs (runbook: fix the dependency)",
           note="The runbook's Docker setup restarts it with `docker restart postgres`; restart it the way this "
                "Postgres is run, then check it again with pg_isready."),
    Action("check_address", "Check that the addresses the tasks dial answer",
           ("nc -z -w 3 {item} && echo open || echo closed",), each="addresses"),
    Action("pg_connections", "See who holds Postgres connections",
           ("psql -h {pg_host} -p {pg_port} -c \"select state, count(*) from pg_stat_activity group by state\"",
            "psql -h {pg_host} -p {pg_port} -c 'show max_connections'")),
    Action("redis_info", "Check Redis clients and memory",
           ("redis-cli -u \"$REDIS_URL\" info clients", "redis-cli -u \"$REDIS_URL\" info memory")),
    Action("check_external", "Check the health of the API the failing errors point to",
           ("curl -sS -o /dev/null -w '%{{http_code}} %{{time_total}}s\\n' {item}",), each="health_checks"),
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
    "pg_host": "set JOBRUNBOOK_POSTGRES_DSN to the Postgres the worker uses",
    "pg_port": "set JOBRUNBOOK_POSTGRES_DSN to the Postgres the worker uses",
    "metrics_url": "set JOBRUNBOOK_METRICS_URL to the worker's /metrics",
    "log_file": "",
    "task_id": "",
}


def _placeholders(values: dict[str, Any]) -> dict[str, str]:
    v = {"queue": "default", "task_type": "", "fingerprint": "",
         "deployment": "worker", "container": "worker", "namespace": "default"}
    v.update({k: str(val) for k, val in values.items() if val not in (None, "") and not isinstance(val, dict | list)})
    # shell-quoted forms for values that come from untrusted data
    for key in ("queue", "task_type", "fingerprint"):
        v[f"{key}_q"] = shlex.quote(v[key])
    for key in ("deployment", "container", "namespace", "pg_host", "pg_port", "metrics_url", "task_id", "log_file",
                "cause"):
        if key in v:
            v[key] = shlex.quote(v[key])
    v["queue"] = shlex.quote(v["queue"])
    return v


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def covered(groups: list[dict[str, Any]], states: tuple[str, ...]) -> dict[tuple[str, str], int]:
    """(queue, state) -> tasks of ``groups`` there, for the ``states`` a remediation covers, most first."""
    out: dict[tuple[str, str], int] = {}
    for g in groups:
        for state in states:
            n = int(g.get(state) or 0)
            if n:
                out[(g["queue"], state)] = out.get((g["queue"], state), 0) + n
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


_CLI_OP = {"run": "runall", "archive": "archiveall"}


def _asynq_alternative(action: Action, cover: dict[tuple[str, str], int],
                       occupancy: dict[tuple[str, str], dict[str, int]] | None, cause: str) -> tuple[list[str], str]:
    """asynq's whole-state commands when, together, they touch exactly the cause's tasks; else why not."""
    if action.op not in _CLI_OP or occupancy is None:
        return [], ""
    from jobrunbook.diagnosis.causes import cause_label

    others: dict[str, int] = {}
    where = []
    for qs in cover:
        theirs = {k: n for k, n in (occupancy.get(qs) or {}).items() if k != cause and n}
        if theirs:
            where.append(f"{qs[0]}/{qs[1]}")
            for k, n in theirs.items():
                others[k] = others.get(k, 0) + n
    if others:
        total = sum(others.values())
        named = ", ".join(f"{cause_label(k)} {n}" for k, n in sorted(others.items(), key=lambda kv: -kv[1]))
        cli = _CLI_OP[action.op]
        places = ", ".join(where[:-1]) + " and " + where[-1] if len(where) > 1 else where[0]
        return [], (f"asynq task {cli} is not offered: it acts on a whole queue and state, and {places} also "
                    f"{'hold' if len(where) > 1 else 'holds'} {total} task(s) of other causes ({named})")
    commands = [c for c in (f"asynq task {_CLI_OP[action.op]} --queue={shlex.quote(q)} --state={s}" for q, s in cover)
                if _valid(c)]
    return commands, ""


def render_actions(keys: tuple[str, ...] | list[str], values: dict[str, Any],
                   groups: list[dict[str, Any]] | None = None,
                   occupancy: dict[tuple[str, str], dict[str, int]] | None = None) -> list[dict[str, Any]]:
    """The actions ``keys`` with their commands filled from ``values`` (queue, task_type, cause, ...).

    Every asynq command is checked against the CLI's rules; one that fails
    the check is dropped, never shown. A command that needs a value nobody
    configured (a health URL, the Postgres host) is dropped too, and the
    action's note says how to configure it. With ``groups`` (the cause's error
    groups: queue, task_type, fingerprint, retry, archived), a remediation of
    the cause (``Action.op``) is one ``jobrunbook remediate OP --cause KEY``
    command for all its tasks in the states it covers, with their count, and is
    left out when the cause has none there; ``occupancy`` ((queue, state) ->
    tasks by cause, every cause) decides whether asynq's whole-state command is
    an alternative: only when it touches no task of another cause.
    """
    subst = _placeholders(values)
    log_kind = str(values.get("log_kind") or "")
    out = []
    for key in keys:
        action = ACTIONS[key]
        commands: list[str] = []
        missing: list[str] = []
        templates = dict(action.by_log).get(log_kind, action.commands)
        if action.op:
            cover = covered(groups or [], action.covers)
            if groups is None or not cover or not values.get("cause"):
                continue
            n = sum(cover.values())
            queues = list(dict.fromkeys(q for q, _ in cover))
            title = f"{action.title}: {n:,} task(s) in {len(queues)} queue(s)"
            commands = [t.format(**subst, op=action.op) for t in templates]
            alternative, why_not = _asynq_alternative(action, cover, occupancy, str(values["cause"]))
            commands += alternative
            note = _sentences(action.note, why_not)
            out.append({"key": key, "title": title, "commands": commands, "note": note,
                        "changes_state": action.changes_state, "op": action.op, "tasks": n,
                        "covers": [{"queue": q, "state": s, "tasks": c} for (q, s), c in cover.items()],
                        "queues": queues})
            continue
        if action.each:
            items = [str(i) for i in values.get(action.each) or []]
            for template in templates:
                commands += [c for c in (template.format(**subst, item=shlex.quote(i)) for i in items) if _valid(c)]
            if values.get(f"{action.each}_note"):
                missing.append(str(values[f"{action.each}_note"]))
            if not commands and not missing:
                continue
        else:
            for template in templates:
                lacking = [f for f in _fields(template) if f not in subst]
                if lacking:
                    missing += [NEEDS.get(f, f"no value for {f}") for f in lacking if NEEDS.get(f, "x")]
                    continue
                command = template.format(**subst)
                if _valid(command):
                    commands.append(command)
        note = _sentences(action.note, *dict.fromkeys(missing))
        out.append({"key": key, "title": action.title.format_map(_Lenient(subst)), "commands": commands,
                    "note": note, "changes_state": action.changes_state})
    return out


def _sentences(*parts: str) -> str:
    """Notes joined as sentences: "A. B." (none doubled)."""
    out = []
    for part in dict.fromkeys(p.strip() for p in parts if p and p.strip()):
        out.append(part if part.endswith(".") else part + ".")
    return " ".join(out)


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
