"""Alert -> run parameters: one typed model, validated, size-limited, never a secret.

The chain, one shape at each step::

    Settings (config file < JOBRUNBOOK_* < flags, resolved once at the edge: jobrunbook.config_cli)
      -> RunParams (this module: the alert's fields, its labels as data, Settings.public() as ``sources``)
        -> every notebook's parameters cell (the same names and defaults: a test reads them with
           papermill's inspect_notebook)
          -> sections.Context (RunParams again, validated; unknown names are an error)

The labels of an Alertmanager alert are untrusted input: ``RunParams`` keeps
them as data (``labels``), never as parameter names, as plain strings of
bounded length with control characters replaced. ``sources`` is the public
form of the settings: URLs without passwords, which reach the kernels only
through their environment (``kernel_env``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from jobrunbook import clock
from jobrunbook._exceptions import ConfigError
from jobrunbook._urls import redact_url
from jobrunbook.diagnosis.causes import SERVED_ALERTNAMES

__all__ = [
    "RunParams",
    "params_from_alert",
    "params_from_webhook",
    "params_from_labels",
    "kernel_env",
    "parameters_cell",
    "SERVED_ALERTNAMES",
    "MAX_VALUE_CHARS",
    "MAX_LABELS",
]

MAX_VALUE_CHARS = 256
MAX_LABELS = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# what each parameter is, as the notebooks' parameters cells say it (no "=": papermill's parser stops at one)
DESCRIPTIONS = {
    "alertname": "alert name from the labels",
    "severity": "warning | critical",
    "queue": "asynq queue from the alert's labels",
    "task_type": "asynq task type from the labels (empty: all)",
    "labels": "every label of the alert, as data",
    "starts_at": "RFC 3339 UTC start of the alert (empty: unknown)",
    "fingerprint": "Alertmanager's fingerprint of the alert",
    "status": "firing | resolved",
    "sources": "where the evidence lives, Settings.public() (empty: the configuration, else the demo's)",
    "run_dir": "set by the run engine (empty: outputs/adhoc)",
}


def _clean(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    text = _CONTROL.sub("\ufffd", str(value))
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1] + "\u2026"
    return text


def _normalise_time(value: str) -> str:
    if not value:
        return ""
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"startsAt is not an RFC 3339 time: {value[:40]!r} (e.g. 2026-11-29T18:30:27.292Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


class RunParams(BaseModel):
    """The parameters injected into every section notebook (no secret)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alertname: str = "JobFailureRate"
    severity: str = "warning"
    queue: str = "default"
    task_type: str = ""
    labels: dict[str, str] = {}
    starts_at: str = ""
    fingerprint: str = ""
    status: str = "firing"
    sources: dict[str, Any] = {}
    run_dir: str = ""

    @field_validator("alertname", "severity", "queue", "task_type", "fingerprint", "run_dir", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return _clean(value)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> str:
        text = _clean(value) or "firing"
        if text not in ("firing", "resolved"):
            raise ValueError(f"must be firing or resolved, got {text[:40]!r}")
        return text

    @field_validator("starts_at", mode="before")
    @classmethod
    def _starts(cls, value: Any) -> str:
        return _normalise_time(_clean(value))

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise ValueError("must be a mapping of label name -> value")
        if len(value) > MAX_LABELS:
            raise ValueError(f"more than {MAX_LABELS} labels")
        return {_clean(k): _clean(v) for k, v in value.items()}

    @field_validator("sources", mode="before")
    @classmethod
    def _sources(cls, value: Any) -> dict[str, Any]:
        if not value:
            return {}
        from jobrunbook.config import Settings

        return Settings.from_public(dict(value)).public()  # validated, and never a secret

    @property
    def settings(self):
        """The ``Settings`` the sources stand for (the configuration's when ``sources`` is empty)."""
        from jobrunbook.config import Settings, load_settings

        return Settings.from_public(self.sources) if self.sources else load_settings(labels=self.labels)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def replace(self, **changes: Any) -> RunParams:
        return build_params(self.model_dump() | changes)


def build_params(fields: Mapping[str, Any]) -> RunParams:
    """``RunParams`` from a mapping; any problem (an unknown name too) is a ConfigError naming the parameter."""
    try:
        return RunParams.model_validate(dict(fields))
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        name = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"unknown run parameter {name!r}", hint="known: " + ", ".join(RunParams.model_fields)) from None
        raise ConfigError(f"parameter {name!r} {str(err['msg']).removeprefix('Value error, ')}",
                          hint="labels and settings are strings") from None
    except ConfigError as exc:
        raise ConfigError(f"run parameter sources: {exc.message}", hint=exc.hint) from None


