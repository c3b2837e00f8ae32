"""The demo worker's Prometheus metrics and its HTTP endpoints.

Served on 127.0.0.1 (a free port), like the worker of the fixtures:

- ``/metrics``: ``job_processed_total{queue,task_type,status}`` (status success|failed)
  and the ``job_duration_seconds{queue,task_type}`` histogram, with the buckets
  of the fixtures' metrics.txt, from the demo's own registry;
- ``/health``: the worker itself, 200;
- ``/external/health``: the partner API the webhooks call: 429 while the
  scenario rate-limits it, else 200.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

__all__ = ["WorkerMetrics", "DemoHTTPServer", "BUCKETS"]

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerMetrics:
    """Counts attempts like the fixtures' worker middleware; a prometheus_client collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.processed: dict[tuple[str, str, str], int] = {}
        self._hist: dict[tuple[str, str], list] = {}  # (queue, type) -> [bucket counts..., sum, count]
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def observe(self, queue: str, task_type: str, ok: bool, duration: float) -> None:
        with self._lock:
            for status in ("success", "failed"):  # both series from the first attempt, so a ratio is 0, not absent
                self.processed.setdefault((queue, task_type, status), 0)
            self.processed[(queue, task_type, "success" if ok else "failed")] += 1
            h = self._hist.setdefault((queue, task_type), [0] * len(BUCKETS) + [0.0, 0])
            for i, bound in enumerate(BUCKETS):
                if duration <= bound:
                    h[i] += 1
            h[-2] += duration
            h[-1] += 1

    def totals(self) -> dict[str, dict[str, int]]:
        """{queue: {"processed": n, "failed": n}} over every task type."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for (queue, _t, status), n in self.processed.items():
                q = out.setdefault(queue, {"processed": 0, "failed": 0})
                q["processed"] += n
                if status == "failed":
                    q["failed"] += n
        return out

    def collect(self):
        with self._lock:
            processed = sorted(self.processed.items())
            hist = sorted((k, list(v)) for k, v in self._hist.items())
        hf = HistogramMetricFamily("job_duration_seconds", "Task handler duration in seconds.",
                                   labels=["queue", "task_type"])
        for (queue, task_type), h in hist:
            buckets = [(repr(b) if b < 1 else str(b).removesuffix(".0"), h[i]) for i, b in enumerate(BUCKETS)]
            buckets.append(("+Inf", h[-1]))
            hf.add_metric([queue, task_type], buckets, h[-2])
        yield hf
        cf = CounterMetricFamily("job_processed", "Number of task processing attempts, by queue, task type and "
                                 "outcome.", labels=["queue", "status", "task_type"])
        for (queue, task_type, status), n in processed:
            cf.add_metric([queue, status, task_type], n)
        yield cf


class _Handler(BaseHTTPRequestHandler):
    server: DemoHTTPServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.metrics.registry), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/health":
            self._send(200, b'{"status":"ok"}', "application/json")
        elif path == "/external/health":
            limited = self.server.rate_limited()
            body = {"status": "rate_limited", "error": "Too Many Requests"} if limited else {"status": "ok"}
            self._send(429 if limited else 200, json.dumps(body).encode(), "application/json",
                       {"Retry-After": "30"} if limited else None)
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, code: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        pass


class DemoHTTPServer(ThreadingHTTPServer):
    """/metrics, /health and /external/health on 127.0.0.1, port 0 = a free one."""

    daemon_threads = True

    def __init__(self, metrics: WorkerMetrics, rate_limited: Callable[[], bool], port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.metrics = metrics
        self.rate_limited = rate_limited
        self._thread = threading.Thread(target=self.serve_forever, name="demo-http", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> DemoHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
