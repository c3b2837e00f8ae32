"""Which tasks a remediation acts on: a filter, and its selection read in server-side pages.

A ``TaskFilter`` names a queue and either task ids or a state, plus optional
task type, error fingerprint (``jobrunbook.fingerprint``), cause (the
diagnosis's own classifier, ``diagnosis.causes.classify``, applied to each
task's last error), error substring and a failure window (``last_failed_at``). ``select_tasks`` reads the state's set
page by page (ZRANGE / LRANGE of ``PAGE`` ids, then the ``msg`` of that page
in one pipeline), so no single Redis call is long, and keeps asynq's rank
order so that a run over the selection leaves the pending list in the order
asynq's runall would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import redis

from jobrunbook import clock
from jobrunbook._exceptions import ConfigError, NotFound
from jobrunbook.asynq import keys as K
from jobrunbook.asynq.messages import decode_task
from jobrunbook.fingerprint import fingerprint

__all__ = ["TaskFilter", "Selected", "select_tasks", "parse_when", "state_counts", "PAGE"]

PAGE = 1000
SELECTABLE_STATES = ("pending", "scheduled", "retry", "archived", "completed")
def parse_when(text: str | None, *, now: float | None = None) -> int | None:
    """'1h', '30m', '2d' (ago), an ISO-8601 time (UTC if no zone) or unix seconds -> unix seconds."""
    when = clock.parse_when(text, now=now)
    return None if when is None else int(when)


@dataclass(frozen=True)
class TaskFilter:
    queue: str
    state: str | None = None
    ids: tuple[str, ...] = ()
    task_type: str | None = None
    fingerprint: str | None = None
    cause: str | None = None  # a cause key of the diagnosis ("dependency"), or "unknown"
    error_contains: str | None = None
    failed_since: int | None = None   # last_failed_at >= this (unix s)
    failed_before: int | None = None  # last_failed_at < this (unix s)
    score_before: int | None = None   # zset score < this: archived before / due before (unix s)

    def __post_init__(self) -> None:
        if not self.queue:
            raise ConfigError("a queue is required", hint="--queue NAME (asynq:queues lists them)")
        if not self.ids and not self.state:
            raise ConfigError("give task ids or a state", hint="--id ID or --state retry|archived|scheduled|pending")
        if self.state and self.state not in SELECTABLE_STATES:
            if self.state == "failed":
                raise ConfigError("asynq has no state 'failed': failed tasks are in retry or archived",
                                  hint="--state retry or --state archived")
            raise ConfigError(f"state {self.state!r} cannot be selected; one of {', '.join(SELECTABLE_STATES)}")
        if self.cause is not None:
            from jobrunbook.diagnosis.causes import check_cause_key

            check_cause_key(self.cause)

    @property
    def needs_message(self) -> bool:
        return any(v is not None for v in (self.task_type, self.fingerprint, self.cause, self.error_contains,
                                           self.failed_since, self.failed_before))

    @property
    def whole_state(self) -> bool:
        return not self.ids and not self.needs_message and self.score_before is None

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if v not in (None, ())}

    def matches(self, msg) -> bool:
        if msg is None:
            return False
        if self.task_type is not None and msg.type != self.task_type:
            return False
        if self.fingerprint is not None and fingerprint(msg.error_msg) != self.fingerprint:
            return False
        if self.cause is not None:
            from jobrunbook.diagnosis.causes import classify

            if classify(msg.error_msg) != self.cause:
                return False
        if self.error_contains is not None and self.error_contains not in msg.error_msg:
            return False
        if self.failed_since is not None and msg.last_failed_at < self.failed_since:
            return False
        if self.failed_before is not None and msg.last_failed_at >= self.failed_before:
            return False
        return True


@dataclass
class Selected:
    """The selection: ids in asynq's order, each id's state, a short description of some, and how many
    of each (task type, error fingerprint) it holds (when the filter read the messages)."""

    ids: list[str] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    info: dict[str, dict] = field(default_factory=dict)
    undecodable: int = 0
    groups: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, task_id: str, state: str, msg, score, sample: int, *, count: bool = True) -> None:
        self.ids.append(task_id)
        self.states[task_id] = state
        if len(self.info) < sample:
            self.info[task_id] = _describe(task_id, state, msg, score)
        if count and msg is not None:
            key = (msg.type, fingerprint(msg.error_msg))
            self.groups[key] = self.groups.get(key, 0) + 1

    def __len__(self) -> int:
        return len(self.ids)


def state_counts(client: redis.Redis, queue: str) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    for state in ("pending", "active"):
        pipe.llen(K.state_key(queue, state))
    for state in K.ZSET_STATES:
        pipe.zcard(K.state_key(queue, state))
    values = pipe.execute()
    return dict(zip(("pending", "active") + K.ZSET_STATES, (int(v) for v in values), strict=True))


def _describe(task_id: str, state: str, msg, score) -> dict:
    info = {"id": task_id, "state": state}
    if score is not None:
        info["score"] = int(score)
    if msg is not None:
        info.update(type=msg.type, error=fingerprint(msg.error_msg), last_failed_at=msg.last_failed_at,
                     retried=msg.retried, retry=msg.retry)
    return info


def _select_ids(client: redis.Redis, flt: TaskFilter, sel: Selected, sample: int) -> None:
    pipe = client.pipeline(transaction=False)
    for task_id in flt.ids:
        pipe.hmget(K.task_key(flt.queue, task_id), "state", "msg")
    for task_id, (state, raw) in zip(flt.ids, pipe.execute(), strict=True):
        if state is None:
            raise NotFound(f"task {task_id!r} not found in queue {flt.queue!r}",
                           hint=f"asynq task inspect --queue={flt.queue} --id={task_id}")
        state = state.decode()
        if flt.state and state != flt.state:
            continue
        msg = decode_task(raw)
        if flt.needs_message and not flt.matches(msg):
            continue
        if task_id not in sel.states:
            sel.add(task_id, state, msg, None, sample)


def select_tasks(client: redis.Redis, flt: TaskFilter, *, sample: int = 5, page: int = PAGE) -> Selected:
    """Read the tasks ``flt`` selects, ``page`` ids per call; ``sample`` of them described."""
    sel = Selected()
    if flt.ids:
        _select_ids(client, flt, sel, sample)
        return sel
    key = K.state_key(flt.queue, flt.state)
    is_zset = flt.state in K.ZSET_STATES
    start = 0
    while True:
        if is_zset:
            rows = client.zrange(key, start, start + page - 1, withscores=True)
        else:
            # pending: asynq dequeues from the right; read in list order
            rows = [(m, None) for m in client.lrange(key, start, start + page - 1)]
        if not rows:
            break
        start += len(rows)
        ids = [m.decode("utf-8", "surrogateescape") for m, _ in rows]
        msgs = [None] * len(ids)
        if flt.needs_message or len(sel.info) < sample:
            pipe = client.pipeline(transaction=False)
            for task_id in ids:
                pipe.hget(K.task_key(flt.queue, task_id), "msg")
            msgs = [decode_task(raw) for raw in pipe.execute()]
        for task_id, (_, score), msg in zip(ids, rows, msgs, strict=True):
            if flt.score_before is not None and (score is None or score >= flt.score_before):
                continue
            if flt.needs_message:
                if msg is None:
                    sel.undecodable += 1
                    continue
                if not flt.matches(msg):
                    continue
            if task_id in sel.states:
                continue
            sel.add(task_id, flt.state, msg, score, sample, count=flt.needs_message)
        if len(rows) < page:
            break
    return sel
