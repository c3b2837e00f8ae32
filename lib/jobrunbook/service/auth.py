"""The webhook's shared secret: ``Authorization: Bearer <token>`` or basic auth, compared in constant time.

Alertmanager sends either, from ``webhook_configs[].http_config``:
``authorization: {type: Bearer, credentials: T}`` or ``basic_auth: {username: U, password: T}``.
The token comes from the environment (``JOBRUNBOOK_WEBHOOK_TOKEN``), never from a flag,
and never appears in a message.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os

from jobrunbook._exceptions import ConfigError

__all__ = ["TOKEN_ENV", "check_authorization", "token_from_env", "MIN_TOKEN_CHARS"]

TOKEN_ENV = "JOBRUNBOOK_WEBHOOK_TOKEN"
MIN_TOKEN_CHARS = 16


def token_from_env(environ: dict[str, str] | None = None, *, required: bool = True) -> str | None:
    """The token from ``$JOBRUNBOOK_WEBHOOK_TOKEN``; ConfigError if required and missing or short."""
    token = (environ if environ is not None else os.environ).get(TOKEN_ENV, "").strip()
    if not token:
        if required:
            raise ConfigError(f"${TOKEN_ENV} is not set: the webhook would accept anyone",
                              hint=f"export {TOKEN_ENV}=$(openssl rand -hex 24), the same value as "
                                   "Alertmanager's http_config.authorization.credentials")
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"${TOKEN_ENV} is shorter than {MIN_TOKEN_CHARS} characters",
                          hint="openssl rand -hex 24")
    return token


def _eq(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8"))


def check_authorization(header: str | None, token: str | None) -> bool:
    """True if ``header`` carries ``token`` as a Bearer credential or as the basic-auth password.

    ``token`` None means authentication is off (``--allow-no-token``): always True.
    """
    if token is None:
        return True
    if not header or len(header) > 4096:
        return False
    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        return _eq(value, token)
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        _user, sep, password = decoded.partition(":")
        return bool(sep) and _eq(password, token)
    return False
