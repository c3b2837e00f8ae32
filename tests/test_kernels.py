"""Kernels forked from a fork server, and the pool's priorities: real kernels, real papermill runs."""

from __future__ import annotations

import os
from pathlib import Path

import papermill
import pytest
from conftest import ROOT

from jobrunbook.kernelfork import ForkServer
from jobrunbook.kernels import POOL_NICE, KernelPool, kernel_pid

TRIVIAL = ROOT / "tests" / "notebooks" / "trivial" / "00_alert.ipynb"


def _stat(pid: int, task: int | None = None) -> list[str]:
    path = f"/proc/{pid}/task/{task}/stat" if task else f"/proc/{pid}/stat"
    return Path(path).read_text().rsplit(")", 1)[1].split()


def nice(pid: int, task: int | None = None) -> int:
    return int(_stat(pid, task)[16])  # field 19 of /proc/<pid>/stat


def ppid(pid: int) -> int:
    return int(_stat(pid)[1])


def alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def _ran(path: Path, injected: str = "") -> bool:
    """The executed notebook got its parameters and ran every code cell."""
    import nbformat

    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    return all(c.execution_count for c in cells) and injected in "".join(c.source for c in cells)


def test_pool_kernels_wait_forked_at_a_lower_priority_and_run_at_the_callers(tmp_path):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with KernelPool(size=2, parallel_starts=2) as pool:
        pool.wait_ready(2, timeout=120)
        waiting = pool.ready_pids()
        assert len(waiting) == 2 and pool.fork_server is not None
        for pid in waiting:
            assert ppid(pid) == pool.fork_server.pid  # forked by the pool's fork server
            # every thread of a waiting kernel (ipykernel runs several) is below the caller
            assert {nice(pid, int(t)) for t in os.listdir(f"/proc/{pid}/task")} == {base + POOL_NICE}
        km = pool.acquire()
        pid = kernel_pid(km)
        # handed out: the caller's priority back where the OS allows it (root, CAP_SYS_NICE), else still lower
        assert nice(pid) == (base + POOL_NICE if pool.renice_refused else base)
        try:
            papermill.execute_notebook(str(TRIVIAL), str(tmp_path / "out.ipynb"), km=km, progress_bar=False,
                                       parameters={"queue": "forked"})
        finally:
            pool.release(km)
        assert _ran(tmp_path / "out.ipynb", 'queue = "forked"')
        # the replacement that started meanwhile waits at the lower priority too
        pool.wait_ready(2, timeout=120)
        assert all(nice(p) == base + POOL_NICE for p in pool.ready_pids())
        server = pool.fork_server.pid
        kernels = pool.ready_pids()
    # closed: the fork server and every kernel it forked are gone
    assert not alive(server) and not any(alive(p) for p in kernels)


def test_kernel_starts_the_usual_way_when_the_fork_server_is_gone(tmp_path):
    dead = ForkServer(["/bin/false"]).start()  # exits at once: it never says ready
    dead.close()
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with KernelPool(size=1, fork_server=dead, start_timeout=60) as pool:
        km = pool.acquire()
        pid = kernel_pid(km)
        assert ppid(pid) == os.getpid()  # launched by jupyter_client, not forked
        assert pool.renice_refused or nice(pid) == base
        try:
            papermill.execute_notebook(str(TRIVIAL), str(tmp_path / "out.ipynb"), km=km, progress_bar=False)
        finally:
            pool.release(km)
        assert _ran(tmp_path / "out.ipynb")
        pool.wait_ready(1, timeout=120)
        # a kernel launched the usual way is lowered right after it starts
        assert [nice(p) for p in pool.ready_pids()] == [base + POOL_NICE]


def test_fork_server_runs_a_function_in_a_child_with_its_environment_and_directory(tmp_path):
    (tmp_path / "src.txt").write_text("copied by a forked child")
    server = ForkServer().start()
    try:
        pid = server.call("shutil:copyfile", ["src.txt", "dst.txt"], cwd=str(tmp_path))
        assert server.wait(pid, timeout=60) == 0
        assert (tmp_path / "dst.txt").read_text() == "copied by a forked child"
        # a function that raises: the child exits non-zero, the server goes on
        pid = server.call("shutil:copyfile", ["missing.txt", "x.txt"], cwd=str(tmp_path))
        assert server.wait(pid, timeout=60) == 1
        assert server.alive and not (tmp_path / "x.txt").exists()
    finally:
        server.close()
    assert not alive(server.pid)
    with pytest.raises(OSError, match="fork server"):
        server.call("shutil:copyfile", ["src.txt", "y.txt"], cwd=str(tmp_path))
