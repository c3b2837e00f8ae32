"""One clock for the lib and the demo: every "now" comes from here.

    from jobrunbook import clock
    clock.now()        # unix seconds (float)
    clock.utcnow()     # aware datetime in UTC
    clock.today()      # the UTC date asynq's daily counters are keyed by
    clock.parse_when("1h30m")   # one grammar for "how long ago" everywhere (2d, 15m, RFC 3339, unix s)

Production reads the system clock. A test (or the demo's simulated history)
hands in its own, for the whole process or for a block::

    with clock.use(clock.FixedClock(1_795_980_000)):
        ...

Functions that take ``now=`` or ``clock=`` still accept one explicitly; when
they get none, they ask this module, never ``time.time()`` themselves.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from collections.abc import Iterator
from typing import Protocol

__all__ = ["Clock", "SystemClock", "FixedClock", "now", "utcnow", "today", "iso", "now_iso",
           "parse_duration", "parse_when", "DURATION_HINT", "set_clock", "use", "current"]


class Clock(Protocol):
    def time(self) -> float:
        """Unix seconds now."""


class SystemClock:
    """The machine's clock."""

    def time(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


class FixedClock:
    """A clock that stands still at ``t`` until ``advance()`` or ``set()`` moves it."""

    def __init__(self, t: float) -> None:
        self.t = float(t)

    def time(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def set(self, t: float) -> None:
        self.t = float(t)

    def __repr__(self) -> str:
        return f"FixedClock({self.t!r})"


_current: Clock = SystemClock()


def current() -> Clock:
    return _current


def set_clock(clock: Clock | None) -> Clock:
    """Make ``clock`` the process's clock (None: the system clock); return the previous one."""
    global _current
    previous, _current = _current, clock or SystemClock()
    return previous


@contextlib.contextmanager
def use(clock: Clock) -> Iterator[Clock]:
    """The process's clock is ``clock`` inside the block."""
    previous = set_clock(clock)
    try:
        yield clock
    finally:
        set_clock(previous)


def now() -> float:
    return _current.time()


def utcnow() -> dt.datetime:
    return dt.datetime.fromtimestamp(_current.time(), dt.timezone.utc)


def today() -> dt.date:
    return utcnow().date()


def iso(ts: float | dt.datetime | None, *, timespec: str = "milliseconds") -> str | None:
    """RFC 3339 UTC with a ``Z`` (``2026-11-29T18:40:00.000Z``); ``None`` stays None."""
    if ts is None:
        return None
    if isinstance(ts, dt.datetime):
        value = ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)
    else:
        value = dt.datetime.fromtimestamp(float(ts), dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def now_iso(*, timespec: str = "milliseconds") -> str:
    return iso(now(), timespec=timespec) or ""


# ---------------------------------------------------------------- how long, and since when

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_UNITS = (86400, 3600, 60, 1)
DURATION_HINT = "a duration like 45s, 15m, 1h30m, 2d (days, hours, minutes, seconds), an RFC 3339 time or unix seconds"


def parse_duration(text: str) -> float:
    """``"45s"``, ``"15m"``, ``"1h30m"``, ``"2d"``, ``"1.5h"`` -> seconds; ConfigError for anything else."""
    from jobrunbook._exceptions import ConfigError

    m = _DURATION.match(str(text).strip().replace(" ", ""))
    if not m or not any(m.groups()):
        raise ConfigError(f"{str(text)[:40]!r} is not a duration", hint=DURATION_HINT)
    return sum(float(g) * unit for g, unit in zip(m.groups(), _UNITS, strict=True) if g)


def parse_when(text: str | float | None, *, now: float | None = None) -> float | None:
    """A moment: a duration ago (``"1h"``, ``"2d"``), an RFC 3339 / ISO time (UTC when it has no zone),
    or unix seconds -> unix seconds; None for nothing; ConfigError naming the text otherwise."""
    from jobrunbook._exceptions import ConfigError

    if text is None or text == "":
        return None
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    text = str(text).strip()
    if _DURATION.match(text.replace(" ", "")) and any(_DURATION.match(text.replace(" ", "")).groups()):
        return (now if now is not None else _current.time()) - parse_duration(text)
    if re.fullmatch(r"\d{9,11}(\.\d+)?", text):
        return float(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"cannot read the time {text[:40]!r}", hint=DURATION_HINT) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()
