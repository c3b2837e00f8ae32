"""A private redis-server for a benchmark: free port, nothing on disk, every command in SLOWLOG."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(tmp: str | Path, *, slowlog_max_len: int = 1_000_000) -> tuple[subprocess.Popen, int]:
    """Start redis-server on 127.0.0.1 (never the machine's 6379); SLOWLOG records every call's duration."""
    binary = shutil.which("redis-server")
    if not binary:
        raise SystemExit("redis-server not on PATH (Debian package redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp), "--loglevel", "warning", "--slowlog-log-slower-than", "0",
                             "--slowlog-max-len", str(slowlog_max_len)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(500):
        try:
            client.ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("redis-server did not start")
