"""Alertmanager webhook bodies (version 4), validated strictly: the one model ``serve`` and ``run --alert`` share.

The body is untrusted: every field Alertmanager always sends is required and
typed, label names follow Prometheus's grammar, and sizes are bounded (one
cap, ``MAX_BODY_BYTES``). A bad body raises ``WebhookError`` whose ``field``
names the offending path (``alerts.0.labels``), so the 4xx answer says what to
fix; ``read_webhook`` says the same as a ``ConfigError`` for the command line,
and also takes a single alert object (what ``jobrunbook run --alert`` was
given by hand).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["Alert", "Webhook", "WebhookError", "parse_webhook", "read_webhook", "load_json", "alert_key", "parse_time", "fingerprint_of",
           "MAX_ALERTS", "MAX_BODY_BYTES"]

MAX_BODY_BYTES = 1 << 20
MAX_ALERTS = 1000
MAX_LABELS = 64
MAX_TEXT = 4096
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,127}$")
_ZERO_TIME = "0001-01-01T00:00:00Z"

Text = Annotated[str, Field(max_length=MAX_TEXT)]


class WebhookError(Exception):
    """A body that is not a valid version 4 webhook; ``status`` is the HTTP code to answer."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.status = status
        self.field = field
        self.message = message

    def as_json(self) -> dict[str, str]:
        return {"error": self.message, "field": self.field}


def parse_time(value: str) -> datetime | None:
    """RFC 3339 -> aware datetime; Alertmanager's zero time (``0001-01-01``) -> None."""
    if not value or value.startswith("0001-01-01"):
        return None
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def fingerprint_of(labels: dict[str, str], salt: str = "") -> str:
    """16 hex digits that stand for a label set, for an alert that came without Alertmanager's fingerprint."""
    blob = json.dumps(dict(sorted(labels.items())), ensure_ascii=False).encode() + salt.encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _check_labels(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_LABELS:
        raise ValueError(f"more than {MAX_LABELS} labels")
    for name in value:
        if not _LABEL_NAME.match(name):
            raise ValueError(f"label name {name[:40]!r} is not a Prometheus label name")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class Alert(_Strict):
    status: Literal["firing", "resolved"]
    labels: dict[str, Text]
    annotations: dict[str, Text] = Field(default_factory=dict)
    startsAt: Annotated[str, Field(max_length=64)]
    endsAt: Annotated[str, Field(max_length=64)] = _ZERO_TIME
    generatorURL: Text = ""
    fingerprint: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9a-fA-F]+$")]

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        _check_labels(value)
        if not value.get("alertname"):
            raise ValueError("labels.alertname is missing")
        return value

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels(value)

    @field_validator("startsAt", "endsAt")
    @classmethod
    def _time(cls, value: str) -> str:
        try:
            parse_time(value)
        except ValueError:
            raise ValueError(f"not an RFC 3339 time: {value[:40]!r}") from None
        return value

    @property
    def alertname(self) -> str:
        return self.labels["alertname"]

    def as_dict(self) -> dict:
        return self.model_dump()


class Webhook(_Strict):
    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: Text
    groupKey: Text
    alerts: Annotated[list[Alert], Field(max_length=MAX_ALERTS)]
    groupLabels: dict[str, Text] = Field(default_factory=dict)
    commonLabels: dict[str, Text] = Field(default_factory=dict)
    commonAnnotations: dict[str, Text] = Field(default_factory=dict)
    externalURL: Text = ""
    truncatedAlerts: Annotated[int, Field(ge=0)] = 0


