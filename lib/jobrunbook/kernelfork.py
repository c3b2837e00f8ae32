"""Kernels forked from a process that has already imported what the sections use.

A kernel started the usual way (``python -m ipykernel_launcher``) spends most
of its start importing: Python itself, IPython and ipykernel, then pandas,
matplotlib and jobrunbook when the notebook begins. On a two-core machine with
seven notebooks per run that is several CPU-seconds of the same imports, done
seven times. Here one process (the *fork server*) imports all of it once and
then forks one child per kernel: each kernel is still a fresh process that runs
one notebook (nothing a notebook does is shared), but it starts in tens of
milliseconds and its imported modules are copy-on-write pages of the server's.

- ``ForkServer``: the server process (``python -m jobrunbook.kernelfork``), a
  line of JSON per request on its stdin, a line per reply or child exit on its
  stdout. It forks only while it has a single thread, resets the signals, the
  environment and the working directory of each child, and can lower the
  child's priority (``nice``) before the kernel starts. It exits when its stdin
  closes (the run or the service went away); its kernels then see their
  parent change and exit too (ipykernel's parent poller).
- ``ForkProvisioner``: jupyter_client's ``LocalProvisioner`` that launches
  through a ``ForkServer`` instead of ``Popen``, for the kernelspec that runs
  ``ipykernel_launcher`` with this Python; any other kernelspec (or a server
  that died) falls back to the ordinary launch.

Linux and macOS only (``os.fork``); elsewhere ``ForkServer.available()`` is
False and kernels start the usual way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ForkServer", "ForkProvisioner", "Forked", "PRELOAD", "LATER", "kernel_args", "start_fork_server"]

# What every section's kernel would import anyway: imported once, in the server.
PRELOAD = (
    "ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.debugger", "IPython.core.interactiveshell",
    "numpy", "pandas",
    "jobrunbook.sections", "jobrunbook.findings", "jobrunbook.tables",
    "jobrunbook.sources.metrics", "jobrunbook.sources.logs", "jobrunbook.sources.prometheus",
    "jobrunbook.asynq.inspector", "jobrunbook.asynq.hazards", "jobrunbook.diagnosis", "jobrunbook.diagnosis.gather",
)
# Imported once the first kernels are forked, while the server waits: what drawing charts needs (sections hand
# charts over as data, ``jobrunbook.chartspec``; a process forked to draw them has it), and what only one late
# section uses (a kernel forked before imports it itself).
LATER = ("matplotlib.figure", "matplotlib.backends.backend_agg", "jobrunbook.charts", "jobrunbook.sources.probes",
         "jobrunbook.remediate")
_LAUNCHER = "ipykernel_launcher"


def kernel_args(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """(interpreter and its flags, the kernel's own arguments) of a kernelspec's argv that runs
    ``python -m ipykernel_launcher ...``; None for any other kernel."""
    try:
        m = argv.index("-m")
    except ValueError:
        return None
    if m + 1 >= len(argv) or argv[m + 1] != _LAUNCHER:
        return None
    return argv[:m], argv[m + 2:]


# -- the server (runs in its own process) ------------------------------------------------------------------
def _child(req: dict[str, Any], server_pid: int, close_fds: Iterable[int]) -> None:
    """In the forked child: become a kernel (or run the requested function). Never returns."""
    code = 1
    try:
        os.setsid()  # its own process group: interrupts and kills reach the kernel and what it started
        signal.set_wakeup_fd(-1)
        # the signals as a fresh Python process has them (SIGPIPE stays ignored, as Python sets it)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)  # the server's stdout is its reply pipe: never the kernel's
        os.close(devnull)
        os.environ.clear()
        os.environ.update(req.get("env") or {})
        os.environ["JPY_PARENT_PID"] = str(server_pid)  # the kernel exits when the server does
        if req.get("cwd"):
            os.chdir(req["cwd"])
        if req.get("nice"):
            os.nice(int(req["nice"]))
        if req.get("call"):  # a function, not a kernel: "module:function" with JSON arguments
            import importlib

            module, _, func = req["call"].partition(":")
            getattr(importlib.import_module(module), func)(*req.get("args", []))
        else:
            sys.argv = [_LAUNCHER, *req["argv"]]
            from ipykernel import kernelapp

            kernelapp.launch_new_instance()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except BaseException:  # noqa: BLE001 - a child must never return into the server's loop
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _serve(preload: list[str], later: list[str] = ()) -> int:
    """The server's loop: preload, say ready, fork a kernel per request, report each child's exit; while no
    request waits, import ``later`` too (for children forked after that)."""
    import importlib
    import selectors

    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]  # as ipykernel_launcher does: the kernel adds its own cwd back
    # a papermill run never debugs: without debugpy (pydevd) ipykernel starts without its debugger, a
    # large import spared on the way to the first kernel
    sys.modules.setdefault("debugpy", None)  # type: ignore[arg-type]
    failed = {}
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a kernel imports it itself, and says why
            failed[name] = f"{type(exc).__name__}: {exc}"[:300]
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    inp = os.fdopen(os.dup(0), "rb", buffering=0)
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector through the wakeup fd
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the caller; it closes our stdin

    def send(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj).encode() + b"\n")

    send({"ready": True, "pid": os.getpid(), "failed": failed, "threads": threading.active_count()})
    sel = selectors.DefaultSelector()
    sel.register(inp, selectors.EVENT_READ)
    sel.register(rfd, selectors.EVENT_READ)
    buf = b""
    closing = False
    todo = list(later)
    while True:
        for key, _ in sel.select(timeout=0 if todo else 1.0):
            if key.fileobj == rfd:
                try:
                    os.read(rfd, 4096)
                except BlockingIOError:
                    pass
                continue
            chunk = inp.read(65536)
            if not chunk:
                closing = True
                break
            buf += chunk
        while True:  # reap every child that ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                req = json.loads(line)
            except ValueError:
                continue
            if threading.active_count() != 1:  # fork is only safe from a single-threaded process
                send({"id": req.get("id"), "error": f"fork server has {threading.active_count()} threads"})
                continue
            try:
                pid = os.fork()
            except OSError as exc:
                send({"id": req.get("id"), "error": f"fork failed: {exc}"})
                continue
            if pid == 0:
                _child(req, os.getppid(), (rfd, wfd, out.fileno(), inp.fileno(), sel.fileno()))
            send({"id": req.get("id"), "pid": pid})
        if closing:
            return 0
        if todo and not buf:
            try:
                importlib.import_module(todo.pop(0))
            except Exception:  # noqa: BLE001 - the child that needs it imports it itself
                pass


# -- the client side ---------------------------------------------------------------------------------------
class ForkServer:
    """A fork server for kernels, started with ``interpreter`` (the kernelspec's Python and flags).

    ``spawn`` asks it for a kernel and returns its pid; ``exit_code(pid)`` is None while that kernel runs.
    """

    def __init__(self, interpreter: list[str] | None = None, *, env: Mapping[str, str] | None = None,
                 preload: Iterable[str] = PRELOAD, later: Iterable[str] = LATER,
                 start_timeout: float = 60.0) -> None:
        self.interpreter = list(interpreter or [sys.executable])
        # the server's own environment is what every child starts from (and what /proc/<child>/environ shows,
        # whatever the child later sets): the kernels' allow-list, never the caller's whole environment
        self.env = _allowed(env)
        self.preload = list(preload)
        self.later = list(later)
        self.start_timeout = start_timeout
        self.pid: int | None = None
        self.failed_imports: dict[str, str] = {}
        self.error: str | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self._exits: dict[int, int] = {}
        self._next = 0
        self._ready = False
        self._dead = False
        self._reader: threading.Thread | None = None

    @staticmethod
    def available() -> bool:
        return hasattr(os, "fork") and sys.platform != "win32"

    def start(self) -> ForkServer:
        """Start the server process; returns at once (``spawn`` waits for its imports)."""
        env = {**self.env, "OPENBLAS_NUM_THREADS": self.env.get("OPENBLAS_NUM_THREADS", "1"),
               "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONEXECUTABLE", None)
        spec = json.dumps({"preload": self.preload, "later": self.later})
        self._proc = subprocess.Popen([*self.interpreter, "-m", "jobrunbook.kernelfork", spec],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                      start_new_session=True, close_fds=True)
        self.pid = self._proc.pid
        self._reader = threading.Thread(target=self._read, name="jobrunbook-forkserver", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            with self._cond:
                if msg.get("ready"):
                    self._ready = True
                    self.failed_imports = msg.get("failed") or {}
                elif "exit" in msg:
                    self._exits[int(msg["exit"])] = int(msg["code"])
                elif "id" in msg:
                    self._replies[int(msg["id"])] = msg
                self._cond.notify_all()
        with self._cond:
            self._dead = True
            self.error = self.error or f"fork server exited ({self._proc.poll()})"
            self._cond.notify_all()

    @property
    def alive(self) -> bool:
        return self._proc is not None and not self._dead

    def wait_ready(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._ready or self._dead, timeout or self.start_timeout) \
                and self._ready and not self._dead

    def spawn(self, argv: list[str], *, env: Mapping[str, str], cwd: str | None = None, nice: int = 0,
              timeout: float = 30.0) -> int:
        """Fork a kernel running ipykernel with ``argv`` (``-f CONNECTION_FILE``); its pid."""
        return self._request({"argv": list(argv), "env": dict(env), "cwd": cwd, "nice": nice}, timeout)

    def call(self, target: str, args: list[Any], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
             nice: int = 0, timeout: float = 30.0) -> int:
        """Fork a child that runs ``module:function(*args)`` (JSON arguments) and exits; its pid
        (``wait`` for it: exit code 0 when the function returned)."""
        return self._request({"call": target, "args": list(args), "env": _allowed(env),
                              "cwd": cwd, "nice": nice}, timeout)

    def wait(self, pid: int, timeout: float | None = None) -> int | None:
        """The exit code of child ``pid`` once it ended (None if it still runs after ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.exit_code(pid)) is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            with self._cond:
                self._cond.wait(0.05)
        self.forget(pid)
        return code

    def _request(self, req: dict[str, Any], timeout: float) -> int:
        if not self.wait_ready(self.start_timeout):
            raise OSError(f"fork server not ready: {self.error or 'timed out'}")
        with self._lock:
            self._next += 1
            rid = self._next
            line = json.dumps({"id": rid, **req})
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError) as exc:
                raise OSError(f"fork server gone: {exc}") from None
        with self._cond:
            if not self._cond.wait_for(lambda: rid in self._replies or self._dead, timeout):
                raise OSError("fork server did not answer")
            reply = self._replies.pop(rid, None)
        if reply is None or "pid" not in reply:
            raise OSError((reply or {}).get("error") or self.error or "fork server gone")
        return int(reply["pid"])

    def exit_code(self, pid: int) -> int | None:
        """The kernel's exit code once it has ended, else None."""
        with self._cond:
            if pid in self._exits:
                return self._exits[pid]
            dead = self._dead
        if dead:  # nobody reaps it for us any more: ask the system
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return -1
            except PermissionError:
                return None
        return None

    def forget(self, pid: int) -> None:
        with self._cond:
            self._exits.pop(pid, None)

    def close(self, timeout: float = 10.0) -> None:
        """Close the server's stdin: it exits (its kernels should have been shut down before)."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if self._reader is not None:
            self._reader.join(timeout=5)


class Forked:
    """The Popen-like handle ``LocalProvisioner`` keeps, for a kernel forked by a ``ForkServer``."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int, server: ForkServer) -> None:
        self.pid = pid
        self.server = server
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.wait(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _provisioner_class():
    from jupyter_client.provisioning import LocalProvisioner

    class ForkProvisioner(LocalProvisioner):
        """``LocalProvisioner`` launching ipykernel through a ``ForkServer`` (see the module doc)."""

        server: ForkServer | None = None
        nice: int = 0

        async def launch_kernel(self, cmd: list[str], **kwargs: Any):
            split = kernel_args(cmd)
            server = self.server
            if split is None or server is None or not server.alive:
                return await super().launch_kernel(cmd, **kwargs)
            import asyncio

            env = kwargs.get("env") or dict(os.environ)
            cwd = kwargs.get("cwd")
            try:
                pid = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: server.spawn(split[1], env=env, cwd=cwd, nice=self.nice))
            except OSError:
                return await super().launch_kernel(cmd, **kwargs)  # the ordinary way, as if there were no server
            self.process = Forked(pid, server)
            self.pid = self.pgid = pid  # the child calls setsid(): its group is its pid
            return self.connection_info

    return ForkProvisioner


def _allowed(env: Mapping[str, str] | None) -> dict[str, str]:
    from jobrunbook.kernels import kernel_environ  # here: kernels imports this module

    return kernel_environ(base=os.environ if env is None else env)


def start_fork_server(kernel_name: str = "python3", *, env: Mapping[str, str] | None = None,
                      start_timeout: float = 60.0, errors: list[str] | None = None) -> ForkServer | None:
    """A started ``ForkServer`` for the kernelspec ``kernel_name`` (it imports while the caller goes on);
    None where kernels cannot be forked (no fork, a kernel other than ipykernel, no such kernelspec)."""
    if not ForkServer.available():
        return None
    from jupyter_client.kernelspec import KernelSpecManager

    try:
        split = kernel_args(KernelSpecManager().get_kernel_spec(kernel_name).argv)
    except Exception as exc:  # noqa: BLE001 - no such kernelspec: every start says so, the ordinary way
        if errors is not None:
            errors.append(f"fork server: {type(exc).__name__}: {exc}"[:300])
        return None
    if split is None:  # not ipykernel: started the ordinary way
        return None
    return ForkServer(split[0], env=env, start_timeout=start_timeout).start()


_PROVISIONER = None


def ForkProvisioner(**kwargs: Any):  # noqa: N802 - a class made on first use (jupyter_client imports lazily)
    global _PROVISIONER
    if _PROVISIONER is None:
        _PROVISIONER = _provisioner_class()
    return _PROVISIONER(**kwargs)


if __name__ == "__main__":
    _spec = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    sys.exit(_serve(_spec.get("preload", list(PRELOAD)), _spec.get("later", list(LATER))))
