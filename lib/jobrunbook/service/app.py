"""The ASGI app (Starlette): ``POST /alerts`` in, reports out.

    POST /alerts             Alertmanager webhook v4: auth, size cap, validation, dedup, one durable write, 200
    GET  /healthz            liveness + queue depth (no auth)
    GET  /metrics            Prometheus text format (no auth)
    GET  /openapi.json       the schema of all of these (no auth)
    GET  /runs               accepted alerts and their runs, JSON, newest first
    GET  /runs/<run_id>/...  a run's files, read-only (report.html by default); also /<run_id>/... for the index links
    GET  /                   the outputs index, with the alerts recorded without a run (capped, linked)

Answers follow what Alertmanager does with them: 2xx = delivered; 4xx = not
retried (the body is wrong: the JSON error names the field); 5xx = retried at
once (only when the queue itself cannot be written). A full queue is not a
4xx (Alertmanager would drop the notification): the alert is recorded as
``capped`` and shown as such.

The accept path does validation, dedup and one durable write, nothing else:
POSTs that arrive together are committed in one transaction by one writer
thread (``Acceptor``), and the runs execute elsewhere (``WorkerProcess``).
"""

from __future__ import annotations

import asyncio
import html
import logging
import mimetypes
import os
import queue
import stat
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from jobrunbook.run.params import SERVED_ALERTNAMES
from jobrunbook.service.auth import check_authorization
from jobrunbook.service.metrics import ServiceMetrics
from jobrunbook.service.openapi import RunRow, schema_generator
from jobrunbook.service.store import Accepted, AcceptPolicy, StoreError
from jobrunbook.webhook import Webhook, WebhookError, parse_webhook

__all__ = ["create_app", "safe_path", "DEFAULT_MAX_BODY", "Acceptor"]

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
        except (OSError, ValueError):
            return None
        if stat.S_ISLNK(st.st_mode):
            return None
    real = path.resolve()
    if real != root and root not in real.parents:
        return None
    return path


class Acceptor:
    """Group commit: the webhooks that arrive while one transaction commits are written together in the next
    (one fsync for all of them), by one thread; each POST is answered once its own alerts are durable."""

    def __init__(self, store: Any, policy: AcceptPolicy, *, max_batch: int = 128) -> None:
        self.store, self.policy, self.max_batch = store, policy, max_batch
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="jobrunbook-accept", daemon=True)
                self._thread.start()

    async def accept(self, hook: Webhook) -> Accepted:
        self._ensure()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._q.put((hook, fut, loop))
        return await fut

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(10)

    @staticmethod
    def _answer(fut: asyncio.Future, loop: asyncio.AbstractEventLoop, value: Any) -> None:
        def settle() -> None:
            if fut.done():  # the client went away
                return
            if isinstance(value, BaseException):
                fut.set_exception(value)
            else:
                fut.set_result(value)

        loop.call_soon_threadsafe(settle)

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    more = self._q.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._q.put(None)
                    break
                batch.append(more)
            try:
                results = self.store.accept_batch([h for h, _, _ in batch], self.policy)
            except Exception as exc:  # noqa: BLE001 - the whole transaction failed: every POST of it gets a 503
                results = [exc if isinstance(exc, StoreError) else StoreError(f"{type(exc).__name__}: {exc}")] * len(batch)
            for (_, fut, loop), result in zip(batch, results, strict=True):
                self._answer(fut, loop, result)


