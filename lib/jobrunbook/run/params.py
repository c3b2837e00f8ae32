"""Alert -> run parameters: validated, size-limited, never a secret.

The labels of an Alertmanager alert are untrusted input. ``RunParams`` keeps
only the fields the notebooks use, as plain strings of bounded length with
control characters replaced; the Redis URL loses its password, which travels
to the kernels in ``$JOBRUNBOOK_REDIS_PASSWORD`` (see ``split_secrets``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from jobrunbook import clock
from jobrunbook._exceptions import ConfigError

__all__ = [
    "RunParams",
    "params_from_alert",
    "params_from_webhook",
    "params_from_labels",
    "split_secrets",
    "SERVED_ALERTNAMES",
    "MAX_VALUE_CHARS",
    "MAX_BODY_BYTES",
]

SERVED_ALERTNAMES = ("JobFailureRate", "JobFailureRateCritical")
MAX_VALUE_CHARS = 256
MAX_BODY_BYTES = 1 << 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEX16 = re.compile(r"^[0-9a-f]{8,64}$")


@dataclasses.dataclass(frozen=True)
class RunParams:
    """The parameters injected into every section notebook (all strings, no secret)."""

    alertname: str = "JobFailureRate"  # alert name from the labels
    severity: str = "warning"  # warning | critical
    queue: str = "default"  # asynq queue from the labels
    task_type: str = ""  # asynq task type from the labels ("" = all)
    component: str = "worker"
    starts_at: str = ""  # RFC 3339 UTC start of the alert
    fingerprint: str = ""  # Alertmanager fingerprint (hex)
    status: str = "firing"  # firing | resolved
    redis_url: str = ""  # asynq Redis, never with a password ("" = $JOBRUNBOOK_REDIS_URL, else the demo's)
    metrics_url: str = ""  # worker /metrics endpoint
    prometheus_url: str = ""  # Prometheus base URL
    log_source: str = ""  # where worker logs come from (file path, docker:NAME, k8s:deploy/NAME)
    notebooks_dir: str = "notebooks"
    outputs_dir: str = "outputs"

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunParams:
        return _build(self.as_dict() | changes)


def _clean(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"parameter {name!r} must be a string, got {type(value).__name__}",
                          hint="labels and settings are strings")
    text = _CONTROL.sub("\ufffd", str(value))
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1] + "\u2026"
    return text


def _strip_password(url: str) -> tuple[str, str | None]:
    """``redis://:pw@h:1/0`` -> (``redis://h:1/0``, ``pw``); a bare userinfo in redis URLs is a password."""
    if not url or "@" not in url:
        return url, None
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError("a URL setting does not parse", hint="scheme://host:port/path") from None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    if not sep and parts.scheme.startswith("redis"):
        user, password, sep = "", user, ":"
    if not sep or not password:
        return url, None
    netloc = f"{user}@{hostport}" if user else hostport
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), unquote(password)


def split_secrets(params: RunParams) -> tuple[RunParams, dict[str, str]]:
    """Move any password out of the URL settings into environment variables.

    Returns the params without secrets and the environment the kernels need
    (``JOBRUNBOOK_REDIS_PASSWORD``, the name ``jobrunbook.asynq.connection`` reads).
    """
    env: dict[str, str] = {}
    redis_url, pw = _strip_password(params.redis_url)
    if pw:
        env["JOBRUNBOOK_REDIS_PASSWORD"] = pw
    prom_url, ppw = _strip_password(params.prometheus_url)
    metrics_url, mpw = _strip_password(params.metrics_url)
    if ppw:
        env["JOBRUNBOOK_PROMETHEUS_PASSWORD"] = ppw
    if mpw:
        env["JOBRUNBOOK_METRICS_PASSWORD"] = mpw
    return params.replace(redis_url=redis_url, prometheus_url=prom_url, metrics_url=metrics_url), env


