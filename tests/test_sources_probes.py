"""Dependency probes against the machine's Postgres, the tests' redis-server and local HTTP servers."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from conftest import RedisServer
from jobrunbook.sources.probes import (
    PROBE_COLUMNS,
    probe_dependencies,
    probe_http,
    probe_postgres,
    probe_redis,
    redact_dsn,
    run_probes,
)
from jobrunbook.sources.result import SourceResult
from sources_support import HTTPStub, SilentServer, closed_port

PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def health():
    stub = HTTPStub()
    stub.routes["/ok"] = (200, "application/json", '{"status":"ok"}')
    stub.routes["/busy"] = (429, "text/plain", "slow down")
    stub.routes["/broken"] = (500, "text/plain", "boom")
    yield stub
    stub.close()


def test_postgres_up_counts_connections():
    result = probe_postgres(PG)
    assert result.status == "ok", result.message
    with psycopg.connect(PG) as conn:
        max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])
    assert result.data["max_connections"] == max_connections
    assert 1 <= result.data["connections"] < max_connections
    assert result.data["used_ratio"] == pytest.approx(result.data["connections"] / max_connections)
    assert f"of {max_connections} connections" in result.message and result.elapsed_s > 0
    assert result.hint.startswith("pg_isready -h 127.0.0.1 -p 5432 -d test")
    # above the threshold -> degraded (our own connection is enough over 0 %)
    extra = [psycopg.connect(PG) for _ in range(3)]
    try:
        busy = probe_postgres(PG, degraded_ratio=0.0)
        assert busy.status == "degraded" and busy.data["connections"] >= 4 and "above 0%" in busy.message
    finally:
        for conn in extra:
            conn.close()


def test_postgres_from_env_down_and_secrets():
    env = {"JOBRUNBOOK_POSTGRES_DSN": "host=127.0.0.1 port=5432 dbname=test user=postgres password=Sup3rSecret"}
    assert probe_postgres(env=env).status == "ok"
    down = probe_postgres(f"postgresql://postgres:Sup3rSecret@127.0.0.1:{closed_port()}/test")
    assert down.status == "down" and "connection refused" in down.message
    missing = probe_postgres("postgresql://postgres:Sup3rSecret@127.0.0.1:5432/no_such_db")
    assert missing.status == "error" and "does not exist" in missing.message
    for result in (down, missing, probe_postgres(env=env)):
        assert "Sup3rSecret" not in json.dumps(result.to_dict())
    assert probe_postgres(env={}).status == "error"
    assert redact_dsn("host=x password='a b' user=u") == "host=x password=*** user=u"
    assert redact_dsn("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_redis_ok_degraded_down_auth(redis_server, redis_url, tmp_path):
    ok = probe_redis(redis_url)
    assert ok.status == "ok", ok.message
    info = redis_server.client().info()
    assert ok.data["maxclients"] == info["maxclients"] and ok.data["redis_version"] == info["redis_version"]
    assert ok.data["connected_clients"] >= 1 and ok.data["problems"] == []
    client = redis_server.client()
    used = client.info("memory")["used_memory"]
    client.config_set("maxmemory", int(used * 1.02))
    try:
        full = probe_redis(redis_url)
    finally:
        client.config_set("maxmemory", 0)
    assert full.status == "degraded" and "maxmemory" in full.message and full.data["maxmemory"] > 0
    down = probe_redis(f"redis://127.0.0.1:{closed_port()}/0", timeout=2)
    assert down.status == "down" and "refused" in down.message and down.hint.startswith("redis-cli -h 127.0.0.1")
    locked = RedisServer(tmp_path, password="R3disPass")
    try:
        wrong = probe_redis(f"redis://:WrongPass@127.0.0.1:{locked.port}/0")
        right = probe_redis(locked.url)
    finally:
        locked.stop()
    assert wrong.status == "error" and "authentication" in wrong.message.lower()
    assert right.status == "ok"
    for result in (wrong, right):
        text = json.dumps(result.to_dict())
        assert "WrongPass" not in text and "R3disPass" not in text


def test_http_statuses_and_failures(health):
    ok = probe_http(health.url("/ok"))
    assert ok.status == "ok" and ok.data["http_status"] == 200 and "ms" in ok.message
    busy = probe_http(health.url("/busy"))
    assert busy.status == "degraded" and "rate limited (429)" in busy.message
    broken = probe_http(health.url("/broken"))
    assert broken.status == "down" and "500" in broken.message
    assert probe_http(health.url("/missing")).status == "error"
    refused = probe_http(f"http://127.0.0.1:{closed_port()}/health")
    assert refused.status == "down" and "connection refused" in refused.message
    dns = probe_http("http://nonexistent.invalid/health", timeout=3)
    assert dns.status == "down" and "DNS lookup failed" in dns.message
    tls = probe_http(f"https://127.0.0.1:{health.port}/ok")  # a plain-HTTP server behind https://
    assert tls.status == "down" and "TLS error" in tls.message
    silent = SilentServer()
    try:
        slow = probe_http(silent.url("/health"), timeout=0.5)
    finally:
        silent.close()
    assert slow.status == "timeout" and "did not answer in 0.5 s" in slow.message
    secret = probe_http(f"http://127.0.0.1:{health.port}/ok?token=abc123")
    assert "abc123" not in json.dumps(secret.to_dict())


def test_probes_run_concurrently(health, redis_url):
    silent = SilentServer()
    try:
        started = time.monotonic()
        result = probe_dependencies(postgres_dsn=PG, redis_url=redis_url,
                                    health_urls=[health.url("/ok"), silent.url("/a"), silent.url("/b"),
                                                 health.url("/busy")], timeout=1.0)
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert elapsed < 1.8  # two 1 s timeouts in parallel, not in series
    frame = result.data["probes"]
    assert list(frame.columns) == PROBE_COLUMNS and len(frame) == 6
    statuses = dict(zip(frame["name"], frame["status"], strict=True))
    assert statuses["postgres"] == "ok" and statuses["redis"] == "ok"
    assert sorted(statuses.values()) == ["degraded", "ok", "ok", "ok", "timeout", "timeout"]
    assert result.status == "timeout" and "3 of 6 dependencies ok" in result.message
    assert result.data["skipped"] == []
    as_json = json.loads(json.dumps(result.to_dict()))
    assert as_json["data"]["results"]["postgres"]["data"]["max_connections"] > 0


def test_env_configuration_and_broken_probe(health):
    result = probe_dependencies(env={"JOBRUNBOOK_HEALTH_URLS": f"{health.url('/ok')}, {health.url('/broken')}"})
    assert result.data["skipped"] == ["postgres", "redis"] and result.status == "down"
    nothing = probe_dependencies(env={})
    assert nothing.status == "error" and "no dependency" in nothing.message

    def broken() -> SourceResult:
        raise RuntimeError("bug in a probe")

    out = run_probes({"ok": lambda: SourceResult("x", "ok", "fine"), "broken": broken})
    assert out["ok"].ok and out["broken"].status == "error" and "bug in a probe" in out["broken"].message
