"""`jobrunbook run`: one run per firing alert, progress on the terminal, verdict and report path at the end."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from jobrunbook._exceptions import ConfigError, NotFound
from jobrunbook._paths import absolute, absolute_log_source

__all__ = ["add_arguments", "command"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--alert", metavar="FILE", type=_alert_path, help="Alertmanager webhook body (version 4) or one alert, '-' = stdin")
    src.add_argument("--label", metavar="K=V", action="append", help="alert label, repeatable (alertname, queue, ...)")
    p.add_argument("--redis-url", default=os.environ.get("JOBRUNBOOK_REDIS_URL", ""),
                   help="asynq Redis (a password here is moved to the kernels' environment, never a parameter)")
    p.add_argument("--metrics-url", default=os.environ.get("JOBRUNBOOK_METRICS_URL", ""), help="worker /metrics")
    p.add_argument("--prometheus-url", default=os.environ.get("JOBRUNBOOK_PROMETHEUS_URL", ""))
    p.add_argument("--log-source", type=absolute_log_source, default=os.environ.get("JOBRUNBOOK_LOG_SOURCE", ""),
                   help="worker logs: a file, docker:NAME or k8s:deployment/NAME")
    p.add_argument("--notebooks", type=absolute, default="notebooks", help="directory of NN_<section>.ipynb (default notebooks)")
    p.add_argument("--outputs", type=absolute, default="outputs", help="where run directories go (default outputs)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per section (default 300)")
    p.add_argument("--parallel", type=int, default=None, help="sections 01-04 at once (default: cores, max 4)")
    p.add_argument("--warm", type=int, default=0, metavar="N",
                   help="run on a pool of N pre-started kernels (what the service does); 0 = fresh kernel each")
    p.add_argument("--all", action="store_true", help="with --alert: every firing alert, not only the first")


def _alert_path(text: str) -> str:
    return text if text == "-" else str(absolute(text))


def print_progress(out):
    def show(section: str, state: str, elapsed: float) -> None:
        mark = {"running": "..", "ok": "ok", "failed": "!!", "timeout": "!!"}.get(state, "  ")
        print(f"  [{mark}] {section:<24} {state:<8} {elapsed:6.1f}s", file=out, flush=True)
    return show


def command(args: argparse.Namespace) -> int:
    from jobrunbook.kernels import KernelPool
    from jobrunbook.run.execute import execute_run
    from jobrunbook.run.params import (
        SERVED_ALERTNAMES,
        params_from_alert,
        params_from_labels,
        params_from_webhook,
    )

    settings = {"redis_url": args.redis_url, "metrics_url": args.metrics_url,
                "prometheus_url": args.prometheus_url, "log_source": args.log_source,
                "notebooks_dir": str(args.notebooks), "outputs_dir": str(args.outputs)}
    if args.alert:
        try:
            raw = sys.stdin.read() if args.alert == "-" else Path(args.alert).read_text(encoding="utf-8")
        except OSError as exc:
            raise NotFound(f"cannot read alert file {args.alert}: {exc.strerror}") from None
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"alert file {args.alert} is not JSON: {exc}") from None
        params_from_webhook(body, **settings)  # validates the body as a whole
        alerts_in = body["alerts"] if isinstance(body, dict) and "alerts" in body else [body]
        todo = []
        for alert in alerts_in:
            p = params_from_alert(alert, **settings)
            if p.alertname in SERVED_ALERTNAMES and p.status == "firing":
                todo.append((p, alert))
        if not todo:
            raise ConfigError("no firing JobFailureRate* alert in the body", hint="alerts[].status and labels.alertname")
        if not args.all:
            todo = todo[:1]
    else:
        todo = [(params_from_labels(args.label, **settings), None)]

    pool = KernelPool(size=args.warm).start() if args.warm > 0 else None
    worst = 0
    try:
        for params, alert in todo:
            t0 = time.monotonic()
            print(f"jobrunbook run: {params.alertname} queue={params.queue} task_type={params.task_type or '*'}",
                  flush=True)
            run = execute_run(params, alert=alert, pool=pool, timeout=args.timeout, max_parallel=args.parallel,
                              on_progress=print_progress(sys.stdout))
            print(f"verdict: {run.headline}")
            if run.failed_sections:
                print(f"sections not completed: {', '.join(run.failed_sections)}")
            print(f"report: {run.report or '(not rendered: see status.json)'}  ({time.monotonic() - t0:.1f}s)")
            worst = max(worst, 1 if run.state == "failed" else 0)
    finally:
        if pool is not None:
            pool.close()
    return worst
