"""The demo's scenarios: what the producer enqueues, what the handlers do, and the truth.

A task's fate is read from its payload, as in the real worker the fixtures were
captured from (tests/fixtures/asynq): a `"lookup":"db"` field means the
handler dials Postgres, a `tiff` image panics the decoder, a negative
`amount_cents` is a bad record, a missing id fails validation (SkipRetry).
Whether a fate turns into a failure depends on the scenario's conditions at
that moment (Postgres down from the onset, the partner API rate-limiting, a
deploy that dropped the `payment:capture` handler).

Each scenario declares its ground truth as data (``Scenario.truth``), the
shape of the fixtures' truth.json: the dominant cause, the expected ranking
of causes by failed tasks, the onset and, for bad-deploy, the deploy time.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field

__all__ = [
    "CAUSES",
    "TASK_TYPES",
    "QUEUES",
    "Scenario",
    "SCENARIOS",
    "get_scenario",
    "classify_error",
    "make_payload",
    "Conditions",
    "handle",
    "Outcome",
    "PANIC_ERRORS",
    "panic_errors",
    "task_headers",
]

# the cause names of the fixtures' truth.json
CAUSES = ("dependency", "validation", "timeout", "panic", "bad_data", "rate_limit", "lease_expired",
          "handler_not_found", "other")

QUEUES = ("critical", "default", "low")
# task type -> (queue, producer weight, max retry, timeout s, retention s)
TASK_TYPES: dict[str, tuple[str, float, int, int, int]] = {
    "payment:capture": ("critical", 0.20, 5, 1800, 0),
    "webhook:deliver": ("critical", 0.25, 3, 1800, 0),
    "email:send": ("default", 0.25, 3, 1800, 0),
    "image:resize": ("default", 0.15, 3, 1800, 0),
    "report:generate": ("low", 0.15, 2, 5, 3600),
}

PG_ADDR = "127.0.0.1:5432"  # the Postgres the handlers dial unless the demo names another (a down one)
_DB_PREFIX = {
    "email:send": "lookup user: ",
    "webhook:deliver": "load signing secret: ",
    "payment:capture": "ledger write: ",
    "image:resize": "load image metadata: ",
    "report:generate": "",
}
SKIP_RETRY = "skip retry for the task"
LEASE_EXPIRED = "asynq: task lease expired"

_CLASSIFIERS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"handler not found for task"), "handler_not_found"),
    (re.compile(r"task lease expired"), "lease_expired"),
    (re.compile(r"skip retry for the task$"), "validation"),
    (re.compile(r"^(?:panic error cause by: )?panic \["), "panic"),  # v0.24.x and v0.25.0+ (PanicError)
    (re.compile(r"context deadline exceeded"), "timeout"),
    (re.compile(r"status 429|Too Many Requests"), "rate_limit"),
    (re.compile(r"connection refused|no such host|i/o timeout"), "dependency"),
    (re.compile(r"invalid amount_cents|invalid record|malformed"), "bad_data"),
]


def classify_error(error: str) -> str:
    """The cause behind one of the error strings this demo writes (``other`` when unknown)."""
    for pattern, cause in _CLASSIFIERS:
        if pattern.search(error):
            return cause
    return "other"


@dataclass(frozen=True)
class Scenario:
    """One named incident.

    ``traits``: share of enqueued tasks carrying each fate, before the onset
    (``baseline``) and after it (``incident``). ``conditions``: which fates fail
    after the onset. ``truth``: the declared ground truth.
    """

    name: str
    description: str
    incident: dict[str, float]
    conditions: frozenset[str]
    truth: dict
    baseline: dict[str, float] = field(default_factory=lambda: {
        "dependency": 0.20, "rate_limit": 0.2, "timeout": 0.1, "panic": 0.03, "validation": 0.02, "bad_data": 0.05})
    crashes: tuple[float, ...] = ()  # moments (fraction of the incident) when the worker dies mid-task
    alert_target: tuple[str, str] = ("default", "email:send")


def _truth(dominant: str, ranking: list[str], **extra) -> dict:
    return {"dominant_cause": dominant, "expected_ranking": ranking, **extra}


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("dependency-down", "the Postgres the handlers dial refuses connections from the onset",
             {"dependency": 0.45, "validation": 0.02, "bad_data": 0.01},
             frozenset({"db_down"}), _truth("dependency", ["dependency"], dependency="postgres"),
             alert_target=("critical", "webhook:deliver")),
    Scenario("bad-deploy", "a deploy at the onset ships a build without the payment:capture handler "
             "and with a nil-pointer panic in image:resize",
             {"dependency": 0.20, "panic": 0.02, "deploy_panic": 0.5},
             frozenset({"deployed"}), _truth("handler_not_found", ["handler_not_found", "panic"],
                                             missing_handler="payment:capture", deploy="onset"),
             alert_target=("critical", "payment:capture")),
    Scenario("rate-limited", "the partner webhook API answers 429 Too Many Requests",
             {"rate_limit": 0.6, "dependency": 0.20, "validation": 0.01},
             frozenset({"rate_limited"}), _truth("rate_limit", ["rate_limit"], external="partner-b"),
             alert_target=("critical", "webhook:deliver")),
    Scenario("timeouts", "report:generate queries slow down and hit their 5 s timeout",
             {"timeout": 0.7, "dependency": 0.20, "validation": 0.01},
             frozenset({"slow"}), _truth("timeout", ["timeout"], timeout_seconds=5),
             alert_target=("low", "report:generate")),
    Scenario("validation", "a producer release enqueues tasks without their ids: SkipRetry, straight to archived",
             {"validation": 0.5, "dependency": 0.20},
             frozenset(), _truth("validation", ["validation"]),
             alert_target=("default", "email:send")),
    Scenario("mixed", "several causes at once: 429s, Postgres down, timeouts, panics, validation, bad records, "
             "a worker crash",
             {"rate_limit": 1.0, "timeout": 0.6, "dependency": 0.2, "panic": 0.15, "validation": 0.02,
              "bad_data": 0.03},
             frozenset({"rate_limited", "db_down_partial", "slow"}),
             _truth("rate_limit", ["rate_limit", "dependency", "timeout"]),
             crashes=(0.5,), alert_target=("critical", "webhook:deliver")),
]}


def get_scenario(name: str) -> Scenario:
    from jobrunbook._exceptions import ConfigError

    try:
        return SCENARIOS[name]
    except KeyError:
        raise ConfigError(f"unknown demo scenario {name!r}",
                          hint="one of " + ", ".join(SCENARIOS)) from None


# -- payloads -----------------------------------------------------------------

_TRAITS_BY_TYPE = {
    "email:send": {"dependency", "validation"},
    "payment:capture": {"dependency", "bad_data"},
    "webhook:deliver": {"dependency", "rate_limit"},
    "image:resize": {"dependency", "panic", "validation", "deploy_panic"},
    "report:generate": {"dependency", "timeout", "validation"},
}


def pick_trait(rng: random.Random, task_type: str, mix: dict[str, float]) -> str:
    """The fate of a new task of ``task_type`` under the mix ``mix`` (``ok`` for none)."""
    r = rng.random()
    for trait, share in mix.items():
        if trait not in _TRAITS_BY_TYPE[task_type]:
            continue
        if r < share:
            return trait
        r -= share
    return "ok"


def _dump(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def make_payload(rng: random.Random, task_type: str, trait: str) -> bytes:
    """A JSON payload of the fixtures' shape for ``task_type`` carrying ``trait``."""
    n = rng.randint(1000, 9999)
    if task_type == "email:send":
        p: dict = {"user_id": n, "to": f"user{n}@example.com",
                   "template": rng.choice(["welcome", "password_reset", "newsletter", "receipt"])}
        if trait == "validation":
            del p["user_id"]
    elif task_type == "payment:capture":
        amount = rng.randint(500, 50000)
        p = {"order_id": rng.randint(10000, 10400), "amount_cents": -amount if trait == "bad_data" else amount,
             "currency": rng.choice(["USD", "USD", "EUR"])}
        if trait == "dependency":
            p["ledger"] = "postgres"
    elif task_type == "webhook:deliver":
        p = {"event_id": f"evt_{rng.randint(100000, 999999)}",
             "endpoint": "/hooks/partner-b" if trait == "rate_limit" else "/hooks/partner-a",
             "event": rng.choice(["order.created", "order.updated", "order.paid"])}
    elif task_type == "image:resize":
        fmt = {"panic": "tiff", "deploy_panic": "webp"}.get(trait, rng.choice(["jpeg", "png"]))
        p = {"image_id": f"img_{rng.randint(100000, 999999)}", "size": rng.choice(["800x600", "1024x768", "320x240"]),
             "format": fmt}
        if trait == "validation":
            del p["image_id"]
    else:
        p = {"report_id": rng.randint(100, 999), "source": "warehouse" if trait == "dependency" else "cache",
             "range": "yearly" if trait == "timeout" else rng.choice(["daily", "weekly"])}
        if trait == "validation":
            del p["report_id"]
        return _dump(p)
    if trait == "dependency" and task_type != "payment:capture":
        p["lookup"] = "db"
    return _dump(p)


