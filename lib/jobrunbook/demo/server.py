"""A private Redis: ``redis-server`` on a free port (or an embedded one), for the demo, the tests and the benchmarks.

Never the machine's shared 6379: the port is a free one chosen by the kernel,
bound to 127.0.0.1, with persistence off (``--save ''``); ``password`` and
``extra_args`` (``--slowlog-log-slower-than 0`` for a benchmark) as asked.
Without a ``redis-server`` binary on PATH, fakeredis's TCP server (with Lua)
is used when ``embedded`` allows it, and the demo says so on stderr. fakeredis has no ``MEMORY USAGE`` (which the
inspector's memory figure calls, from Lua): the embedded server answers it with
an estimate from the value's size, so every count is exact and only the memory
figure is approximate.
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

__all__ = ["PrivateRedis", "start_redis", "free_port", "RefusingPort"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RefusingPort:
    """A port on 127.0.0.1 that refuses every connection for as long as this object holds it.

    The socket is bound but never listens: the kernel answers a connect with a
    reset ("connection refused", as from a database that is down), and no other
    process can take the port meanwhile. ``close()`` gives it back.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class PrivateRedis:
    """A running private Redis; ``url``, ``kind`` ("redis-server" | "embedded"), ``pid``, ``stop()``."""

    def __init__(self, port: int, kind: str, proc: subprocess.Popen | None = None, embedded=None,
                 password: str | None = None) -> None:
        self.port = port
        self.kind = kind
        self.proc = proc
        self.password = password
        self._embedded = embedded

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def client(self, **kwargs) -> redis.Redis:
        kw = {"socket_timeout": 10, "socket_connect_timeout": 5, **kwargs}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kw)

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


# the per-key overhead real Redis reports for a tiny key (robj, dict entry, SDS headers), roughly
_KEY_OVERHEAD = 56


def _value_size(value) -> int:
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if isinstance(value, (int, float)):
        return 8
    if hasattr(value, "items"):  # hash (field -> value), sorted set (member -> score)
        return sum(_value_size(k) + _value_size(v) + 16 for k, v in value.items())
    try:
        return sum(_value_size(v) + 8 for v in value)  # list, set
    except TypeError:
        return 0


def _memory_usage(self, key, *args) -> int | None:
    """MEMORY USAGE key [SAMPLES n]: an estimate (key, value bytes, overheads); nil for a missing key."""
    if not key:
        return None
    return _KEY_OVERHEAD + len(key.key) + _value_size(key.value)


def _add_memory_usage() -> None:
    """Teach fakeredis MEMORY USAGE (once per process) through its own command registry."""
    from fakeredis._commands import SUPPORTED_COMMANDS, Key, command
    from fakeredis._socket import FakeSocket

    if "memory usage" in SUPPORTED_COMMANDS:
        return
    setattr(FakeSocket, _memory_usage.__name__, _memory_usage)  # fakeredis dispatches by the function's name
    command(name="MEMORY USAGE", fixed=(Key(missing_return=None),), repeat=(bytes,))(_memory_usage)


def _start_embedded(port: int) -> PrivateRedis:
    try:
        from fakeredis import TcpFakeServer  # fakeredis >= 2.26, Lua through lupa
    except ImportError:
        raise ConfigError("no redis-server on PATH and no embedded fallback",
                          hint="install Debian's redis-server, or `pip install 'fakeredis[lua]'`") from None
    _add_memory_usage()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    threading.Thread(target=server.serve_forever, name="demo-fakeredis", daemon=True).start()
    return PrivateRedis(port, "embedded", embedded=server)


def start_redis(state_dir: Path, binary: str | None = None, *, password: str | None = None,
                extra_args: tuple[str, ...] = (), embedded: bool = True) -> PrivateRedis:
    """Start a private Redis; ``binary`` defaults to ``redis-server`` on PATH.

    ``embedded=False`` (the tests: a real server or nothing) raises ConfigError when there is no binary.
    """
    port = free_port()
    binary = binary or shutil.which("redis-server")
    if binary is None:
        if not embedded:
            raise ConfigError("redis-server not on PATH", hint="run `bash scripts/system-deps.sh` "
                                                               "(Debian package redis-server)")
        print("jobrunbook demo: no redis-server on PATH; using an embedded Redis (fakeredis) instead",
              file=sys.stderr)
        server = _start_embedded(port)
    else:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(state_dir), "--daemonize", "no", "--loglevel", "warning", "--protected-mode", "yes",
                *(["--requirepass", password] if password else []), *extra_args]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        server = PrivateRedis(port, "redis-server", proc=proc, password=password)
    _wait_ready(server)
    return server
