"""Runbook step 4: the worker's dependencies, probed concurrently.

    docker exec -it postgres pg_isready
    docker exec -it redis redis-cli ping
    curl -s https://api.external-service.com/health

Each probe gives ok / degraded / down (or error, timeout) with its latency and
a message: Postgres readiness, a real connection and connections used against
``max_connections`` (the related ``DBConnectionExhausted``); Redis PING and
INFO (clients, rejected connections, memory, evictions, blocked clients);
HTTP health URLs (status and latency, TLS and DNS failures named as such).
Connection strings come from the environment (``JOBRUNBOOK_POSTGRES_DSN``,
``JOBRUNBOOK_REDIS_URL``, ``JOBRUNBOOK_HEALTH_URLS``) or a parameter, and a
password never appears in a result.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import psycopg
import redis
import requests
from psycopg.conninfo import conninfo_to_dict

from jobrunbook._urls import redact_url
from jobrunbook.sources.result import SourceResult, Stopwatch, result_from_request_error

__all__ = [
    "SEVERITY",
    "PROBE_COLUMNS",
    "probe_postgres",
    "probe_redis",
    "probe_http",
    "run_probes",
    "probe_dependencies",
    "redact_dsn",
]

SEVERITY = {"ok": 0, "degraded": 1, "error": 2, "timeout": 3, "down": 4}
PROBE_COLUMNS = ["name", "source", "status", "latency_s", "message", "hint", "target"]
_PASSWORD_KV = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_dsn(dsn: str | None) -> str:
    """A Postgres DSN (URL or key=value) with its password replaced by ***."""
    if not dsn:
        return ""
    if "://" in dsn:
        return redact_url(dsn)
    return _PASSWORD_KV.sub(r"\1***", dsn)


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _tcp_check(host: str, port: int, timeout: float) -> tuple[str, str] | None:
    """None when something listens; else (status, reason)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return "down", "DNS lookup failed (host name does not resolve)"
    except ConnectionRefusedError:
        return "down", "connection refused (nothing listening)"
    except TimeoutError:
        return "timeout", f"did not answer in {timeout:g} s"
    except OSError as exc:
        return "down", f"could not connect ({exc.strerror or type(exc).__name__})"


# ---------------------------------------------------------------- Postgres

