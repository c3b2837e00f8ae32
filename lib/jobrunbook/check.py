"""`jobrunbook check`: is the configuration valid, and does every source of every target answer?

For each target (the base settings and each ``targets:`` entry, or only the
one an alert's ``--label``s select) it probes, concurrently and each within
``source_timeout_s``: Redis (PING through ``asynq.connection.connect``, and
that ``asynq:queues`` exists), the worker's ``/metrics`` (scrape, and that the
configured metric is there), Prometheus (``up``), Alertmanager
(``/api/v2/status``), the log source (a bounded read), Postgres and the health
URLs (``probe_dependencies``). Each gives a line: ok / warn / problem /
skipped, what is wrong, and the fix (the command to check, the setting or
environment variable to change).

Exit status: 0 when nothing is a problem, 1 when a source is down or wrong, 2
for a configuration error.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import requests

from jobrunbook._exceptions import ConfigError, JobrunbookError
from jobrunbook._urls import redact_url
from jobrunbook.config import CONFIG_ENV, ENV_NAMES, Config, Settings
from jobrunbook.config_cli import add_source_flags, labels_from_pairs, resolve_sources
from jobrunbook.sources.result import SourceResult, Stopwatch, result_from_request_error

__all__ = ["CheckLine", "check_settings", "check_config", "format_lines", "add_arguments", "command"]

LINE_STATUSES = ("ok", "warn", "problem", "skipped")
_FROM_SOURCE = {"ok": "ok", "degraded": "warn", "down": "problem", "error": "problem", "timeout": "problem"}


@dataclass
class CheckLine:
    """One probed source of one target."""

    target: str
    check: str
    status: str  # ok | warn | problem | skipped
    message: str
    fix: str = ""
    elapsed_s: float = 0.0


class _Ctx:
    """Where a setting of this target is changed: the env variable for the base, the file for a target."""

    def __init__(self, settings: Settings, config_path: str | None, env: Mapping[str, str]) -> None:
        self.s, self.path, self.env = settings, config_path, env

    def where(self, field: str) -> str:
        if self.s.target != "default":
            return f"{field} in target {self.s.target!r} of {self.path}"
        return f"${ENV_NAMES.get(field, field)} (or {field}: in {self.path or 'the file in $' + CONFIG_ENV})"

    def line(self, check: str, result: SourceResult, fix_ok: str = "", fix: str = "") -> CheckLine:
        status = _FROM_SOURCE[result.status]
        text = fix if status != "ok" else fix_ok
        if result.hint and status != "ok":
            text = f"{text}; check: {result.hint}" if text else f"check: {result.hint}"
        return CheckLine(self.s.target, check, status, result.message, text, result.elapsed_s)

    def skipped(self, check: str, message: str, fix: str) -> CheckLine:
        return CheckLine(self.s.target, check, "skipped", message, fix)


# ---------------------------------------------------------------- one check each

def _redis(c: _Ctx) -> list[CheckLine]:
    from jobrunbook.asynq.connection import connect
    from jobrunbook.asynq.keys import ALL_QUEUES

    s, watch = c.s, Stopwatch()
    shown = redact_url(s.redis_url)
    has_password = bool(s.redis_password(c.env))
    password_fix = f"the password goes in ${s.redis_password_env}" + ("" if has_password else " (not set now)")
    try:
        client = connect(s.redis_url_with_secret(c.env), timeout=s.source_timeout_s)
    except JobrunbookError as exc:
        return [CheckLine(s.target, "redis", "problem", exc.message,
                          f"start Redis there or point {c.where('redis_url')} at the worker's Redis; "
                          f"{password_fix}; check: {exc.hint}", watch.elapsed)]
    try:
        queues = sorted(q.decode("utf-8", "replace") for q in client.smembers(ALL_QUEUES))
    except Exception as exc:  # noqa: BLE001 - an answer we cannot read is a problem line, not a crash
        return [CheckLine(s.target, "redis", "problem", f"Redis at {shown} answers PING but "
                          f"SMEMBERS {ALL_QUEUES} failed: {type(exc).__name__}", f"check: redis-cli -u {shown} "
                          f"type {ALL_QUEUES}", watch.elapsed)]
    finally:
        client.close()
    if not queues:
        return [CheckLine(s.target, "redis", "problem", f"Redis at {shown} answers PING but has no {ALL_QUEUES}: "
                          "not the worker's Redis or db, or no task was ever enqueued",
                          f"point {c.where('redis_url')} at the Redis and db number the worker uses; "
                          f"check: redis-cli -u {shown} smembers {ALL_QUEUES}", watch.elapsed)]
    return [CheckLine(s.target, "redis", "ok", f"Redis at {shown} answers PING; {len(queues)} asynq queue"
                      f"{'s' if len(queues) != 1 else ''}: {', '.join(queues[:10])}", "", watch.elapsed)]


def _metrics(c: _Ctx) -> list[CheckLine]:
    from jobrunbook.sources.metrics import scrape_metrics

    s = c.s
    if not s.metrics_url:
        return [c.skipped("metrics", "no worker metrics URL configured",
                          f"set {c.where('metrics_url')} to the worker's /metrics")]
    result = scrape_metrics(s.metrics_url, timeout=s.source_timeout_s)
    if not result.reachable:
        return [c.line("metrics", result, fix=f"start the worker's metrics endpoint or set {c.where('metrics_url')}")]
    names = s.metric_names
    present = set(result.data["sample"]) | set(result.data["family"])
    if names.processed in present:
        result.message = f"{result.message}; {names.processed} present"
        return [c.line("metrics", result)]
    fallback = names.asynq_processed in present
    line = CheckLine(s.target, "metrics", "warn" if fallback else "problem",
                     f"{result.message}, but no {names.processed}"
                     + (f" (asynq's {names.asynq_processed} is there: per-queue ratios only)" if fallback else
                        " nor asynq's exporter metrics"),
                     f"set metric_names.processed / ${ENV_NAMES['metric_names.processed']} to the worker's "
                     f"counter of processed jobs; check: {result.hint}", result.elapsed_s)
    return [line]


def _prometheus(c: _Ctx) -> list[CheckLine]:
    from jobrunbook.sources.prometheus import instant_query

    s = c.s
    if not s.prometheus_url:
        return [c.skipped("prometheus", "no Prometheus URL configured (optional: the window around the alert)",
                          f"set {c.where('prometheus_url')} to Prometheus's base URL")]
    result = instant_query(s.prometheus_url, "up", timeout=s.source_timeout_s)
    if result.ok:
        frame = result.data
        up = int((frame["value"] == 1).sum()) if len(frame) else 0
        result.message = f"Prometheus at {result.target} answers: {up} of {len(frame)} scrape targets up"
    return [c.line("prometheus", result, fix=f"start Prometheus there or set {c.where('prometheus_url')}")]


def _alertmanager(c: _Ctx) -> list[CheckLine]:
    s = c.s
    if not s.alertmanager_url:
        return [c.skipped("alertmanager", "no Alertmanager URL configured (optional: related alerts)",
                          f"set {c.where('alertmanager_url')} to Alertmanager's base URL")]
    safe = redact_url(s.alertmanager_url)
    url = s.alertmanager_url.rstrip("/") + "/api/v2/status"
    hint = f"curl -s {shlex.quote(safe.rstrip('/') + '/api/v2/status')}"
    fix = f"start Alertmanager there or set {c.where('alertmanager_url')}"
    watch = Stopwatch()
    try:
        resp = requests.get(url, timeout=s.source_timeout_s)
        body = resp.json() if resp.status_code == 200 else None
    except requests.RequestException as exc:
        return [c.line("alertmanager", result_from_request_error("alertmanager", "Alertmanager", s.alertmanager_url,
                                                                 exc, timeout=s.source_timeout_s,
                                                                 elapsed_s=watch.elapsed, hint=hint), fix=fix)]
    except ValueError:
        body = None
    if not isinstance(body, dict) or "versionInfo" not in body:
        what = f"HTTP {resp.status_code}" if resp.status_code != 200 else "something that is not its status JSON"
        result = SourceResult("alertmanager", "error", f"{safe}/api/v2/status answered {what}: is this "
                              "Alertmanager's base URL?", hint=hint, elapsed_s=watch.elapsed, target=safe)
        return [c.line("alertmanager", result, fix=fix)]
    version = (body.get("versionInfo") or {}).get("version", "?")
    cluster = (body.get("cluster") or {}).get("status", "?")
    result = SourceResult("alertmanager", "ok", f"Alertmanager {version} at {safe} answers (cluster {cluster})",
                          hint=hint, elapsed_s=watch.elapsed, target=safe)
    return [c.line("alertmanager", result)]


def _logs(c: _Ctx) -> list[CheckLine]:
    from jobrunbook.sources.logs import fetch_logs

    s = c.s
    if not s.log_source:
        return [c.skipped("logs", "no log source configured", f"set {c.where('log_source')} to docker, kubectl, "
                          "file or command")]
    result = fetch_logs(s.log_source, container=s.worker_container, deployment=s.worker_deployment,
                        namespace=s.namespace or None, context=s.kube_context or None, path=s.log_path or None,
                        command=list(s.log_command) or None, since="5m", tail=50, max_bytes=64 * 1024,
                        timeout=max(s.source_timeout_s, 1.0))
    if result.status == "ok" and result.data is not None:
        lines = result.data["text"].count("\n")
        result.message = f"{s.log_source} log source readable: {lines} lines, {result.data['bytes_read']} bytes " \
                         f"({result.target})"
    what = {"docker": "worker_container", "kubectl": "worker_deployment", "file": "log_path",
            "command": "log_command"}[s.log_source]
    return [c.line("logs", result, fix=f"check {c.where(what)} and {c.where('log_source')}")]


def _dependencies(c: _Ctx) -> list[CheckLine]:
    from jobrunbook.sources.probes import probe_dependencies

    s = c.s
    dsn = s.postgres_dsn(c.env)
    lines = []
    if not dsn:
        lines.append(c.skipped("postgres", f"${s.postgres_dsn_env} is not set",
                               f"export {s.postgres_dsn_env}='postgresql://USER@HOST:5432/DB' (secrets only "
                               "from the environment)"))
    if not dsn and not s.health_urls:
        return [*lines, c.skipped("health", "no health URLs configured",
                                  f"set {c.where('health_urls')} (name=url,...) for the APIs the jobs call")]
    result = probe_dependencies(postgres_dsn=dsn, health_urls=list(s.health_urls.values()),
                                timeout=s.source_timeout_s, env={})
    by_url = {f"http {redact_url(u)}": n for n, u in s.health_urls.items()}
    for name, probe in result.data["results"].items():
        if name == "postgres":
            lines.append(c.line("postgres", probe, fix=f"check the server and ${s.postgres_dsn_env}"))
        else:
            label = f"health {by_url.get(name, name)}"
            lines.append(c.line(label, probe, fix=f"check that API or its URL in {c.where('health_urls')}"))
    if not s.health_urls:
        lines.append(c.skipped("health", "no health URLs configured",
                               f"set {c.where('health_urls')} (name=url,...) for the APIs the jobs call"))
    return lines


CHECKS: dict[str, Callable[[_Ctx], list[CheckLine]]] = {
    "redis": _redis, "metrics": _metrics, "prometheus": _prometheus, "alertmanager": _alertmanager,
    "logs": _logs, "dependencies": _dependencies,
}


# ---------------------------------------------------------------- all of them

def check_settings(settings_list: list[Settings], *, config_path: str | None = None,
                   env: Mapping[str, str] | None = None, max_workers: int = 8) -> list[CheckLine]:
    """Every check of every settings, concurrently; lines in target then check order."""
    import os

    env = os.environ if env is None else env
    jobs = [(s, name, fn) for s in settings_list for name, fn in CHECKS.items()]

    def guarded(s: Settings, name: str, fn) -> list[CheckLine]:
        try:
            return fn(_Ctx(s, config_path, env))
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            return [CheckLine(s.target, name, "problem", f"check {name} failed: {type(exc).__name__}: "
                              f"{redact_url(str(exc))[:160]}", "report this as a jobrunbook bug")]

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(jobs)))) as pool:
        futures = [pool.submit(guarded, *job) for job in jobs]
        return [line for f in futures for line in f.result()]


def check_config(config: Config, *, labels: Mapping[str, str] | None = None,
                 env: Mapping[str, str] | None = None) -> list[CheckLine]:
    """Check the target ``labels`` select, or the base and every target when ``labels`` is None."""
    targets = [config.settings_for(labels)] if labels is not None else config.all_settings()
    return check_settings(targets, config_path=config.path, env=env)


def exit_code(lines: list[CheckLine]) -> int:
    return 1 if any(line.status == "problem" for line in lines) else 0


def format_lines(lines: list[CheckLine], *, config_path: str | None = None) -> str:
    out = [f"jobrunbook check: config {config_path or '(none: defaults and JOBRUNBOOK_* variables)'}"]
    current = None
    for line in lines:
        if line.target != current:
            current = line.target
            out.append(f"target {current}")
        mark = "PROBLEM" if line.status == "problem" else line.status
        out.append(f"  {mark:<8} {line.check:<14} {line.message}"
                   + (f" [{line.elapsed_s * 1000:.0f} ms]" if line.elapsed_s else ""))
        if line.fix and line.status != "ok":
            out.append(f"  {'':<8} {'':<14} fix: {line.fix}")
    counts = {s: sum(1 for x in lines if x.status == s) for s in LINE_STATUSES}
    out.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" -> exit {exit_code(lines)}")
    return "\n".join(out)


# ---------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    # the same sources every command takes; --label or --target: check only that target
    add_source_flags(p, "redis", "metrics", "prometheus", "alertmanager", "logs", "health", "timeout")
    p.add_argument("--json", action="store_true", help="print the lines as JSON")


def command(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        labels = labels_from_pairs(args.label) if args.label is not None else None
        src = resolve_sources(args, labels=labels or {})
        config = src.config
    except ConfigError as exc:
        if args.json:
            print(json.dumps({"ok": False, "exit": 2, "config_error": str(exc)}))
        print(f"jobrunbook check: configuration error: {exc}", file=sys.stderr)
        return 2
    chosen = [src.settings] if (labels is not None or args.target) else config.all_settings()
    lines = check_settings(chosen, config_path=config.path, env=src.env)
    code = exit_code(lines)
    if args.json:
        print(json.dumps({"ok": code == 0, "exit": code, "config": config.path, "labels": labels,
                          "elapsed_s": round(time.monotonic() - started, 3),
                          "checks": [asdict(line) for line in lines]}, indent=2))
    else:
        print(format_lines(lines, config_path=config.path))
    return code
