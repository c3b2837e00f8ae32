"""The ASGI app (Starlette): ``POST /alerts`` in, reports out.

    POST /alerts             Alertmanager webhook v4: auth, size cap, validation, commit, 200 (work in background)
    GET  /healthz            liveness + queue depth (no auth)
    GET  /metrics            Prometheus text format (no auth)
    GET  /runs               accepted alerts and their runs, JSON, newest first
    GET  /runs/<run_id>/...  a run's files, read-only (report.html by default); also /<run_id>/... for the index links
    GET  /                   outputs/index.html

Answers follow what Alertmanager does with them: 2xx = delivered; 4xx = not
retried (the body is wrong: the JSON error names the field); 5xx = retried at
once (only when the queue itself cannot be written).
"""

from __future__ import annotations

import html
import json
import logging
import mimetypes
import os
import sqlite3
import stat
from collections.abc import Iterable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from jobrunbook.run.params import SERVED_ALERTNAMES
from jobrunbook.service.auth import check_authorization
from jobrunbook.service.metrics import ServiceMetrics
from jobrunbook.service.store import Store
from jobrunbook.service.worker import Worker
from jobrunbook.webhook import WebhookError, parse_webhook

__all__ = ["create_app", "safe_path", "DEFAULT_MAX_BODY"]

log = logging.getLogger("jobrunbook.service")
DEFAULT_MAX_BODY = 1 << 20
_DRAIN_LIMIT = 64 << 20  # read (and drop) at most this much of an over-size body, so the client sees the 413
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_TYPES = {".html": "text/html; charset=utf-8", ".md": "text/markdown; charset=utf-8",
          ".json": "application/json", ".ipynb": "application/json", ".jsonl": "application/x-ndjson",
          ".png": "image/png", ".css": "text/css", ".txt": "text/plain; charset=utf-8"}


