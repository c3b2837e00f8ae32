"""Safe remediation: plan (the dry run), then act only when confirmed.

    plan = plan_remediation(client, "run", TaskFilter(queue="default", state="retry",
                            task_type="email:send", fingerprint="dial tcp <addr>: connect: connection refused",
                            failed_since=parse_when("1h")), run_dir=run_dir)
    print(format_plan(plan))             # count, sample, batches, asynq CLI equivalents; audited
    result = execute_remediation(client, plan, confirm=plan.count, max_tasks=1000, run_dir=run_dir)

    plans = plan_across(client, "run", cause_filters(client, "run", cause="dependency"), run_dir=run_dir)
    print(format_plans(plans))           # every queue, state, task type and fingerprint the cause holds
    execute_across(client, plans, confirm=plans.count, max_tasks=1000, run_dir=run_dir)

``execute_remediation`` takes the queue's lock, selects again, refuses when
the count moved by more than max(1, 2 %) from ``confirm`` or exceeds
``max_tasks``, refuses an archive that would push tasks out of asynq's
archive (its cap: 10,000 unless ``archive_cap`` says otherwise, the setting
``archive_max_size``; asynq keeps the newest cap - 1, ZREMRANGEBYRANK 0 -cap,
and nothing older than 90 days) unless ``allow_archive_eviction`` (then the tasks that
will be trimmed are exported first), exports every task before archive or
delete, and applies the change in Lua batches (``jobrunbook.asynq.ops``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from jobrunbook import clock
from jobrunbook._exceptions import NotFound, RemediationRefused
from jobrunbook.asynq import keys as K
from jobrunbook.asynq.export import ExportWriter
from jobrunbook.asynq.ops import MAX_BATCH, acquire_lock, apply_in_batches, cutoff_for
from jobrunbook.remediate.audit import actor, append_audit, export_path
from jobrunbook.remediate.select import TaskFilter, select_tasks, state_counts

__all__ = ["VALID_STATES", "FAILED_STATES", "Plan", "Result", "PlanSet", "plan_remediation", "execute_remediation",
           "format_plan", "plan_across", "execute_across", "format_plans", "cause_filters", "confirm_margin",
           "check_queue", "cap_text"]

# the states each action may start from (asynq's scripts and CLI)
VALID_STATES = {
    "run": ("scheduled", "retry", "archived"),
    "archive": ("pending", "scheduled", "retry"),
    "delete": ("pending", "scheduled", "retry", "archived", "completed"),
}
# where failed tasks are (asynq has no state "failed")
FAILED_STATES = ("retry", "archived")
_CLI_ALL = {"run": "runall", "archive": "archiveall", "delete": "deleteall"}
_CLI_ONE = {"run": "run", "archive": "archive", "delete": "delete"}


def confirm_margin(n: int) -> int:
    """How far the matching count may move between the dry run and the real run: max(1, 2 %)."""
    return max(1, math.ceil(0.02 * n))


@dataclass
class Plan:
    action: str
    filter: TaskFilter
    ids: list[str]
    states: dict[str, str]
    sample: list[dict]
    counts_before: dict[str, int]
    batch_size: int = MAX_BATCH
    now: int = 0
    eviction: dict | None = None
    undecodable: int = 0
    notes: list[str] = field(default_factory=list)
    archive_cap: int = K.ARCHIVE_MAX_SIZE
    group_counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (task type, fingerprint) -> tasks

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def batches(self) -> int:
        return sum(math.ceil(n / self.batch_size) for n in self.by_state_counts().values())

    def by_state_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for task_id in self.ids:
            out[self.states[task_id]] = out.get(self.states[task_id], 0) + 1
        return out

    @property
    def others_in_state(self) -> int:
        """Tasks of the same queue and state the filter leaves out (what asynq's whole-state CLI would also touch)."""
        return max(0, self.counts_before.get(self.filter.state or "", 0) - self.count) if self.filter.state else 0

    def groups(self) -> list[dict]:
        """What the selection holds by task type and error fingerprint, most first (for a filter that read them)."""
        rows = [{"queue": self.filter.queue, "state": self.filter.state, "task_type": t, "fingerprint": fp, "count": n}
                for (t, fp), n in self.group_counts.items()]
        return sorted(rows, key=lambda r: (-r["count"], r["task_type"], r["fingerprint"]))

    def asynq_commands(self, limit: int = 5) -> list[str]:
        q, f = self.filter.queue, self.filter
        if f.state in VALID_STATES[self.action] and not f.ids and (f.whole_state or not self.others_in_state):
            # the whole state, or a filter that happens to select every task of it: the same tasks
            return [f"asynq task {_CLI_ALL[self.action]} --queue={q} --state={f.state}"]
        cmds = [f"asynq task {_CLI_ONE[self.action]} --queue={q} --id={i}" for i in self.ids[:limit]]
        if self.count > limit:
            cmds.append(f"# ... {self.count - limit} more, one command per task: asynq's CLI has no filter")
        return cmds

    def to_dict(self) -> dict:
        return {"action": self.action, "filter": self.filter.to_dict(), "count": self.count,
                "by_state": self.by_state_counts(), "batches": self.batches, "batch_size": self.batch_size,
                "sample": self.sample, "counts_before": self.counts_before, "eviction": self.eviction,
                "asynq_commands": self.asynq_commands(), "undecodable": self.undecodable, "notes": self.notes,
                "archive_cap": self.archive_cap, "groups": self.groups()}


@dataclass
class Result:
    plan: Plan
    done: int
    skipped: dict[str, int]
    batches: int
    longest_call_ms: float
    counts_after: dict[str, int]
    export_path: str | None
    run_dir: str

    def to_dict(self) -> dict:
        return {"action": self.plan.action, "done": self.done, "skipped": self.skipped, "batches": self.batches,
                "longest_call_ms": self.longest_call_ms, "counts_before": self.plan.counts_before,
                "counts_after": self.counts_after, "export": self.export_path, "run_dir": self.run_dir}


def check_queue(client: redis.Redis, queue: str) -> None:
    if not client.sismember(K.ALL_QUEUES, queue):
        known = sorted(q.decode() for q in client.smembers(K.ALL_QUEUES))
        raise NotFound(f"queue {queue!r} not found in {K.ALL_QUEUES} (known: {', '.join(known) or 'none'})",
                       hint="asynq queue ls")


def cap_text(cap: int) -> str:
    """The archive cap as the plan says it."""
    default = " (asynq's default)" if cap == K.ARCHIVE_MAX_SIZE else " (archive_max_size)"
    return f"cap {cap:,}{default}: asynq keeps the newest {cap - 1:,} (ZREMRANGEBYRANK 0 -{cap}) and none older than 90 days"


def _archive_eviction(client: redis.Redis, queue: str, new_ids: list[str], now: int, sample: int = 10,
                      cap: int = K.ARCHIVE_MAX_SIZE) -> dict | None:
    """Which archived tasks asynq's trim would drop once ``new_ids`` are archived at ``now``."""
    key = K.state_key(queue, "archived")
    cutoff = cutoff_for(now)
    members: list[tuple[float, bytes]] = []
    start = 0
    while True:
        rows = client.zrange(key, start, start + 9999, withscores=True)
        members += [(s, m) for m, s in rows]
        start += len(rows)
        if len(rows) < 10000:
            break
    too_old = [m for s, m in members if s <= cutoff]
    kept = sorted([(s, m) for s, m in members if s > cutoff] + [(float(now), i.encode()) for i in new_ids])
    over = len(kept) - (cap - 1) if len(kept) >= cap else 0
    by_rank = [m for _, m in kept[:over]]
    new_set = set(i.encode() for i in new_ids)
    evicted_old = too_old + [m for m in by_rank if m not in new_set]
    evicted_new = [m for m in by_rank if m in new_set]
    if not evicted_old and not evicted_new:
        return None
    ids = [m.decode("utf-8", "surrogateescape") for m in evicted_old]
    return {"count": len(evicted_old) + len(evicted_new), "archived_now": len(members),
            "older_than_90_days": len(too_old), "over_cap_existing": len(evicted_old) - len(too_old),
            "over_cap_new": len(evicted_new), "ids": ids + [m.decode() for m in evicted_new],
            "sample": (ids + [m.decode() for m in evicted_new])[:sample],
            "message": (f"archiving {len(new_ids)} task(s) makes asynq trim {len(evicted_old) + len(evicted_new)} "
                        f"task(s) from {key} ({cap_text(cap)}): their ids vanish from every "
                        f"state while the hashes stay behind; the oldest would go first: "
                        f"{', '.join((ids + [m.decode() for m in evicted_new])[:sample])}")}


def _refuse_states(action: str, flt: TaskFilter, states: dict[str, str]) -> None:
    for task_id, state in states.items():
        if state not in VALID_STATES[action]:
            why = "it is being processed right now" if state == "active" else f"it is {state}"
            raise RemediationRefused(f"cannot {action} task {task_id!r} of queue {flt.queue!r}: {why} "
                                     f"({action} takes {', '.join(VALID_STATES[action])})",
                                     hint=f"asynq task inspect --queue={flt.queue} --id={task_id}")


def plan_remediation(client: redis.Redis, action: str, flt: TaskFilter, *, run_dir: str | Path | None = None,
                     batch_size: int = MAX_BATCH, sample: int = 5, now: int | None = None,
                     command: str = "", audit: bool = True, archive_cap: int = K.ARCHIVE_MAX_SIZE) -> Plan:
    """The dry run: what ``action`` would change. Appended to the audit log when ``run_dir`` is given."""
    if action not in VALID_STATES:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(VALID_STATES)}")
    try:
        check_queue(client, flt.queue)
        if flt.state and flt.state not in VALID_STATES[action]:
            raise RemediationRefused(f"{action} does not apply to {flt.state} tasks "
                                     f"(it takes {', '.join(VALID_STATES[action])})")
        sel = select_tasks(client, flt, sample=sample)
        _refuse_states(action, flt, sel.states)
        counts = state_counts(client, flt.queue)
        if not sel.ids:
            raise NotFound(f"no task of queue {flt.queue!r} matches {flt.to_dict()} "
                           f"(queue holds {', '.join(f'{k} {v}' for k, v in counts.items() if v) or 'nothing'})",
                           hint="widen the filter; `jobrunbook remediate ls` lists tasks")
        now = int(clock.now()) if now is None else int(now)
        plan = Plan(action, flt, sel.ids, sel.states, list(sel.info.values()), counts,
                    batch_size=min(batch_size, MAX_BATCH), now=now, undecodable=sel.undecodable,
                    archive_cap=archive_cap, group_counts=dict(sel.groups))
        if action == "archive":
            plan.eviction = _archive_eviction(client, flt.queue, sel.ids, now, cap=archive_cap)
        if sel.undecodable:
            plan.notes.append(f"{sel.undecodable} task(s) have a msg that does not decode: never selected by a filter")
    except (NotFound, RemediationRefused) as exc:
        if audit and run_dir is not None:
            append_audit(run_dir, {"step": "plan", "dry_run": True, "command": command, "action": action,
                                   "filter": flt.to_dict(), "error": str(exc)})
        raise
    if audit and run_dir is not None:
        d = plan.to_dict()
        if d["eviction"]:
            d["eviction"] = {k: v for k, v in d["eviction"].items() if k != "ids"}
        append_audit(run_dir, {"step": "plan", "dry_run": True, "command": command, **d})
    return plan