def probe_postgres(dsn: str | None = None, *, timeout: float = 5.0, degraded_ratio: float = 0.8,
                   env: Mapping[str, str] | None = None, clock=time.monotonic) -> SourceResult:
    """Readiness, a real connection, and connections used vs ``max_connections``.

    data: {"connections", "max_connections", "reserved", "used_ratio",
    "server_version", "by_state": {state: n}}. Degraded above
    ``degraded_ratio`` of max_connections; down when refused or full.
    """
    env = os.environ if env is None else env
    dsn = dsn or env.get("JOBRUNBOOK_POSTGRES_DSN")
    watch = Stopwatch(clock)
    if not dsn:
        return SourceResult("postgres", "error", "no Postgres DSN configured",
                            hint="export JOBRUNBOOK_POSTGRES_DSN='postgresql://user@host:5432/db'")
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return SourceResult("postgres", "error", f"the Postgres DSN does not parse: {redact_dsn(dsn)[:100]}",
                            hint="see https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING")
    password = params.get("password")
    host = str(params.get("host") or "localhost").split(",")[0]
    port = int(str(params.get("port") or 5432).split(",")[0])
    dbname = params.get("dbname") or params.get("user") or ""
    user = params.get("user") or ""
    target = f"postgresql://{user + '@' if user else ''}{host}:{port}/{dbname}"
    hint = f"pg_isready -h {shlex.quote(host)} -p {port}" + (f" -d {shlex.quote(dbname)}" if dbname else "")
    if not host.startswith("/"):
        failed = _tcp_check(host, port, timeout)
        if failed:
            status, reason = failed
            return SourceResult("postgres", status, f"Postgres {reason} at {host}:{port}", hint=hint,
                                elapsed_s=watch.elapsed, target=target)
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, round(timeout)), autocommit=True) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
                " current_setting('max_connections')::int,"
                " current_setting('superuser_reserved_connections')::int,"
                " current_setting('server_version')").fetchone()
            states = dict(conn.execute("SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity"
                                       " WHERE backend_type = 'client backend' GROUP BY 1").fetchall())
    except psycopg.OperationalError as exc:
        text = _scrub(str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__, password)
        low = text.lower()
        if "too many clients" in low or "remaining connection slots" in low:
            status, reason = "down", f"refuses new connections: max_connections reached ({text})"
        elif "password" in low or "authentication" in low or "pg_hba" in low:
            status, reason = "error", f"refused authentication ({text})"
        elif "timeout" in low:
            status, reason = "timeout", f"did not answer in {timeout:g} s"
        elif "does not exist" in low:
            status, reason = "error", text
        else:
            status, reason = "down", text
        return SourceResult("postgres", status, f"Postgres {reason} at {target}", hint=hint,
                            elapsed_s=watch.elapsed, target=target)
    except psycopg.Error as exc:
        return SourceResult("postgres", "error", f"Postgres query failed at {target}: "
                            f"{_scrub(str(exc), password)[:200]}", hint=hint, elapsed_s=watch.elapsed, target=target)
    used, max_conn, reserved, version = row
    ratio = used / max_conn if max_conn else 0.0
    status = "degraded" if ratio > degraded_ratio else "ok"
    message = (f"Postgres {version} up at {target}: {used} of {max_conn} connections in use ({ratio:.0%}"
               f"{', above ' + format(degraded_ratio, '.0%') if status == 'degraded' else ''})")
    return SourceResult("postgres", status, message,
                        hint=f"{hint}; psql -h {shlex.quote(host)} -p {port} -c 'SELECT count(*) FROM pg_stat_activity'",
                        elapsed_s=watch.elapsed, target=target,
                        data={"connections": used, "max_connections": max_conn, "reserved": reserved,
                              "used_ratio": ratio, "server_version": version,
                              "by_state": {str(k): int(v) for k, v in states.items()}})


# ---------------------------------------------------------------- Redis

