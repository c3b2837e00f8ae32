"""Notifications when a run completes or is closed: a Slack incoming webhook and a generic JSON webhook.

The message is the verdict's headline (severity, failure %, top cause, next
step, escalation deadline) and the report link. ``Notifier.submit`` hands the
event to a small thread pool and returns at once: a slow or dead target never
blocks the webhook receiver or a run. Each POST is retried by urllib3's
``Retry`` (through requests' adapter) with exponential backoff on connection
errors, timeouts, 429 and 5xx, waiting what a ``Retry-After`` asks for; a
failure is logged (the target's URL reduced to scheme and host: a Slack webhook
URL is a secret) and counted through ``on_result``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import requests

from jobrunbook._exceptions import ConfigError

__all__ = ["Target", "Notifier", "build_event", "slack_payload", "json_payload", "safe_target"]

log = logging.getLogger("jobrunbook.notify")
KINDS = ("slack", "webhook")


@dataclasses.dataclass(frozen=True)
class Target:
    kind: str  # slack | webhook
    url: str  # a secret for Slack: never logged whole

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"notification target kind {self.kind!r} is not one of {KINDS}")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ConfigError(f"{self.kind} notification URL must be http(s)", hint=safe_target(self.url))

    @property
    def name(self) -> str:
        return f"{self.kind}:{safe_target(self.url)}"


def safe_target(url: str) -> str:
    """``https://hooks.slack.com/services/T/B/secret`` -> ``https://hooks.slack.com``."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unparseable url>"


def build_event(status: Mapping[str, Any], verdict: Mapping[str, Any], *, report_url: str,
                event: str = "completed") -> dict[str, Any]:
    """The notification's content, from a run's status.json and its summarised verdict."""
    from jobrunbook.report import normalise_verdict

    v = normalise_verdict(verdict)
    severity = status.get("severity") or v["severity"]
    return {
        "event": event,  # completed | resolved
        "run_id": status.get("run_id"),
        "state": status.get("state"),
        "alertname": status.get("alertname"),
        "queue": status.get("queue"),
        "task_type": status.get("task_type"),
        "severity": severity,
        "failure_pct": v["failure_pct"],
        "top_cause": v["cause_name"],
        "confidence": v["cause_confidence"],
        "next_step": v["next_step"],
        "escalation_deadline": v["deadline"],
        "headline": v["headline"],
        "time_to_resolve_s": status.get("time_to_resolve_s"),
        "report_url": report_url,
    }


def _escape_slack(text: Any) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")[:500]


def slack_payload(ev: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the fallback) and one section block."""
    what = "resolved" if ev["event"] == "resolved" else "run finished"
    title = (f"[{str(ev['severity']).upper()}] {ev['alertname']} {ev['queue']}/{ev['task_type'] or '*'}: "
             f"{what}")
    lines = [f"*{_escape_slack(title)}*",
             f"Failures: {_escape_slack(ev['failure_pct'])} | Top cause: {_escape_slack(ev['top_cause'])} "
             f"({_escape_slack(ev['confidence'])})",
             f"Next step: {_escape_slack(ev['next_step'])}",
             f"Escalate by: {_escape_slack(ev['escalation_deadline'])}"]
    if ev.get("time_to_resolve_s") is not None:
        lines.append(f"Time to resolve: {_escape_slack(ev['time_to_resolve_s'])} s")
    link = f"<{ev['report_url']}|report>" if ev.get("report_url") else "report: (no public URL configured)"
    lines.append(link)
    text = "\n".join(lines)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def json_payload(ev: Mapping[str, Any]) -> dict[str, Any]:
    return {"source": "jobrunbook", **ev}


def _retry(retries: int, backoff: float, sleep: Callable[[float], None]):
    """urllib3's Retry for a notification POST: 429/5xx and connection errors, ``backoff * 2**(n-1)`` between
    tries (Retry-After first, when the target sends one), every wait through ``sleep``."""
    from itertools import takewhile

    from urllib3.util.retry import Retry

    class _Retry(Retry):
        def get_backoff_time(self) -> float:
            n = len(list(takewhile(lambda h: h.redirect_location is None, reversed(self.history))))
            return 0.0 if n == 0 else float(min(self.backoff_max, self.backoff_factor * 2 ** (n - 1)))

        def sleep_for_retry(self, response=None) -> bool:
            after = self.get_retry_after(response) if response is not None else None
            if after:
                sleep(after)
                return True
            return False

        def _sleep_backoff(self) -> None:
            wait = self.get_backoff_time()
            if wait > 0:
                sleep(wait)

    return _Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=backoff,
                  status_forcelist=(429, *range(500, 600)), allowed_methods=frozenset({"POST"}),
                  raise_on_status=False, respect_retry_after_header=True)


class Notifier:
    """Send each event to every target in the background, with retries; ``on_result(target, outcome)``."""

    def __init__(self, targets: list[Target], *, retries: int = 3, backoff: float = 1.0, timeout: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep, on_result: Callable[[str, str], None] | None = None,
                 max_workers: int = 2) -> None:
        from requests.adapters import HTTPAdapter

        self.targets = list(targets)
        self.retries, self.timeout = retries, timeout
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=_retry(retries, backoff, sleep))
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self.on_result = on_result or (lambda target, outcome: None)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="jobrunbook-notify")

    def submit(self, event: Mapping[str, Any]) -> list[Future]:
        """Queue ``event`` for every target; returns at once."""
        return [self._pool.submit(self.send_one, t, event) for t in self.targets]

    def send_one(self, target: Target, event: Mapping[str, Any]) -> bool:
        body = slack_payload(event) if target.kind == "slack" else json_payload(event)
        attempts = self.retries + 1
        try:
            resp = self._session.post(target.url, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            last = type(exc).__name__
        else:
            if 200 <= resp.status_code < 300:
                self.on_result(target.kind, "sent")
                return True
            retried = getattr(getattr(resp.raw, "retries", None), "history", ())
            attempts, last = len(retried) + 1, f"HTTP {resp.status_code}"
        log.warning("notification to %s failed after %d attempt(s): %s (run %s)", target.name, attempts, last,
                    event.get("run_id"))
        self.on_result(target.kind, "failed")
        return False

    def close(self, *, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
        self._session.close()
