"""The demo worker's log, in the two formats of the fixtures' worker.log.

- asynq's logger: ``asynq: pid=N YYYY/MM/DD HH:MM:SS.micro LEVEL: message``,
  panic stack traces printed as asynq prints them (debug.Stack after
  "recovering from panic");
- the application's logfmt lines: ``<RFC3339 micro>Z app level=error msg="task failed"
  queue=... task_type=... task_id=... retried=N max_retry=N next=retry|archive error="..."``.

All times are UTC. The stack traces look like the build of the captures of
the worker's asynq release: v0.24.x a Go 1.19 build with absolute paths
(``/go/pkg/mod/github.com/hibiken/asynq@v0.24.1/processor.go:416``), v0.25.0+ a
``-trimpath`` Go 1.27 build (``github.com/hibiken/asynq@v0.26.0/processor.go:427``,
``created by ... in goroutine N``).
"""

from __future__ import annotations

import datetime as _dt
import random
import threading
from pathlib import Path

__all__ = ["WorkerLog", "ASYNQ_LINE", "APP_LINE"]

ASYNQ_LINE = r"^asynq: pid=(\d+) (\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}\.\d{6}) (DEBUG|INFO|WARN|ERROR|FATAL): (.*)$"
APP_LINE = r'^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z) app level=(\w+) msg="((?:[^"\\]|\\.)*)"(.*)$'

_ASYNQ = "/go/pkg/mod/github.com/hibiken/asynq@v0.24.1"
_GO = "/usr/lib/go-1.19/src/runtime"
_MAIN = "/go/src/app/cmd/worker-daemon/main.go"
# per build: asynq's module path, Go's runtime, the program, and the line numbers of asynq's frames
_STYLES = {
    "v0.24": {"asynq": "/go/pkg/mod/github.com/hibiken/asynq@{v}", "go": _GO, "main": _MAIN, "stack": 24,
              "panic": 884, "perform_func1": 416, "server": 577, "servemux": 51, "perform": 432, "exec3": 230,
              "exec": 219, "goroutine_suffix": False},
    "v0.25+": {"asynq": "github.com/hibiken/asynq@{v}", "go": "runtime", "main": "jobsvc/worker-daemon/main.go",
               "stack": 26, "panic": 859, "perform_func1": 427, "server": 650, "servemux": 55, "perform": 446,
               "exec3": 234, "exec": 222, "goroutine_suffix": True},
}

# the frames between the handler and asynq's processor, as in the fixtures
_HANDLER_FRAMES = {
    "decoder": [("main.imageWork({0xb3c280, CTX}, {{ADDR, 0xa}, {ADDR, 0x3}, {ADDR, 0x4}, {0x0, 0x0}, ...})",
                 f"{_MAIN}:280 +0x266"),
                ("main.handleImage({0xb3c280, CTX}, 0x48bd77?)", f"{_MAIN}:313 +0x108")],
    "index": [("main.parseImage(ADDR)", f"{_MAIN}:303 +0x219"),
              ("main.handleImage({0xb3c280, CTX}, 0x48bd77?)", f"{_MAIN}:309 +0x65")],
    "nil": [("main.handleImageV2({0xb3c280, CTX}, 0x48bd77?)", f"{_MAIN}:327 +0xe8")],
}
_PANIC_VALUE = {"decoder": "{0xa18ca0, ADDR}", "index": "{0x996e80, ADDR}", "nil": "{0x9c1ac0, 0xee5d60}"}


