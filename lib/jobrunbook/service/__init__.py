"""The Alertmanager webhook service (``jobrunbook serve``).

    models.py   webhook v4 validation          store.py   durable SQLite queue under outputs/
    auth.py     bearer / basic token check     worker.py  background runs (bounded), resolve closes a run
    metrics.py  the service's Prometheus metrics   app.py  the ASGI app      cli.py  `jobrunbook serve`
"""

from jobrunbook.service.app import DEFAULT_MAX_BODY, create_app, safe_path
from jobrunbook.service.auth import TOKEN_ENV, check_authorization, token_from_env
from jobrunbook.service.metrics import ServiceMetrics
from jobrunbook.service.store import STORE_NAME, Accepted, Job, Store
from jobrunbook.service.worker import THRESHOLDS, Worker, close_run, engine_runner, prometheus_ratio
from jobrunbook.webhook import Alert, Webhook, WebhookError, alert_key, parse_webhook

__all__ = [
    "DEFAULT_MAX_BODY", "create_app", "safe_path",
    "TOKEN_ENV", "check_authorization", "token_from_env",
    "ServiceMetrics",
    "Alert", "Webhook", "WebhookError", "alert_key", "parse_webhook",
    "STORE_NAME", "Accepted", "Job", "Store",
    "THRESHOLDS", "Worker", "close_run", "engine_runner", "prometheus_ratio",
]
