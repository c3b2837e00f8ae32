"""Where each evidence source lives, per target, and never a secret.

Precedence, lowest first: the defaults below < the YAML config file
(``--config FILE`` or ``$JOBRUNBOOK_CONFIG``) < ``JOBRUNBOOK_*`` environment
variables. That gives the base ``Settings``. The file may also hold
``targets:``, each with ``match:`` (alert label -> anchored regular
expression, as Alertmanager's ``match_re``; a label the alert lacks is
matched as "") and overrides of any non-secret setting. ``settings_for(labels)``
applies the FIRST target whose every matcher matches, on top of the base
(so a target's override beats the environment: it is the more specific); no
match gives the base. One deployment thus watches several clusters or
namespaces.

Secrets come only from the environment: the Redis password from
``$JOBRUNBOOK_REDIS_PASSWORD`` (or embedded in ``$JOBRUNBOOK_REDIS_URL``), the
Postgres DSN from ``$JOBRUNBOOK_POSTGRES_DSN``; a target names other
variables (``redis_password_env: EU_REDIS_PASSWORD``), never values. A file
holding a secret is refused. ``Settings.public()`` is safe to write anywhere;
``redis_url_with_secret()`` and ``postgres_dsn()`` read the secrets at run time.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from jobrunbook._exceptions import ConfigError, redact_url
from jobrunbook.config_file import Lines, find_secrets, read_config_file, unknown_key_error
from jobrunbook.run.params import SERVED_ALERTNAMES
from jobrunbook.sources.alerts import RELATED_ALERTS
from jobrunbook.sources.logs import LOG_KINDS
from jobrunbook.sources.metrics import MetricNames

__all__ = ["Settings", "Target", "Config", "load_config", "load_settings", "settings_for", "ENV_NAMES",
           "CONFIG_ENV", "REDIS_PASSWORD_ENV", "POSTGRES_DSN_ENV"]

CONFIG_ENV = "JOBRUNBOOK_CONFIG"
REDIS_PASSWORD_ENV = "JOBRUNBOOK_REDIS_PASSWORD"
POSTGRES_DSN_ENV = "JOBRUNBOOK_POSTGRES_DSN"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True, repr=False)
class Settings:
    """Where the sources of one target live. No field ever holds a secret read from a file."""

    target: str = "default"  # name of the target these settings are for
    redis_url: str = "redis://127.0.0.1:6379/0"  # asynq's Redis, without its password
    redis_password_env: str = REDIS_PASSWORD_ENV  # variable holding the Redis password
    metrics_url: str = "http://127.0.0.1:8080/metrics"  # the worker's /metrics ("" = not used)
    prometheus_url: str = ""  # Prometheus base URL ("" = not used)
    alertmanager_url: str = ""  # Alertmanager base URL ("" = not used)
    log_source: str = "docker"  # docker | kubectl | file | command ("" = not used)
    log_path: str = ""  # log_source file: the worker's log file
    log_command: tuple[str, ...] = ()  # log_source command: argv printing the worker's logs
    worker_container: str = "worker"  # docker container (logs, recommended commands)
    worker_deployment: str = "worker"  # Kubernetes deployment (logs, recommended commands)
    namespace: str = ""  # Kubernetes namespace ("" = kubectl's default)
    kube_context: str = ""  # kubectl context ("" = current)
    redis_container: str = "redis"  # docker container of Redis, for recommended commands
    postgres_container: str = "postgres"  # docker container of Postgres, for recommended commands
    postgres_dsn_env: str = POSTGRES_DSN_ENV  # variable holding the Postgres DSN
    health_urls: Mapping[str, str] = field(default_factory=dict)  # external API name -> health URL
    task_timeout_s: float = 300.0  # asynq.Timeout of the tasks (runbook: 5 min)
    source_timeout_s: float = 5.0  # how long each source may take to answer
    served_alertnames: tuple[str, ...] = SERVED_ALERTNAMES  # alerts this runbook answers
    related_alerts: tuple[str, ...] = RELATED_ALERTS  # neighbours looked up in Alertmanager
    metric_names: MetricNames = MetricNames()  # metric and label names of the worker's metrics

    def __post_init__(self) -> None:
        _validate(self)

    def __repr__(self) -> str:
        return f"Settings({self.public()!r})"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def public(self) -> dict[str, Any]:
        """A JSON-ready dict without secrets (URLs redacted): for params.json, notebooks, reports."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_url"):
                value = redact_url(value)
            elif f.name == "health_urls":
                value = {k: redact_url(v) for k, v in value.items()}
            elif f.name == "metric_names":
                value = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(value).items()}
            elif f.name == "log_command":
                value = [redact_url(a) if "://" in a else a for a in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_public(cls, data: Mapping[str, Any]) -> Settings:
        """The inverse of ``public()`` (e.g. from a notebook's parameters); unknown keys are a ConfigError."""
        return _from_mapping(cls(), dict(data), None, ())

    def redis_password(self, env: Mapping[str, str] | None = None) -> str | None:
        """The Redis password from the environment: ``$<redis_password_env>``, else one embedded in
        ``$JOBRUNBOOK_REDIS_URL`` when that names this same host, port and db."""
        env = os.environ if env is None else env
        if env.get(self.redis_password_env):
            return env[self.redis_password_env]
        stripped, password = _split_password(env.get("JOBRUNBOOK_REDIS_URL", ""))
        if password and _same_server(stripped, self.redis_url):
            return password
        return None

    def redis_url_with_secret(self, env: Mapping[str, str] | None = None) -> str:
        """``redis_url`` with the password from the environment put in: for connecting, never for printing."""
        password = self.redis_password(env)
        if not password:
            return self.redis_url
        parts = urlsplit(self.redis_url)
        user = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{user}:{quote(password, safe='')}@{host}"
        return parts._replace(netloc=netloc).geturl()

    def postgres_dsn(self, env: Mapping[str, str] | None = None) -> str | None:
        """The Postgres DSN from ``$<postgres_dsn_env>`` (None when not set)."""
        env = os.environ if env is None else env
        return env.get(self.postgres_dsn_env) or None


# ---------------------------------------------------------------- values

_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_SETTABLE = [name for name in _FIELDS if name != "target"]
_METRIC_FIELDS = [f.name for f in dataclasses.fields(MetricNames)]

# field -> environment variable; metric names are JOBRUNBOOK_METRIC_<FIELD>
ENV_NAMES: dict[str, str] = {name: f"JOBRUNBOOK_{name.upper()}" for name in _SETTABLE if name != "metric_names"}
ENV_NAMES["log_path"] = "JOBRUNBOOK_LOG_FILE"
ENV_NAMES.update({f"metric_names.{m}": f"JOBRUNBOOK_METRIC_{m.upper()}" for m in _METRIC_FIELDS})
# secret-bearing keys a file might try: where the secret goes instead
_SECRET_ENV = {"redis_url": REDIS_PASSWORD_ENV, "redis_password": REDIS_PASSWORD_ENV,
               "postgres_dsn": POSTGRES_DSN_ENV, "postgres_password": POSTGRES_DSN_ENV,
               "metrics_url": "JOBRUNBOOK_METRICS_URL", "prometheus_url": "JOBRUNBOOK_PROMETHEUS_URL",
               "alertmanager_url": "JOBRUNBOOK_ALERTMANAGER_URL", "health_urls": "JOBRUNBOOK_HEALTH_URLS"}


def _split_password(url: str) -> tuple[str, str | None]:
    from jobrunbook.run.params import _strip_password

    if not url:
        return url, None
    return _strip_password(url)


def _same_server(a: str, b: str) -> bool:
    try:
        pa, pb = urlsplit(a), urlsplit(b)
        return (pa.hostname, pa.port or 6379, pa.path.strip("/") or "0") == \
               (pb.hostname, pb.port or 6379, pb.path.strip("/") or "0")
    except ValueError:
        return False


def _bad(what: str, lines: Lines | None, path: tuple, hint: str) -> ConfigError:
    where = f"config file {lines.where(*path)}: " if lines is not None else ""
    return ConfigError(f"{where}{what}", hint=hint)


def _coerce(name: str, value: Any, lines: Lines | None, path: tuple, *, from_env: bool = False) -> Any:
    """A raw value (from YAML, or an env string when ``from_env``) -> the field's type."""
    label = ENV_NAMES.get(name, name) if from_env else name
    if name == "metric_names":
        if not isinstance(value, Mapping):
            raise _bad(f"{label} must be a mapping of " + ", ".join(_METRIC_FIELDS), lines, path,
                       "metric_names: {processed: job_processed_total, ...}")
        current = {}
        for key, item in value.items():
            if key not in _METRIC_FIELDS:
                if lines is None:
                    raise ConfigError(f"unknown metric name setting {key!r}", hint="valid: " + ", ".join(_METRIC_FIELDS))
                raise unknown_key_error(str(key), _METRIC_FIELDS, lines, (*path, key), "metric name setting")
            if key == "failed_values":
                current[key] = _coerce("served_alertnames", item, lines, (*path, key), from_env=from_env)
            else:
                current[key] = _coerce("namespace", item, lines, (*path, key), from_env=from_env)
        return current
    if name in ("task_timeout_s", "source_timeout_s"):
        try:
            number = float(value)
            if isinstance(value, bool) or not 0 < number <= 86400:
                raise ValueError
        except (TypeError, ValueError):
            raise _bad(f"{label} must be a number of seconds in (0, 86400], not {str(value)[:40]!r}", lines, path,
                       f"{name}: 300") from None
        return number
    if name == "health_urls":
        if from_env and isinstance(value, str):
            pairs = [p.strip() for p in value.split(",") if p.strip()]
            value = dict(p.split("=", 1) if "=" in p.split("://", 1)[0] else (urlsplit(p).hostname or p, p)
                         for p in pairs)
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in value.items()):
            raise _bad(f"{label} must map a name to a URL", lines, path,
                       "health_urls: {payments: https://api.example.com/health}")
        return {k: _url(k, v, lines, (*path, k), ("http", "https")) for k, v in value.items()}
    if name in ("served_alertnames", "related_alerts", "log_command"):
        if from_env and isinstance(value, str):
            value = shlex.split(value) if name == "log_command" else [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, str) and name == "log_command":
            value = shlex.split(value)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise _bad(f"{label} must be a list of strings", lines, path, f"{name}: [a, b]")
        return tuple(value)
    if not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and name in ("namespace", "kube_context"):
            return str(value)
        raise _bad(f"{label} must be a string, not {type(value).__name__}", lines, path, f"{name}: \"...\"")
    if name == "log_path" and value:
        # a relative log file is relative to the config file that names it, or to where the user stands
        from jobrunbook._paths import absolute

        return str(absolute(value, Path(lines.path).resolve().parent if lines is not None else None))
    if name.endswith("_url") and value:
        schemes = ("redis", "rediss", "unix") if name == "redis_url" else ("http", "https")
        return _url(name, value, lines, path, schemes)
    return value