def _error(status: int, message: str, field: str = "", headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def safe_path(outputs_dir: Path, run_id: str, rel: str) -> Path | None:
    """``outputs_dir/run_id/rel`` if it is a real file or directory inside the run, with no symlink on the way.

    Refuses: ``..``, absolute parts, hidden names (temp files, the queue), NUL, any symlink component,
    anything that resolves outside ``outputs_dir``.
    """
    parts = [run_id, *[p for p in rel.split("/") if p]]
    for p in parts:
        if p in (".", "..") or p.startswith(".") or "\x00" in p or "\\" in p or len(p) > 255:
            return None
    root = outputs_dir.resolve()
    path = root
    for p in parts:
        path = path / p
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return None
    real = path.resolve()
    if real != root and root not in real.parents:
        return None
    return path


def create_app(*, store: Store, worker: Worker | None, outputs_dir: str | Path, token: str | None,
               metrics: ServiceMetrics | None = None, served: Iterable[str] = SERVED_ALERTNAMES,
               max_body: int = DEFAULT_MAX_BODY, max_runs_per_group: int = 10,
               group_window: timedelta = timedelta(hours=1), public_reads: bool = False) -> Starlette:
    """The app; ``worker`` is started and stopped with it (None: accept only, for tests of the receiver)."""
    outputs_dir = Path(outputs_dir).resolve()
    served = frozenset(served)
    metrics = metrics or ServiceMetrics()
    metrics.watch_queue(lambda: store.count("queued"))

    def authorised(request: Request) -> bool:
        return check_authorization(request.headers.get("authorization"), token)

    async def read_body(request: Request) -> bytes | None:
        """The body, or None when it is over ``max_body`` (then drained, up to a limit)."""
        declared = request.headers.get("content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > max_body
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                too_big = True
            if too_big:
                if size > _DRAIN_LIMIT:
                    break
                continue
            chunks.append(chunk)
        return None if too_big else b"".join(chunks)

    async def post_alerts(request: Request) -> Response:
        resp = await _post_alerts(request)
        metrics.requests.labels(str(resp.status_code)).inc()
        return resp

    async def _post_alerts(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "missing or wrong token", "authorization", {"WWW-Authenticate": 'Bearer realm="jobrunbook"'})
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype not in ("application/json", ""):
            return _error(415, f"content type {ctype[:60]!r} is not application/json", "content-type")
        raw = await read_body(request)
        if raw is None:
            return _error(413, f"body over {max_body} bytes", "body")
        try:
            hook = parse_webhook(raw)
        except WebhookError as exc:
            return JSONResponse(exc.as_json(), status_code=exc.status)
        try:
            done = store.accept(hook, served=served, max_per_group=max_runs_per_group, window=group_window)
        except sqlite3.Error as exc:  # Alertmanager retries a 5xx: nothing is lost
            log.error("cannot write the service queue: %s", exc)
            return _error(503, "the run queue cannot be written now; retry", "")
        for alert in hook.alerts:
            metrics.alerts.labels(alert.status).inc()
        metrics.deduplicated.inc(done.deduplicated)
        if done.ignored:
            metrics.ignored.labels("alertname").inc(done.ignored)
        if done.capped:
            metrics.ignored.labels("group_cap").inc(done.capped)
        if hook.truncatedAlerts:
            metrics.truncated.inc(hook.truncatedAlerts)
            log.warning("Alertmanager truncated %d alert(s) of group %s (max_alerts): they cannot be run",
                        hook.truncatedAlerts, hook.groupKey[:200])
        if worker is not None and (done.queued or done.resolved):
            worker.wake()
        return JSONResponse({"status": "accepted", "truncated": hook.truncatedAlerts, **done.as_json()})

    async def healthz(request: Request) -> Response:
        try:
            depth = store.count("queued")
        except sqlite3.Error as exc:
            return _error(503, f"queue unreadable: {exc}")
        return JSONResponse({"ok": True, "queue_depth": depth, "running": worker.busy if worker else 0})

    async def metrics_endpoint(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def reads_allowed(request: Request) -> bool:
        return public_reads or authorised(request)

    def denied() -> Response:
        return _error(401, "missing or wrong token", "authorization", {"WWW-Authenticate": 'Basic realm="jobrunbook"'})

    async def list_runs(request: Request) -> Response:
        if not reads_allowed(request):
            return denied()
        try:
            limit = max(1, min(1000, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return _error(400, "limit must be an integer", "limit")
        out = []
        for row in store.list(limit=limit):
            alert = json.loads(row.pop("alert_json"))
            row.pop("resolved_json", None)
            closing = row.pop("closing_json", None)
            row["labels"] = alert.get("labels", {})
            row["closing"] = json.loads(closing) if closing else None
            row["report"] = f"/runs/{row['run_id']}/report.html" if row.get("run_id") else None
            out.append(row)
        return JSONResponse(out)

    async def run_files(request: Request) -> Response:
        if not reads_allowed(request):
            return denied()
        run_id = request.path_params["run_id"]
        rel = request.path_params.get("path", "")
        path = safe_path(outputs_dir, run_id, rel)
        if path is None:
            return _error(404, "no such run file", "path")
        if path.is_dir():
            if not request.url.path.endswith("/"):
                return RedirectResponse(request.url.path + "/", status_code=308)
            if (path / "report.html").is_file() and not rel:
                return _serve(path / "report.html")
            return _listing(path, outputs_dir)
        if not path.is_file():
            return _error(404, "no such run file", "path")
        return _serve(path)

    async def index(request: Request) -> Response:
        if not reads_allowed(request):
            return denied()
        page = outputs_dir / "index.html"
        if not page.is_file():
            from jobrunbook.report import render_index

            try:
                render_index(outputs_dir)
            except Exception as exc:  # noqa: BLE001
                return _error(500, f"index could not be rendered: {type(exc).__name__}")
        return _serve(page)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()

    routes = [
        Route("/alerts", post_alerts, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/runs", list_runs, methods=["GET"]),
        Route("/runs/", list_runs, methods=["GET"]),
        Route("/runs/{run_id}", run_files, methods=["GET"]),
        Route("/runs/{run_id}/{path:path}", run_files, methods=["GET"]),
        Route("/", index, methods=["GET"]),
        Route("/{run_id}/{path:path}", run_files, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.store, app.state.worker, app.state.metrics = store, worker, metrics
    return app


def _serve(path: Path) -> Response:
    ctype = _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=ctype, headers=_SECURITY_HEADERS)


def _listing(path: Path, outputs_dir: Path) -> Response:
    items = []
    for p in sorted(path.iterdir()):
        if p.name.startswith(".") or p.is_symlink():
            continue
        name = p.name + ("/" if p.is_dir() else "")
        items.append(f'<li><a href="{html.escape(name, quote=True)}">{html.escape(name)}</a></li>')
    title = html.escape(str(path.relative_to(outputs_dir)))
    body = f"<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1><ul>{''.join(items)}</ul>"
    return HTMLResponse(body, headers=_SECURITY_HEADERS)


