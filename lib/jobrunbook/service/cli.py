"""`jobrunbook serve`: the Alertmanager webhook receiver, its durable run queue, the reports over HTTP.

The webhook token comes from ``$JOBRUNBOOK_WEBHOOK_TOKEN`` (never a flag);
notification targets from ``$JOBRUNBOOK_SLACK_WEBHOOK_URL`` and
``$JOBRUNBOOK_NOTIFY_URL`` (URLs that are secrets). Settings the runs need
(Redis, metrics, Prometheus, logs) are flags, passed to every run; a Redis
password goes in ``$JOBRUNBOOK_REDIS_PASSWORD``, not in ``--redis-url``.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
from datetime import timedelta
from pathlib import Path

from jobrunbook._exceptions import ConfigError
from jobrunbook._paths import absolute
from jobrunbook._urls import redact_url
from jobrunbook.config_cli import add_source_flags, resolve_sources

__all__ = ["add_arguments", "command", "build_service"]

SLACK_ENV = "JOBRUNBOOK_SLACK_WEBHOOK_URL"
NOTIFY_ENV = "JOBRUNBOOK_NOTIFY_URL"


def add_arguments(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9095, help="port (default 9095; 0 = a free one, see --port-file)")
    p.add_argument("--port-file", type=absolute, default=None, help="write the bound port here once listening")
    p.add_argument("--outputs", type=absolute, default="outputs",
                   help="run directories and index.html; the queue's SQLite file too unless $JOBRUNBOOK_STORE names "
                        "a Postgres database (shared by replicas)")
    p.add_argument("--notebooks", type=absolute, default="notebooks", help="directory of NN_<section>.ipynb")
    # where each alert's sources are: the configuration (file, JOBRUNBOOK_*), these flags on its base, and the
    # target the alert's labels match (or --target); no flag has a default of its own
    add_source_flags(p, "redis", "metrics", "prometheus", "alertmanager", "logs", "health", "timeout")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per section (default 300)")
    p.add_argument("--parallel", type=int, default=None, help="sections 01-04 at once within a run")
    p.add_argument("--concurrency", type=int, default=2, help="runs at once (default 2)")
    p.add_argument("--warm", type=int, default=0, metavar="N", help="keep N kernels warm for the runs (default 0)")
    p.add_argument("--alertnames", default="JobFailureRate,JobFailureRateCritical",
                   help="comma-separated alertnames that start runs; others are accepted and ignored")
    p.add_argument("--max-body", type=int, default=1 << 20, help="webhook body cap in bytes (default 1 MiB)")
    p.add_argument("--max-runs-per-group", type=int, default=10,
                   help="runs per Alertmanager group (groupKey) per --group-window (default 10)")
    p.add_argument("--max-queued", type=int, default=None,
                   help=f"runs waiting at most, all groups together (default 10 per core: {default_max_queued()} "
                        "here); beyond it an alert is recorded as capped, and a critical takes a warning's place")
    p.add_argument("--worker-nice", type=int, default=10,
                   help="niceness added to the worker process that executes runs (default 10; 0 = same priority)")
    p.add_argument("--lease", type=float, default=60.0,
                   help="seconds a worker holds a run without renewing it; a replica killed mid-run has its run "
                        "taken over after this (default 60; renewed every lease/5)")
    p.add_argument("--replica-name", default=None,
                   help="this replica's name in the run leases (default: the host name; replicas sharing one host "
                        "and one Postgres store may share it: a dead worker of the same name is seen at once)")
    p.add_argument("--group-window", type=float, default=3600.0, help="seconds (default 3600)")
    p.add_argument("--ratio-window", default="5m", help="rate window for the failure ratio at resolve (default 5m)")
    p.add_argument("--public-url", default=env("JOBRUNBOOK_PUBLIC_URL", ""),
                   help="base URL people open reports at (for notification links)")
    p.add_argument("--public-reads", action="store_true",
                   help="serve /, /runs and reports without the token (default: token required, basic auth works)")
    p.add_argument("--allow-no-token", action="store_true",
                   help="run without $JOBRUNBOOK_WEBHOOK_TOKEN (anyone can post alerts: local use only)")


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost); 0.0.0.0 and :: are not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def default_max_queued(cpus: int | None = None) -> int:
    """The global cap on queued runs: what this machine's workers get through in about ten minutes at the
    default concurrency (a real run takes 30-60 s on one core): 10 per core, at least 10."""
    return max(10, 10 * (cpus or os.cpu_count() or 1))


def _check(args: argparse.Namespace, environ: dict[str, str]) -> str | None:
    """Refuse what would be unsafe or cannot work; the webhook token (None with --allow-no-token)."""
    from jobrunbook.service.auth import TOKEN_ENV, token_from_env

    token = token_from_env(environ, required=not args.allow_no_token)
    if token is None and not is_loopback(args.host):
        raise ConfigError(f"--allow-no-token with --host {args.host}: anyone on the network could post alerts and "
                          "read every report", hint=f"--host 127.0.0.1 for local use, or export {TOKEN_ENV}=$(openssl "
                                                    "rand -hex 24) and drop --allow-no-token")
    for name in ("redis_url", "prometheus_url", "metrics_url", "alertmanager_url"):
        url = getattr(args, name, None)
        if url and redact_url(url) != url:
            raise ConfigError(f"--{name.replace('_', '-')} holds a password ({redact_url(url)})",
                              hint="pass it in the environment ($JOBRUNBOOK_REDIS_PASSWORD), not on the command line")
    if not [a for a in args.alertnames.split(",") if a.strip()]:
        raise ConfigError("--alertnames is empty", hint="--alertnames JobFailureRate,JobFailureRateCritical")
    if args.concurrency < 1 or args.max_body < 1024:
        raise ConfigError("--concurrency must be >= 1 and --max-body >= 1024")
    if args.max_queued is not None and args.max_queued < 1:
        raise ConfigError("--max-queued must be >= 1", hint=f"the default here is {default_max_queued()}")
    if args.lease < 2:
        raise ConfigError("--lease must be at least 2 seconds", hint="--lease 60")
    return token


def build_worker(args: argparse.Namespace, runner=None, environ: dict[str, str] | None = None):
    """(worker, cleanup) from parsed flags: the store, the run engine (or ``runner``), the notifier; in the
    worker process."""
    from jobrunbook.notify import Notifier, Target
    from jobrunbook.service.metrics import NOTIFICATIONS
    from jobrunbook.service.store import open_store
    from jobrunbook.service.worker import Worker, engine_runner, prometheus_ratio

    environ = dict(os.environ if environ is None else environ)
    sources = resolve_sources(args, labels={}, env=environ)
    outputs = Path(args.outputs).resolve()
    store = open_store(outputs, environ)
    targets = [Target("slack", environ[SLACK_ENV])] if environ.get(SLACK_ENV) else []
    targets += [Target("webhook", environ[NOTIFY_ENV])] if environ.get(NOTIFY_ENV) else []

    def counted(target: str, outcome: str) -> None:
        try:
            store.bump(NOTIFICATIONS, f"{target},{outcome}")
        except Exception:  # noqa: BLE001 - a metric never stops a notification
            logging.getLogger("jobrunbook.service").exception("cannot count a notification")

    notifier = Notifier(targets, on_result=counted) if targets else None
    pool = None
    if runner is None:
        if args.warm > 0:
            from jobrunbook.kernels import KernelPool

            pool = KernelPool(size=args.warm).start(wait=False)
        runner = engine_runner(notebooks_dir=Path(args.notebooks).resolve(), outputs_dir=outputs, pool=pool,
                               timeout=args.timeout, max_parallel=args.parallel)
    prom = sources.settings.url_with_secret("prometheus_url", sources.env)
    ratio = prometheus_ratio(prom, window=args.ratio_window) if prom else None
    worker = Worker(store, runner, outputs_dir=outputs, config=sources.config, env=sources.env,
                    target=sources.target, concurrency=args.concurrency, notifier=notifier,
                    public_url=args.public_url, ratio_fn=ratio, lease=args.lease, replica=args.replica_name)

    def cleanup() -> None:
        if notifier is not None:
            notifier.close(wait=True)
        if pool is not None:
            pool.close()
        store.close()

    return worker, cleanup


def build_service(args: argparse.Namespace, *, runner=None, environ: dict[str, str] | None = None):
    """(app, worker process) from parsed flags; ``runner`` (a module-level function: it is pickled into the
    worker process) replaces the real run engine (benchmarks)."""
    import functools

    from jobrunbook.service.app import create_app
    from jobrunbook.service.metrics import ServiceMetrics
    from jobrunbook.service.process import WorkerProcess
    from jobrunbook.service.store import open_store

    environ = dict(os.environ if environ is None else environ)
    token = _check(args, environ)
    resolve_sources(args, labels={}, env=environ)  # a bad configuration is said here, before anything starts
    outputs = Path(args.outputs).resolve()
    served = [a.strip() for a in args.alertnames.split(",") if a.strip()]
    store = open_store(outputs, environ)
    worker = WorkerProcess(functools.partial(build_worker, args, runner), nice=args.worker_nice)
    app = create_app(store=store, worker=worker, outputs_dir=outputs, token=token, metrics=ServiceMetrics(),
                     served=served, max_body=args.max_body, max_runs_per_group=args.max_runs_per_group,
                     group_window=timedelta(seconds=args.group_window), public_reads=args.public_reads,
                     max_queued=args.max_queued or default_max_queued())
    return app, worker


def command(args: argparse.Namespace, *, runner=None) -> int:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app, _worker = build_service(args, runner=runner)
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the listener says TCP
    # (with proto 0, Nagle + delayed ACK add ~40 ms to every keep-alive answer)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}",
                          hint=f"ss -ltnp | grep :{args.port}") from None
    sock.listen(2048)  # connections queue from here on, before uvicorn's loop runs
    port = sock.getsockname()[1]
    print(f"jobrunbook serve: listening on http://{args.host}:{port}  (POST /alerts, GET /runs, /metrics)",
          flush=True)
    if args.port_file:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        os.replace(tmp, args.port_file)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=10)
    import gc

    gc.freeze()  # what was imported so far is never collected: the collector walks only what requests allocate
    uvicorn.Server(config).run(sockets=[sock])  # its lifespan starts and stops the worker process
    return 0

