"""Where each evidence source lives, per target, and never a secret.

Precedence, lowest first: the defaults below < the YAML config file
(``--config FILE`` or ``$JOBRUNBOOK_CONFIG``) < ``JOBRUNBOOK_*`` environment
variables < the command's flags. That gives the base ``Settings``. The file
may also hold ``targets:``, each with ``match:`` (alert label -> anchored
regular expression, as Alertmanager's ``match_re``; a label the alert lacks is
matched as "") and overrides of any non-secret setting. ``settings_for(labels)``
applies the FIRST target whose every matcher matches, on top of the base (so
a target's override beats the environment and the flags: it is the more
specific); no match gives the base. One deployment thus watches several
clusters or namespaces. Every command gets its sources this way
(``jobrunbook.config_cli``).

Secrets come only from the environment: the Redis password from
``$JOBRUNBOOK_REDIS_PASSWORD`` (or embedded in ``$JOBRUNBOOK_REDIS_URL``), the
Postgres DSN from ``$JOBRUNBOOK_POSTGRES_DSN``; a target names other
variables (``redis_password_env: EU_REDIS_PASSWORD``), never values. A file
holding a secret is refused. ``Settings.public()`` is safe to write anywhere;
``redis_url_with_secret()``, ``url_with_secret()`` and ``postgres_dsn()`` read
the secrets at run time.

Values are typed and coerced by pydantic; what this module adds is the
grammar of environment strings (``a,b``, ``name=url,...``, ``docker:NAME``)
and messages that name the file and line, or the variable, to fix.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from jobrunbook._exceptions import ConfigError
from jobrunbook._urls import redact_url, split_url_password
from jobrunbook.config_file import Lines, find_secrets, read_config_file, unknown_key_error
from jobrunbook.diagnosis.causes import SERVED_ALERTNAMES
from jobrunbook.sources.names import LOG_KINDS, RELATED_ALERTS, MetricNames

__all__ = ["Settings", "Target", "Config", "load_config", "load_settings", "settings_for", "ENV_NAMES",
           "CONFIG_ENV", "REDIS_PASSWORD_ENV", "POSTGRES_DSN_ENV", "SERVED_ALERTNAMES", "parse_health_urls",
           "log_source_settings"]

CONFIG_ENV = "JOBRUNBOOK_CONFIG"
REDIS_PASSWORD_ENV = "JOBRUNBOOK_REDIS_PASSWORD"
POSTGRES_DSN_ENV = "JOBRUNBOOK_POSTGRES_DSN"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_METRIC_FIELDS = [f.name for f in dataclasses.fields(MetricNames)]


# ---------------------------------------------------------------- field types

def _url_checker(schemes: tuple[str, ...]):
    def check(value: str) -> str:
        if not value:
            return value
        try:
            parts = urlsplit(value)
            ok = parts.scheme in schemes and bool(parts.netloc or parts.scheme == "unix")
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"is not a {'/'.join(schemes)} URL: {redact_url(value) or repr(value)}")
        return value
    return check


def _tuple_of_str(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    return value


def _metric_names(value: Any) -> Any:
    if isinstance(value, Mapping):
        fields = {k: (tuple(v) if k == "failed_values" and isinstance(v, list) else v) for k, v in value.items()}
        return MetricNames(**fields)
    return value


def _asynq_version(value: Any) -> Any:
    """``asynq_version``: a release asynq made (``v0.26.0``, ``0.25.1``) or ``infer``; ConfigError otherwise."""
    if not isinstance(value, str):
        return value  # pydantic says it must be a string
    from jobrunbook.asynq.versions import normalize_version

    return normalize_version(value)


RedisUrl = Annotated[str, Field(strict=True), AfterValidator(_url_checker(("redis", "rediss", "unix")))]
HttpUrl = Annotated[str, Field(strict=True), AfterValidator(_url_checker(("http", "https")))]
Seconds = Annotated[float, Field(gt=0, le=86400)]
Strings = Annotated[tuple[str, ...], BeforeValidator(_tuple_of_str)]
Name = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int | float) and not isinstance(v, bool)
                                      else v), Field(strict=True)]

# how a value of each field must look, for the messages (pydantic's own are about types, not settings)
_EXPECTED = {
    "task_timeout_s": "must be a number of seconds in (0, 86400]",
    "source_timeout_s": "must be a number of seconds in (0, 86400]",
    "health_urls": "must map a name to a URL",
    "served_alertnames": "must be a list of strings",
    "related_alerts": "must be a list of strings",
    "log_command": "must be a list of strings",
    "metric_names": "must be a mapping of " + ", ".join(_METRIC_FIELDS),
    "archive_max_size": "must be a whole number of tasks in [2, 10000000]",
}
_HINT = {
    "task_timeout_s": "task_timeout_s: 300", "source_timeout_s": "source_timeout_s: 5",
    "health_urls": "health_urls: {payments: https://api.example.com/health}",
    "redis_url": "redis://host:port/0", "metric_names": "metric_names: {processed: job_processed_total, ...}",
    "archive_max_size": "archive_max_size: 10000", "asynq_version": "asynq_version: v0.26.0 (or infer)",
}


class Settings(BaseModel):
    """Where the sources of one target live. No field ever holds a secret read from a file."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    target: str = "default"  # name of the target these settings are for
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"  # asynq's Redis, without its password
    redis_password_env: str = REDIS_PASSWORD_ENV  # variable holding the Redis password
    metrics_url: HttpUrl = "http://127.0.0.1:8080/metrics"  # the worker's /metrics ("" = not used)
    prometheus_url: HttpUrl = ""  # Prometheus base URL ("" = not used)
    alertmanager_url: HttpUrl = ""  # Alertmanager base URL ("" = not used)
    log_source: str = "docker"  # docker | kubectl | file | command ("" = not used)
    log_path: str = ""  # log_source file: the worker's log file (absolute once loaded)
    log_command: Strings = ()  # log_source command: argv printing the worker's logs
    worker_container: Name = "worker"  # docker container (logs, recommended commands)
    worker_deployment: Name = "worker"  # Kubernetes deployment (logs, recommended commands)
    namespace: Name = ""  # Kubernetes namespace ("" = kubectl's default)
    kube_context: Name = ""  # kubectl context ("" = current)
    redis_container: Name = "redis"  # docker container of Redis, for recommended commands
    postgres_container: Name = "postgres"  # docker container of Postgres, for recommended commands
    postgres_dsn_env: str = POSTGRES_DSN_ENV  # variable holding the Postgres DSN
    health_urls: dict[str, HttpUrl] = Field(default_factory=dict)  # external API name -> health URL
    task_timeout_s: Seconds | None = None  # asynq.Timeout of the tasks (None: the timeout each task carries in asynq)
    source_timeout_s: Seconds = 5.0  # how long each source may take to answer
    served_alertnames: Strings = SERVED_ALERTNAMES  # alerts this runbook answers
    related_alerts: Strings = RELATED_ALERTS  # neighbours looked up in Alertmanager
    metric_names: Annotated[MetricNames, BeforeValidator(_metric_names)] = MetricNames()  # worker metric names
    # the worker's asynq release (v0.24.0 ... v0.26.0); infer: from the data, else v0.24.1
    asynq_version: Annotated[str, BeforeValidator(_asynq_version), Field(strict=True)] = "infer"
    # asynq's archive cap (maxArchiveSize): an archive keeps the newest cap - 1 tasks (ZREMRANGEBYRANK 0 -cap)
    archive_max_size: Annotated[int, Field(ge=2, le=10_000_000)] = 10_000

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.log_source not in ("", *LOG_KINDS):
            raise ConfigError(f"log_source must be one of {', '.join(LOG_KINDS)} (or empty), not {self.log_source!r}",
                              hint="export JOBRUNBOOK_LOG_SOURCE=docker")
        if self.log_source == "file" and not self.log_path:
            raise ConfigError("log_source 'file' needs log_path", hint="export JOBRUNBOOK_LOG_FILE=/var/log/worker.log")
        if self.log_source == "command" and not self.log_command:
            raise ConfigError("log_source 'command' needs log_command",
                              hint="export JOBRUNBOOK_LOG_COMMAND='journalctl -u worker --since -1h'")
        for name in ("redis_password_env", "postgres_dsn_env"):
            if not _ENV_NAME.match(getattr(self, name)):
                raise ConfigError(f"{name} must be an environment variable NAME, not {getattr(self, name)[:20]!r}...",
                                  hint=f"{name}: EU_REDIS_PASSWORD (then export that variable)")
        if "@" in urlsplit(self.redis_url).netloc:
            raise ConfigError(f"redis_url holds a password ({redact_url(self.redis_url)})",
                              hint=f"put the password in ${self.redis_password_env}, the URL without it in the settings")
        return self

    def __repr__(self) -> str:
        return f"Settings({self.public()!r})"

    __str__ = __repr__

    def replace(self, **changes: Any) -> Settings:
        """These settings with ``changes`` applied, validated as a whole."""
        return _validated(self, changes, None, ())

    @property
    def log_target(self) -> str:
        """The log source as ``jobrunbook run --log-source`` takes it: a file, docker:NAME, k8s:deployment/NAME@NS."""
        return {"docker": f"docker:{self.worker_container}",
                "kubectl": f"k8s:deployment/{self.worker_deployment}@{self.namespace or 'default'}",
                "file": self.log_path,
                "command": "command:" + shlex.join(self.log_command)}.get(self.log_source, "")

    def log_args(self) -> dict[str, Any]:
        """Where the worker's logs are, as ``sources.collect_worker_logs`` takes it ({} when none is configured)."""
        kind = self.log_source
        if kind == "docker":
            return {"kind": kind, "container": self.worker_container}
        if kind == "kubectl":
            return {"kind": kind, "deployment": self.worker_deployment, "namespace": self.namespace or "default",
                    "context": self.kube_context or None}
        if kind == "command":
            return {"kind": kind, "command": list(self.log_command)}
        if kind == "file":
            return {"kind": kind, "path": self.log_path}
        return {}

    def public(self) -> dict[str, Any]:
        """A JSON-ready dict without secrets (URLs redacted): for params.json, notebooks, reports."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name.endswith("_url"):
                value = redact_url(value)
            elif name == "health_urls":
                value = {k: redact_url(v) for k, v in value.items()}
            elif name == "metric_names":
                value = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(value).items()}
            elif name == "log_command":
                value = [redact_url(a) if "://" in a else a for a in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out

    @classmethod
    def from_public(cls, data: Mapping[str, Any]) -> Settings:
        """The inverse of ``public()`` (e.g. from a notebook's parameters); unknown keys are a ConfigError."""
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}", hint="valid keys: " + ", ".join(sorted(cls.model_fields)))
        return _validated(cls(), dict(data), None, ())

    def secret_env_names(self) -> list[str]:
        """The environment variables these settings read secrets from (what a kernel may need)."""
        names = [self.redis_password_env, self.postgres_dsn_env, "JOBRUNBOOK_REDIS_URL"]
        names += [ENV_NAMES[n] for n in ("metrics_url", "prometheus_url", "alertmanager_url", "health_urls")]
        return list(dict.fromkeys(names))

    def redis_password(self, env: Mapping[str, str] | None = None) -> str | None:
        """The Redis password from the environment: ``$<redis_password_env>``, else one embedded in
        ``$JOBRUNBOOK_REDIS_URL`` when that names this same host, port and db."""
        env = os.environ if env is None else env
        if env.get(self.redis_password_env):
            return env[self.redis_password_env]
        stripped, password = split_url_password(env.get("JOBRUNBOOK_REDIS_URL", ""))
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

    def url_with_secret(self, name: str, env: Mapping[str, str] | None = None) -> str:
        """An HTTP source URL as given, credentials included: a redacted one (``***``, e.g. from
        ``public()``) is taken back from its ``JOBRUNBOOK_*`` variable when that is the same URL."""
        value = getattr(self, name)
        if "***" not in value:
            return value
        env = os.environ if env is None else env
        full = env.get(ENV_NAMES[name], "")
        return full if full and redact_url(full) == value else value

    def health_urls_with_secret(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """``health_urls`` as given, a redacted one taken back from ``$JOBRUNBOOK_HEALTH_URLS`` when the same."""
        env = os.environ if env is None else env
        full = parse_health_urls(env.get(ENV_NAMES["health_urls"], ""))
        by_shown = {redact_url(u): u for u in full.values()}
        return {k: (by_shown.get(v, v) if "***" in v else v) for k, v in self.health_urls.items()}

    def postgres_dsn(self, env: Mapping[str, str] | None = None) -> str | None:
        """The Postgres DSN from ``$<postgres_dsn_env>`` (None when not set)."""
        env = os.environ if env is None else env
        return env.get(self.postgres_dsn_env) or None


# ---------------------------------------------------------------- values

_FIELDS = list(Settings.model_fields)
_SETTABLE = [name for name in _FIELDS if name != "target"]

# field -> environment variable; metric names are JOBRUNBOOK_METRIC_<FIELD>
ENV_NAMES: dict[str, str] = {name: f"JOBRUNBOOK_{name.upper()}" for name in _SETTABLE if name != "metric_names"}
ENV_NAMES["log_path"] = "JOBRUNBOOK_LOG_FILE"
ENV_NAMES.update({f"metric_names.{m}": f"JOBRUNBOOK_METRIC_{m.upper()}" for m in _METRIC_FIELDS})
# secret-bearing keys a file might try: where the secret goes instead
_SECRET_ENV = {"redis_url": REDIS_PASSWORD_ENV, "redis_password": REDIS_PASSWORD_ENV,
               "postgres_dsn": POSTGRES_DSN_ENV, "postgres_password": POSTGRES_DSN_ENV,
               "metrics_url": "JOBRUNBOOK_METRICS_URL", "prometheus_url": "JOBRUNBOOK_PROMETHEUS_URL",
               "alertmanager_url": "JOBRUNBOOK_ALERTMANAGER_URL", "health_urls": "JOBRUNBOOK_HEALTH_URLS"}


def _same_server(a: str, b: str) -> bool:
    try:
        pa, pb = urlsplit(a), urlsplit(b)
        return (pa.hostname, pa.port or 6379, pa.path.strip("/") or "0") == \
               (pb.hostname, pb.port or 6379, pb.path.strip("/") or "0")
    except ValueError:
        return False


def _message(field: str, label: str, err: dict) -> str:
    """One pydantic error, said as a setting's error: what the value must be."""
    got = err.get("input")
    shown = redact_url(got) if isinstance(got, str) and "://" in got else repr(got)[:40] if got is not None else ""
    text = str(err.get("msg", "")).removeprefix("Value error, ")
    if text.startswith("is not a "):
        return f"{label} {text}"
    if field in _EXPECTED:
        return f"{label} {_EXPECTED[field]}" + (f", not {shown}" if shown else "")
    if err.get("type", "").startswith(("string_type", "str_")):
        return f"{label} must be a string, not {type(got).__name__}"
    return f"{label}: {text}"


def _validated(base: Settings, changes: Mapping[str, Any], lines: Lines | None, path: tuple, *,
               labels: Mapping[str, str] | None = None) -> Settings:
    """``base`` with ``changes`` applied, validated by pydantic; errors name the key's line or variable."""
    data = {name: getattr(base, name) for name in _FIELDS}
    if "metric_names" in changes and isinstance(changes["metric_names"], Mapping):
        current = dataclasses.asdict(base.metric_names)
        changes = {**changes, "metric_names": {**current, **changes["metric_names"]}}
    data.update(changes)

    def where(field: str) -> str:
        return f"config file {lines.where(*path, field)}: " if lines is not None else ""

    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        label = (labels or {}).get(field, field)
        raise ConfigError(where(field) + _message(field, label, err),
                          hint=_HINT.get(field, f"{field}: \"...\"")) from None
    except ConfigError as exc:
        if lines is None:
            raise
        field = next((f for f in changes if f in exc.message), "")
        raise ConfigError(where(field) + exc.message, hint=exc.hint) from None


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
        if key == "metric_names" and isinstance(value, Mapping):
            for sub in value:
                if sub not in _METRIC_FIELDS:
                    if lines is None:
                        raise ConfigError(f"unknown metric name setting {sub!r}", hint="valid: " + ", ".join(_METRIC_FIELDS))
                    raise unknown_key_error(str(sub), _METRIC_FIELDS, lines, (*path, key, sub), "metric name setting")
        if key == "log_path" and value and isinstance(value, str):
            # a relative log file is relative to the config file that names it, or to where the user stands
            from jobrunbook._paths import absolute

            value = str(absolute(value, Path(lines.path).resolve().parent if lines is not None else None))
        changes[key] = value
    return _validated(base, changes, lines, path)


def parse_health_urls(text: str) -> dict[str, str]:
    """``name=url,url,...`` (``$JOBRUNBOOK_HEALTH_URLS``, ``--health-url``) -> {name: url}; a bare URL is named by its host."""
    pairs = [p.strip() for p in text.split(",") if p.strip()]
    return dict(p.split("=", 1) if "=" in p.split("://", 1)[0] else (urlsplit(p).hostname or p, p) for p in pairs)


def _env_value(key: str, raw: str) -> Any:
    """An environment string in the grammar of its setting."""
    if key == "health_urls":
        return parse_health_urls(raw)
    if key == "log_command":
        return tuple(shlex.split(raw))
    if key in ("served_alertnames", "related_alerts"):
        return tuple(v.strip() for v in raw.split(",") if v.strip())
    if key in ("task_timeout_s", "source_timeout_s"):
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


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
            raw, _password = split_url_password(raw)  # the password stays in the environment
        if key == "log_source" and ":" in raw:
            raw, changes = _log_source_shorthand(raw, changes)
        if key == "log_path" and raw:
            from jobrunbook._paths import absolute

            raw = str(absolute(raw))
        changes[key] = _env_value(key, raw)
    if metric:
        changes["metric_names"] = metric
    labels = {k: v for k, v in ENV_NAMES.items() if "." not in k} | {"metric_names": "JOBRUNBOOK_METRIC_*"}
    return _validated(base, changes, None, (), labels=labels)


def _log_source_shorthand(raw: str, changes: dict) -> tuple[str, dict]:
    """``docker:NAME``, ``kubectl:deployment/NAME[@NS]`` (or ``k8s:``), ``file:/path`` as in ``jobrunbook run``."""
    from jobrunbook._paths import absolute

    kind, _, rest = raw.partition(":")
    kind = {"k8s": "kubectl", "kubernetes": "kubectl"}.get(kind, kind)
    if kind == "docker":
        changes["worker_container"] = rest
    elif kind == "kubectl":
        deployment, _, namespace = rest.partition("@")
        changes["worker_deployment"] = deployment.removeprefix("deployment/").removeprefix("deploy/")
        if namespace:
            changes["namespace"] = namespace
    elif kind == "file":
        changes["log_path"] = str(absolute(rest))
    elif kind == "command":
        changes["log_command"] = tuple(shlex.split(rest))
    return kind, changes


def log_source_settings(source: str) -> dict[str, Any]:
    """The settings a ``--log-source`` (a file, docker:NAME, k8s:deployment/NAME[@NS], command:ARGV) stands for."""
    if not source:
        return {}
    if ":" in source.split("/", 1)[0] and not source.startswith("/"):
        kind, changes = _log_source_shorthand(source, {})
        return {"log_source": kind, **changes}
    from jobrunbook._paths import absolute

    return {"log_source": "file", "log_path": str(absolute(source))}


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
    raw_targets: Any = None  # the file's targets, to build them again on another base (flags)
    lines: Lines | None = None

    def settings_for(self, labels: Mapping[str, str] | None = None) -> Settings:
        """The first target whose matchers all match ``labels``; else the base."""
        for target in self.targets:
            if target.matches(labels or {}):
                return target.settings
        return self.base

    def target(self, name: str) -> Settings:
        """The settings of the target called ``name`` (``default``: the base)."""
        if name in ("", "default"):
            return self.base
        for t in self.targets:
            if t.name == name:
                return t.settings
        known = ", ".join(["default", *(t.name for t in self.targets)])
        raise ConfigError(f"no target named {name!r} in {self.path or 'the configuration'}", hint=f"known: {known}")

    def all_settings(self) -> list[Settings]:
        """The base and every target's settings (what ``jobrunbook check`` probes)."""
        return [self.base, *(t.settings for t in self.targets)]

    def with_flags(self, flags: Mapping[str, Any]) -> Config:
        """This configuration with ``flags`` (non-empty values only) on top of the base, targets rebuilt on it."""
        changes = {k: v for k, v in flags.items() if v not in (None, "", (), [], {})}
        if not changes:
            return self
        base = _from_mapping(self.base, changes, None, ())
        targets = _targets(self.raw_targets, base, self.lines) if self.raw_targets is not None else ()
        return dataclasses.replace(self, base=base, targets=targets)


def _targets(raw: Any, base: Settings, lines: Lines) -> tuple[Target, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"config file {lines.where('targets')}: targets must be a list of {{name, match, overrides...}}",
                          hint="targets:\n  - name: eu-1\n    match: {cluster: eu-1}\n    redis_url: redis://redis.eu-1:6379/0")
    out, seen = [], set()
    for i, item in enumerate(raw):
        path = ("targets", i)

        def bad(what: str, sub: tuple, hint: str, path: tuple = path) -> ConfigError:
            return ConfigError(f"config file {lines.where(*path, *sub)}: {what}", hint=hint)

        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise bad(f"target {i + 1} needs a name", (), "- name: eu-1")
        name = item["name"]
        if name in seen or name == "default":
            raise bad(f"target name {name!r} is used twice (or is the reserved 'default')", (), "rename it")
        seen.add(name)
        match = item.get("match")
        if not isinstance(match, dict) or not match:
            raise bad(f"target {name!r} needs match: {{label: value or regex}}", (),
                      "match: {cluster: eu-1, namespace: 'jobs-.*'}")
        patterns = {}
        for label, value in match.items():
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise bad(f"target {name!r}: match value for {label!r} must be a string", ("match", label),
                          "match: {cluster: eu-1}")
            try:
                patterns[str(label)] = re.compile(str(value))
            except re.error as exc:
                raise bad(f"target {name!r}: match {label!r} is not a valid regular expression: {exc}",
                          ("match", label), "an anchored regex, e.g. 'eu-.*'") from None
        settings = _from_mapping(base, item, lines, path, extra=("name", "match"))
        out.append(Target(name, patterns, settings.replace(target=name)))
    return tuple(out)


# ---------------------------------------------------------------- loading

def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
                flags: Mapping[str, Any] | None = None) -> Config:
    """Defaults < the config file (``path``, else ``$JOBRUNBOOK_CONFIG``) < ``JOBRUNBOOK_*`` variables < ``flags``.

    Raises ConfigError (naming the file, line and key, or the variable) for a
    bad or unknown key, a bad value, or a secret in the file.
    """
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV) or None
    base, targets_raw, lines = Settings(), None, None
    if path:
        from jobrunbook._paths import absolute

        path = absolute(path)
        data, lines = read_config_file(path)
        find_secrets(data, lines, _SECRET_ENV)
        targets_raw = data.pop("targets", None)
        base = _from_mapping(base, data, lines, (), extra=("targets",))
    try:
        base = _from_env(base, env)
    except ConfigError as exc:
        raise ConfigError(f"environment: {exc.message}", hint=exc.hint) from None
    config = Config(base=base, path=str(path) if path else None, raw_targets=targets_raw, lines=lines)
    if flags:
        return config.with_flags(flags)
    targets = _targets(targets_raw, base, lines) if targets_raw is not None else ()
    return dataclasses.replace(config, targets=targets)


def load_settings(path: str | Path | None = None, *, labels: Mapping[str, str] | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """The settings for an alert with ``labels`` (the base when None)."""
    return load_config(path, env=env).settings_for(labels)


def settings_for(labels: Mapping[str, str] | None, *, config: Config | None = None,
                 env: Mapping[str, str] | None = None) -> Settings:
    """``config.settings_for(labels)``, loading the configuration from the environment when not given."""
    return (config or load_config(env=env)).settings_for(labels)
