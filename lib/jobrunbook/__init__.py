"""jobrunbook: the "Job Failure Rate" runbook, executed.

The public names are re-exported here; everything else is private.
"""

from jobrunbook._exceptions import (
    ConfigError,
    DataError,
    JobrunbookError,
    NotFound,
    RedisUnavailable,
    RemediationRefused,
    SourceError,
    SourceTimeout,
)
from jobrunbook._urls import redact_url
from jobrunbook.fingerprint import fingerprint

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "JobrunbookError",
    "NotFound",
    "RedisUnavailable",
    "RemediationRefused",
    "SourceError",
    "SourceTimeout",
    "fingerprint",
    "redact_url",
    "__version__",
]
