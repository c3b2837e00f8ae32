"""Reading a jobrunbook config file: YAML with line numbers, and no secrets in it.

``read_config_file(path)`` returns the parsed mapping and a ``Lines`` that
knows the line of every key (``lines.at("targets", 0, "match")``), so that an
unknown key or a bad value is reported as ``FILE line N``. ``find_secrets``
refuses what must live in the environment instead: a key named like a secret
(``password``, ``token``, ``secret``, ``dsn``, ``api_key``; a key ending in
``_env`` names a variable and is fine) and any value that holds a password
(``scheme://user:PASSWORD@host``, ``redis://PASSWORD@host``, ``?password=``,
a ``password=`` pair of a key=value DSN).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from jobrunbook._exceptions import ConfigError
from jobrunbook._urls import redact_url

__all__ = ["Lines", "read_config_file", "find_secrets", "unknown_key_error", "SECRET_KEY_WORDS"]

SECRET_KEY_WORDS = ("password", "passwd", "token", "secret", "dsn", "api_key", "apikey", "credential")
MAX_FILE_BYTES = 1 << 20


class Lines:
    """Line numbers (1-based) of the keys of a YAML document, by path."""

    def __init__(self, path: str, node: yaml.Node | None) -> None:
        self.path = path
        self._lines: dict[tuple, int] = {}
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, prefix: tuple) -> None:
        self._lines.setdefault(prefix, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else str(key)
                self._lines[(*prefix, name)] = key.start_mark.line + 1
                self._walk_value(value, (*prefix, name))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*prefix, i))

    def _walk_value(self, node: yaml.Node, prefix: tuple) -> None:
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            for_key = self._lines[prefix]
            self._walk(node, prefix)
            self._lines[prefix] = for_key

    def at(self, *path) -> int | None:
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return self._lines.get(())

    def where(self, *path) -> str:
        """``FILE line N`` for ``path`` (or the nearest enclosing key)."""
        line = self.at(*path)
        return f"{self.path} line {line}" if line else self.path


def read_config_file(path: str | Path) -> tuple[dict, Lines]:
    """Parse a YAML config file into (mapping, lines); ConfigError for anything but a mapping."""
    path = Path(path)
    shown = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {shown} does not exist",
                          hint="pass --config FILE or set JOBRUNBOOK_CONFIG to an existing file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {shown}: {exc.strerror}", hint=f"ls -l {shown}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"config file {shown} is larger than {MAX_FILE_BYTES} bytes", hint="is this the right file?")
    try:
        text = raw.decode("utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise ConfigError(f"config file {shown} is not UTF-8 text", hint=f"file {shown}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {shown}{where} is not valid YAML: {problem}",
                          hint=f"python3 -c 'import yaml,sys; yaml.safe_load(open(sys.argv[1]))' {shown}") from None
    lines = Lines(shown, node)
    if data is None:
        return {}, lines
    if not isinstance(data, dict):
        raise ConfigError(f"config file {shown} must hold a mapping of settings, not a {type(data).__name__}",
                          hint="see deploy/jobrunbook.example.yml")
    return data, lines


def _holds_password(value: str) -> bool:
    if "://" in value:
        return redact_url(value) != value
    low = value.lower()
    return "password=" in low.replace(" ", "")


def _walk_values(value: Any, path: tuple) -> Iterator[tuple[tuple, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_values(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk_values(item, (*path, i))


def _secret_key(key: str) -> bool:
    low = key.lower()
    return not low.endswith("_env") and any(word in low for word in SECRET_KEY_WORDS)


def find_secrets(data: dict, lines: Lines, env_for: dict[str, str]) -> None:
    """Raise ConfigError at the first secret in ``data``.

    ``env_for`` maps a top-level key to the environment variable that should
    hold its secret instead (``redis_url`` -> ``JOBRUNBOOK_REDIS_PASSWORD``).
    """
    for path, value in _walk_values(data, ()):
        in_target = len(path) >= 2 and path[0] == "targets"
        field = path[2] if in_target and len(path) > 2 else (path[0] if path else "")
        if path and isinstance(path[-1], str) and _secret_key(path[-1]):
            what = f"key {path[-1]!r} looks like a secret"
        elif isinstance(value, str) and _holds_password(value):
            what = f"{'.'.join(str(p) for p in path) or 'a value'} holds a password ({redact_url(value) if '://' in value else 'password=...'})"
        else:
            continue
        env = env_for.get(str(field)) or env_for.get(str(path[-1])) or "a JOBRUNBOOK_* environment variable"
        if in_target and ("redis" in str(field) or "redis" in str(path[-1])):
            fix = "keep the password out of the file: set redis_password_env: NAME in this target and export NAME"
        elif in_target and ("dsn" in str(field) or "postgres" in str(field)):
            fix = "keep the DSN out of the file: set postgres_dsn_env: NAME in this target and export NAME"
        elif in_target:
            fix = f"remove it from the file and put it in the environment ({env})"
        else:
            fix = f"remove it from the file and set ${env} instead"
        raise ConfigError(f"config file {lines.where(*path)}: {what}; secrets are never read from a config file",
                          hint=fix)


def unknown_key_error(key: str, valid: list[str], lines: Lines, path: tuple, what: str = "setting") -> ConfigError:
    """A ConfigError naming the unknown key, where it is, the closest valid key and all valid ones."""
    close = difflib.get_close_matches(key, valid, n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"config file {lines.where(*path)}: unknown {what} {key!r}{guess}",
                       hint="valid keys: " + ", ".join(sorted(valid)))