def _url(name: str, value: str, lines: Lines | None, path: tuple, schemes: tuple[str, ...]) -> str:
    try:
        parts = urlsplit(value)
        ok = parts.scheme in schemes and (parts.netloc or parts.scheme == "unix")
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        ok = False
    if not ok:
        raise _bad(f"{name} is not a {'/'.join(schemes)} URL: {redact_url(value) or repr(value)}", lines, path,
                   f"{schemes[0]}://host:port" + ("/0" if schemes[0] == "redis" else ""))
    return value


def _validate(s: Settings) -> None:
    if s.log_source not in ("", *LOG_KINDS):
        raise ConfigError(f"log_source must be one of {', '.join(LOG_KINDS)} (or empty), not {s.log_source!r}",
                          hint="export JOBRUNBOOK_LOG_SOURCE=docker")
    if s.log_source == "file" and not s.log_path:
        raise ConfigError("log_source 'file' needs log_path", hint="export JOBRUNBOOK_LOG_FILE=/var/log/worker.log")
    if s.log_source == "command" and not s.log_command:
        raise ConfigError("log_source 'command' needs log_command",
                          hint="export JOBRUNBOOK_LOG_COMMAND='journalctl -u worker --since -1h'")
    for name in ("redis_password_env", "postgres_dsn_env"):
        if not _ENV_NAME.match(getattr(s, name)):
            raise ConfigError(f"{name} must be an environment variable NAME, not {getattr(s, name)[:20]!r}...",
                              hint=f"{name}: EU_REDIS_PASSWORD (then export that variable)")
    if "@" in urlsplit(s.redis_url).netloc:
        raise ConfigError(f"redis_url holds a password ({redact_url(s.redis_url)})",
                          hint=f"put the password in ${s.redis_password_env}, the URL without it in the settings")


