"""The Alertmanager webhook service (``jobrunbook serve``).

    webhook.py  webhook v4 validation (jobrunbook.webhook)   store.py    the durable run queue: SQLite or Postgres
    auth.py     bearer / basic token check                   worker.py   runs (bounded, leased), resolve closes a run
    metrics.py  the service's Prometheus metrics             process.py  the worker in a child process, niced
    openapi.py  GET /openapi.json                            app.py      the ASGI app     cli.py  `jobrunbook serve`
"""

from jobrunbook.service.app import DEFAULT_MAX_BODY, Acceptor, create_app, safe_path
from jobrunbook.service.auth import TOKEN_ENV, check_authorization, token_from_env
from jobrunbook.service.metrics import ServiceMetrics
from jobrunbook.service.process import WorkerProcess
from jobrunbook.service.store import (
    STORE_ENV,
    STORE_NAME,
    Accepted,
    AcceptPolicy,
    Job,
    PostgresStore,
    SqliteStore,
    Store,
    StoreError,
    open_store,
)
from jobrunbook.service.worker import THRESHOLDS, Worker, close_run, engine_runner, prometheus_ratio
from jobrunbook.webhook import Alert, Webhook, WebhookError, alert_key, parse_webhook

__all__ = [
    "DEFAULT_MAX_BODY", "Acceptor", "create_app", "safe_path",
    "TOKEN_ENV", "check_authorization", "token_from_env",
    "ServiceMetrics", "WorkerProcess",
    "Alert", "Webhook", "WebhookError", "alert_key", "parse_webhook",
    "STORE_ENV", "STORE_NAME", "AcceptPolicy", "Accepted", "Job", "PostgresStore", "SqliteStore", "Store",
    "StoreError", "open_store",
    "THRESHOLDS", "Worker", "close_run", "engine_runner", "prometheus_ratio",
]