# -- handlers -----------------------------------------------------------------

@dataclass(frozen=True)
class Conditions:
    """What is broken at one moment."""

    db_down: bool = False
    db_down_partial: bool = False
    rate_limited: bool = False
    slow: bool = False
    deployed: bool = False


@dataclass(frozen=True)
class Outcome:
    error: str | None  # None: success
    duration: float  # seconds the handler ran
    skip_retry: bool = False
    panic_kind: str | None = None  # "decoder" | "index" | "nil"


_NORMAL_DURATION = {"payment:capture": (0.03, 0.05), "webhook:deliver": (0.001, 0.004),
                    "email:send": (0.02, 0.09), "image:resize": (0.06, 0.24), "report:generate": (0.1, 2.0)}
# the panic texts asynq v0.24.1 records (a Go 1.19 build with absolute paths, as the v0.24.1 captures)
PANIC_ERRORS = {
    "decoder": 'panic [/go/src/app/cmd/worker-daemon/main.go:303]: image:resize: unsupported decoder for format "tiff"',
    "index": "panic [/usr/lib/go-1.19/src/runtime/panic.go:113]: runtime error: index out of range [1] with length 1",
    "nil": "panic [/usr/lib/go-1.19/src/runtime/panic.go:260]: runtime error: invalid memory address or nil "
           "pointer dereference",
}
# v0.25.0+ wraps them in asynq.PanicError (a -trimpath Go 1.27 build, as the v0.26.0 captures)
_PANIC_ERRORS_V025 = {
    "decoder": 'panic error cause by: panic [jobsvc/worker-daemon/main.go:303]: image:resize: unsupported decoder '
               'for format "tiff"',
    "index": "panic error cause by: panic [runtime/panic.go:236]: runtime error: index out of range [1] with length 1",
    "nil": "panic error cause by: panic [runtime/panic.go:262]: runtime error: invalid memory address or nil "
           "pointer dereference",
}


