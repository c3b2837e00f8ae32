"""Loaded by every Python process of `make test-dates` (PYTHONPATH): time.sleep that works under libfaketime.

libfaketime 0.9.10 with a real monotonic clock (FAKETIME_DONT_FAKE_MONOTONIC=1, without which every timed
wait hangs) makes Python 3.11's time.sleep fail with EINVAL (its clock_nanosleep on CLOCK_MONOTONIC with
TIMER_ABSTIME); a timed Event wait sleeps just as long and works. Outside faketime this changes nothing:
the real sleep is tried first.
"""

import threading
import time

_real_sleep = time.sleep


def _sleep(seconds: float) -> None:
    try:
        _real_sleep(seconds)
    except OSError:
        if seconds > 0:
            threading.Event().wait(seconds)


time.sleep = _sleep
