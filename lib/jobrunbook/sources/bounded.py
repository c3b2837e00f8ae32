"""Reading what a command or a file says, within bounds: bytes kept (the newest), and seconds.

``read_command`` runs an argv without a shell, keeps the last ``max_bytes``
of its output and kills it (its whole process group) on timeout;
``read_file_tail`` reads the last ``max_bytes`` of a file. Both return a
``SourceResult`` whose data is ``{"text", "truncated", "bytes_read"}``.
"""

from __future__ import annotations

import os
import selectors
import shlex
import signal
import subprocess
import time
from pathlib import Path

from jobrunbook.sources.result import SourceResult, Stopwatch

__all__ = ["read_command", "read_file_tail", "MAX_BYTES", "SOURCE", "PROBLEM_GREP"]

SOURCE = "worker_logs"
MAX_BYTES = 8 * 1024 * 1024
TAIL_LINES = 5000  # what the hint's `tail -n` shows
PROBLEM_GREP = "grep -iE 'error|failed|panic' | tail -50"


def _trim_front(buf: bytearray, max_bytes: int) -> bool:
    """Keep the newest ``max_bytes``, starting at a line boundary. True when something was dropped."""
    if len(buf) <= max_bytes:
        return False
    del buf[: len(buf) - max_bytes]
    newline = buf.find(b"\n")
    if newline != -1:
        del buf[: newline + 1]
    return True


def read_command(argv: list[str], *, max_bytes: int = MAX_BYTES, timeout: float = 15.0, env: dict | None = None,
                 source: str = SOURCE, hint: str = "", clock=time.monotonic) -> SourceResult:
    """Run ``argv`` (stderr merged into stdout, as ``2>&1``), keeping its newest ``max_bytes``.

    The process is killed when ``timeout`` seconds pass. data: {"text",
    "truncated", "bytes_read", "exit_code", "argv"}; status ok, timeout (with
    what was read), error (non-zero exit, not found) or down (daemon or
    cluster unreachable).
    """
    watch = Stopwatch(clock)
    shown = shlex.join(argv)
    hint = hint or shown
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    except FileNotFoundError:
        return SourceResult(source, "error", f"{argv[0]} is not installed or not on PATH", hint=f"which {argv[0]}",
                            elapsed_s=watch.elapsed, target=shown)
    except OSError as exc:
        return SourceResult(source, "error", f"cannot run {argv[0]}: {exc.strerror}", hint=hint,
                            elapsed_s=watch.elapsed, target=shown)
    buf, read, truncated, timed_out = bytearray(), 0, False, False
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                remaining = timeout - watch.elapsed
                if remaining <= 0:
                    timed_out = True
                    break
                if not sel.select(min(remaining, 0.5)):
                    continue
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                buf += chunk
                read += len(chunk)
                if len(buf) > 2 * max_bytes:
                    truncated |= _trim_front(buf, max_bytes)
        if not timed_out:
            try:
                proc.wait(max(0.1, timeout - watch.elapsed))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        if proc.poll() is None:
            _kill(proc)
        proc.stdout.close()
    truncated |= _trim_front(buf, max_bytes)
    text = buf.decode("utf-8", errors="replace")
    data = {"text": text, "truncated": truncated, "bytes_read": read, "exit_code": proc.returncode, "argv": argv}
    if timed_out:
        return SourceResult(source, "timeout", f"`{shown}` did not finish in {timeout:g} s (killed; "
                            f"{read} bytes read)", hint=hint, elapsed_s=watch.elapsed, data=data, target=shown)
    if proc.returncode != 0:
        last = next((line for line in reversed(text.strip().splitlines()) if line.strip()), "no output")[:300]
        low = text.lower()
        unreachable = any(s in low for s in ("cannot connect", "connection refused", "unable to connect",
                                             "is the docker daemon running", "no such host"))
        return SourceResult(source, "down" if unreachable else "error",
                            f"`{shown}` exited {proc.returncode}: {last}", hint=hint, elapsed_s=watch.elapsed,
                            data=data, target=shown)
    kept = f", kept the newest {len(buf)}" if truncated else ""
    return SourceResult(source, "ok", f"read {read} bytes from `{shown}`{kept}", hint=hint,
                        elapsed_s=watch.elapsed, data=data, target=shown)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we created with start_new_session
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def read_file_tail(path: str | Path, *, max_bytes: int = MAX_BYTES, source: str = SOURCE,
                   clock=time.monotonic) -> SourceResult:
    """The last ``max_bytes`` of a file (from a line boundary), never reading the rest."""
    watch = Stopwatch(clock)
    path = Path(path)
    hint = f"tail -n {TAIL_LINES} {shlex.quote(str(path))} | {PROBLEM_GREP}"
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            fh.seek(start)
            buf = bytearray(fh.read(max_bytes))
    except FileNotFoundError:
        return SourceResult(source, "error", f"log file {path} does not exist", hint=f"ls -l {shlex.quote(str(path))}",
                            elapsed_s=watch.elapsed, target=str(path))
    except OSError as exc:
        return SourceResult(source, "error", f"cannot read log file {path}: {exc.strerror}",
                            hint=f"ls -l {shlex.quote(str(path))}", elapsed_s=watch.elapsed, target=str(path))
    if start > 0:
        newline = buf.find(b"\n")
        del buf[: newline + 1 if newline != -1 else len(buf)]
    data = {"text": buf.decode("utf-8", errors="replace"), "truncated": start > 0, "bytes_read": len(buf),
            "exit_code": None, "argv": None}
    return SourceResult(source, "ok", f"read the last {len(buf)} of {size} bytes of {path}", hint=hint,
                        elapsed_s=watch.elapsed, data=data, target=str(path))