def execute_remediation(client: redis.Redis, plan: Plan, *, confirm: int | None, max_tasks: int,
                        run_dir: str | Path, allow_archive_eviction: bool = False, command: str = "",
                        on_batch: Callable[[int, list[str], list[int]], None] | None = None,
                        lock_ttl_ms: int = 60_000) -> Result:
    """Act on what ``plan`` showed, after re-selecting it under the queue's lock."""
    run_dir = Path(run_dir)
    flt, action = plan.filter, plan.action
    base = {"command": command, "action": action, "filter": flt.to_dict(), "dry_run": False}

    def refuse(message: str, hint: str | None = None, **extra) -> RemediationRefused:
        append_audit(run_dir, {"step": "refused", **base, "error": message, **extra})
        return RemediationRefused(message, hint=hint)

    if confirm is None:
        raise refuse(f"not confirmed: this was a dry run of {plan.count} task(s)",
                     hint=f"re-run with --confirm {plan.count}")
    try:
        lock = acquire_lock(client, flt.queue, who=actor(), what=action, ttl_ms=lock_ttl_ms)
    except RemediationRefused as exc:
        append_audit(run_dir, {"step": "refused", **base, "error": str(exc)})
        raise
    export_file: Path | None = None
    outcome = None
    try:
        fresh = plan_remediation(client, action, flt, batch_size=plan.batch_size, now=plan.now, audit=False,
                                 archive_cap=plan.archive_cap)
        if abs(fresh.count - confirm) > confirm_margin(confirm):
            raise refuse(f"--confirm {confirm} does not match: {fresh.count} task(s) match now "
                         f"(allowed difference {confirm_margin(confirm)})",
                         hint="run the dry run again and confirm the count it shows", matched=fresh.count)
        if fresh.count > max_tasks:
            raise refuse(f"{fresh.count} task(s) match, more than --max-tasks {max_tasks}",
                         hint="narrow the filter or raise --max-tasks", matched=fresh.count)
        if action in ("archive", "delete"):
            export_file = export_path(run_dir, action, flt.queue)
        if fresh.eviction:
            ev = fresh.eviction
            if not allow_archive_eviction:
                raise refuse(ev["message"] + "; refused", hint="export them first: re-run with "
                             "--allow-archive-eviction (the evicted tasks are exported before the archive), "
                             "or delete old archived tasks first", eviction={k: v for k, v in ev.items() if k != "ids"})
            writer = ExportWriter(export_path(run_dir, action, flt.queue, "-evicted"), queue=flt.queue,
                                  action="archive-evicted", command=command)
            for i in range(0, len(ev["ids"]), MAX_BATCH):
                writer.export(client, ev["ids"][i:i + MAX_BATCH], note="trimmed by asynq's archive cap")
            append_audit(run_dir, {"step": "export-evicted", **base, "count": writer.count, "export": str(writer.path)})
        writer = ExportWriter(export_file, queue=flt.queue, action=action, command=command) if export_file else None
        groups: dict[str, list[str]] = {}
        for task_id in fresh.ids:
            groups.setdefault(fresh.states[task_id], []).append(task_id)
        done, skipped, batches, longest = 0, {}, 0, 0.0
        for state, ids in groups.items():
            def before(batch: list[str]) -> list[str] | None:
                return writer.export(client, batch) if writer else None

            def after(batch: list[str], codes: list[int], _state=state) -> None:
                applied = [i for i, c in zip(batch, codes, strict=True) if c == 1]
                if writer:
                    writer.mark_applied(action, applied)
                append_audit(run_dir, {"step": "batch", **base, "state": _state, "size": len(batch),
                                       "done": len(applied), "skipped": len(batch) - len(applied)})
                if on_batch:
                    on_batch(len(applied), batch, codes)

            outcome = apply_in_batches(client, lock, action, ids, expected_state=state,
                                       batch_size=fresh.batch_size, now=fresh.now, before_batch=before, after_batch=after,
                                       archive_cap=fresh.archive_cap)
            c = outcome.counts()
            done += c["done"]
            batches += c["batches"]
            longest = max(longest, c["longest_call_ms"])
            for k, v in c["skipped"].items():
                skipped[k] = skipped.get(k, 0) + v
        result = Result(fresh, done, skipped, batches, longest, state_counts(client, flt.queue),
                        str(export_file) if export_file else None, str(run_dir))
        append_audit(run_dir, {"step": "done", **base, "matched": fresh.count, **result.to_dict()})
        return result
    except RemediationRefused:
        raise
    except BaseException as exc:  # ^C and crashes too: the record survives the error
        append_audit(run_dir, {"step": "interrupted", **base, "error": f"{type(exc).__name__}: {exc}",
                               "counts_after": state_counts(client, flt.queue),
                               "export": str(export_file) if export_file else None})
        raise
    finally:
        lock.release()