def probe_redis(url: str | None = None, *, timeout: float = 5.0, clients_ratio: float = 0.8,
                memory_ratio: float = 0.9, env: Mapping[str, str] | None = None, clock=time.monotonic
                ) -> SourceResult:
    """PING and INFO: clients vs maxclients, rejected connections, memory vs maxmemory, evictions, blocked clients.

    data: {"connected_clients", "maxclients", "blocked_clients",
    "rejected_connections", "used_memory", "maxmemory", "maxmemory_policy",
    "evicted_keys", "redis_version", "problems": [str]}.
    """
    env = os.environ if env is None else env
    url = url or env.get("JOBRUNBOOK_REDIS_URL")
    watch = Stopwatch(clock)
    if not url:
        return SourceResult("redis", "error", "no Redis URL configured",
                            hint="export JOBRUNBOOK_REDIS_URL='redis://host:6379/0'")
    safe = redact_url(url)
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError as exc:
        return SourceResult("redis", "error", f"the Redis URL does not parse ({str(exc)[:80]}): {safe}",
                            hint="redis://[:password@]host:port/db")
    host = client.connection_pool.connection_kwargs.get("host", "localhost")
    port = client.connection_pool.connection_kwargs.get("port", 6379)
    hint = f"redis-cli -h {host} -p {port} ping && redis-cli -h {host} -p {port} info clients"
    try:
        client.ping()
        info = client.info()
    except redis.AuthenticationError as exc:
        return SourceResult("redis", "error", f"Redis refused authentication at {safe} ({str(exc)[:120]})",
                            hint=hint, elapsed_s=watch.elapsed, target=safe)
    except redis.TimeoutError:
        return SourceResult("redis", "timeout", f"Redis did not answer in {timeout:g} s at {safe}", hint=hint,
                            elapsed_s=watch.elapsed, target=safe)
    except redis.ConnectionError as exc:
        text = str(exc).lower()
        if "refused" in text:
            reason = "connection refused (nothing listening)"
        elif "name or service not known" in text or "resolve" in text or "nodename" in text:
            reason = "DNS lookup failed (host name does not resolve)"
        elif "max number of clients" in text:
            reason = "refuses new connections: maxclients reached"
        else:
            reason = f"unreachable ({str(exc)[:120]})"
        return SourceResult("redis", "down", f"Redis {reason} at {safe}", hint=hint, elapsed_s=watch.elapsed,
                            target=safe)
    except redis.RedisError as exc:
        return SourceResult("redis", "error", f"Redis error at {safe}: {str(exc)[:160]}", hint=hint,
                            elapsed_s=watch.elapsed, target=safe)
    finally:
        client.close()
    data = {key: info.get(key) for key in ("connected_clients", "maxclients", "blocked_clients",
                                           "rejected_connections", "used_memory", "maxmemory",
                                           "maxmemory_policy", "evicted_keys", "redis_version")}
    problems = []
    if data["maxclients"] and data["connected_clients"] / data["maxclients"] > clients_ratio:
        problems.append(f"{data['connected_clients']} of {data['maxclients']} clients connected")
    if data["rejected_connections"]:
        problems.append(f"{data['rejected_connections']} connections rejected (maxclients)")
    if data["maxmemory"] and data["used_memory"] / data["maxmemory"] > memory_ratio:
        problems.append(f"memory {data['used_memory']} of maxmemory {data['maxmemory']} bytes "
                        f"({data['used_memory'] / data['maxmemory']:.0%})")
    if data["evicted_keys"]:
        problems.append(f"{data['evicted_keys']} keys evicted (policy {data['maxmemory_policy']}): asynq tasks may be lost")
    data["problems"] = problems
    status = "degraded" if problems else "ok"
    detail = "; ".join(problems) if problems else (
        f"{data['connected_clients']} clients, {data['blocked_clients']} blocked, used_memory {data['used_memory']}")
    return SourceResult("redis", status, f"Redis {data['redis_version']} answers PING at {safe}: {detail}",
                        hint=hint, elapsed_s=watch.elapsed, target=safe, data=data)


# ---------------------------------------------------------------- HTTP

def probe_http(url: str, *, timeout: float = 5.0, session: requests.Session | None = None,
               slow_s: float | None = None, clock=time.monotonic) -> SourceResult:
    """GET a health URL: 2xx/3xx ok, 429 degraded (rate limited), other 4xx error, 5xx down.

    TLS errors, DNS failures, refused connections and timeouts are named as
    such. data: {"http_status", "latency_s"}. ``slow_s`` marks a slow answer degraded.
    """
    http = session or requests
    watch = Stopwatch(clock)
    safe = redact_url(url)
    hint = f"curl -sS -o /dev/null -w '%{{http_code}} %{{time_total}}s\\n' --max-time {timeout:g} {shlex.quote(safe)}"
    try:
        resp = http.get(url, timeout=timeout, allow_redirects=True, stream=True)
        resp.close()
    except requests.RequestException as exc:
        return result_from_request_error("http", "health check", url, exc, timeout=timeout,
                                         elapsed_s=watch.elapsed, hint=hint)
    latency = watch.elapsed
    code = resp.status_code
    if code == 429:
        status, what = "degraded", "rate limited (429)"
    elif code >= 500:
        status, what = "down", f"unhealthy ({code} {resp.reason})"
    elif code >= 400:
        status, what = "error", f"answered {code} {resp.reason}: check the health URL"
    elif slow_s is not None and latency > slow_s:
        status, what = "degraded", f"slow: {code} in {latency:.2f} s (over {slow_s:g} s)"
    else:
        status, what = "ok", f"{code} {resp.reason}"
    return SourceResult("http", status, f"{safe} {what} in {latency * 1000:.0f} ms", hint=hint, elapsed_s=latency,
                        target=safe, data={"http_status": code, "latency_s": latency})


