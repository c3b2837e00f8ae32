"""Section 04: dependencies and related alerts (runbook step 4)."""

from __future__ import annotations

from typing import Any

from jobrunbook.sections._base import Context, Section, _finish


def check_dependencies(ctx: Context) -> Section:
    """Runbook step 4: Postgres, Redis and the external APIs, probed at once; related alerts."""
    from jobrunbook.sources import probe_dependencies

    r = probe_dependencies(postgres_dsn=ctx.postgres_dsn, redis_url=ctx.redis_url or None,
                           health_urls=ctx.health_urls, timeout=5)
    probes = r.data["probes"] if isinstance(r.data, dict) else None
    findings: dict[str, Any] = {"probes": probes}
    reading = r.message
    if ctx.alertmanager_url:
        from jobrunbook.sources import related_alerts

        ra = related_alerts(ctx.alertmanager_url, timeout=5)
        findings["related_alerts"] = ra.data if ra.reachable else {"error": ra.message}
        firing = sorted(n for n, on in ((ra.data or {}).get("firing") or {}).items() if on) if ra.reachable else []
        reading += f". Related alerts firing: {', '.join(firing) or 'none'}" if ra.reachable else f". {ra.message}"
    table = probes[["name", "status", "latency_s", "message"]] if probes is not None and not probes.empty else None
    return _finish(ctx, "04_dependencies", Section("04_dependencies", reading + ".", table=table, findings=findings))