def format_plan(plan: Plan) -> str:
    f = plan.filter
    lines = [f"DRY RUN: {plan.action} {plan.count} task(s) of queue {f.queue!r} matching {f.to_dict()}",
             f"  by state: {plan.by_state_counts()}; {plan.batches} batch(es) of at most {plan.batch_size}",
             f"  queue now: {', '.join(f'{k} {v}' for k, v in plan.counts_before.items())}"]
    for s in plan.sample:
        lines.append("  sample: " + ", ".join(f"{k}={v}" for k, v in s.items()))
    if plan.action == "archive":
        lines.append(f"  archive {cap_text(plan.archive_cap)}")
    if plan.eviction:
        lines.append(f"  WARNING: {plan.eviction['message']}")
    for note in plan.notes:
        lines.append(f"  note: {note}")
    lines.append("  asynq CLI equivalent:")
    lines += [f"    {c}" for c in plan.asynq_commands()]
    lines.append(f"  to act: add --confirm {plan.count}" + (" --allow-archive-eviction" if plan.eviction else ""))
    return "\n".join(lines)


# -- one remediation over several (queue, state) selections: a cause across queues and states ----------------

@dataclass
class PlanSet:
    """The dry runs of one action over several selections (one ``Plan`` per queue and state that matched)."""

    action: str
    plans: list[Plan]
    what: str  # what was asked, as the dry run says it: "cause dependency (Dependency failure)"
    empty: list[str] = field(default_factory=list)  # "queue/state" selections that matched nothing

    @property
    def count(self) -> int:
        return sum(p.count for p in self.plans)

    def groups(self) -> list[dict]:
        """Every (queue, state, task type, fingerprint) the selections hold, most first."""
        rows = [r for p in self.plans for r in p.groups()]
        return sorted(rows, key=lambda r: (-r["count"], r["queue"], r["state"], r["task_type"], r["fingerprint"]))

    def to_dict(self) -> dict:
        return {"action": self.action, "what": self.what, "count": self.count,
                "by_queue_state": {f"{p.filter.queue}/{p.filter.state}": p.count for p in self.plans},
                "groups": self.groups(), "empty": self.empty,
                "asynq_commands": [c for p in self.plans for c in p.asynq_commands(limit=0)
                                   if not c.startswith("#")],
                "others_in_state": {f"{p.filter.queue}/{p.filter.state}": p.others_in_state for p in self.plans},
                "plans": [p.to_dict() for p in self.plans]}