# ---------------------------------------------------------------- all together

def run_probes(probes: Mapping[str, Callable[[], SourceResult]], *, max_workers: int = 8) -> dict[str, SourceResult]:
    """Run each named probe in its own thread; a probe that raises becomes an error result."""
    def guarded(name: str, probe: Callable[[], SourceResult]) -> SourceResult:
        try:
            return probe()
        except Exception as exc:  # noqa: BLE001 - a broken probe must not end the run
            return SourceResult(name, "error", f"probe {name} failed: {type(exc).__name__}: {str(exc)[:160]}")

    if not probes:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(probes)))) as pool:
        futures = {name: pool.submit(guarded, name, probe) for name, probe in probes.items()}
        return {name: future.result() for name, future in futures.items()}


def probe_dependencies(*, postgres_dsn: str | None = None, redis_url: str | None = None,
                       health_urls: list[str] | tuple[str, ...] | None = None, timeout: float = 5.0,
                       env: Mapping[str, str] | None = None, clock=time.monotonic) -> SourceResult:
    """Every configured dependency at once (parameters, else JOBRUNBOOK_* variables).

    status: the worst of the probes. data: {"probes": DataFrame PROBE_COLUMNS,
    "results": {name: SourceResult}, "skipped": [names not configured]}.
    """
    env = os.environ if env is None else env
    watch = Stopwatch(clock)
    postgres_dsn = postgres_dsn or env.get("JOBRUNBOOK_POSTGRES_DSN")
    redis_url = redis_url or env.get("JOBRUNBOOK_REDIS_URL")
    if health_urls is None:
        # the configuration's format: name=url or a bare url, comma-separated
        health_urls = [u.strip().split("=", 1)[1] if "=" in u.split("://", 1)[0] else u.strip()
                       for u in env.get("JOBRUNBOOK_HEALTH_URLS", "").split(",") if u.strip()]
    probes: dict[str, Callable[[], SourceResult]] = {}
    skipped = []
    if postgres_dsn:
        probes["postgres"] = lambda: probe_postgres(postgres_dsn, timeout=timeout)
    else:
        skipped.append("postgres")
    if redis_url:
        probes["redis"] = lambda: probe_redis(redis_url, timeout=timeout)
    else:
        skipped.append("redis")
    for url in health_urls:
        probes[f"http {redact_url(url)}"] = (lambda u=url: probe_http(u, timeout=timeout))
    results = run_probes(probes)
    rows = [(name, r.source, r.status, r.elapsed_s, r.message, r.hint, r.target) for name, r in results.items()]
    frame = pd.DataFrame(rows, columns=PROBE_COLUMNS)
    if not results:
        return SourceResult("dependencies", "error", "no dependency configured to probe",
                            hint="set JOBRUNBOOK_POSTGRES_DSN, JOBRUNBOOK_REDIS_URL, JOBRUNBOOK_HEALTH_URLS",
                            elapsed_s=watch.elapsed, data={"probes": frame, "results": {}, "skipped": skipped})
    worst = max(results.values(), key=lambda r: SEVERITY[r.status])
    bad = [r for r in results.values() if r.status != "ok"]
    message = (f"{len(results) - len(bad)} of {len(results)} dependencies ok"
               + (f"; {'; '.join(str(r) for r in bad)}" if bad else ""))
    return SourceResult("dependencies", worst.status, message, hint=worst.hint if bad else "",
                        elapsed_s=watch.elapsed, data={"probes": frame, "results": results, "skipped": skipped})
