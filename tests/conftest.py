"""Shared fixtures: a real redis-server per test session, the captured asynq data."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
# real captures, copied byte for byte from where they were recorded (tests/fixtures/README.md)
FIXTURES = ROOT / "tests" / "fixtures"
ASYNQ_FIXTURES = FIXTURES / "asynq"
SNAPSHOTS = ["mixed", "dependency-down", "bad-deploy"]

sys.path.insert(0, str(Path(__file__).resolve().parent))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server on a free port, never the machine's 6379."""

    def __init__(self, tmp: Path, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not on PATH: run `bash scripts/system-deps.sh` (Debian package redis-server)")
        self.port = free_port()
        self.password = password
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(tmp), "--daemonize", "no", "--loglevel", "warning"]
        if password:
            args += ["--requirepass", password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """URL of an empty database on the session's private redis-server."""
    client = redis_server.client()
    client.flushall()
    yield redis_server.url
    client.flushall()


@pytest.fixture
def rclient(redis_server, redis_url):
    return redis_server.client()


def load_fixture_snapshot(client: redis.Redis, name: str) -> None:
    """Load tests/fixtures/asynq/NAME/redis.jsonl as the fixtures' README says."""
    from jobrunbook.asynq.snapshot import load_snapshot

    load_snapshot(client, ASYNQ_FIXTURES / name / "redis.jsonl")
