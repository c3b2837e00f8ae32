"""A private redis-server for a benchmark: jobrunbook's own starter, with every command in SLOWLOG."""

from __future__ import annotations

import subprocess
from pathlib import Path

from jobrunbook.demo.server import start_redis as _start


def start_redis(tmp: str | Path, *, slowlog_max_len: int = 1_000_000) -> tuple[subprocess.Popen, int]:
    """Start redis-server on 127.0.0.1 (never the machine's 6379); SLOWLOG records every call's duration."""
    server = _start(Path(tmp), embedded=False,
                    extra_args=("--slowlog-log-slower-than", "0", "--slowlog-max-len", str(slowlog_max_len)))
    return server.proc, server.port
