"""One clock for the lib and the demo: every "now" comes from here.

    from jobrunbook import clock
    clock.now()        # unix seconds (float)
    clock.utcnow()     # aware datetime in UTC
    clock.today()      # the UTC date asynq's daily counters are keyed by

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
import time
from collections.abc import Iterator
from typing import Protocol

__all__ = ["Clock", "SystemClock", "FixedClock", "now", "utcnow", "today", "iso", "now_iso", "set_clock", "use", "current"]


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
