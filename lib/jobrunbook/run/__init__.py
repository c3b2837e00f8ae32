"""A run of the runbook: alert -> parameters -> executed notebooks -> report.

    params.py   alert / labels -> RunParams (validated, no secret)
    rundir.py   the run directory's name, layout and status.json
    execute.py  execute_run: papermill over the section notebooks, in stages
    cli.py      `jobrunbook run`
"""

from jobrunbook.run.execute import (
    DEFAULT_TIMEOUT,
    Run,
    SectionResult,
    execute_run,
    plan_stages,
    set_run_state,
)
from jobrunbook.run.params import (
    SERVED_ALERTNAMES,
    RunParams,
    params_from_alert,
    params_from_labels,
    params_from_webhook,
    split_secrets,
)
from jobrunbook.run.rundir import create_run_dir, discover_notebooks, make_run_id, read_status, safe_component

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
    "split_secrets",
    "create_run_dir",
    "discover_notebooks",
    "make_run_id",
    "read_status",
    "safe_component",
]
