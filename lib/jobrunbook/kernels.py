"""Kernels for section notebooks: a fresh one per notebook, or a warm pool.

papermill hands extra keyword arguments to nbclient's ``NotebookClient``,
which accepts a kernel manager (``km=``): when the manager already has a
kernel, nbclient connects a new client to it and, since it does not own the
manager, leaves the kernel running afterwards. That is the seam used here.

- ``RunKernelManager``: an ``AsyncKernelManager`` that starts its kernel with
  the given environment and working directory and remembers the clients it
  handed out, so they can be closed after papermill is done. Its clients
  (``RunKernelClient``) skip the 0.2 s wait for a silent IOPub that
  jupyter_client makes before each notebook.
- ``KernelPool``: kernels started ahead of time with pandas and matplotlib
  already imported (silently: no execution count, no history). Each kernel
  runs ONE notebook; ``release`` shuts it down in the background and the pool
  starts a replacement, one at a time, so no state is shared between runs.
  Where the OS can fork, the pool's kernels are forked from its fork server
  (``jobrunbook.kernelfork``), which imported ipykernel, pandas, matplotlib and
  the lib once: a kernel then starts in a fraction of the usual time. Every
  kernel the pool starts runs at a lower priority (``nice``, +10 by default)
  until it is handed out, so a replacement starting in the background never
  takes the CPU from a section that runs; ``acquire`` gives the kernel the
  caller's priority back where the OS lets it (root, CAP_SYS_NICE), and
  otherwise the section runs at that lower priority too.

    with KernelPool(size=4) as pool:
        km = pool.acquire()
        try:
            papermill.execute_notebook(src, dst, km=km)
        finally:
            pool.release(km)
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from queue import Empty
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync

from jobrunbook._exceptions import JobrunbookError, SourceTimeout
from jobrunbook.kernelfork import Forked, ForkProvisioner, ForkServer, start_fork_server

__all__ = ["RunKernelManager", "RunKernelClient", "KernelPool", "WARMUP_CODE", "POOL_NICE", "run_silently",
           "close_clients", "shutdown_now", "kernel_pid", "set_kernel_priority", "start_fork_server",
           "kernel_environ", "KERNEL_ENV_NAMES", "KERNEL_ENV_PREFIXES"]

# What a kernel inherits from the process that starts it: an allow-list by name, never the whole environment
# (the service holds the webhook token, notify URLs and the store's DSN; one print(os.environ) in a notebook
# would publish them). The sources' own variables are the configuration's (jobrunbook.config.ENV_NAMES, added
# in kernel_environ); a secret a run needs (a Redis password, a Postgres DSN) is passed to the kernel by name,
# as its extra environment (jobrunbook.run.params.kernel_env).
KERNEL_ENV_NAMES = frozenset({
    # the process: where programs, the home, the locale and temporary files are
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
    # the Python and Jupyter installation the kernel runs in
    "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "JUPYTER_PATH",
    "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR", "MPLBACKEND", "MPLCONFIGDIR",
    "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR",
    # reaching the sources: TLS roots, proxies, and the log sources' own clients (docker, kubectl)
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "KUBECONFIG", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "DOCKER_CONTEXT",
    # libfaketime (make test-dates)
    "LD_PRELOAD",
    # jobrunbook's own, beside the configuration's
    "JOBRUNBOOK_CONFIG", "JOBRUNBOOK_RUN_DIR", "JOBRUNBOOK_DEMO_JSON", "JOBRUNBOOK_RULES_FILE",
    "JOBRUNBOOK_CHROMIUM", "JOBRUNBOOK_ACTOR", "JOBRUNBOOK_REDIS_PASSWORD", "JOBRUNBOOK_POSTGRES_DSN",
})
KERNEL_ENV_PREFIXES = ("LC_", "FAKETIME")
# never, whatever an allow-list above says: what the service alone uses
_NEVER = frozenset({"JOBRUNBOOK_WEBHOOK_TOKEN", "JOBRUNBOOK_SLACK_WEBHOOK_URL", "JOBRUNBOOK_NOTIFY_URL",
                    "JOBRUNBOOK_STORE", "JOBRUNBOOK_PUBLIC_URL"})


def kernel_environ(extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a kernel starts with: the allowed names of ``base`` (``os.environ``), then ``extra``."""
    from jobrunbook.config import ENV_NAMES

    base = os.environ if base is None else base
    allowed = KERNEL_ENV_NAMES | set(ENV_NAMES.values())
    env = {k: v for k, v in base.items()
           if (k in allowed or k.startswith(KERNEL_ENV_PREFIXES)) and k not in _NEVER}
    env.update({k: v for k, v in (extra or {}).items() if k not in _NEVER})
    return env

