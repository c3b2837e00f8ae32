"""A run of the runbook: alert -> parameters -> executed notebooks -> report.

    params.py   alert / labels -> RunParams (validated, no secret)
    rundir.py   the run directory's name, layout and status.json
    execute.py  execute_run: papermill over the section notebooks, in stages
    cli.py      `jobrunbook run`
"""

from jobrunbook._lazy import lazy_exports

# Imported on first use (PEP 562): a notebook cell that needs one source does
# not pay for importing every other source's dependencies.
_EXPORTS = {
    "DEFAULT_TIMEOUT": "jobrunbook.run.execute",
    "Run": "jobrunbook.run.execute",
    "SectionResult": "jobrunbook.run.execute",
    "execute_run": "jobrunbook.run.execute",
    "plan_stages": "jobrunbook.run.execute",
    "set_run_state": "jobrunbook.run.execute",
    "SERVED_ALERTNAMES": "jobrunbook.run.params",
    "RunParams": "jobrunbook.run.params",
    "params_from_alert": "jobrunbook.run.params",
    "params_from_labels": "jobrunbook.run.params",
    "params_from_webhook": "jobrunbook.run.params",
    "kernel_env": "jobrunbook.run.params",
    "create_run_dir": "jobrunbook.run.rundir",
    "discover_notebooks": "jobrunbook.run.rundir",
    "make_run_id": "jobrunbook.run.rundir",
    "read_status": "jobrunbook.record",
    "safe_component": "jobrunbook.run.rundir",
}

__all__ = [
    "DEFAULT_TIMEOUT",
    "Run",
    "SectionResult",
    "execute_run",
    "plan_stages",
    "set_run_state",
    "SERVED_ALERTNAMES",
    "RunParams",
    "params_from_alert",
    "params_from_labels",
    "params_from_webhook",
    "kernel_env",
    "create_run_dir",
    "discover_notebooks",
    "make_run_id",
    "read_status",
    "safe_component",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
