"""A private Redis for the demo: ``redis-server`` on a free port, or an embedded one.

Never the machine's shared 6379: the port is a free one chosen by the kernel,
bound to 127.0.0.1, with persistence off (``--save ''``). Without a
``redis-server`` binary on PATH, fakeredis's TCP server (with Lua) is used, and
the demo says so on stderr.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from jobrunbook._exceptions import ConfigError, RedisUnavailable

__all__ = ["PrivateRedis", "start_redis", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A running private Redis; ``url``, ``kind`` ("redis-server" | "embedded"), ``pid``, ``stop()``."""

    def __init__(self, port: int, kind: str, proc: subprocess.Popen | None = None, embedded=None) -> None:
        self.port = port
        self.kind = kind
        self.proc = proc
        self._embedded = embedded

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10, socket_connect_timeout=5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._embedded is not None:
            self._embedded.shutdown()
            self._embedded.server_close()
            self._embedded = None


def _wait_ready(server: PrivateRedis) -> None:
    client = server.client()
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline or (server.proc is not None and server.proc.poll() is not None):
                server.stop()
                raise RedisUnavailable(f"the demo's {server.kind} did not start on 127.0.0.1:{server.port}",
                                       hint="run `redis-server --port 0` by hand to see why") from None
            time.sleep(0.02)
        finally:
            client.close()


def _start_embedded(port: int) -> PrivateRedis:
    try:
        from fakeredis import TcpFakeServer  # fakeredis >= 2.26, Lua through lupa
    except ImportError:
        raise ConfigError("no redis-server on PATH and no embedded fallback",
                          hint="install Debian's redis-server, or `pip install 'fakeredis[lua]'`") from None
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    threading.Thread(target=server.serve_forever, name="demo-fakeredis", daemon=True).start()
    return PrivateRedis(port, "embedded", embedded=server)


def start_redis(state_dir: Path, binary: str | None = None) -> PrivateRedis:
    """Start the demo's Redis; ``binary`` defaults to ``redis-server`` on PATH."""
    port = free_port()
    binary = binary or shutil.which("redis-server")
    if binary is None:
        print("jobrunbook demo: no redis-server on PATH; using an embedded Redis (fakeredis) instead",
              file=sys.stderr)
        server = _start_embedded(port)
    else:
        state_dir.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(state_dir), "--daemonize", "no", "--loglevel", "warning", "--protected-mode", "yes"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        server = PrivateRedis(port, "redis-server", proc=proc)
    _wait_ready(server)
    return server