def alert_key(alert: Alert) -> str:
    """The identity of one firing episode: fingerprint + startsAt (what Alertmanager re-sends unchanged)."""
    starts = parse_time(alert.startsAt)
    stamp = starts.astimezone(UTC).isoformat() if starts else alert.startsAt
    return f"{alert.fingerprint.lower()}@{stamp}"


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(data: object) -> bool:
    """True if any string in ``data`` (keys too) holds a lone UTF-16 surrogate (``"\\ud800"``): not Unicode text,
    it could not be stored or printed."""
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def load_json(raw: bytes | str) -> object:
    """JSON text -> Python, or ``WebhookError(400)`` for anything that fails to parse: bad syntax, bad encoding,
    nesting too deep for the parser (``[[[[...``), numbers too long, strings holding lone surrogates."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise WebhookError(400, "", "body is not JSON this service reads: nested too deeply") from None
    except MemoryError:
        raise WebhookError(400, "", "body is not JSON this service reads: too large to parse") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, bad UTF-8/16/32, int over 4,300 digits
        raise WebhookError(400, "", f"body is not JSON: {str(exc)[:120]}") from None
    if isinstance(raw, str):
        suspect = True  # text may already hold a surrogate
    else:  # UTF-16/32 (a NUL or a BOM up front) hide the escape from a byte search: walk the data then
        suspect = b"\x00" in raw[:4] or raw[:2] in (b"\xff\xfe", b"\xfe\xff") or bool(_SURROGATE_ESCAPE.search(raw))
    if suspect and _lone_surrogate(data):
        raise WebhookError(400, "", "body is not valid Unicode: a string holds a lone surrogate escape (\\ud800)")
    return data


def parse_webhook(raw: bytes) -> Webhook:
    """Bytes of a POST body -> ``Webhook``, or ``WebhookError`` (400 not JSON, 422 invalid)."""
    data = load_json(raw)
    if not isinstance(data, dict):
        raise WebhookError(422, "", "body must be a JSON object (Alertmanager webhook version 4)")
    if "version" in data and data["version"] != "4":
        raise WebhookError(422, "version", f"unsupported webhook version {str(data['version'])[:10]!r}, want \"4\"")
    try:
        return Webhook.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(p) for p in err["loc"])
        raise WebhookError(422, field, str(err["msg"])[:300]) from None
    except (RecursionError, MemoryError):
        raise WebhookError(400, "", "body is not a webhook this service reads: nested too deeply") from None


def _errors(exc: ValidationError, limit: int = 8) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:limit]:
        field = ".".join(str(p) for p in err["loc"])
        parts.append(f"{field}: {str(err['msg']).removeprefix('Value error, ')[:200]}")
    return "; ".join(parts)


def read_webhook(body: bytes | str | dict, *, source: str = "webhook body") -> Webhook:
    """A webhook body (bytes, text or parsed), or one alert object, as a ``Webhook``; ConfigError naming the field.

    The same model as ``serve`` validates with; a single alert (an object with
    ``labels`` and no ``alerts``) is wrapped as the only alert of a body.
    """
    from jobrunbook._exceptions import ConfigError

    if isinstance(body, bytes | str):
        if len(body) > MAX_BODY_BYTES:
            raise ConfigError(f"{source} is {len(body)} bytes, over the {MAX_BODY_BYTES}-byte limit")
        try:
            body = load_json(body)
        except WebhookError as exc:
            raise ConfigError(f"{source}: {exc.message}") from None
    if not isinstance(body, dict):
        raise ConfigError(f"{source} must be a JSON object", hint="Alertmanager webhook version 4")
    if "alerts" not in body and "labels" in body:
        body = {"version": "4", "alerts": [body]}
    # written by hand: what Alertmanager always sends but a person need not (who received it, its group)
    body = {"receiver": "manual", "groupKey": "manual", "status": "firing", **body}
    if isinstance(body.get("alerts"), list):
        # Alertmanager always sends a fingerprint; an alert written by hand gets one made from its labels
        body["alerts"] = [{"status": "firing", **a, "fingerprint": a.get("fingerprint") or (
            fingerprint_of(a["labels"]) if isinstance(a.get("labels"), dict) else "")}
            if isinstance(a, dict) else a for a in body["alerts"]]
    if "version" in body and body["version"] != "4":
        raise ConfigError(f"unsupported webhook version {str(body['version'])[:10]!r}", hint="version 4")
    try:
        return Webhook.model_validate(body)
    except ValidationError as exc:
        raise ConfigError(f"{source} is not an Alertmanager webhook (version 4): {_errors(exc)}",
                          hint="alerts[].labels.alertname, startsAt (RFC 3339), status firing|resolved") from None