def _normalise_time(value: str) -> str:
    if not value:
        return ""
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"startsAt is not an RFC 3339 time: {value[:40]!r}",
                          hint="e.g. 2026-11-29T18:30:27.292Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _fingerprint(value: str, labels: Mapping[str, str]) -> str:
    value = value.lower()
    if _HEX16.match(value):
        return value
    blob = json.dumps(dict(sorted(labels.items())), ensure_ascii=False).encode() + value.encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _build(fields: Mapping[str, Any]) -> RunParams:
    known = {f.name for f in dataclasses.fields(RunParams)}
    unknown = set(fields) - known
    if unknown:
        raise ConfigError(f"unknown run parameter(s): {', '.join(sorted(unknown))[:200]}",
                          hint=f"known: {', '.join(sorted(known))}")
    clean = {k: _clean(k, v) for k, v in fields.items()}
    if "status" in clean and clean["status"] not in ("firing", "resolved"):
        raise ConfigError(f"status must be firing or resolved, got {clean['status'][:40]!r}")
    if "starts_at" in clean:
        clean["starts_at"] = _normalise_time(clean["starts_at"])
    return RunParams(**clean)


_LABEL_FIELDS = ("alertname", "severity", "queue", "task_type", "component")


def params_from_alert(alert: Mapping[str, Any], **settings: str) -> RunParams:
    """One alert of an Alertmanager webhook (``alerts[i]``) -> ``RunParams``.

    ``settings`` are the non-secret settings (redis_url, metrics_url, ...).
    """
    if not isinstance(alert, Mapping):
        raise ConfigError("an alert must be a JSON object", hint="Alertmanager webhook version 4, alerts[]")
    labels = alert.get("labels") or {}
    if not isinstance(labels, Mapping) or not all(isinstance(k, str) for k in labels):
        raise ConfigError("alert.labels must be an object of strings")
    if not labels.get("alertname"):
        raise ConfigError("alert has no alertname label", hint="labels.alertname")
    fields: dict[str, Any] = {k: labels.get(k, "") for k in _LABEL_FIELDS}
    fields["starts_at"] = alert.get("startsAt") or ""
    fields["status"] = alert.get("status") or "firing"
    clean_labels = {k: _clean(k, v) for k, v in labels.items() if isinstance(v, str)}
    fields["fingerprint"] = _fingerprint(_clean("fingerprint", alert.get("fingerprint") or ""), clean_labels)
    return _build(fields | settings)


def params_from_webhook(body: Mapping[str, Any] | bytes | str, *, alertnames: Iterable[str] = SERVED_ALERTNAMES,
                        include_resolved: bool = False, **settings: str) -> list[RunParams]:
    """An Alertmanager webhook body (version 4) -> one ``RunParams`` per firing alert this runbook serves.

    Each alert's own labels are used, not ``commonLabels``. A single alert
    object (with ``labels``) is accepted too.
    """
    if isinstance(body, bytes | str):
        if len(body) > MAX_BODY_BYTES:
            raise ConfigError(f"webhook body is {len(body)} bytes, over the {MAX_BODY_BYTES} limit")
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise ConfigError(f"webhook body is not JSON: {exc}") from None
    if not isinstance(body, Mapping):
        raise ConfigError("webhook body must be a JSON object")
    if "alerts" not in body and "labels" in body:
        body = {"version": "4", "alerts": [body]}
    if str(body.get("version", "4")) != "4":
        raise ConfigError(f"unsupported webhook version {str(body.get('version'))[:10]!r}", hint="version 4")
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        raise ConfigError("webhook body has no alerts list", hint="alerts: [...]")
    wanted = set(alertnames)
    out = []
    for alert in alerts:
        p = params_from_alert(alert, **settings)
        if p.alertname in wanted and (p.status == "firing" or include_resolved):
            out.append(p)
    return out


def params_from_labels(pairs: Iterable[str], *, now: datetime | None = None, **settings: str) -> RunParams:
    """``["alertname=JobFailureRate", "queue=default"]`` -> ``RunParams`` (a run started by hand)."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ConfigError(f"--label wants k=v, got {pair[:60]!r}", hint="--label queue=default")
        labels[key.strip()] = value
    labels.setdefault("alertname", "JobFailureRate")
    labels.setdefault("component", "worker")
    alert = {
        "labels": labels,
        "status": labels.pop("status", "firing"),
        "startsAt": labels.pop("startsAt", None) or (now or clock.utcnow()).isoformat(),
        "fingerprint": labels.pop("fingerprint", ""),
    }
    return params_from_alert(alert, **settings)
