"""Diagnosis: the runbook's common causes as data, ranked by the evidence."""

from jobrunbook.diagnosis.causes import CAUSES, CAUSES_BY_KEY, Cause, match_cause
from jobrunbook.diagnosis.commands import ACTIONS, check_asynq_command, render_actions
from jobrunbook.diagnosis.escalation import checklist, escalation, incident_update
from jobrunbook.diagnosis.evidence import DurationStat, ErrorGroup, Evidence, Probe, parse_time
from jobrunbook.diagnosis.rank import Diagnosis, RankedCause, diagnose

__all__ = [
    "ACTIONS", "CAUSES", "CAUSES_BY_KEY", "Cause", "Diagnosis", "DurationStat", "ErrorGroup", "Evidence",
    "Probe", "RankedCause", "check_asynq_command", "checklist", "diagnose", "escalation", "incident_update",
    "match_cause", "parse_time", "render_actions",
]
