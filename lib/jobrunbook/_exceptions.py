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
goes through ``redact_url`` before it is put in one.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "JobrunbookError",
    "ConfigError",
    "SourceError",
    "RedisUnavailable",
    "SourceTimeout",
    "NotFound",
    "DataError",
    "RemediationRefused",
    "redact_url",
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


def redact_url(url: str | None) -> str:
    """Return ``url`` with any password replaced by ``***``.

    ``redis://:s3cret@host:6379/0`` -> ``redis://:***@host:6379/0``. Query
    parameters named password/token/secret are redacted too. A string that
    does not parse as a URL is returned as ``<unparseable url>`` rather than
    echoed, since it may be a secret itself.
    """
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, sep, _pw = userinfo.partition(":")
            if sep:
                netloc = f"{user}:***@{hostport}"
            elif parts.scheme.startswith("redis"):
                # redis://SECRET@host: redis-py reads a bare userinfo as the password
                netloc = f"***@{hostport}"
        query = parts.query
        if query:
            kept = []
            for pair in query.split("&"):
                key, eq, _value = pair.partition("=")
                if eq and key.lower() in {"password", "pass", "token", "secret", "auth", "sslpassword"}:
                    kept.append(f"{key}=***")
                else:
                    kept.append(pair)
            query = "&".join(kept)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<unparseable url>"
