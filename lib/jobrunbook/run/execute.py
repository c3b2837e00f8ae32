"""One run: the alert's parameters through every section notebook, then the report.

``execute_run`` creates the run directory, executes ``00`` first, then
``01``-``04`` concurrently (bounded by cores), then ``05`` and ``06``, each
by papermill with a timeout, on a fresh kernel per notebook (one-shot) or on
a warm ``KernelPool`` (the service). A section that fails keeps its executed
notebook (papermill's error banner on top) and gets a ``failed`` finding; the
report is produced whatever happened. Secrets reach kernels only through
their environment, never as parameters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobrunbook import clock as _clock
from jobrunbook._exceptions import ConfigError
from jobrunbook.chartspec import DEFER_ENV
from jobrunbook.findings import RUN_DIR_ENV, read_findings, summarize_verdict, write_findings
from jobrunbook.kernelfork import ForkServer
from jobrunbook.kernels import (
    WARMUP_CODE,
    KernelPool,
    RunKernelManager,
    kernel_pid,
    run_silently,
    shutdown_now,
)
from jobrunbook.record import read_status, write_json, write_status
from jobrunbook.run.params import RunParams
from jobrunbook.run.rundir import create_run_dir, discover_notebooks, make_run_id

__all__ = ["Run", "SectionResult", "execute_run", "plan_stages", "set_run_state", "check_parameters", "render_all",
           "declared_parameters", "wait_pdf", "print_pdf_later", "DEFAULT_TIMEOUT", "COMPLETED"]

DEFAULT_TIMEOUT = 300.0
COMPLETED = ("ok", "degraded")  # section states of a notebook that ran to its end
# How long nbclient waits, after a cell's reply, for the kernel's outputs and its idle status on IOPub before the
# section fails ("Timeout waiting for IOPub output"). nbclient's 4 s failed a section whose kernel was merely slow
# on a loaded machine (CI: five kernels under libfaketime on 2 cores, its charts lost); the section's own
# timeout still bounds a kernel that never answers.
IOPUB_TIMEOUT = 30.0
ProgressFn = Callable[[str, str, float], None]


@dataclasses.dataclass
class SectionResult:
    section: str  # "02_asynq"
    state: str  # pending | running | ok | degraded | failed | timeout
    # why degraded: the section ran but a source was unreachable or partial (its findings' message)
    notebook: Path  # the executed notebook in the run directory
    started_at: str | None = None
    ended_at: str | None = None
    elapsed_s: float | None = None
    error: str | None = None
    degraded: str | None = None
    peak_rss_mb: float | None = None  # the kernel's peak resident memory (VmHWM), read before it shut down

    def as_status(self, run_dir: Path) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["notebook"] = str(self.notebook.relative_to(run_dir))
        return d


@dataclasses.dataclass
class Run:
    run_id: str
    run_dir: Path
    params: RunParams  # as injected (no secret)
    state: str  # done | failed
    sections: dict[str, SectionResult]
    verdict: dict[str, Any]  # summarize_verdict(read_findings(run_dir))
    report: Path | None  # run_dir/report.html, None if rendering itself failed
    started_at: str
    ended_at: str
    duration_s: float

    def wait_pdf(self, timeout: float | None = None) -> bool:
        """Wait for report.pdf (printed after report.html, see ``execute_run``); True once it is settled."""
        return wait_pdf(self.run_dir, timeout)

    @property
    def failed_sections(self) -> list[str]:
        return [s for s, r in self.sections.items() if r.state not in COMPLETED]

    @property
    def headline(self) -> str:
        from jobrunbook.report import verdict_line

        return verdict_line(self.verdict)


def plan_stages(sections: list[str]) -> list[list[str]]:
    """``00``-``04`` together, then ``05`` and ``06`` together, then every later section alone, in number order.

    ``00`` reads only the alert and ``01``-``04`` each their own source, so none waits for another; ``05``
    reads the findings of all five, and so does ``06`` (it plans from the diagnosis of those findings, made
    as 05 makes it), so both wait for the first stage and not for each other.
    """
    groups: dict[int, list[str]] = {}
    for name in sorted(sections):
        num = int(name[:2])
        key = 0 if num <= 4 else 1 if num <= 6 else num
        groups.setdefault(key, []).append(name)
    return [groups[k] for k in sorted(groups)]


def _now(clock: Callable[[], datetime]) -> str:
    return clock().astimezone(UTC).isoformat().replace("+00:00", "Z")


def _prelude(env: Mapping[str, str], cwd: str) -> str:
    # sent silently over the kernel's channel: never part of the notebook
    return f"import os as _o\n_o.environ.update({dict(env)!r})\n_o.chdir({cwd!r})\ndel _o\n"


def peak_rss_mb(pid: int | None) -> float | None:
    """A process's peak resident memory in MB (Linux VmHWM), None when unknown."""
    try:
        for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _execute_one(src: Path, dst: Path, parameters: dict[str, Any], *, env: Mapping[str, str], cwd: str,
                 timeout: float, pool: KernelPool | None, kernel_name: str,
                 memory: dict[str, float | None] | None = None) -> tuple[str, str | None]:
    """Run one notebook by papermill; return (state, error). Never raises for a notebook's failure.
    ``memory["peak_rss_mb"]`` gets the kernel's peak memory."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    if pool is not None:
        km = pool.acquire()
    else:
        km = RunKernelManager(env=env, cwd=cwd, kernel_name=kernel_name)
    fired = threading.Event()

    def interrupt() -> None:
        fired.set()
        try:
            asyncio.run(km.interrupt_kernel())
        except Exception:  # noqa: BLE001 - nbclient's own cell timeout is the backstop
            pass

    async def on_start(notebook: Any = None, **_: Any) -> None:
        if pool is not None and km.handed_out:
            await run_silently(km.handed_out[-1], _prelude(env, cwd))

    watchdog = threading.Timer(timeout, interrupt)
    watchdog.daemon = True
    watchdog.start()
    try:
        papermill.execute_notebook(
            str(src), str(dst), parameters=parameters, kernel_name=kernel_name, progress_bar=False,
            log_output=False, km=km, execution_timeout=int(timeout) + 15, on_notebook_start=on_start,
            iopub_timeout=min(IOPUB_TIMEOUT, max(4.0, timeout)),
        )
        return "ok", None
    except PapermillExecutionError as exc:
        if fired.is_set():
            return "timeout", f"section timed out after {timeout:.0f}s (interrupted in cell {exc.exec_count})"
        return "failed", f"{exc.ename}: {exc.evalue}"[:2000]
    except Exception as exc:  # noqa: BLE001 - dead kernel, cell timeout, unreadable notebook: all results
        state = "timeout" if fired.is_set() or "timed out" in str(exc).lower() else "failed"
        return state, f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        watchdog.cancel()
        if memory is not None:
            memory["peak_rss_mb"] = peak_rss_mb(kernel_pid(km))
        if pool is not None:
            pool.release(km)
        else:
            shutdown_now(km)


class _ChartDrawer:
    """Draws the charts sections hand over as data (``jobrunbook.chartspec``): each section's as soon as it
    ends, in a child of the kernels' fork server (else a thread), while later sections run; ``finish``
    waits for them and puts each PNG into its executed notebook, before the report is built. (At the
    sections' own priority: the report waits for the charts, so they are on its way as much as a section.)"""

    def __init__(self, run_dir: Path, server: ForkServer | None) -> None:
        self.run_dir, self.server = run_dir, server
        self.assigned: set[str] = set()
        self.jobs: list[Any] = []  # pids of forked children, or threads
        self.lock = threading.Lock()

    def submit(self) -> None:
        from jobrunbook.chartspec import pending_specs

        with self.lock:
            names = sorted({p.stem for p in pending_specs(self.run_dir)} - self.assigned)
            self.assigned.update(names)
        if not names:
            return
        if self.server is not None and self.server.alive:
            try:
                self.jobs.append(self.server.call("jobrunbook.chartspec:render_specs", [str(self.run_dir), names],
                                                  cwd=str(self.run_dir)))
                return
            except OSError:
                pass  # drawn in a thread instead
        thread = threading.Thread(target=self._draw, args=(names,), name="jobrunbook-charts", daemon=True)
        thread.start()
        self.jobs.append(thread)

    def _draw(self, names: list[str]) -> None:
        from jobrunbook.chartspec import render_specs

        render_specs(self.run_dir, names)

    def finish(self, notebooks: list[Path], timeout: float = 120.0) -> None:
        from jobrunbook.chartspec import embed_charts, render_specs

        deadline = time.monotonic() + timeout
        for job in self.jobs:
            left = max(0.0, deadline - time.monotonic())
            if isinstance(job, threading.Thread):
                job.join(left)
            elif self.server is not None:
                self.server.wait(job, left)
        render_specs(self.run_dir)  # whatever a job left undrawn (a child that died), drawn here
        for nb in notebooks:
            if nb.exists():
                embed_charts(nb, self.run_dir)


def check_parameters(notebooks: list[tuple[str, Path]], params: RunParams) -> None:
    """Refuse a run a notebook would not take whole: every name of ``RunParams`` must be declared in its
    ``parameters`` cell (papermill itself only warns, and the value would be lost)."""
    wanted = set(RunParams.model_fields)
    for _name, path in notebooks:
        missing = wanted - set(declared_parameters(path))
        if missing:
            raise ConfigError(f"notebook {path} does not declare the run parameter(s) {', '.join(sorted(missing))}",
                              hint="its parameters cell is jobrunbook.run.params.parameters_cell()")


_DECLARED: dict[tuple[str, float], tuple[str, ...]] = {}


def declared_parameters(path: Path) -> tuple[str, ...]:
    """The names a notebook's ``parameters`` cell declares (papermill's inspect_notebook), cached by mtime."""
    key = (str(path), path.stat().st_mtime)
    if key not in _DECLARED:
        import papermill

        _DECLARED[key] = tuple(papermill.inspect_notebook(str(path)))
    return _DECLARED[key]


# status.json is read, changed and written again by several threads of one process (the service's worker, a
# run's PDF printed in the background): one lock keeps each change whole
_STATUS_LOCK = threading.RLock()
_PDF_JOBS: dict[str, threading.Thread] = {}  # run directory -> its report.pdf being printed


def set_run_state(run_dir: Path, state: str | None = None, **extra: Any) -> dict[str, Any]:
    """Update status.json's state (e.g. ``resolved`` by the service; None keeps it) and any extra fields."""
    with _STATUS_LOCK:
        status = read_status(run_dir)
        status.update(extra)
        if state is not None:
            status["state"] = state
        write_status(run_dir, status)
    return status


def wait_pdf(run_dir: str | os.PathLike, timeout: float | None = None) -> bool:
    """Wait for the report.pdf of ``run_dir`` being printed in the background, if any; True once none is."""
    job = _PDF_JOBS.get(str(Path(run_dir).resolve()))
    if job is not None:
        job.join(timeout)
        return not job.is_alive()
    return True


def _pdf_fields(report: Path) -> dict[str, Any]:
    from jobrunbook.pdf import PdfSkipped, print_pdf

    try:
        return {"pdf": print_pdf(report).name}
    except PdfSkipped as exc:
        return {"pdf": None, "pdf_skipped": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a PDF is for the review; never fail the run for it
        return {"pdf": None, "pdf_skipped": f"{type(exc).__name__}: {exc}"[:300]}


def print_pdf_later(run_dir: Path) -> threading.Thread:
    """Print ``run_dir/report.pdf`` in a thread (not a daemon: the process waits for it before it exits);
    status.json says ``pdf_pending`` until it is done, then ``pdf`` or ``pdf_skipped``."""
    key = str(Path(run_dir).resolve())

    def job() -> None:
        try:
            fields = _pdf_fields(run_dir / "report.html")
            with _STATUS_LOCK:
                status = read_status(run_dir)
                for k in ("pdf_pending", "pdf_skipped"):
                    status.pop(k, None)
                status.update(fields)
                write_status(run_dir, status)
        finally:
            with _STATUS_LOCK:
                if _PDF_JOBS.get(key) is threading.current_thread():
                    del _PDF_JOBS[key]

    thread = threading.Thread(target=job, name="jobrunbook-pdf")
    with _STATUS_LOCK:
        _PDF_JOBS[key] = thread
    thread.start()
    return thread


def execute_run(params: RunParams, *, notebooks_dir: str | os.PathLike | None = None,
                outputs_dir: str | os.PathLike | None = None, alert: Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None, pool: KernelPool | None = None,
                timeout: float = DEFAULT_TIMEOUT, max_parallel: int | None = None,
                kernel_name: str = "python3", clock: Callable[[], datetime] | None = None,
                on_progress: ProgressFn | None = None, render: bool = True, prestart: int | None = None,
                pdf: bool | str = "later", fork_server: ForkServer | None = None) -> Run:
    """Execute every ``NN_<section>.ipynb`` of ``notebooks_dir`` for ``params``; return the finished ``Run``.

    ``env``: extra environment for the kernels (secrets); a password in
    ``params``' URLs is moved there. With ``pool`` the notebooks run on warm
    kernels (whose environment was fixed when the pool started, plus ``env``
    and ``$JOBRUNBOOK_RUN_DIR`` applied silently before each notebook).
    Without ``pool``, every notebook still gets a fresh kernel, but up to
    ``prestart`` of them are started (and pandas/matplotlib imported) while
    earlier sections execute; ``prestart=0`` starts each kernel on demand. Kernels
    are forked from ``fork_server`` (one the caller started early), else from the
    run's own (``jobrunbook.kernelfork``), where the OS can fork: then every
    section's kernel is started ahead (``prestart`` default: all of them, at a
    lower priority until used), else two.

    ``pdf``: ``"later"`` (default) returns as soon as report.html is written and prints report.pdf in the
    background (``Run.wait_pdf``; the report is what the on-call reads, the PDF is for the review);
    True prints it before returning, False not at all.
    """
    clock = clock or _clock.utcnow
    notebooks_dir = Path(notebooks_dir or "notebooks").resolve()
    outputs_dir = Path(outputs_dir or "outputs").resolve()
    notebooks = discover_notebooks(notebooks_dir)
    check_parameters(notebooks, params)
    t_start = clock()
    run_dir = create_run_dir(outputs_dir, make_run_id(params.alertname, params.queue, params.fingerprint,
                                                      now=t_start))
    run_id = run_dir.name
    kernel_env = {**(env or {}), RUN_DIR_ENV: str(run_dir), DEFER_ENV: "1"}  # charts come back as data
    params = params.replace(run_dir=str(run_dir))
    injected = params.as_dict()
    write_json(run_dir / "alert.json", dict(alert) if alert is not None else {
        "labels": params.labels, "startsAt": params.starts_at, "status": params.status,
        "fingerprint": params.fingerprint, "source": "labels"})
    write_json(run_dir / "params.json", injected)

    results = {name: SectionResult(name, "pending", run_dir / "notebooks" / src.name)
               for name, src in notebooks}
    can_fork = fork_server is not None or ForkServer.available()
    if prestart is None:  # forked kernels cost little: start every section's ahead
        prestart = len(results) if can_fork else 2
    sources = dict(notebooks)
    lock = threading.Lock()
    t0 = time.monotonic()
    status: dict[str, Any] = {
        "run_id": run_id, "state": "running", "mode": "warm" if pool else "cold",
        "prestarted_kernels": 0 if pool else prestart,
        "alertname": params.alertname, "severity": params.severity, "queue": params.queue,
        "task_type": params.task_type, "fingerprint": params.fingerprint, "starts_at": params.starts_at,
        "started_at": _now(clock),
        "ended_at": None, "duration_s": None, "sections": {}, "failed_sections": [], "report": None,
        "verdict": None,
    }

    def save_status() -> None:
        with lock:
            status["sections"] = {n: r.as_status(run_dir) for n, r in results.items()}
            write_status(run_dir, status)

    save_status()

    def run_section(name: str) -> None:
        res = results[name]
        res.state, res.started_at = "running", _now(clock)
        t = time.monotonic()
        save_status()
        if on_progress:
            on_progress(name, "running", 0.0)
        memory: dict[str, float | None] = {}
        state, error = _execute_one(sources[name], res.notebook, injected, env=kernel_env, cwd=str(run_dir),
                                    timeout=timeout, pool=pool, kernel_name=kernel_name, memory=memory)
        res.peak_rss_mb = memory.get("peak_rss_mb")
        res.state, res.error = state, error
        res.ended_at, res.elapsed_s = _now(clock), round(time.monotonic() - t, 3)
        if state != "ok":
            _record_failure(run_dir, name, state, error)
        else:
            res.state, res.degraded = _finding_state(run_dir, name)
        drawer.submit()
        if render:
            _convert(res.notebook, name, bodies)
        save_status()
        if on_progress:
            on_progress(name, state, res.elapsed_s)

    stages = plan_stages(list(results))
    forking = pool.fork_server is not None if pool is not None else can_fork
    # forked kernels are cheap: every section of a stage starts at once (02 reads the most and must not wait for
    # a free worker); kernels started the usual way, one per core
    workers = max(1, max_parallel or (max(len(st) for st in stages) if forking else min(4, os.cpu_count() or 1)))
    own_pool = None
    if pool is None and prestart > 0:
        # a pool for this run only: its kernels carry this run's environment and serve one notebook each
        own_pool = KernelPool(size=min(prestart, len(results)), env=kernel_env, cwd=str(run_dir),
                              kernel_name=kernel_name, max_starts=len(results), parallel_starts=workers,
                              warmup_code=WARMUP_CODE, fork_server=fork_server)
        own_pool.start(wait=False)
        pool = own_pool
    drawer = _ChartDrawer(run_dir, pool.fork_server if pool is not None else fork_server)
    bodies: dict[str, str] = {}  # each section's notebook as the report shows it, converted as it ends
    if render:
        from jobrunbook.report import prewarm

        threading.Thread(target=prewarm, name="jobrunbook-report-prewarm", daemon=True).start()
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jobrunbook-section") as ex:
            for stage in stages:
                list(ex.map(run_section, stage))
        drawer.finish([r.notebook for r in results.values()], timeout=timeout)
        if render:
            for name, res in results.items():
                _convert(res.notebook, name, bodies, charts_drawn=True)
    finally:
        if own_pool is not None:
            own_pool.close()
            pool = None

    findings = read_findings(run_dir)
    verdict = summarize_verdict(findings)
    failed = [n for n, r in results.items() if r.state not in COMPLETED]
    from jobrunbook.report import normalise_verdict

    status.update(state="failed" if failed else "done", failed_sections=failed, ended_at=_now(clock),
                  duration_s=round(time.monotonic() - t0, 3), verdict=verdict.get("verdict"),
                  top_cause=verdict.get("top_cause"), top_cause_name=normalise_verdict(verdict)["cause_name"],
                  process_peak_rss_mb=peak_rss_mb(None))  # the process that ran it (a service: since it started)
    report: Path | None = None
    if render:
        report = render_all(run_dir, outputs_dir, status, pdf=pdf is True, bodies=bodies)
        if report is not None and pdf == "later":
            status["pdf"], status["pdf_pending"] = None, True
    with _STATUS_LOCK:
        save_status()
        if status.get("pdf_pending"):
            print_pdf_later(run_dir)
    return Run(run_id=run_id, run_dir=run_dir, params=params, state=status["state"], sections=results,
               verdict=verdict, report=report, started_at=status["started_at"], ended_at=status["ended_at"],
               duration_s=status["duration_s"])


def _finding_state(run_dir: Path, name: str) -> tuple[str, str | None]:
    """A notebook that ran to the end is ``ok``, or ``degraded`` when its findings say a source failed."""
    doc = read_findings(run_dir).get(name)
    if doc is not None and doc.get("status") in ("degraded", "failed"):
        data = doc.get("data") or {}
        return "degraded", str(data.get("degraded") or data.get("message") or "a source was unreachable")[:500]
    return "ok", None


def _record_failure(run_dir: Path, name: str, state: str, error: str | None) -> None:
    """Keep what the notebook found before it broke, and say that it broke."""
    existing = read_findings(run_dir).get(name, {}).get("data", {})
    data = dict(existing) | {"error": error or state, "section_state": state,
                             "notebook": f"notebooks/{name}.ipynb"}
    write_findings(name, data, run_dir, status="failed")


def _convert(notebook: Path, name: str, bodies: dict[str, str], *, charts_drawn: bool = False) -> None:
    """Convert a finished section's notebook for the report now (not when the report is built), unless it
    still waits for its charts (``charts_drawn``: they are in)."""
    from jobrunbook.chartspec import CHART_MIME
    from jobrunbook.report import notebook_body

    if name in bodies or not notebook.exists():
        return
    try:
        if not charts_drawn and CHART_MIME in notebook.read_text(encoding="utf-8"):
            return
        bodies[name] = notebook_body(notebook)
    except Exception:  # noqa: BLE001 - the report converts it again and says what went wrong
        pass


def render_all(run_dir: Path, outputs_dir: Path, status: dict[str, Any], *, pdf: bool = True,
               bodies: Mapping[str, str] | None = None) -> Path | None:
    """report.html, rca.md, report.pdf (when Chromium is there) and the outputs' index.html; status.json says
    what was rendered. Never raises: a rendering bug is recorded, the run's record survives it."""
    from jobrunbook.report import render_index, render_report, write_rca

    wait_pdf(run_dir)  # a PDF still printing from an earlier render must not land after this one
    report = None
    errors = []
    for step in (lambda: render_report(run_dir, status=status, bodies=bodies), lambda: write_rca(run_dir, status=status)):
        try:
            out = step()
            if out.name == "report.html":
                report = out
        except Exception as exc:  # noqa: BLE001 - the run's record must survive a rendering bug
            errors.append(f"{type(exc).__name__}: {exc}")
    status["report"] = "report.html" if report else None
    status.pop("pdf_skipped", None)
    status.pop("pdf_pending", None)
    if report is not None and pdf:
        status.update(_pdf_fields(report))
    if errors:
        status["render_errors"] = errors
    with _STATUS_LOCK:
        write_status(run_dir, status)
    try:
        render_index(outputs_dir)
    except Exception as exc:  # noqa: BLE001
        status.setdefault("render_errors", []).append(f"index: {type(exc).__name__}: {exc}")
    return report