# Imported before a kernel is handed out: modules only, no state (each kernel still runs one notebook).
WARMUP_CODE = (
    "import pandas, matplotlib, matplotlib.pyplot, numpy\n"
    "import jobrunbook.sections, jobrunbook.charts, jobrunbook.findings\n"
    "import jobrunbook.sources.metrics, jobrunbook.sources.logs, jobrunbook.sources.probes\n"
    "import jobrunbook.asynq.inspector, jobrunbook.diagnosis\n"
)

POOL_NICE = 10  # how much lower than the caller a pool kernel runs until it is handed out


class RunKernelClient(AsyncKernelClient):
    """The client papermill gets for a run's kernel: ``wait_for_ready`` as jupyter_client's (kernel_info
    answered, IOPub seen connected) without its last step, a 0.2 s wait for IOPub to fall silent that every
    notebook paid. What it would have drained (the status messages of that kernel_info) belongs to no
    cell: nbclient passes over messages whose parent is not the cell it executes."""

    async def wait_for_ready(self, timeout: float | None = None) -> None:  # type: ignore[override]
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while True:
            self.kernel_info()
            try:
                msg = await self.shell_channel.get_msg(timeout=1)
            except Empty:
                msg = None
            if msg is not None and msg["msg_type"] == "kernel_info_reply":
                try:  # IOPub connected: a status message of this request arrives on it
                    await self.iopub_channel.get_msg(timeout=0.2)
                except Empty:
                    pass
                else:
                    self._handle_kernel_info_reply(msg)
                    break
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:.0f} seconds")


class RunKernelManager(AsyncKernelManager):
    """A kernel manager with a fixed environment and cwd that tracks its clients."""

    def __init__(self, *, env: Mapping[str, str] | None = None, cwd: str | None = None,
                 fork_server: ForkServer | None = None, nice: int = 0, **kwargs: Any) -> None:
        # IPC (unix sockets, mode 0600 under a private temp name) rather than TCP ports open to every local user
        kwargs.setdefault("transport", "ipc")
        kwargs.setdefault("client_class", "jobrunbook.kernels.RunKernelClient")
        if kwargs["transport"] == "ipc":
            kwargs.setdefault("ip", os.path.join(tempfile.gettempdir(), f"jrk-{uuid.uuid4().hex[:12]}"))
        super().__init__(**kwargs)
        self.extra_env = dict(env or {})
        self.start_cwd = cwd
        self.handed_out: list[Any] = []
        self.fork_server = fork_server
        self.nice = nice  # added to the kernel's niceness before it starts (forked kernels only)

    async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
        kw.setdefault("env", kernel_environ(self.extra_env))
        if self.start_cwd:
            kw["cwd"] = self.start_cwd
        if self.fork_server is not None and self.provisioner is None:
            self.kernel_id = self.kernel_id or str(uuid.uuid4())
            prov = ForkProvisioner(kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self)
            prov.server, prov.nice = self.fork_server, self.nice
            self.provisioner = prov
        await super()._async_start_kernel(**kw)
        pid = kernel_pid(self)
        if self.nice and pid and not isinstance(getattr(self.provisioner, "process", None), Forked):
            # launched the ordinary way: lowered right after it started (a forked kernel lowers itself first)
            set_kernel_priority(pid, os.getpriority(os.PRIO_PROCESS, 0) + self.nice)

    def client(self, **kwargs: Any):  # type: ignore[override]
        kc = super().client(**kwargs)
        self.handed_out.append(kc)
        return kc


async def run_silently(kc: Any, code: str, *, timeout: float = 60.0) -> None:
    """Execute ``code`` on a started client without a trace in history or execution counts."""
    msg_id = kc.execute(code, silent=True, store_history=False, allow_stdin=False)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SourceTimeout(f"kernel did not finish a setup step in {timeout:.0f}s")
        reply = await kc.get_shell_msg(timeout=remaining)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    if reply["content"].get("status") != "ok":
        raise JobrunbookError(f"kernel setup failed: {reply['content'].get('ename')}",
                              hint="python -c 'import pandas, matplotlib' in the runtime environment")