def _from_mapping(base: Settings, data: dict, lines: Lines | None, path: tuple, *,
                  extra: tuple[str, ...] = ()) -> Settings:
    """``base`` with the settings in ``data`` applied (keys in ``extra`` are ignored here)."""
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key in extra:
            continue
        if key not in _FIELDS or (key == "target" and lines is not None):
            valid = [*_SETTABLE, *extra] if lines is not None else list(_FIELDS)
            if lines is None:
                raise ConfigError(f"unknown setting {key!r}", hint="valid keys: " + ", ".join(sorted(valid)))
            raise unknown_key_error(str(key), valid, lines, (*path, key))
        changes[key] = _coerce(key, value, lines, (*path, key))
    if "metric_names" in changes:
        changes["metric_names"] = dataclasses.replace(base.metric_names, **changes["metric_names"])
    try:
        return dataclasses.replace(base, **changes)
    except ConfigError as exc:
        if lines is None:
            raise
        raise ConfigError(f"config file {lines.where(*path)}: {exc.message}", hint=exc.hint) from None


def _from_env(base: Settings, env: Mapping[str, str]) -> Settings:
    changes: dict[str, Any] = {}
    metric: dict[str, Any] = {}
    for key, var in ENV_NAMES.items():
        if var not in env:
            continue
        raw = env[var]
        if key.startswith("metric_names."):
            sub = key.split(".", 1)[1]
            metric[sub] = tuple(v.strip() for v in raw.split(",") if v.strip()) if sub == "failed_values" else raw
            continue
        if key == "redis_url":
            raw, _password = _split_password(raw)  # the password stays in the environment
        if key == "log_source" and ":" in raw:
            raw, changes = _log_source_shorthand(raw, changes)
        changes[key] = _coerce(key, raw, None, (), from_env=True)
    if metric:
        changes["metric_names"] = dataclasses.replace(base.metric_names, **metric)
    return dataclasses.replace(base, **changes)


