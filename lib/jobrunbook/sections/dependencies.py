"""Section 04: dependencies and related alerts (runbook step 4)."""

from __future__ import annotations

from typing import Any

from jobrunbook.sections._base import Context, Section, _finish, gap


def check_dependencies(ctx: Context) -> Section:
    """Runbook step 4: Postgres, Redis and the external APIs, probed at once; related alerts."""
    from jobrunbook.sources import probe_dependencies

    r = probe_dependencies(postgres_dsn=ctx.postgres_dsn, redis_url=ctx.redis_connect_url or None,
                           health_urls=ctx.health_urls, timeout=ctx.timeout)
    probes = r.data["probes"] if isinstance(r.data, dict) else None
    findings: dict[str, Any] = {"probes": probes}
    reading = r.message
    # a dependency that is down is this step's finding; a probe that could not run is a gap in it
    gaps = [gap(f"{row['name']} probe could not run", row["message"], row["hint"])
            for row in (probes.to_dict("records") if probes is not None else []) if row["status"] == "error"]
    skipped = (r.data or {}).get("skipped", []) if isinstance(r.data, dict) else []
    if "postgres" in skipped:
        gaps.append(gap("Postgres not probed", "no DSN configured",
                        "export JOBRUNBOOK_POSTGRES_DSN='postgresql://USER@HOST:5432/DB'"))
    if "redis" in skipped:
        gaps.append(gap("Redis not probed", "no URL configured", "export JOBRUNBOOK_REDIS_URL=redis://HOST:6379/0"))
    if not ctx.health_urls:
        gaps.append(gap("external APIs not probed", "no health URL configured",
                        "export JOBRUNBOOK_HEALTH_URLS='partner=https://partner.example/health'"))
    if ctx.alertmanager_url:
        from jobrunbook.sources import related_alerts

        ra = related_alerts(ctx.alertmanager_url, timeout=ctx.timeout)
        findings["related_alerts"] = ra.data if ra.reachable else {"error": ra.message}
        firing = sorted(n for n, on in ((ra.data or {}).get("firing") or {}).items() if on) if ra.reachable else []
        reading += f". Related alerts firing: {', '.join(firing) or 'none'}" if ra.reachable else f". {ra.message}"
        if not ra.reachable:
            gaps.append(gap("related alerts unreadable", ra.message, ra.hint))
    table = probes[["name", "status", "latency_s", "message"]] if probes is not None and not probes.empty else None
    return _finish(ctx, "04_dependencies", Section("04_dependencies", reading + ".", table=table, findings=findings,
                                                   gaps=gaps))
