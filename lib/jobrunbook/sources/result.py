"""The one result type every evidence source returns.

A source that cannot be reached is evidence too ("Prometheus did not answer in
5 s at http://127.0.0.1:9090"), so expected failures come back as a
``SourceResult`` with a status, a message naming what failed and where, and a
``hint``: the exact command to check it by hand. Nothing here raises for a
source that is down, slow or wrong.

    status   meaning
    ok       the source answered and what it says is healthy
    degraded it answered, but near a limit (connections, memory, 429)
    down     it could not be reached (refused, DNS, TLS, 5xx health)
    error    it answered with something unusable (bad query, bad data)
    timeout  it did not answer in the time allowed
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import requests

from jobrunbook._urls import redact_url

__all__ = ["STATUSES", "SourceResult", "describe_request_error", "result_from_request_error", "Stopwatch"]

STATUSES = ("ok", "degraded", "down", "error", "timeout")


@dataclass
class SourceResult:
    """What one call to one evidence source gave."""

    source: str
    status: str
    message: str
    hint: str = ""
    elapsed_s: float = 0.0
    data: Any = None
    target: str = ""
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")
        self.elapsed_s = round(float(self.elapsed_s), 4)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def reachable(self) -> bool:
        """True when the source answered (ok or degraded)."""
        return self.status in ("ok", "degraded")

    def to_dict(self) -> dict:
        """A JSON-ready dict; DataFrames become lists of records."""
        return {
            "source": self.source,
            "status": self.status,
            "ok": self.ok,
            "message": self.message,
            "hint": self.hint,
            "elapsed_s": self.elapsed_s,
            "target": self.target,
            "details": _jsonable(self.details),
            "data": _jsonable(self.data),
        }

    def __str__(self) -> str:
        return f"[{self.status}] {self.source}: {self.message}"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, SourceResult):
        return value.to_dict()
    if isinstance(value, pd.DataFrame):
        return [_jsonable(r) for r in value.to_dict(orient="records")]
    if isinstance(value, pd.Series):
        return _jsonable(value.to_dict())
    if isinstance(value, (pd.Timestamp,)):
        return None if pd.isna(value) else value.isoformat()
    if value is pd.NaT:
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return str(value)


class Stopwatch:
    """Elapsed seconds from a monotonic clock that a test may pass in."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._start = clock()

    @property
    def elapsed(self) -> float:
        return self._clock() - self._start


def describe_request_error(exc: BaseException, timeout: float) -> tuple[str, str]:
    """Name a requests failure: (status, reason) with reason a short phrase."""
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return "down", "TLS error (certificate or handshake failed)"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout", f"did not answer in {_seconds(timeout)}"
    if isinstance(exc, requests.exceptions.ConnectionError):
        low = text.lower()
        if "name or service not known" in low or "nodename nor servname" in low or "failed to resolve" in low \
                or "name resolution" in low or "getaddrinfo" in low or "no address associated" in low:
            return "down", "DNS lookup failed (host name does not resolve)"
        if "refused" in low:
            return "down", "connection refused (nothing listening)"
        if "reset" in low or "aborted" in low or "remotedisconnected" in low:
            return "down", "connection reset or closed without an answer"
        return "down", "could not connect"
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema
                  | requests.exceptions.InvalidSchema):
        return "error", "invalid URL"
    return "error", f"request failed ({type(exc).__name__})"


def result_from_request_error(source: str, what: str, url: str, exc: BaseException, *, timeout: float,
                              elapsed_s: float, hint: str) -> SourceResult:
    """A result for a request that failed before any HTTP answer."""
    status, reason = describe_request_error(exc, timeout)
    safe = redact_url(url)
    return SourceResult(source=source, status=status, message=f"{what} {reason} at {safe}", hint=hint,
                        elapsed_s=elapsed_s, target=safe, details={"exception": type(exc).__name__})


def _seconds(value: float) -> str:
    return f"{value:g} s"
