"""Connecting to an asynq Redis: timeouts on every call, secrets kept out of messages.

``connect(url)`` returns a redis-py client whose every socket operation has a
timeout, and pings it once, so that an unreachable Redis, a timeout or a
refused password fails here with ``RedisUnavailable`` naming the redacted URL
and the command to check it. ``translate_errors`` does the same for calls made
later on that client.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from jobrunbook._exceptions import ConfigError, RedisUnavailable
from jobrunbook._urls import redact_url, url_password

__all__ = ["connect", "describe_client", "translate_errors", "PASSWORD_ENV", "DEFAULT_TIMEOUT"]

PASSWORD_ENV = "JOBRUNBOOK_REDIS_PASSWORD"
DEFAULT_TIMEOUT = 5.0


def _scrub(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***")
    return text


def _hint(shown: str) -> str:
    return f"redis-cli -u {shown} ping (a password goes in ${PASSWORD_ENV} or in the URL)"


def connect(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> redis.Redis:
    """Open a client on ``url`` and ping it.

    The password comes from the URL or, when the URL has none, from
    ``$JOBRUNBOOK_REDIS_PASSWORD``. Every call on the client times out after
    ``timeout`` seconds. Raises ``ConfigError`` for a URL that does not parse
    and ``RedisUnavailable`` when Redis cannot be reached, times out or
    refuses the password; no message contains the password.
    """
    shown = redact_url(url)
    password = url_password(url) or None
    kwargs: dict = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "decode_responses": False}
    env_password = os.environ.get(PASSWORD_ENV)
    if password is None and env_password:
        kwargs["password"] = env_password
    secret = password or env_password
    try:
        client = redis.Redis.from_url(url, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not a Redis URL: {shown}: {_scrub(str(exc), secret)}",
                          hint="redis://[:PASSWORD@]HOST:PORT/DB") from None
    with translate_errors(client, shown=shown, secret=secret):
        client.ping()
    return client


def describe_client(client: redis.Redis) -> str:
    """A printable address of the client's Redis (no password)."""
    kw = client.connection_pool.connection_kwargs
    if "path" in kw:
        return f"unix://{kw['path']}?db={kw.get('db', 0)}"
    return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


@contextmanager
def translate_errors(client: redis.Redis, *, shown: str | None = None, secret: str | None = None,
                     doing: str = "") -> Iterator[None]:
    """Turn redis-py's connection, timeout and auth errors into ``RedisUnavailable``."""
    try:
        yield
    except redis.AuthenticationError as exc:
        shown = shown or describe_client(client)
        raise RedisUnavailable(f"Redis at {shown} refused the password{doing}: {_scrub(str(exc), secret)}",
                               hint=_hint(shown)) from None
    except redis.TimeoutError as exc:
        shown = shown or describe_client(client)
        raise RedisUnavailable(f"Redis at {shown} timed out{doing}: {_scrub(str(exc), secret)}",
                               hint=_hint(shown)) from None
    except redis.ConnectionError as exc:
        shown = shown or describe_client(client)
        raise RedisUnavailable(f"Redis at {shown} is unreachable{doing}: {_scrub(str(exc), secret)}",
                               hint=_hint(shown)) from None
    except redis.ResponseError as exc:
        text = str(exc)
        if text.startswith(("NOAUTH", "WRONGPASS", "ERR AUTH", "ERR invalid password")):
            shown = shown or describe_client(client)
            raise RedisUnavailable(f"Redis at {shown} needs a valid password{doing}: {_scrub(text, secret)}",
                                   hint=_hint(shown)) from None
        raise
