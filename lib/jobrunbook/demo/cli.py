"""`jobrunbook demo`: stand up the live incident, print the inspector's summary.

    jobrunbook demo [--scenario NAME] [--seed N] [--asynq-version v0.26.0] [--once] [--state-dir DIR]
                    [--port-file FILE] [--no-prometheus]

Without ``--once`` the worker keeps running until Ctrl-C, then everything it
started (its redis-server and Prometheus included) is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from jobrunbook._paths import absolute
from jobrunbook.asynq.versions import KNOWN_VERSIONS
from jobrunbook.config_cli import add_source_flags
from jobrunbook.demo import DEFAULT_STATE_DIR, SCENARIOS, Demo, start_demo

__all__ = ["add_arguments", "command", "render_summary"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="mixed", choices=sorted(SCENARIOS),
                        help="which incident to stand up (default: mixed)")
    parser.add_argument("--seed", type=int, default=1, help="same seed, same task ids, payloads and errors")
    parser.add_argument("--asynq-version", default="v0.24.1", choices=KNOWN_VERSIONS,
                        help="the asynq release whose data the worker writes (default v0.24.1; v0.25+: "
                             "panic error cause by ..., v0.26.0: headers on the tasks)")
    parser.add_argument("--once", action="store_true", help="write the incident, print the summary, stop")
    parser.add_argument("--state-dir", type=absolute, default=DEFAULT_STATE_DIR,
                        help="where demo.json, alert.json and worker.log go (default: outputs/demo)")
    parser.add_argument("--port-file", type=absolute, default=None,
                        help="also write demo.json's content to this file (for scripts waiting on the demo)")
    parser.add_argument("--tick", type=float, default=1.0, help="seconds between live worker steps")
    parser.add_argument("--failed-tasks", type=int, default=0, metavar="N",
                        help="a large incident: the failed tasks copied (same groups, same shares) until there are N")
    parser.add_argument("--notebooks", type=absolute, default=os.environ.get("JOBRUNBOOK_NOTEBOOKS", "notebooks"),
                        help="the section notebooks to run against the incident (default: ./notebooks)")
    parser.add_argument("--no-run", dest="run", action="store_false",
                        help="only stand up the incident; do not run the runbook against it")
    parser.add_argument("--no-prometheus", dest="prometheus", action="store_false",
                        help="do not start the demo's own Prometheus (default: started when on PATH)")
    add_source_flags(parser, targets=False)


def render_summary(demo: Demo) -> str:
    """The inspector's summary of the demo's Redis (jobrunbook.asynq.summary), with where everything is."""
    from jobrunbook.asynq.inspector import Inspector
    from jobrunbook.asynq.summary import render_text, summarize

    client = demo.client()
    try:
        with demo._lock:
            text = render_text(summarize(Inspector(client)))
    finally:
        client.close()
    truth = demo.truth
    head = [
        f"demo scenario {demo.scenario.name} (seed {demo.seed}, asynq {demo.asynq_version}): "
        f"{demo.scenario.description}",
        f"  redis        {demo.redis_url} ({demo.redis.kind})",
        f"  metrics      {demo.metrics_url}",
        f"  prometheus   {demo.prometheus_url or 'none: ' + (demo.prometheus_note or 'not started')}",
        f"  external API {demo.external_health_url}",
        f"  postgres     {demo.postgres_dsn}",
        f"  worker log   {demo.log_path}",
        f"  alert        {demo.alert_path}",
        f"  onset        {truth.get('onset')}" + (f"  deploy at {truth['deploy_at']}" if truth.get("deploy_at") else ""),
        f"  truth        dominant cause {truth.get('dominant_cause')}, measured "
        f"{truth.get('measured', {}).get('ranking')}",
        "",
    ]
    return "\n".join(head) + text


def run_runbook(demo: Demo, notebooks: Path, args: argparse.Namespace | None = None) -> int:
    """Run the whole runbook against the demo's alert, as Alertmanager's webhook would; print the report's path.

    The sources are the incident's own, on top of the configuration (the config file and ``JOBRUNBOOK_*``
    settings other than the sources still apply, e.g. metric names).
    """
    from jobrunbook.config_cli import resolve_sources
    from jobrunbook.run import execute_run, params_from_alert
    from jobrunbook.run.cli import print_pdf_line, print_progress
    from jobrunbook.run.params import kernel_env

    if not notebooks.is_dir():
        print(f"no notebooks at {notebooks}: run from the project's folder or pass --notebooks", file=sys.stderr)
        return 2
    alert = demo.alert["alerts"][0]
    outputs = demo.state_dir.parent
    print(f"\nrunning the runbook for {alert['labels'].get('alertname')} "
          f"{alert['labels'].get('queue')}/{alert['labels'].get('task_type')} ...", flush=True)
    src = resolve_sources(args or argparse.Namespace(), labels={}, extra=demo.source_settings())
    settings = src.config.base  # the incident's sources: no target of the configuration applies to the demo
    params = params_from_alert(alert, settings)
    env = {**kernel_env(settings, src.env), settings.postgres_dsn_env: demo.postgres_dsn}
    run = execute_run(params, notebooks_dir=notebooks, outputs_dir=outputs, alert=alert, env=env,
                      on_progress=print_progress(sys.stdout))
    print(f"\nverdict: {run.headline}")
    print(f"report:  {run.report}", flush=True)
    print_pdf_line(run)
    print(f"index:   {outputs / 'index.html'}", flush=True)
    return 0 if run.state == "done" else 1


def command(args: argparse.Namespace) -> int:
    # handlers first: a SIGTERM while the demo starts still stops its redis-server and Prometheus
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: done.set())
    demo = start_demo(args.scenario, args.seed, args.state_dir, live=not args.once, tick_seconds=args.tick,
                      prometheus=getattr(args, "prometheus", True),
                      asynq_version=getattr(args, "asynq_version", "v0.24.1"),
                      failed_tasks=getattr(args, "failed_tasks", 0))
    try:
        if args.port_file:
            args.port_file.parent.mkdir(parents=True, exist_ok=True)
            args.port_file.write_text(json.dumps(demo.info(), indent=2) + "\n")
        print(render_summary(demo), flush=True)
        code = run_runbook(demo, args.notebooks, args) if args.run else 0
        if args.once:
            return code
        print("\nthe incident is live (the worker keeps processing); Ctrl-C to stop", flush=True)
        try:
            while not done.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        print("\n" + render_summary(demo))
        return 0
    finally:
        demo.stop()
        print(f"demo stopped; records in {demo.state_dir}", file=sys.stderr)
