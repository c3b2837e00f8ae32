"""Helpers for the service tests: the app on a real uvicorn in a thread, on 127.0.0.1:0."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import requests
import uvicorn
from conftest import FIXTURES, ROOT
from jobrunbook.config import load_config
from jobrunbook.service import STORE_NAME, ServiceMetrics, Store, Worker, create_app, engine_runner

ALERTS = FIXTURES / "alertmanager"
TRIVIAL = ROOT / "tests" / "notebooks" / "trivial"
SLOW = ROOT / "tests" / "notebooks" / "slow"
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def fixture_bytes(name: str) -> bytes:
    return (ALERTS / name).read_bytes()


def fixture_json(name: str) -> dict:
    return json.loads(fixture_bytes(name))


class ServerThread:
    """uvicorn serving ``app`` on a free port in a daemon thread."""

    def __init__(self, app) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def post(self, body: bytes | dict, headers: dict | None = None, path: str = "/alerts") -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return requests.post(self.url + path, data=data, headers=AUTH if headers is None else headers, timeout=30)

    def get(self, path: str, auth: bool = True) -> requests.Response:
        return requests.get(self.url + path, headers=AUTH if auth else {}, timeout=10, allow_redirects=False)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def make_service(outputs: Path, *, runner=None, notebooks: Path = TRIVIAL, concurrency: int = 2, worker: bool = True,
                 max_runs_per_group: int = 10, ratio_fn=None, notifier=None, public_url: str = "",
                 served=("JobFailureRate", "JobFailureRateCritical"), max_queued: int | None = None, store=None,
                 group_window: timedelta = timedelta(hours=1)):
    """(app, store, worker) with the real run engine on ``notebooks`` unless ``runner`` is given (the worker in
    this process: its threads; ``jobrunbook serve`` puts it in a process of its own)."""
    store = store or Store(outputs / STORE_NAME)
    metrics = ServiceMetrics()
    w = None
    if worker:
        runner = runner or engine_runner(notebooks_dir=notebooks, outputs_dir=outputs, timeout=60)
        config = load_config(env={}, flags={"redis_url": "redis://127.0.0.1:1/0"})
        w = Worker(store, runner, outputs_dir=outputs, config=config, env={}, concurrency=concurrency,
                   ratio_fn=ratio_fn, notifier=notifier, public_url=public_url)
    app = create_app(store=store, worker=w, outputs_dir=outputs, token=TOKEN, served=served, metrics=metrics,
                     max_runs_per_group=max_runs_per_group, group_window=group_window, max_queued=max_queued)
    return app, store, w


@contextmanager
def accept_only(outputs: Path, **kw):
    """(server, store): the receiver on a real uvicorn with no worker: what the queue holds after each POST."""
    app, store, _ = make_service(outputs, worker=False, **kw)
    srv = ServerThread(app)
    try:
        yield srv, store
    finally:
        srv.stop()


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