def _log_source_shorthand(raw: str, changes: dict) -> tuple[str, dict]:
    """``docker:NAME``, ``kubectl:deployment/NAME`` (or ``k8s:``), ``file:/path`` as in ``jobrunbook run``."""
    kind, _, rest = raw.partition(":")
    kind = {"k8s": "kubectl", "kubernetes": "kubectl"}.get(kind, kind)
    if kind == "docker":
        changes["worker_container"] = rest
    elif kind == "kubectl":
        changes["worker_deployment"] = rest.removeprefix("deployment/").removeprefix("deploy/")
    elif kind == "file":
        changes["log_path"] = _coerce("log_path", rest, None, (), from_env=True)
    return kind, changes


# ---------------------------------------------------------------- targets

@dataclass(frozen=True)
class Target:
    """Overrides applied when an alert's labels match."""

    name: str
    match: Mapping[str, re.Pattern]
    settings: Settings  # the base with this target's overrides

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(p.fullmatch(str(labels.get(k, ""))) for k, p in self.match.items())


@dataclass(frozen=True)
class Config:
    """The base settings, the targets, and the file they came from."""

    base: Settings
    targets: tuple[Target, ...] = ()
    path: str | None = None

    def settings_for(self, labels: Mapping[str, str] | None = None) -> Settings:
        """The first target whose matchers all match ``labels``; else the base."""
        for target in self.targets:
            if target.matches(labels or {}):
                return target.settings
        return self.base

    def all_settings(self) -> list[Settings]:
        """The base and every target's settings (what ``jobrunbook check`` probes)."""
        return [self.base, *(t.settings for t in self.targets)]


