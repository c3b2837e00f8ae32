"""The runbook's sections, one function each: what a notebook cell calls.

Each function reads one source, writes the section's findings (JSON, through
``jobrunbook.findings``) and returns a ``Section``: a table, charts and one
sentence of reading, which the notebook displays. A source that cannot be
reached is a finding ("Redis unreachable: ..."), never an exception: the run
always gets its report.

    _base.py         Context (where the sources are), Section, context()
    alert.py         00 assess_alert
    logs.py          01 read_worker_logs
    asynq.py         02 failing_task_types
    metrics.py       03 job_metrics
    dependencies.py  04 check_dependencies
    diagnosis.py     05 diagnose_findings
    remediation.py   06 remediation_plan
"""

from jobrunbook.sections._base import Context, Section, context
from jobrunbook.sections.alert import assess_alert
from jobrunbook.sections.asynq import failing_task_types
from jobrunbook.sections.dependencies import check_dependencies
from jobrunbook.sections.diagnosis import diagnose_findings
from jobrunbook.sections.logs import read_worker_logs
from jobrunbook.sections.metrics import job_metrics
from jobrunbook.sections.remediation import remediation_plan

__all__ = ["Context", "Section", "context", "assess_alert", "read_worker_logs", "failing_task_types",
           "job_metrics", "check_dependencies", "diagnose_findings", "remediation_plan"]