def panic_errors(asynq_version: str = "v0.24.1") -> dict[str, str]:
    """The panic texts a worker on ``asynq_version`` records, by kind (decoder, index, nil)."""
    from jobrunbook.asynq.versions import behaviour

    return _PANIC_ERRORS_V025 if behaviour(asynq_version).panic_wrapped else PANIC_ERRORS


_TENANTS = ("acme", "globex", "initech", "umbrella")


def task_headers(rng: random.Random, asynq_version: str = "v0.24.1") -> dict[str, str]:
    """The headers a v0.26.0+ producer sets on a task (as the headers/ capture: tenant, traceparent); none before."""
    from jobrunbook.asynq.versions import behaviour

    if not behaviour(asynq_version).headers:
        return {}
    return {"tenant": rng.choice(_TENANTS),
            "traceparent": f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01"}


def handle(rng: random.Random, task_type: str, payload: bytes, timeout: int, cond: Conditions, *,
           pg_addr: str = PG_ADDR, panics: dict[str, str] | None = None) -> Outcome:
    """Run the simulated handler of ``task_type`` on ``payload`` under ``cond``; its Postgres is ``pg_addr``,
    ``panics`` the panic texts of its asynq release (``panic_errors``; v0.24.1's by default)."""
    panics = panics or PANIC_ERRORS
    lo, hi = _NORMAL_DURATION[task_type]
    duration = round(rng.uniform(lo, hi), 6)
    if cond.deployed and task_type == "payment:capture":
        return Outcome(f'handler not found for task "{task_type}"', round(rng.uniform(0.00002, 0.0001), 6))
    try:
        p = json.loads(payload)
    except ValueError:
        return Outcome("invalid record: payload is not JSON", duration)
    fast = round(rng.uniform(0.001, 0.01), 6)
    missing = {"email:send": "user_id", "image:resize": "image_id", "report:generate": "report_id"}.get(task_type)
    if missing and missing not in p:
        return Outcome(f"invalid payload: missing field {missing}: {SKIP_RETRY}", fast, skip_retry=True)
    uses_db = p.get("lookup") == "db" or p.get("ledger") == "postgres" or p.get("source") == "warehouse"
    if uses_db and (cond.db_down or (cond.db_down_partial and rng.random() < 0.95)):
        return Outcome(f"{_DB_PREFIX[task_type]}dial tcp {pg_addr}: connect: connection refused", fast)
    if task_type == "payment:capture" and p.get("amount_cents", 0) < 0:
        return Outcome(f"capture order {p['order_id']}: invalid amount_cents {p['amount_cents']} "
                       f"for currency {p['currency']}", fast)
    if task_type == "webhook:deliver" and p.get("endpoint") == "/hooks/partner-b":
        if rng.random() < (0.95 if cond.rate_limited else 0.05):
            return Outcome("unexpected status 429 Too Many Requests", round(rng.uniform(0.0002, 0.001), 6))
    if task_type == "image:resize":
        if p.get("format") == "tiff":
            return Outcome(panics["decoder"], duration, panic_kind="decoder")
        if p.get("format") == "webp" and cond.deployed:
            return Outcome(panics["nil"], fast, panic_kind="nil")
        if p.get("size") == "320x240" and rng.random() < 0.02:
            return Outcome(panics["index"], fast, panic_kind="index")
    if task_type == "report:generate" and p.get("range") == "yearly":
        if rng.random() < (0.9 if cond.slow else 0.05):
            return Outcome("context deadline exceeded", round(timeout + rng.uniform(0.0005, 0.01), 6))
    return Outcome(None, duration)