def cause_filters(client: redis.Redis, action: str, *, cause: str, queues: list[str] | None = None,
                  states: list[str] | None = None, **narrower) -> list[TaskFilter]:
    """One ``TaskFilter`` per queue and state for the tasks of ``cause``: every queue in ``asynq:queues``
    unless ``queues`` names some, the failed states ``action`` can start from unless ``states`` names some."""
    if states:
        for state in states:
            if state not in VALID_STATES[action]:
                raise RemediationRefused(f"{action} does not apply to {state} tasks "
                                         f"(it takes {', '.join(VALID_STATES[action])})")
    else:
        states = [s for s in FAILED_STATES if s in VALID_STATES[action]]
    if queues:
        for q in queues:
            check_queue(client, q)
    else:
        queues = sorted(q.decode("utf-8", "surrogateescape") for q in client.smembers(K.ALL_QUEUES))
        if not queues:
            raise NotFound(f"no queue in {K.ALL_QUEUES}: asynq's Redis holds no queue", hint="asynq queue ls")
    return [TaskFilter(queue=q, state=s, cause=cause, **narrower) for q in queues for s in states]


def plan_across(client: redis.Redis, action: str, filters: list[TaskFilter], *, run_dir: str | Path | None = None,
                batch_size: int = MAX_BATCH, now: int | None = None, command: str = "", audit: bool = True,
                archive_cap: int = K.ARCHIVE_MAX_SIZE, what: str = "") -> PlanSet:
    """The dry run of ``action`` over every selection of ``filters``; the ones that match nothing are listed
    in ``empty``. NotFound when none matches anything. One audit record for the whole set."""
    now = int(clock.now()) if now is None else int(now)
    plans, empty = [], []
    for flt in filters:
        try:
            plans.append(plan_remediation(client, action, flt, batch_size=batch_size, now=now, audit=False,
                                          archive_cap=archive_cap))
        except NotFound:
            empty.append(f"{flt.queue}/{flt.state}")
    what = what or ", ".join(dict.fromkeys(f"{k} {v}" for f in filters for k, v in f.to_dict().items()
                                           if k not in ("queue", "state")))
    base = {"step": "plan", "dry_run": True, "command": command, "action": action,
            "filter": {"queue": ",".join(dict.fromkeys(f.queue for f in filters)),
                       "states": sorted({f.state for f in filters if f.state}), "what": what}}
    if not plans:
        message = f"no task matches {what or 'the filter'} in {', '.join(empty) or 'any queue'}"
        if audit and run_dir is not None:
            append_audit(run_dir, {**base, "error": message})
        raise NotFound(message, hint="`jobrunbook diagnose` shows each cause's tasks; `jobrunbook remediate ls` lists tasks")
    ps = PlanSet(action, plans, what, empty)
    if audit and run_dir is not None:
        append_audit(run_dir, {**base, "count": ps.count, "by_queue_state": ps.to_dict()["by_queue_state"],
                               "groups": ps.groups()[:50]})
    return ps


