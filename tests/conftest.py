"""Shared fixtures: a real redis-server per test session, the captured asynq data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import redis
from jobrunbook.demo.server import free_port, start_redis  # noqa: F401 - the tests' free_port too

ROOT = Path(__file__).resolve().parents[1]
# real captures, copied byte for byte from where they were recorded (tests/fixtures/README.md)
FIXTURES = ROOT / "tests" / "fixtures"
ASYNQ_FIXTURES = FIXTURES / "asynq"  # written by asynq v0.24.1
ASYNQ_V026_FIXTURES = FIXTURES / "asynq-v0.26"  # written by asynq v0.26.0 (its README.md)
SNAPSHOTS_V024 = ["mixed", "dependency-down", "bad-deploy"]
SNAPSHOTS_V026 = ["v0.26/mixed", "v0.26/bad-deploy", "v0.26/crash", "v0.26/headers"]
# every capture: a test parametrized over these passes on both asynq versions' data
SNAPSHOTS = SNAPSHOTS_V024 + SNAPSHOTS_V026
# the captures that come with the worker's /metrics (headers/ has none)
SNAPSHOTS_WITH_METRICS = [n for n in SNAPSHOTS if n != "v0.26/headers"]


def fixture_dir(name: str) -> Path:
    """The folder of one capture: ``mixed`` (v0.24.1) or ``v0.26/mixed`` (v0.26.0)."""
    if name.startswith("v0.26/"):
        return ASYNQ_V026_FIXTURES / name.removeprefix("v0.26/")
    return ASYNQ_FIXTURES / name


def fixture_version(name: str) -> str:
    """The asynq release that wrote the capture ``name``."""
    return "v0.26.0" if name.startswith("v0.26/") else "v0.24.1"

sys.path.insert(0, str(Path(__file__).resolve().parent))


def RedisServer(tmp: Path, password: str | None = None):  # noqa: N802 - reads as the class it stands for
    """A private redis-server on a free port, never the machine's 6379 (jobrunbook.demo.server's starter)."""
    return start_redis(Path(tmp), password=password, embedded=False)


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
    """Load the capture's redis.jsonl (``fixture_dir``) as the fixtures' README says."""
    from jobrunbook.asynq.snapshot import load_snapshot

    load_snapshot(client, fixture_dir(name) / "redis.jsonl")


POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_dsn():
    """A database of this test session's own on the machine's Postgres (127.0.0.1:5432, user postgres), dropped
    after; no other database is touched."""
    import os
    import uuid

    import psycopg

    name = f"jobrunbook_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise AssertionError(f"the machine's Postgres at 127.0.0.1:5432 is not reachable ({exc}); start it: "
                             "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start") from None
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
