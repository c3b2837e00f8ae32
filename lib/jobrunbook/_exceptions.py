"""The errors jobrunbook raises, and what each carries.

    JobrunbookError                 base; .hint says how to check
    ├── ConfigError                 bad flag, label, URL or setting
    ├── SourceError                 an evidence source could not be read
    │   ├── RedisUnavailable        unreachable, timed out, refused auth
    │   └── SourceTimeout           a source did not answer in time
    ├── NotFound                    unknown queue, task id or run
    ├── DataError                   data that is not what asynq writes
    └── RemediationRefused          a change was refused before it started

Messages name the thing that failed and never contain a password: every URL
goes through ``jobrunbook._urls.redact_url`` before it is put in one.
"""

from __future__ import annotations

__all__ = [
    "JobrunbookError",
    "ConfigError",
    "SourceError",
    "RedisUnavailable",
    "SourceTimeout",
    "NotFound",
    "DataError",
    "RemediationRefused",
]


class JobrunbookError(Exception):
    """Base of every error jobrunbook raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (check: {self.hint})"
        return self.message


class ConfigError(JobrunbookError):
    pass


class SourceError(JobrunbookError):
    pass


class RedisUnavailable(SourceError):
    pass


class SourceTimeout(SourceError):
    pass


class NotFound(JobrunbookError):
    pass


class DataError(JobrunbookError):
    pass


class RemediationRefused(JobrunbookError):
    pass