def execute_across(client: redis.Redis, plans: PlanSet, *, confirm: int | None, max_tasks: int,
                   run_dir: str | Path, allow_archive_eviction: bool = False, command: str = "") -> list[Result]:
    """Act on every selection of ``plans`` in turn, each re-selected under its queue's lock (``execute_remediation``).

    ``confirm`` is the total the dry run showed. A selection refused part-way leaves the ones before it done
    (each in the audit log, each archive or delete exported first) and raises with what was done.
    """
    base = {"command": command, "action": plans.action, "filter": {"what": plans.what}, "dry_run": False}
    if confirm is None or abs(plans.count - confirm) > confirm_margin(confirm):
        message = (f"not confirmed: this was a dry run of {plans.count} task(s)" if confirm is None else
                   f"--confirm {confirm} does not match: {plans.count} task(s) match now "
                   f"(allowed difference {confirm_margin(confirm)})")
        append_audit(run_dir, {"step": "refused", **base, "error": message})
        raise RemediationRefused(message, hint=f"run the dry run again and re-run with --confirm {plans.count}")
    if plans.count > max_tasks:
        message = f"{plans.count} task(s) match, more than --max-tasks {max_tasks}"
        append_audit(run_dir, {"step": "refused", **base, "error": message})
        raise RemediationRefused(message, hint="narrow the filter (--queue, --type) or raise --max-tasks")
    results: list[Result] = []
    for plan in plans.plans:
        try:
            results.append(execute_remediation(client, plan, confirm=plan.count, max_tasks=max_tasks, run_dir=run_dir,
                                               allow_archive_eviction=allow_archive_eviction, command=command))
        except RemediationRefused as exc:
            done = ", ".join(f"{r.plan.filter.queue}/{r.plan.filter.state} {r.done}" for r in results) or "nothing"
            raise RemediationRefused(f"{plan.filter.queue}/{plan.filter.state}: {exc.message}; done before it: {done}",
                                     hint=exc.hint) from None
    return results