def params_from_alert(alert: Any, settings: Any = None, *, run_dir: str = "") -> RunParams:
    """One alert (``webhook.Alert`` or its dict) and the target's ``Settings`` -> ``RunParams``."""
    from jobrunbook.webhook import Alert, read_webhook

    if not isinstance(alert, Alert):
        if not isinstance(alert, Mapping):
            raise ConfigError("an alert must be a JSON object", hint="Alertmanager webhook version 4, alerts[]")
        alert = read_webhook({"version": "4", "alerts": [dict(alert)]}, source="alert").alerts[0]
    labels = alert.labels
    return build_params({
        "alertname": labels.get("alertname", ""), "severity": labels.get("severity") or "warning",
        "queue": labels.get("queue") or "default", "task_type": labels.get("task_type", ""), "labels": labels,
        "starts_at": alert.startsAt, "fingerprint": alert.fingerprint.lower(), "status": alert.status,
        "sources": settings.public() if settings is not None else {}, "run_dir": run_dir})


def params_from_webhook(body: Any, *, config: Any = None, alertnames: Iterable[str] | None = None,
                        include_resolved: bool = False) -> list[RunParams]:
    """A webhook body (version 4; or one alert) -> one ``RunParams`` per firing alert this runbook serves.

    Each alert's own labels are used, not ``commonLabels``, and each gets the
    settings of the target its labels choose in ``config`` (none: the public
    form is left empty, the configuration decides later).
    """
    from jobrunbook.webhook import read_webhook

    wanted = set(alertnames or (config.base.served_alertnames if config is not None else SERVED_ALERTNAMES))
    out = []
    for alert in read_webhook(body).alerts:
        if alert.alertname in wanted and (alert.status == "firing" or include_resolved):
            out.append(params_from_alert(alert, config.settings_for(alert.labels) if config is not None else None))
    return out


def params_from_labels(pairs: Iterable[str], settings: Any = None, *, now: datetime | None = None) -> RunParams:
    """``["alertname=JobFailureRate", "queue=default"]`` -> ``RunParams`` (a run started by hand)."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ConfigError(f"--label wants k=v, got {pair[:60]!r}", hint="--label queue=default")
        labels[key.strip()] = value
    labels.setdefault("alertname", "JobFailureRate")
    labels.setdefault("component", "worker")
    status = labels.pop("status", "firing")
    starts = labels.pop("startsAt", None) or (now or clock.utcnow()).isoformat()
    fingerprint = labels.pop("fingerprint", "")
    if not re.fullmatch(r"[0-9a-fA-F]{8,64}", fingerprint):
        from jobrunbook.webhook import fingerprint_of

        fingerprint = fingerprint_of({_clean(k): _clean(v) for k, v in labels.items()}, fingerprint)
    return build_params({
        "alertname": labels["alertname"], "severity": labels.get("severity") or "warning",
        "queue": labels.get("queue") or "default", "task_type": labels.get("task_type", ""), "labels": labels,
        "starts_at": starts, "fingerprint": fingerprint.lower(), "status": status,
        "sources": settings.public() if settings is not None else {}})


def kernel_env(settings: Any, env: Mapping[str, str]) -> dict[str, str]:
    """The secrets a run's kernels need for ``settings``, read from ``env``, by the names the settings give.

    The Redis password (``$<redis_password_env>``), the Postgres DSN
    (``$<postgres_dsn_env>``), and an HTTP source URL that carries credentials
    (its ``JOBRUNBOOK_*_URL``, which ``Settings.url_with_secret`` reads back).
    """
    from jobrunbook.config import ENV_NAMES

    out: dict[str, str] = {}
    password = settings.redis_password(env)
    if password:
        out[settings.redis_password_env] = password
    dsn = settings.postgres_dsn(env)
    if dsn:
        out[settings.postgres_dsn_env] = dsn
    for name in ("metrics_url", "prometheus_url", "alertmanager_url"):
        value = getattr(settings, name)
        if value and redact_url(value) != value:
            out[ENV_NAMES[name]] = value
    if any(redact_url(v) != v for v in settings.health_urls.values()):
        out[ENV_NAMES["health_urls"]] = ",".join(f"{k}={v}" for k, v in settings.health_urls.items())
    return out


def parameters_cell() -> str:
    """The source of the parameters cell every section notebook carries: RunParams' names and defaults."""
    lines = []
    for name, field in RunParams.model_fields.items():
        default = field.default
        kind = type(default).__name__
        lines.append(f"{name}: {kind} = {json.dumps(default)}  # {DESCRIPTIONS[name]}")
    return "\n".join(lines)
