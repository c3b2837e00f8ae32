"""URLs that may carry a secret: the one place that strips, reads or hides a password in one.

    redact_url("redis://:s3cret@h:6379/0")          -> "redis://:***@h:6379/0"
    split_url_password("redis://:p%40ss@h:6379/2")  -> ("redis://h:6379/2", "p@ss")
    url_password("redis://s3cret@h:6379/0")         -> "s3cret"

A bare userinfo in a Redis URL (``redis://SECRET@host``) is a password, as
redis-py reads it; elsewhere it is a user name.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["redact_url", "split_url_password", "url_password", "SECRET_QUERY_KEYS"]

SECRET_QUERY_KEYS = frozenset({"password", "pass", "token", "secret", "auth", "sslpassword"})


def _userinfo(netloc: str, scheme: str) -> tuple[str, str | None, str]:
    """(user, password or None, host:port) of a netloc."""
    if "@" not in netloc:
        return "", None, netloc
    userinfo, _, hostport = netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    if not sep:
        if scheme.startswith("redis"):
            return "", user, hostport
        return user, None, hostport
    return user, password, hostport


def url_password(url: str) -> str | None:
    """The password a URL carries (unquoted), or None."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    _user, password, _host = _userinfo(parts.netloc, parts.scheme)
    return unquote(password) if password else None


def split_url_password(url: str) -> tuple[str, str | None]:
    """``redis://:pw@h:1/0`` -> (``redis://h:1/0``, ``pw``); a URL without one comes back as it is."""
    if not url or "@" not in url:
        return url, None
    try:
        parts = urlsplit(url)
    except ValueError:
        from jobrunbook._exceptions import ConfigError

        raise ConfigError("a URL setting does not parse", hint="scheme://host:port/path") from None
    user, password, hostport = _userinfo(parts.netloc, parts.scheme)
    if not password:
        return url, None
    netloc = f"{user}@{hostport}" if user else hostport
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), unquote(password)


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
        user, password, hostport = _userinfo(netloc, parts.scheme)
        if password is not None:
            netloc = f"{user}:***@{hostport}" if user or ":" in netloc.rpartition("@")[0] else f"***@{hostport}"
        query = parts.query
        if query:
            kept = []
            for pair in query.split("&"):
                key, eq, _value = pair.partition("=")
                if eq and key.lower() in SECRET_QUERY_KEYS:
                    kept.append(f"{key}=***")
                else:
                    kept.append(pair)
            query = "&".join(kept)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<unparseable url>"
