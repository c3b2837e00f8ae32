"""The inspector's summary of one asynq Redis, as a dict, as text, and as ``jobrunbook inspect``.

``summarize`` gathers what an on-call engineer needs first (failed-task groups
and the task types they hit, counts per queue and state, daily history, live
servers, data health, the asynq version the reading assumed and why) into one
JSON-able dict; ``render_text`` prints it for a terminal, most useful first. A section that fails after the first call (Redis
dying mid-way) is recorded under ``errors`` instead of aborting the summary.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobrunbook._exceptions import JobrunbookError
from jobrunbook.asynq.inspector import Inspector, iso

__all__ = ["summarize", "render_text", "add_arguments", "command"]

_STATES = ("pending", "active", "scheduled", "retry", "archived", "completed", "aggregating")


def summarize(inspector: Inspector, queue: str | None = None, *, top: int = 10, history_days: int = 7,
              health: bool = True, asynq_version: str = "infer", archive_cap: int = 10_000,
              redis_url: str = "") -> dict:
    """Everything ``jobrunbook inspect`` shows, as a JSON-able dict.

    Keys: generated_at, queues (list of queue_info dicts), totals (state ->
    count over the queues), failures (tasks, by_state, anomalies, complete,
    incomplete_reason, groups_total, overflow_tasks), failure_groups (the
    ``top`` largest groups, records of FailureGroup.to_record), task_types
    (failed tasks per queue and type, ``top`` largest), history (queue ->
    History.to_dict), servers (ServerInfo.to_dict list), health (queue ->
    Health.to_dict), asynq_version (VersionReading.to_dict: the version
    assumed, from ``asynq_version`` or the data, and why), data_health
    (``hazards.check_data_health`` less the per-queue part: Redis hazard,
    unregistered queues, repairs), errors (section -> message). ``redis_url``
    (as shown, no password) goes into the repair commands.
    """
    from jobrunbook.asynq.hazards import check_data_health

    names = [queue] if queue else inspector.queues()
    if queue:
        inspector.check_queue(queue)
    out: dict = {"generated_at": iso(inspector.clock()), "queues": [], "totals": dict.fromkeys(_STATES, 0),
                 "failures": {}, "failure_groups": [], "task_types": [], "history": {}, "servers": [],
                 "health": {}, "asynq_version": None, "data_health": None, "errors": {}}

    def section(name, fn):
        try:
            return fn()
        except JobrunbookError as exc:
            out["errors"][name] = str(exc)
            return None

    for q in names:
        info = section(f"queue {q}", lambda q=q: inspector.queue_info(q))
        if info is not None:
            out["queues"].append(info.to_dict())
            for s in _STATES:
                out["totals"][s] += getattr(info, s)
    agg = section("failures", lambda: inspector.failures(names))
    if agg is not None:
        out["failures"] = {"tasks": agg.tasks, "by_state": agg.by_state, "anomalies": agg.anomalies,
                           "anomaly_examples": agg.anomaly_examples, "complete": agg.complete,
                           "incomplete_reason": agg.incomplete_reason, "groups_total": len(agg.groups),
                           "overflow_tasks": agg.overflow_tasks}
        out["failure_groups"] = agg.to_records()[:top]
        out["task_types"] = agg.by_task_type()[:top]
    for q in names:
        h = section(f"history {q}", lambda q=q: inspector.history(q, history_days))
        if h is not None:
            out["history"][q] = h.to_dict()
    servers = section("servers", inspector.servers)
    if servers is not None:
        out["servers"] = [s.to_dict() for s in servers]
    reading = section("asynq version", lambda: inspector.version(names, configured=asynq_version))
    if reading is not None:
        out["asynq_version"] = reading.to_dict()
    if health and reading is not None:
        dh = section("data health", lambda: check_data_health(inspector.client, names, reading,
                                                               archive_cap=archive_cap, redis_url=redis_url,
                                                               aggregate=agg))  # retry/archived checked in its pass
        if dh is not None:
            out["health"] = dh.pop("queues")
            out["data_health"] = dh
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _clip(text: str, n: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def render_text(summary: dict) -> str:
    """A terminal view: failing task types and error groups first, then counts, history, servers, health."""
    lines: list[str] = []
    f = summary.get("failures") or {}
    total_failed = f.get("tasks", 0)
    head = f"asynq at {summary.get('generated_at') or '?'}: {total_failed:,} failed tasks"
    if f:
        head += f" ({f['by_state'].get('retry', 0):,} retry, {f['by_state'].get('archived', 0):,} archived)"
    lines += [head, "=" * len(head)]
    if f and not f.get("complete", True):
        lines.append(f"!! INCOMPLETE: {f.get('incomplete_reason')}")
    for name, err in summary.get("errors", {}).items():
        lines.append(f"!! {name}: {err}")

    if summary.get("task_types"):
        lines += ["", "Top failing task types", f"  {'count':>8} {'retry':>7} {'archived':>8}  queue/type"]
        for t in summary["task_types"]:
            lines.append(f"  {t['count']:>8,} {t['retry']:>7,} {t['archived']:>8,}  {t['queue']}/{t['task_type']}")
    if summary.get("failure_groups"):
        lines += ["", "Top error groups", f"  {'count':>8} {'share':>6} {'retry':>7} {'arch':>6}  queue/type: error"]
        for g in summary["failure_groups"]:
            share = g["count"] / total_failed if total_failed else None
            lines.append(f"  {g['count']:>8,} {_pct(share):>6} {g['retry']:>7,} {g['archived']:>6,}  "
                         f"{g['queue']}/{g['task_type']}: {_clip(g['fingerprint'], 90)}")
            lines.append(f"  {'':>31}  last {g['last_failed_at_iso'] or '-'}  e.g. {_clip(g['example_error'], 80)}")
    elif f:
        lines += ["", "No failed tasks (retry and archived are empty)."]
    anomalies = {k: v for k, v in (f.get("anomalies") or {}).items() if v}
    if anomalies:
        lines.append("  anomalies: " + ", ".join(f"{k} {v:,}" for k, v in anomalies.items()))

    if summary.get("queues"):
        cols = ("pending", "active", "scheduled", "retry", "archived", "completed")
        lines += ["", "Queues", "  " + f"{'queue':<16}" + "".join(f"{c:>10}" for c in cols)
                  + f"{'paused':>8}{'latency':>9}{'memory':>10}"]
        for q in summary["queues"]:
            lines.append("  " + f"{_clip(q['queue'], 16):<16}" + "".join(f"{q[c]:>10,}" for c in cols)
                         + f"{'yes' if q['paused'] else 'no':>8}{q['latency_seconds']:>8.0f}s"
                         + f"{q['memory_usage_bytes'] / 1024:>8.0f}KB")
    if summary.get("history"):
        lines += ["", "Processed / failed per UTC day (newest first)"]
        for q, h in summary["history"].items():
            days = "  ".join(f"{d['date'][5:]} {d['failed']:,}/{d['processed']:,} ({_pct(d['failure_ratio'])})"
                             for d in h["days"][:7])
            lines.append(f"  {q}: {days}")
            lines.append(f"  {'':{len(q)}}  all time: {h['failed_total']:,} failed of {h['processed_total']:,} "
                         f"({_pct(h['failure_ratio_total'])})")
    servers = summary.get("servers", [])
    lines += ["", f"Live servers: {len(servers)}"]
    for s in servers:
        lines.append(f"  {s['host']}:{s['pid']} {s['status']} concurrency {s['concurrency']}, "
                     f"{len(s['workers'])} busy workers, queues {s['queues']}")
        for w in s["workers"][:5]:
            lines.append(f"    {w['queue']}/{w['task_type']} {w['task_id']} since {w['started_at']}")
    reading = summary.get("asynq_version")
    if reading:
        lines += ["", reading["sentence"] + (f" Redis {reading['redis_version']}." if reading.get("redis_version")
                                             else "")]
    for q, h in summary.get("health", {}).items():
        problems = []
        for kind in ("missing_hash", "state_mismatch"):
            for st, finding in h[kind].items():
                if finding["count"]:
                    problems.append(f"{finding['count']:,} {st} ids {kind.replace('_', ' ')}")
        if h["orphans"]["count"]:
            problems.append(f"{h['orphans']['count']:,} orphan task hashes (in no state; asynq#847)")
        if h["no_state_field"]["count"]:
            problems.append(f"{h['no_state_field']['count']:,} task hashes without a state field")
        if h["archive_size"] >= 0.9 * h["archive_cap"]:
            problems.append(f"archive at {h['archive_size']:,} of asynq's {h['archive_cap']:,} cap: "
                            "further archives drop the oldest")
        lines.append(f"Health {q}: " + ("; ".join(problems) if problems else "ok")
                     + f" (archive {h['archive_size']:,}/{h['archive_cap']:,}, asynq keeps the newest "
                     f"{h['archive_cap'] - 1:,})")
    dh = summary.get("data_health") or {}
    if dh.get("redis_hazard"):
        lines.append(f"!! {dh['redis_hazard']}")
    unreg = (dh.get("unregistered") or {})
    if unreg and not unreg.get("complete", True):
        lines.append(f"  (unregistered-queue scan stopped after {unreg['keys_scanned']:,} keys)")
    if dh.get("repairs"):
        lines += ["", "Repairs (each change: dry run first; it exports what it touches)"]
        for r in dh["repairs"]:
            lines.append(f"  {r['queue']}: {r['problem']} ({r['count']:,}): {r['why']}")
            lines += [f"    {c}" for c in r["commands"]]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jobrunbook.config_cli import add_source_flags

    add_source_flags(parser, "redis")
    parser.add_argument("--queue", help="one queue only (default: every queue)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds before any Redis call gives up")
    parser.add_argument("--top", type=int, default=10, help="how many groups and task types to show")
    parser.add_argument("--no-health", action="store_true", help="skip the data health scan (faster on huge queues)")


def command(args: argparse.Namespace) -> int:
    from jobrunbook._exceptions import ConfigError
    from jobrunbook.asynq.connection import connect
    from jobrunbook.config_cli import resolve_sources

    src = resolve_sources(args)
    if not src.settings.redis_url:
        raise ConfigError("no Redis URL", hint="pass --redis-url redis://HOST:PORT/DB or set JOBRUNBOOK_REDIS_URL")
    client = connect(src.settings.redis_url_with_secret(src.env), timeout=args.timeout)
    s = src.settings
    summary = summarize(Inspector(client), args.queue, top=args.top, health=not args.no_health,
                        asynq_version=s.asynq_version, archive_cap=s.archive_max_size, redis_url=s.public()["redis_url"])
    if args.json:
        json.dump(summary, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(summary))
    return 0


