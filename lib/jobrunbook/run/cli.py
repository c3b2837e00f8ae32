"""`jobrunbook run`: one run per firing alert, progress on the terminal, verdict and report path at the end."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jobrunbook._exceptions import ConfigError, NotFound
from jobrunbook._paths import absolute
from jobrunbook.config_cli import add_source_flags, resolve_sources

__all__ = ["add_arguments", "command"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--alert", metavar="FILE", type=_alert_path,
                     help="Alertmanager webhook body (version 4) or one alert, '-' = stdin")
    src.add_argument("--label", metavar="K=V", action="append", help="alert label, repeatable (alertname, queue, ...)")
    src.add_argument("--resolve", metavar="RUN_DIR", type=absolute,
                     help="close a finished run by hand (the alert resolved): report.html and rca.md say how it ended")
    add_source_flags(p, "redis", "metrics", "prometheus", "alertmanager", "logs", "health", "timeout",
                     labels=False)  # --label is the alert's own: it chooses the target too
    p.add_argument("--notebooks", type=absolute, default="notebooks", help="directory of NN_<section>.ipynb (default notebooks)")
    p.add_argument("--outputs", type=absolute, default="outputs", help="where run directories go (default outputs)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per section (default 300)")
    p.add_argument("--parallel", type=int, default=None,
                   help="sections at once (default: all of a stage with forked kernels, else cores, max 4)")
    p.add_argument("--warm", type=int, default=0, metavar="N",
                   help="run on a pool of N pre-started kernels (what the service does); 0 = fresh kernel each")
    p.add_argument("--all", action="store_true", help="with --alert: every firing alert, not only the first")


def _alert_path(text: str) -> str:
    return text if text == "-" else str(absolute(text))


def print_progress(out):
    def show(section: str, state: str, elapsed: float) -> None:
        mark = {"running": "..", "ok": "ok", "degraded": "~~", "failed": "!!", "timeout": "!!"}.get(state, "  ")
        print(f"  [{mark}] {section:<24} {state:<8} {elapsed:6.1f}s", file=out, flush=True)
    return show


def command(args: argparse.Namespace) -> int:
    from jobrunbook.kernelfork import start_fork_server

    # the kernels' fork server imports pandas, matplotlib and the lib while this process reads the alert
    server = start_fork_server() if args.warm <= 0 and not args.resolve else None
    try:
        return _command(args, server)
    finally:
        if server is not None:
            server.close()


def _command(args: argparse.Namespace, server) -> int:
    from jobrunbook.kernels import KernelPool
    from jobrunbook.run.execute import execute_run
    from jobrunbook.run.params import kernel_env, params_from_alert, params_from_labels
    from jobrunbook.webhook import read_webhook

    sources = resolve_sources(args, labels={})  # the configuration and flags; each alert then picks its target
    if args.resolve:
        return resolve_by_hand(Path(args.resolve), sources.env)
    todo: list[tuple] = []
    if args.alert:
        try:
            raw = sys.stdin.read() if args.alert == "-" else Path(args.alert).read_text(encoding="utf-8")
        except OSError as exc:
            raise NotFound(f"cannot read alert file {args.alert}: {exc.strerror}") from None
        body = read_webhook(raw, source=f"alert file {args.alert}")
        served = set(sources.settings.served_alertnames)
        for alert in body.alerts:
            if alert.alertname in served and alert.status == "firing":
                settings = sources.for_labels(alert.labels)
                todo.append((params_from_alert(alert, settings), alert.model_dump(), settings))
        if not todo:
            raise ConfigError("no firing JobFailureRate* alert in the body", hint="alerts[].status and labels.alertname")
        if not args.all:
            todo = todo[:1]
    else:
        labels = params_from_labels(args.label).labels
        settings = sources.for_labels(labels)
        todo = [(params_from_labels(args.label, settings), None, settings)]

    pool = KernelPool(size=args.warm).start() if args.warm > 0 else None
    worst = 0
    try:
        for params, alert, settings in todo:
            t0 = time.monotonic()
            print(f"jobrunbook run: {params.alertname} queue={params.queue} task_type={params.task_type or '*'} "
                  f"target={settings.target}", flush=True)
            run = execute_run(params, notebooks_dir=args.notebooks, outputs_dir=args.outputs, alert=alert, pool=pool,
                              env=kernel_env(settings, sources.env), timeout=args.timeout,
                              max_parallel=args.parallel, on_progress=print_progress(sys.stdout),
                              fork_server=server)
            print(f"verdict: {run.headline}")
            if run.failed_sections:
                print(f"sections not completed: {', '.join(run.failed_sections)}")
            print(f"report: {run.report or '(not rendered: see status.json)'}  ({time.monotonic() - t0:.1f}s)",
                  flush=True)
            print_pdf_line(run, t0)
            worst = max(worst, 1 if run.state == "failed" else 0)
    finally:
        if pool is not None:
            pool.close()
    return worst


def print_pdf_line(run, t0: float | None = None) -> None:
    """report.pdf is printed after report.html (the report comes first): wait for it and say where it is."""
    import json

    run.wait_pdf()
    try:
        status = json.loads((run.run_dir / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    took = f"  ({time.monotonic() - t0:.1f}s)" if t0 is not None else ""
    if status.get("pdf"):
        print(f"pdf:     {run.run_dir / status['pdf']}{took}", flush=True)
    elif status.get("pdf_skipped"):
        print(f"pdf:     skipped: {status['pdf_skipped']}", flush=True)


def resolve_by_hand(run_dir: Path, env) -> int:
    """``jobrunbook run --resolve RUN_DIR``: the run is closed now, its failure ratio read from the Prometheus it
    used (if any), and its report, rca.md and PDF rendered again with how it ended."""
    import json

    from jobrunbook import clock
    from jobrunbook.config import Settings
    from jobrunbook.diagnosis.evidence import parse_time
    from jobrunbook.record import read_status
    from jobrunbook.service.worker import close_run, prometheus_ratio

    status = read_status(run_dir)
    if status.get("state") in ("queued", "running"):
        raise ConfigError(f"run {run_dir.name} is still {status['state']}", hint="wait for it to finish")
    try:
        sources = json.loads((run_dir / "params.json").read_text(encoding="utf-8")).get("sources") or {}
    except (OSError, ValueError):
        sources = {}
    prom = Settings.from_public(sources).url_with_secret("prometheus_url", env) if sources else ""
    now = clock.now()
    started = parse_time(status.get("starts_at"))
    row = {"resolved_at": clock.iso(now), "time_to_resolve_s": round(now - started, 3) if started else None,
           "queue": status.get("queue", ""), "task_type": status.get("task_type", ""), "resolved_json": "{}",
           "resolved_by": "hand (jobrunbook run --resolve)"}
    closing = close_run(run_dir, row, ratio_fn=prometheus_ratio(prom) if prom else None)
    value = closing["failure_ratio_now"]
    print(f"resolved {run_dir.name} at {closing['resolved_at']}: failure ratio now "
          f"{f'{value:.1%}' if value is not None else 'unknown'} ({closing['failure_ratio_source']})")
    print(f"report: {run_dir / 'report.html'}")
    return 0
