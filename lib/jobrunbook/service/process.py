"""The runs in a process of their own, at a lower CPU priority: the webhook's process only accepts and reads.

Kernels, papermill's clients, report rendering and Chromium all start from
the worker process, so they inherit its niceness; the process answering the
webhook shares neither its interpreter lock nor its place in the CPU queue.

    handle = WorkerProcess(build, nice=10).start()   # build(): a Worker (and what to close), in the child
    handle.wake()                                    # after an accept: look at the queue now
    handle.stop()                                    # SIGTERM; the child releases its leases and exits

The child exits by itself when its parent is gone (``kill -9`` of ``serve``),
so no run keeps going with nobody answering for it; its leases then expire
and another worker takes its runs over.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["WorkerProcess", "DEFAULT_NICE"]

DEFAULT_NICE = 10
log = logging.getLogger("jobrunbook.service")


def _child(build: Callable[[], tuple[Any, Callable[[], None]]], wake: Any, stop: Any, parent: int,
           nice: int) -> None:
    """The worker process: lower its priority, build the worker, run until told to stop or orphaned."""
    from jobrunbook.service.auth import TOKEN_ENV

    os.environ.pop(TOKEN_ENV, None)  # this process never answers the webhook
    if nice:
        os.nice(nice)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    worker, cleanup = build()
    worker.start()
    try:
        while not stopping.is_set() and not stop.is_set():
            if wake.wait(0.5):
                wake.clear()
                worker.wake()
            if os.getppid() != parent:  # the serve process died (kill -9): do not run on unanswered
                log.warning("the serve process %d is gone: stopping the runs", parent)
                break
    finally:
        worker.stop()
        cleanup()


class WorkerProcess:
    """A ``Worker`` in a child process (spawned: a fresh interpreter, nothing of the server's threads)."""

    def __init__(self, build: Callable[[], tuple[Any, Callable[[], None]]], *, nice: int = DEFAULT_NICE) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self.build, self.nice = build, nice
        self._wake = self._ctx.Event()
        self._stop = self._ctx.Event()
        self.proc: Any = None

    def start(self) -> WorkerProcess:
        self.proc = self._ctx.Process(target=_child, args=(self.build, self._wake, self._stop, os.getpid(), self.nice),
                                      name="jobrunbook-worker", daemon=False)
        self.proc.start()
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        self._stop.set()
        self.proc.join(timeout)
        if self.proc.is_alive():
            log.warning("the worker process did not stop in %.0f s: killed", timeout)
            self.proc.kill()
            self.proc.join(5)