def _targets(raw: Any, base: Settings, lines: Lines) -> tuple[Target, ...]:
    if not isinstance(raw, list):
        raise _bad("targets must be a list of {name, match, overrides...}", lines, ("targets",),
                   "targets:\n  - name: eu-1\n    match: {cluster: eu-1}\n    redis_url: redis://redis.eu-1:6379/0")
    out, seen = [], set()
    for i, item in enumerate(raw):
        path = ("targets", i)
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise _bad(f"target {i + 1} needs a name", lines, path, "- name: eu-1")
        name = item["name"]
        if name in seen or name == "default":
            raise _bad(f"target name {name!r} is used twice (or is the reserved 'default')", lines, path, "rename it")
        seen.add(name)
        match = item.get("match")
        if not isinstance(match, dict) or not match:
            raise _bad(f"target {name!r} needs match: {{label: value or regex}}", lines, path,
                       "match: {cluster: eu-1, namespace: 'jobs-.*'}")
        patterns = {}
        for label, value in match.items():
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise _bad(f"target {name!r}: match value for {label!r} must be a string", lines,
                           (*path, "match", label), "match: {cluster: eu-1}")
            try:
                patterns[str(label)] = re.compile(str(value))
            except re.error as exc:
                raise _bad(f"target {name!r}: match {label!r} is not a valid regular expression: {exc}", lines,
                           (*path, "match", label), "an anchored regex, e.g. 'eu-.*'") from None
        settings = _from_mapping(base, item, lines, path, extra=("name", "match"))
        out.append(Target(name, patterns, settings.replace(target=name)))
    return tuple(out)


# ---------------------------------------------------------------- loading

def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Defaults < the config file (``path``, else ``$JOBRUNBOOK_CONFIG``) < ``JOBRUNBOOK_*`` variables.

    Raises ConfigError (naming the file, line and key) for a bad or unknown
    key, a bad value, or a secret in the file.
    """
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV) or None
    base, targets_raw, lines = Settings(), None, None
    if path:
        data, lines = read_config_file(path)
        find_secrets(data, lines, _SECRET_ENV)
        targets_raw = data.pop("targets", None)
        base = _from_mapping(base, data, lines, (), extra=("targets",))
    try:
        base = _from_env(base, env)
    except ConfigError as exc:
        raise ConfigError(f"environment: {exc.message}", hint=exc.hint) from None
    targets = _targets(targets_raw, base, lines) if targets_raw is not None else ()
    return Config(base=base, targets=targets, path=str(path) if path else None)


def load_settings(path: str | Path | None = None, *, labels: Mapping[str, str] | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """The settings for an alert with ``labels`` (the base when None)."""
    return load_config(path, env=env).settings_for(labels)


def settings_for(labels: Mapping[str, str] | None, *, config: Config | None = None,
                 env: Mapping[str, str] | None = None) -> Settings:
    """``config.settings_for(labels)``, loading the configuration from the environment when not given."""
    return (config or load_config(env=env)).settings_for(labels)