def _quote(value: str) -> str:
    """Go's %q for the printable strings this demo writes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class WorkerLog:
    """Appends worker log lines to ``path`` (thread-safe)."""

    def __init__(self, path: Path, pid: int = 17909, rng: random.Random | None = None,
                 asynq_version: str = "v0.24.1") -> None:
        from jobrunbook.asynq.versions import behaviour

        b = behaviour(asynq_version)
        self._style = dict(_STYLES["v0.25+" if b.panic_wrapped else "v0.24"])
        self._style["asynq"] = self._style["asynq"].format(v=b.version)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.pid = pid
        self._rng = rng or random.Random(0)
        self._goroutine = 300
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def _write(self, text: str) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(text + "\n")
                self._file.flush()

    @staticmethod
    def _utc(ts: float) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)

    def asynq(self, ts: float, level: str, message: str) -> None:
        stamp = self._utc(ts).strftime("%Y/%m/%d %H:%M:%S.%f")
        self._write(f"asynq: pid={self.pid} {stamp} {level}: {message}")

    def app(self, ts: float, level: str, msg: str, **fields: object) -> None:
        stamp = self._utc(ts).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        parts = [f"{stamp} app level={level} msg={_quote(msg)}"]
        for key, value in fields.items():
            text = str(value)
            if key == "error" or not text or any(c in text for c in ' "='):
                text = _quote(text)
            parts.append(f"{key}={text}")
        self._write(" ".join(parts))

    def task_failed(self, ts: float, queue: str, task_type: str, task_id: str, retried: int, max_retry: int,
                    next_state: str, error: str) -> None:
        self.app(ts, "error", "task failed", queue=queue, task_type=task_type, task_id=task_id, retried=retried,
                 max_retry=max_retry, next=next_state, error=error)

    def _addr(self) -> str:
        return f"0xc000{self._rng.randrange(0x100000, 0x4fffff):06x}"

    def panic(self, ts: float, kind: str) -> None:
        """asynq's ERROR line and the stack trace it prints when it recovers a handler panic."""
        self._goroutine += self._rng.randint(20, 120)
        ctx = self._addr()
        task = self._addr()

        def fill(text: str) -> str:
            while "ADDR" in text:
                text = text.replace("ADDR", self._addr(), 1)
            return text.replace("CTX", ctx)

        st = self._style
        asynq, go = st["asynq"], st["go"]
        lines = [f"goroutine {self._goroutine} [running]:",
                 "runtime/debug.Stack()", f"\t{go}/debug/stack.go:{st['stack']} +0x65",
                 "github.com/hibiken/asynq.(*processor).perform.func1()",
                 f"\t{asynq}/processor.go:{st['perform_func1']} +0x5d",
                 f"panic({fill(_PANIC_VALUE[kind])})", f"\t{go}/panic.go:{st['panic']} +0x212"]
        for func, where in _HANDLER_FRAMES[kind]:
            lines += [fill(func), f"\t{where.replace(_MAIN, st['main'])}"]
        created = "created by github.com/hibiken/asynq.(*processor).exec.func1" + (
            f" in goroutine {self._goroutine - 1}" if st["goroutine_suffix"] else "")
        lines += [f"github.com/hibiken/asynq.HandlerFunc.ProcessTask(0xb3c280?, {{0xb3c280?, {ctx}?}}, {self._addr()}?)",
                  f"\t{asynq}/server.go:{st['server']} +0x2f",
                  f"main.metricsMiddleware.func1({{0xb3c280, {ctx}}}, {task})", f"\t{st['main']}:472 +0x157",
                  f"github.com/hibiken/asynq.HandlerFunc.ProcessTask({self._addr()}?, {{0xb3c280?, {ctx}?}}, 0x468e0e?)",
                  f"\t{asynq}/server.go:{st['server']} +0x2f",
                  f"github.com/hibiken/asynq.(*ServeMux).ProcessTask(0x7fd040d795b8?, {{0xb3c280, {ctx}}}, {task}?)",
                  f"\t{asynq}/servemux.go:{st['servemux']} +0x46",
                  f"github.com/hibiken/asynq.(*processor).perform({self._addr()}?, {{0xb3c280?, {ctx}?}}, "
                  f"{self._addr()}?)",
                  f"\t{asynq}/processor.go:{st['perform']} +0x82",
                  "github.com/hibiken/asynq.(*processor).exec.func1.3()",
                  f"\t{asynq}/processor.go:{st['exec3']} +0x1ca",
                  created, f"\t{asynq}/processor.go:{st['exec']} +0x265"]
        stamp = self._utc(ts).strftime("%Y/%m/%d %H:%M:%S.%f")
        self._write(f"asynq: pid={self.pid} {stamp} ERROR: recovering from panic. See the stack trace below for details:\n"
                    + "\n".join(lines))