def create_app(*, store: Any, worker: Any | None, outputs_dir: str | Path, token: str | None,
               metrics: ServiceMetrics | None = None, served: Iterable[str] = SERVED_ALERTNAMES,
               max_body: int = DEFAULT_MAX_BODY, max_runs_per_group: int = 10,
               group_window: timedelta = timedelta(hours=1), public_reads: bool = False,
               max_queued: int | None = None) -> Starlette:
    """The app; ``worker`` (a ``Worker`` in this process, or a ``WorkerProcess``) is started and stopped with it
    (None: accept only, for tests of the receiver)."""
    outputs_dir = Path(outputs_dir).resolve()
    policy = AcceptPolicy(frozenset(served), max_runs_per_group, group_window, max_queued)
    metrics = metrics or ServiceMetrics()
    metrics.watch_store(store)
    acceptor = Acceptor(store, policy)
    full_said = [-1e9]  # when the full queue was last logged
    reads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="jobrunbook-read")

    async def read(fn, *args, **kwargs):
        """A store read off the event loop (a Postgres round trip must not hold up the accepts)."""
        return await asyncio.get_running_loop().run_in_executor(reads, lambda: fn(*args, **kwargs))

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
        """Alertmanager's webhook (version 4).
        ---
        summary: Accept an Alertmanager notification
        security: [{bearer: []}, {basic: []}]
        requestBody:
          required: true
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Webhook'}
        responses:
          '200':
            description: every alert is recorded (queued, capped, linked, deduplicated, ignored or resolved)
            content: {application/json: {schema: {$ref: '#/components/schemas/AcceptedBody'}}}
          '400': {description: not JSON, or not JSON this service reads, content: {application/json: {schema: {$ref: '#/components/schemas/ErrorBody'}}}}
          '401': {description: missing or wrong token, content: {application/json: {schema: {$ref: '#/components/schemas/ErrorBody'}}}}
          '413': {description: body over the cap, content: {application/json: {schema: {$ref: '#/components/schemas/ErrorBody'}}}}
          '415': {description: not application/json, content: {application/json: {schema: {$ref: '#/components/schemas/ErrorBody'}}}}
          '422': {description: not a valid webhook; field names what, content: {application/json: {schema: {$ref: '#/components/schemas/ErrorBody'}}}}
          '503': {description: the queue cannot be written now (Alertmanager retries), content: {application/json: {schema: {$ref: '#/components/schemas/ErrorBody'}}}}
        """
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
            done = await acceptor.accept(hook)
        except StoreError as exc:  # Alertmanager retries a 5xx: nothing is lost
            log.error("cannot write the service queue: %s", exc)
            return _error(503, "the run queue cannot be written now; retry", "")
        for alert in hook.alerts:
            metrics.alerts.labels(alert.status).inc()
        metrics.deduplicated.inc(done.deduplicated)
        for reason, n in (("alertname", done.ignored), ("group_cap", done.capped - done.queue_full),
                          ("queue_full", done.queue_full), ("linked", len(done.covered))):
            if n:
                metrics.ignored.labels(reason).inc(n)
        if (done.queue_full or done.displaced) and time.monotonic() - full_said[0] > 60:  # once a minute in a storm
            full_said[0] = time.monotonic()
            log.warning("the run queue is full (--max-queued %s): %d alert(s) capped, %d queued warning(s) left for a "
                        "critical", max_queued, done.queue_full, len(done.displaced))
        if hook.truncatedAlerts:
            metrics.truncated.inc(hook.truncatedAlerts)
            log.warning("Alertmanager truncated %d alert(s) of group %s (max_alerts): they cannot be run",
                        hook.truncatedAlerts, hook.groupKey[:200])
        if worker is not None and (done.queued or done.resolved):
            worker.wake()
        return JSONResponse({"status": "accepted", "truncated": hook.truncatedAlerts, **done.as_json()})

    async def healthz(request: Request) -> Response:
        """Liveness and the queue's depth.
        ---
        summary: Liveness
        responses:
          '200': {description: up, content: {application/json: {schema: {$ref: '#/components/schemas/Health'}}}}
          '503': {description: the queue cannot be read, content: {application/json: {schema: {$ref: '#/components/schemas/ErrorBody'}}}}
        """
        try:
            depth, running = await read(lambda: (store.count("queued"), store.count("running")))
        except StoreError as exc:
            return _error(503, f"queue unreadable: {exc}")
        return JSONResponse({"ok": True, "queue_depth": depth, "running": running})

    async def metrics_endpoint(request: Request) -> Response:
        """Prometheus metrics.
        ---
        summary: Prometheus metrics (text format)
        responses:
          '200': {description: the metrics, content: {text/plain: {schema: {type: string}}}}
        """
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = await read(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return JSONResponse(schemas.get_schema(routes=app.routes))

    def reads_allowed(request: Request) -> bool:
        return public_reads or authorised(request)

    def denied() -> Response:
        return _error(401, "missing or wrong token", "authorization", {"WWW-Authenticate": 'Basic realm="jobrunbook"'})

    async def list_runs(request: Request) -> Response:
        """The accepted alerts and their runs, newest first.
        ---
        summary: Alerts and runs
        security: [{bearer: []}, {basic: []}]
        parameters:
          - {name: limit, in: query, required: false, schema: {type: integer, minimum: 1, maximum: 1000}}
        responses:
          '200':
            description: newest first
            content: {application/json: {schema: {type: array, items: {$ref: '#/components/schemas/RunRow'}}}}
          '400': {description: limit is not an integer, content: {application/json: {schema: {$ref: '#/components/schemas/ErrorBody'}}}}
          '401': {description: missing or wrong token, content: {application/json: {schema: {$ref: '#/components/schemas/ErrorBody'}}}}
          '503': {description: the queue cannot be read, content: {application/json: {schema: {$ref: '#/components/schemas/ErrorBody'}}}}
        """
        if not reads_allowed(request):
            return denied()
        try:
            limit = max(1, min(1000, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return _error(400, "limit must be an integer", "limit")
        try:
            rows = await read(store.list, limit=limit)
        except StoreError as exc:
            return _error(503, f"queue unreadable: {exc}")
        return JSONResponse([RunRow.from_row(r).model_dump(mode="json") for r in rows])

    async def run_files(request: Request) -> Response:
        """A run's files, read-only (its report.html for the run's folder).
        ---
        summary: A run's report and files
        security: [{bearer: []}, {basic: []}]
        responses:
          '200': {description: the file (or a folder's listing), content: {'*/*': {schema: {type: string}}}}
          '308': {description: the run's folder wants a trailing slash}
          '401': {description: missing or wrong token, content: {application/json: {schema: {$ref: '#/components/schemas/ErrorBody'}}}}
          '404': {description: no such run file, content: {application/json: {schema: {$ref: '#/components/schemas/ErrorBody'}}}}
        """
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
        """The outputs index.
        ---
        summary: Every run by queue and task type, with the alerts recorded without a run
        security: [{bearer: []}, {basic: []}]
        responses:
          '200': {description: the index, content: {text/html: {schema: {type: string}}}}
          '401': {description: missing or wrong token, content: {application/json: {schema: {$ref: '#/components/schemas/ErrorBody'}}}}
          '500': {description: the index could not be rendered, content: {application/json: {schema: {$ref: '#/components/schemas/ErrorBody'}}}}
        """
        if not reads_allowed(request):
            return denied()
        from jobrunbook.report import index_page

        def page() -> str:
            rows = store.list(limit=1000, states=("capped", "linked"))
            for r in rows:
                covering = store.get(r["linked_to"]) if r["state"] == "linked" and r.get("linked_to") else None
                r["covering_run_id"] = covering.get("run_id") if covering else None
            return index_page(outputs_dir, rows)

        try:
            body = await read(page)
        except Exception as exc:  # noqa: BLE001
            log.exception("the index could not be rendered")
            return _error(500, f"index could not be rendered: {type(exc).__name__}")
        return HTMLResponse(body, headers=_SECURITY_HEADERS)

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, str(exc)[:300])
        return _error(500, f"internal error ({type(exc).__name__}); the service log has it")

    @asynccontextmanager
    async def lifespan(app: Starlette):
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            acceptor.stop()
            if worker is not None:
                worker.stop()
            reads.shutdown(wait=False)

    routes = [
        Route("/alerts", post_alerts, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
        Route("/runs", list_runs, methods=["GET"]),
        Route("/runs/", list_runs, methods=["GET"], include_in_schema=False),
        Route("/runs/{run_id}", run_files, methods=["GET"], include_in_schema=False),
        Route("/runs/{run_id}/{path:path}", run_files, methods=["GET"]),
        Route("/", index, methods=["GET"]),
        Route("/{run_id}/{path:path}", run_files, methods=["GET"], include_in_schema=False),
    ]
    schemas = schema_generator()
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={Exception: internal_error})
    app.state.store, app.state.worker, app.state.metrics, app.state.acceptor = store, worker, metrics, acceptor
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

