"""Related alerts: which of the runbook's neighbours fire now, from Alertmanager's API v2.

The runbook names ``JobQueueBacklog`` (failures cause backlog),
``DBConnectionExhausted`` (jobs fail because of the database) and
``HighErrorRate`` (HTTP calls in jobs fail). Each firing one is evidence for a
cause. ``GET /api/v2/alerts?active=true&filter=alertname=~"..."``; an alert
silenced or inhibited is reported as suppressed, not firing.
"""

from __future__ import annotations

import shlex
import time

import pandas as pd
import requests

from jobrunbook._urls import redact_url
from jobrunbook.sources.names import RELATED_ALERTS
from jobrunbook.sources.result import SourceResult, Stopwatch, result_from_request_error

__all__ = ["RELATED_ALERTS", "ALERT_COLUMNS", "related_alerts", "alert_filters"]

SOURCE = "alertmanager"
ALERT_COLUMNS = ["alertname", "state", "severity", "starts_at", "ends_at", "summary", "fingerprint", "labels",
                 "silenced_by", "inhibited_by", "generator_url"]


def _quote(value: str) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _regex_escape(value: str) -> str:
    return "".join("\\" + c if c in r".^$*+?()[]{}|\\" else c for c in value)


def alert_filters(names: tuple[str, ...] | list[str], matchers: dict | None = None) -> list[str]:
    """Alertmanager ``filter`` matchers: the alert names, plus equality on ``matchers``."""
    out = [f"alertname=~{_quote('|'.join(_regex_escape(n) for n in names))}"]
    out += [f"{key}={_quote(value)}" for key, value in sorted((matchers or {}).items())]
    return out


def related_alerts(base_url: str, *, names: tuple[str, ...] | list[str] = RELATED_ALERTS,
                   matchers: dict | None = None, timeout: float = 5.0, session: requests.Session | None = None,
                   clock=time.monotonic) -> SourceResult:
    """Which of ``names`` fire now (optionally only those matching ``matchers``, e.g. {"cluster": "eu-1"}).

    data: {"firing": {name: bool} for every name, "suppressed": [names
    silenced or inhibited], "alerts": DataFrame ALERT_COLUMNS (one row per
    alert instance, firing first)}.
    """
    http = session or requests
    watch = Stopwatch(clock)
    safe = redact_url(base_url)
    filters = alert_filters(names, matchers)
    url = base_url.rstrip("/") + "/api/v2/alerts"
    hint = (f"curl -sG {shlex.quote(safe.rstrip('/') + '/api/v2/alerts')} --data-urlencode active=true "
            + " ".join(f"--data-urlencode {shlex.quote('filter=' + f)}" for f in filters))
    try:
        resp = http.get(url, params={"active": "true", "filter": filters}, timeout=timeout)
    except requests.RequestException as exc:
        return result_from_request_error(SOURCE, "Alertmanager", base_url, exc, timeout=timeout,
                                         elapsed_s=watch.elapsed, hint=hint)
    if resp.status_code != 200:
        text = resp.text.strip()[:300] or resp.reason
        return SourceResult(SOURCE, "down" if resp.status_code >= 500 else "error",
                            f"Alertmanager at {safe} answered HTTP {resp.status_code}: {text}", hint=hint,
                            elapsed_s=watch.elapsed, target=safe, details={"http_status": resp.status_code})
    try:
        body = resp.json()
        if not isinstance(body, list):
            raise ValueError("not a list")
    except ValueError:
        return SourceResult(SOURCE, "error", f"Alertmanager at {safe} did not answer with a JSON list of alerts "
                            "(is this URL Alertmanager's?)", hint=hint, elapsed_s=watch.elapsed, target=safe)
    rows = []
    for alert in body:
        labels = alert.get("labels") or {}
        status = alert.get("status") or {}
        rows.append((labels.get("alertname", ""), status.get("state", ""), labels.get("severity", ""),
                     alert.get("startsAt"), alert.get("endsAt"), (alert.get("annotations") or {}).get("summary", ""),
                     alert.get("fingerprint", ""), labels, status.get("silencedBy") or [],
                     status.get("inhibitedBy") or [], alert.get("generatorURL", "")))
    frame = pd.DataFrame(rows, columns=ALERT_COLUMNS)
    for column in ("starts_at", "ends_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
    firing_rows = frame[frame["state"].isin(("active", "unprocessed"))]
    firing = {name: bool((firing_rows["alertname"] == name).any()) for name in names}
    suppressed = sorted(set(frame.loc[frame["state"] == "suppressed", "alertname"]) - set(firing_rows["alertname"]))
    frame["order"] = (~frame["state"].isin(("active", "unprocessed"))).astype(int)
    frame = frame.sort_values(["order", "alertname", "starts_at"], ignore_index=True).drop(columns="order")
    now_firing = [n for n in names if firing[n]]
    if now_firing:
        parts = []
        for name in now_firing:
            rows_ = firing_rows[firing_rows["alertname"] == name]
            since = rows_["starts_at"].min()
            severity = ",".join(sorted(set(rows_["severity"]) - {""})) or "no severity"
            parts.append(f"{name} ({severity}, {len(rows_)} alert{'s' if len(rows_) > 1 else ''}, since "
                         f"{since:%Y-%m-%d %H:%M:%S} UTC)" if pd.notna(since) else name)
        message = "firing now: " + "; ".join(parts)
    else:
        message = "none of " + ", ".join(names) + " is firing"
    quiet = [n for n in names if not firing[n]]
    if now_firing and quiet:
        message += "; not firing: " + ", ".join(quiet)
    if suppressed:
        message += "; silenced or inhibited: " + ", ".join(suppressed)
    return SourceResult(SOURCE, "ok", f"{message} (Alertmanager {safe})", hint=hint, elapsed_s=watch.elapsed,
                        target=safe, data={"firing": firing, "suppressed": suppressed, "alerts": frame})