def format_plans(plans: PlanSet) -> str:
    """The dry run of a PlanSet: the total, each queue and state, each group, the asynq CLI where it is exact."""
    queues = list(dict.fromkeys(p.filter.queue for p in plans.plans))
    lines = [f"DRY RUN: {plans.action} {plans.count} task(s) of {plans.what} in {len(queues)} queue(s)",
             "  by queue and state: " + ", ".join(f"{p.filter.queue}/{p.filter.state} {p.count}" for p in
                                                  sorted(plans.plans, key=lambda p: -p.count))
             + (f" (nothing in {', '.join(plans.empty)})" if plans.empty else ""),
             "  tasks by group (queue, state, task type, error fingerprint):"]
    lines += [f"    {r['count']:>6}  {r['queue']}/{r['state']}  {r['task_type']}  {r['fingerprint'][:120]}"
              for r in plans.groups()]
    for p in plans.plans:
        if p.action == "archive":
            lines.append(f"  archive {p.filter.queue}: {cap_text(p.archive_cap)}")
        if p.eviction:
            lines.append(f"  WARNING: {p.eviction['message']}")
        lines += [f"  note {p.filter.queue}/{p.filter.state}: {n}" for n in p.notes]
    lines.append("  asynq CLI equivalent:")
    for p in plans.plans:
        whole = p.asynq_commands(limit=0)
        if whole and not whole[0].startswith("#") and p.action != "delete":
            lines.append(f"    {whole[0]}")
        else:
            lines.append(f"    none for {p.filter.queue}/{p.filter.state}: it also holds {p.others_in_state} task(s) "
                         "this selection leaves out, and asynq's CLI has no filter")
    evict = any(p.eviction for p in plans.plans)
    lines.append(f"  to act: add --confirm {plans.count}" + (" --allow-archive-eviction" if evict else ""))
    return "\n".join(lines)