def close_clients(km: RunKernelManager) -> None:
    """Stop the channels of every client papermill/nbclient opened on ``km``."""
    while km.handed_out:
        kc = km.handed_out.pop()
        try:
            kc.stop_channels()
        except Exception:  # noqa: BLE001 - closing sockets must never mask the run's outcome
            pass


async def _shutdown(km: RunKernelManager, now: bool = True) -> None:
    close_clients(km)
    try:
        if km.has_kernel:
            await km.shutdown_kernel(now=now)
    except Exception:  # noqa: BLE001 - a kernel that died on its own is already shut down
        pass


shutdown_now = run_sync(_shutdown)


def kernel_pid(km: RunKernelManager) -> int | None:
    """The kernel's process id (forked or launched), None before it started."""
    prov = km.provisioner
    return getattr(prov, "pid", None) if prov is not None else None


def set_kernel_priority(pid: int, nice: int) -> bool:
    """Set the niceness of every thread of process ``pid`` (Linux: priority is per thread); False when the OS
    refuses (raising a priority needs root or CAP_SYS_NICE) or the process is gone."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    ok = True
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:
            continue
        except OSError:
            ok = False
    return ok


class KernelPool:
    """``size`` pre-started, pre-imported kernels; each used once, then replaced in the background.

    All kernel starts and shutdowns happen on the pool's own event loop
    thread; callers only connect clients to a started kernel.
    """

    def __init__(self, size: int = 4, *, kernel_name: str = "python3", env: Mapping[str, str] | None = None,
                 cwd: str | None = None, warmup_code: str = WARMUP_CODE, start_timeout: float = 60.0,
                 parallel_starts: int = 1, max_starts: int | None = None, attempts: int = 3,
                 fork: bool | None = None, nice: int = POOL_NICE, fork_server: ForkServer | None = None) -> None:
        if size < 1:
            raise ValueError("a kernel pool needs size >= 1")
        self.fork = ForkServer.available() if fork is None else fork
        self._own_server = fork_server is None  # a server handed in (started early by the caller) stays open
        self.nice = max(0, nice)
        self.priority = os.getpriority(os.PRIO_PROCESS, 0)  # what a handed-out kernel gets back
        self.renice_refused = False  # the OS would not give a handed-out kernel its priority back
        self.fork_server: ForkServer | None = fork_server
        self.size = size
        self.kernel_name = kernel_name
        self.env = dict(env or {})
        self.cwd = cwd
        self.warmup_code = warmup_code
        self.start_timeout = start_timeout
        self._ready: deque[RunKernelManager] = deque()
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="jobrunbook-kernel-pool", daemon=True)
        self._pending = 0
        self._closed = False
        self.started_count = 0
        self.errors: list[str] = []
        self.parallel_starts = max(1, parallel_starts)
        self.max_starts = max_starts  # a per-run pool starts exactly as many kernels as it has notebooks
        self._requested = 0
        self._futures: set[Any] = set()
        self._start_gate: asyncio.Semaphore | None = None
        self.attempts = max(1, attempts)  # a kernel that fails to start (or hangs) is tried again, this often

    # lifecycle ---------------------------------------------------------
    def start(self, *, wait: bool = True) -> KernelPool:
        """Start the pool's thread and its ``size`` kernels (one after another); ``wait`` for them all."""
        if self.fork and self.fork_server is None:
            self.fork_server = start_fork_server(self.kernel_name, env=kernel_environ(self.env),
                                                 start_timeout=self.start_timeout, errors=self.errors)
        self._thread.start()
        for _ in range(self.size):
            self._refill()
        if wait:
            self.wait_ready(self.size, timeout=self.start_timeout * self.size)
        return self

    def wait_ready(self, count: int | None = None, timeout: float = 120.0) -> None:
        count = self.size if count is None else count
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._ready) >= count or self._closed, timeout):
                raise SourceTimeout(f"kernel pool: {len(self._ready)}/{count} kernels ready after {timeout:.0f}s",
                                    hint="python -m ipykernel --version; see pool.errors")

    def close(self) -> None:
        with self._cond:
            self._closed = True
            kms = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        if self._thread.is_alive():
            futs = [asyncio.run_coroutine_threadsafe(_shutdown(km), self._loop) for km in kms]
            with self._cond:
                futs += list(self._futures)  # starts in flight shut their kernel down; releases finish
            for f in futs:
                try:
                    f.result(timeout=30)
                except Exception:  # noqa: BLE001
                    pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=15)
        if self.fork_server is not None and self._own_server:
            self.fork_server.close()

    def __enter__(self) -> KernelPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # use -----------------------------------------------------------------
    def acquire(self, timeout: float = 120.0) -> RunKernelManager:
        """Take a ready kernel (waiting for one if need be); a replacement starts in the background."""
        with self._cond:
            # a start that gave up for good (every attempt failed) leaves nothing to wait for: say why at once
            if not self._cond.wait_for(lambda: self._ready or self._closed or self._pending == 0, timeout):
                raise SourceTimeout(f"no warm kernel ready within {timeout:.0f}s{self._errors_note()}",
                                    hint="python -m ipykernel --version")
            if not self._ready and not self._closed:
                raise JobrunbookError(f"no kernel could be started{self._errors_note()}",
                                      hint="python -m ipykernel --version")
            if self._closed:
                raise JobrunbookError("kernel pool is closed")
            km = self._ready.popleft()
            refill = self._reserve()  # counted as pending before the lock is let go: no acquire sees a gap
        if refill:
            self._schedule_start()
        pid = kernel_pid(km)
        if self.nice and pid and not self.renice_refused:
            # the section runs at the caller's priority; the replacements starting meanwhile stay below it
            self.renice_refused = not set_kernel_priority(pid, self.priority)
        return km

    def release(self, km: RunKernelManager) -> None:
        """Close the notebook's clients and shut its kernel down in the background."""
        close_clients(km)
        if self._thread.is_alive():
            self._track(asyncio.run_coroutine_threadsafe(_shutdown(km), self._loop))

    def ready_pids(self) -> list[int]:
        """The process ids of the kernels waiting to be handed out."""
        with self._cond:
            return [pid for km in self._ready if (pid := kernel_pid(km))]

    # internals -------------------------------------------------------------
    def _errors_note(self) -> str:
        return f" (last errors: {'; '.join(self.errors[-3:])})" if self.errors else ""

    def _refill(self) -> None:
        with self._cond:
            refill = self._reserve()
        if refill:
            self._schedule_start()

    def _reserve(self) -> bool:
        """Count one more start as pending (the caller holds the lock); False when the pool starts no more."""
        if self._closed or (self.max_starts is not None and self._requested >= self.max_starts):
            return False
        self._requested += 1
        self._pending += 1
        return True

    def _schedule_start(self) -> None:
        self._track(asyncio.run_coroutine_threadsafe(self._start_one(), self._loop))

    def _track(self, fut: Any) -> None:
        with self._cond:
            self._futures.add(fut)
        fut.add_done_callback(lambda f: self._futures.discard(f))

    async def _start_one(self) -> None:
        # starts are gated (one at a time by default) so a refill competes with a running notebook for one core
        if self._start_gate is None:
            self._start_gate = asyncio.Semaphore(self.parallel_starts)
        async with self._start_gate:
            await self._start_gated()

    async def _start_gated(self) -> None:
        km = None
        for attempt in range(1, self.attempts + 1):
            if self._closed:
                break
            km = RunKernelManager(env=self.env, cwd=self.cwd, kernel_name=self.kernel_name,
                                  fork_server=self.fork_server, nice=self.nice)
            try:
                # bounded as a whole: a kernel that hangs while starting is shut down and tried again
                await asyncio.wait_for(self._boot(km), timeout=self.start_timeout * 2)
                break
            except Exception as exc:  # noqa: BLE001 - recorded; acquire() says why when every attempt failed
                self.errors.append(f"start {attempt}/{self.attempts}: {type(exc).__name__}: {exc}"[:500])
                await _shutdown(km)
                km = None
        with self._cond:
            self._pending -= 1
            closed = self._closed
            if km is not None and not closed:
                self._ready.append(km)
                self.started_count += 1
            self._cond.notify_all()
        if km is not None and closed:
            await _shutdown(km)

    async def _boot(self, km: RunKernelManager) -> None:
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=self.start_timeout)
            if self.warmup_code:
                await run_silently(kc, self.warmup_code, timeout=self.start_timeout)
        finally:
            close_clients(km)
