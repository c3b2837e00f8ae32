"""Prometheus HTTP API v1: instant and range queries as DataFrames.

The failure ratio per task type over a window around the alert (by default
from one hour before ``startsAt`` to now), and the alert's own expression read
from the shipped rules file, evaluated now. Bad PromQL, 4xx/5xx answers,
timeouts and a Prometheus that is down each come back as a SourceResult with
Prometheus's own error text, never as an exception.
"""

from __future__ import annotations

import math
import os
import shlex
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import requests
import yaml

from jobrunbook import clock
from jobrunbook._exceptions import ConfigError
from jobrunbook._urls import redact_url
from jobrunbook.sources.metrics import MetricNames
from jobrunbook.sources.result import SourceResult, Stopwatch, result_from_request_error

__all__ = [
    "DEFAULT_RULES_FILE",
    "instant_query",
    "range_query",
    "failure_ratio_query",
    "failure_ratio_by_task_type",
    "load_alert_rules",
    "evaluate_alert_expression",
]

SOURCE = "prometheus"
DEFAULT_RULES_FILE = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "job-failure-rate.rules.yml"
MAX_POINTS = 300


def _to_unix(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.timestamp()


def _hint(base_url: str, endpoint: str, params: dict) -> str:
    parts = [f"curl -sG {shlex.quote(redact_url(base_url).rstrip('/') + endpoint)}"]
    for key, value in params.items():
        parts.append(f"--data-urlencode {shlex.quote(f'{key}={value}')}")
    return " ".join(parts)


def _frame(result_type: str, result) -> pd.DataFrame:
    rows = []
    if result_type == "vector":
        for item in result:
            rows.append({**item.get("metric", {}), "timestamp": item["value"][0], "value": item["value"][1]})
    elif result_type == "matrix":
        for item in result:
            metric = item.get("metric", {})
            for ts, value in item.get("values", []):
                rows.append({**metric, "timestamp": ts, "value": value})
    elif result_type in ("scalar", "string"):
        rows.append({"timestamp": result[0], "value": result[1]})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["timestamp", "value"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"].astype(float), unit="s", utc=True)
    if result_type != "string":
        frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    labels = sorted(c for c in frame.columns if c not in ("timestamp", "value"))
    return frame[[*labels, "timestamp", "value"]]


def _call(base_url: str, endpoint: str, params: dict, *, timeout: float, session, clock=time.monotonic
          ) -> SourceResult:
    http = session or requests
    url = base_url.rstrip("/") + endpoint
    safe = redact_url(base_url)
    hint = _hint(base_url, endpoint, params)
    watch = Stopwatch(clock)
    # Prometheus's own evaluation timeout a little under ours, so it answers with its error text
    params = {**params, "timeout": f"{int(max(timeout - 0.5, 0.5) * 1000)}ms"}
    try:
        resp = http.get(url, params=params, timeout=timeout)
    except requests.RequestException as exc:
        return result_from_request_error(SOURCE, "Prometheus", base_url, exc, timeout=timeout,
                                         elapsed_s=watch.elapsed, hint=hint)
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or resp.status_code >= 300 or body.get("status") != "success":
        error_type = (body or {}).get("errorType", "") if isinstance(body, dict) else ""
        error = (body or {}).get("error", "") if isinstance(body, dict) else ""
        if not error:
            error = resp.text.strip()[:300] or resp.reason or "no body"
        if error_type == "timeout":
            status = "timeout"
        elif resp.status_code >= 500 and error_type not in ("execution", "internal"):
            status = "down"
        else:
            status = "error"
        kind = f" {error_type}" if error_type else ""
        return SourceResult(SOURCE, status, f"Prometheus at {safe} answered HTTP {resp.status_code}{kind}: {error}",
                            hint=hint, elapsed_s=watch.elapsed, target=safe,
                            details={"http_status": resp.status_code, "error_type": error_type, "query": params.get("query")})
    data = body.get("data") or {}
    frame = _frame(data.get("resultType", ""), data.get("result", []))
    warnings = body.get("warnings") or []
    message = f"{data.get('resultType', 'result')} of {len(frame)} points from {safe}"
    if warnings:
        message += f" (warnings: {'; '.join(warnings)[:200]})"
    return SourceResult(SOURCE, "ok", message, hint=hint, elapsed_s=watch.elapsed, data=frame, target=safe,
                        details={"query": params.get("query"), "result_type": data.get("resultType")})


def instant_query(base_url: str, promql: str, *, at=None, timeout: float = 5.0,
                  session: requests.Session | None = None) -> SourceResult:
    """GET /api/v1/query. data: DataFrame [label columns..., timestamp (UTC), value]."""
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{_to_unix(at):.3f}"
    return _call(base_url, "/api/v1/query", params, timeout=timeout, session=session)


def range_query(base_url: str, promql: str, *, start, end, step: float | str, timeout: float = 10.0,
                session: requests.Session | None = None) -> SourceResult:
    """GET /api/v1/query_range. data: DataFrame [label columns..., timestamp (UTC), value], one row per point."""
    params = {"query": promql, "start": f"{_to_unix(start):.3f}", "end": f"{_to_unix(end):.3f}",
              "step": step if isinstance(step, str) else f"{float(step):g}"}
    return _call(base_url, "/api/v1/query_range", params, timeout=timeout, session=session)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _regex_escape(value: str) -> str:
    return "".join("\\" + c if c in r".^$*+?()[]{}|\\" else c for c in value)


def failure_ratio_query(*, window: str = "5m", matchers: dict | None = None, by: tuple[str, ...] | None = None,
                        names: MetricNames | None = None) -> str:
    """PromQL for failed / processed per task type over ``window``, as the alert computes it."""
    names = names or MetricNames()
    by = by or (names.type_label,)
    selectors = [f"{k}={_quote(str(v))}" for k, v in sorted((matchers or {}).items())]
    failed = "|".join(_regex_escape(v) for v in names.failed_values)
    all_sel = ",".join(selectors)
    failed_sel = ",".join([f"{names.status_label}=~{_quote(failed)}", *selectors])
    group = ", ".join(by)
    return (f"sum by ({group}) (rate({names.processed}{{{failed_sel}}}[{window}]))"
            f" / sum by ({group}) (rate({names.processed}{{{all_sel}}}[{window}]))")


def failure_ratio_by_task_type(base_url: str, *, starts_at=None, end=None, before: timedelta = timedelta(hours=1),
                               window: str = "5m", step: float | None = None, matchers: dict | None = None,
                               names: MetricNames | None = None, timeout: float = 10.0,
                               session: requests.Session | None = None, now=None) -> SourceResult:
    """The failure ratio per task type from ``before`` ahead of ``starts_at`` to ``end`` (default now).

    ``matchers`` narrows the series (e.g. {"queue": "default"} from the alert's
    labels). data: {"series": DataFrame [task_type, timestamp, value],
    "summary": DataFrame [task_type, last, max, mean] (worst first),
    "query", "start", "end", "step"}.
    """
    names = names or MetricNames()
    now_dt = now() if now else clock.utcnow()
    end_ts = _to_unix(end if end is not None else now_dt)
    anchor = _to_unix(starts_at) if starts_at is not None else end_ts
    start_ts = min(anchor - before.total_seconds(), end_ts - 1)
    if step is None:
        step = max(1.0, math.ceil((end_ts - start_ts) / MAX_POINTS))
    promql = failure_ratio_query(window=window, matchers=matchers, names=names)
    result = range_query(base_url, promql, start=start_ts, end=end_ts, step=step, timeout=timeout, session=session)
    if not result.reachable:
        return result
    series = result.data
    type_col = names.type_label
    if type_col not in series:
        series[type_col] = pd.Series(dtype=str)
    series = series[[type_col, "timestamp", "value"]]
    clean = series.dropna(subset=["value"])
    summary = (clean.sort_values("timestamp").groupby(type_col)["value"].agg(["last", "max", "mean"])
               .reset_index().sort_values("max", ascending=False, ignore_index=True))
    if summary.empty:
        result.message = f"no {names.processed} traffic between the window's ends at {result.target}"
    else:
        worst = summary.iloc[0]
        result.message = (f"worst task type {worst[type_col]}: failure ratio max {worst['max']:.1%}, "
                          f"last {worst['last']:.1%} ({len(summary)} task types) at {result.target}")
    result.data = {"series": series, "summary": summary, "query": promql,
                   "start": pd.Timestamp(start_ts, unit="s", tz="UTC"),
                   "end": pd.Timestamp(end_ts, unit="s", tz="UTC"), "step": step}
    return result


def load_alert_rules(path: str | Path | None = None) -> dict[str, dict]:
    """alertname -> {"expr", "for", "labels", "annotations"} from a Prometheus rules file."""
    path = Path(path or os.environ.get("JOBRUNBOOK_RULES_FILE") or DEFAULT_RULES_FILE)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the rules file {path}: {exc.strerror}",
                          hint=f"promtool check rules {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"the rules file {path} is not valid YAML: {exc}", hint=f"promtool check rules {path}") from exc
    rules = {}
    for group in (doc or {}).get("groups", []) or []:
        for rule in group.get("rules", []) or []:
            if "alert" in rule:
                rules[rule["alert"]] = {"expr": str(rule.get("expr", "")).strip(), "for": rule.get("for"),
                                        "labels": rule.get("labels", {}), "annotations": rule.get("annotations", {}),
                                        "group": group.get("name")}
    return rules


def evaluate_alert_expression(base_url: str, alertname: str = "JobFailureRate", *, rules_path=None, at=None,
                              timeout: float = 5.0, session: requests.Session | None = None) -> SourceResult:
    """Run the alert's own expression now (or ``at``): the series returned are those over the threshold.

    data: DataFrame [label columns..., timestamp, value] (value = the ratio).
    """
    try:
        rules = load_alert_rules(rules_path)
    except ConfigError as exc:
        return SourceResult(SOURCE, "error", exc.message, hint=exc.hint or "")
    if alertname not in rules:
        return SourceResult(SOURCE, "error", f"no alert {alertname!r} in the rules file (has: {', '.join(rules)})",
                            hint=f"promtool check rules {rules_path or DEFAULT_RULES_FILE}")
    expr = rules[alertname]["expr"]
    result = instant_query(base_url, expr, at=at, timeout=timeout, session=session)
    if result.reachable:
        n = len(result.data)
        result.message = (f"{alertname} expression true for {n} series now at {result.target}" if n
                          else f"{alertname} expression false now (no series over the threshold) at {result.target}")
        result.details["alertname"] = alertname
        result.details["for"] = rules[alertname]["for"]
    return result
