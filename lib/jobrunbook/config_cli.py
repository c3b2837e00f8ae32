"""The edge every command's sources pass: flags -> ``Settings``, once, the same way for all.

    add_source_flags(parser, "redis", "metrics")   # --config, --target, --label and the chosen source flags
    src = resolve_sources(args)                     # Sources(config, settings, env)
    connect(src.settings.redis_url_with_secret(src.env))

Precedence is ``jobrunbook.config``'s: defaults < the config file < the
``JOBRUNBOOK_*`` environment < the flags, and then the target the alert's
labels (``--label``, or the alert itself) or ``--target`` choose. No flag has
a default of its own, so a flag never hides the configuration. A password
given in ``--redis-url`` leaves the URL here and travels in ``env`` (the
variable the settings name), as one from the environment does.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobrunbook._paths import absolute, absolute_log_source
from jobrunbook._urls import split_url_password

__all__ = ["add_source_flags", "resolve_sources", "sources_from", "Sources", "SOURCE_FLAGS", "labels_from_pairs"]

# flag group -> (flag, setting, help)
SOURCE_FLAGS: dict[str, tuple[str, str, str]] = {
    "redis": ("--redis-url", "redis_url", "asynq's Redis, redis://HOST:6379/0 (a password here goes to "
                                          "$JOBRUNBOOK_REDIS_PASSWORD, never into a parameter or a report)"),
    "metrics": ("--metrics-url", "metrics_url", "the worker's /metrics"),
    "prometheus": ("--prometheus-url", "prometheus_url", "Prometheus base URL"),
    "alertmanager": ("--alertmanager-url", "alertmanager_url", "Alertmanager base URL, for related alerts"),
    "logs": ("--log-source", "log_source", "worker logs: a file, docker:NAME, k8s:deployment/NAME[@NS] or command:ARGV"),
    "health": ("--health-url", "health_urls", "an external API's health URL, name=url or url (repeatable)"),
    "timeout": ("--task-timeout", "task_timeout_s", "the tasks' timeout in seconds, for the durations check"),
}


@dataclass(frozen=True)
class Sources:
    """What a command reads from: the whole configuration, the chosen target's settings, the environment."""

    config: Any  # jobrunbook.config.Config (flags applied)
    settings: Any  # jobrunbook.config.Settings of the chosen target
    env: Mapping[str, str] = field(default_factory=dict)  # os.environ plus secrets taken out of flags
    target: str | None = None  # --target: every alert uses it, whatever its labels

    def for_labels(self, labels: Mapping[str, str] | None) -> Any:
        """The settings for an alert with ``labels``: the --target if one was named, else the matching target."""
        return self.config.target(self.target) if self.target else self.config.settings_for(labels)


def add_source_flags(p: argparse.ArgumentParser, *groups: str, targets: bool = True, labels: bool = True) -> None:
    """``--config``, ``--target`` and ``--label`` (unless the command has its own: ``labels=False``), and the
    flags of ``groups`` (keys of SOURCE_FLAGS)."""
    p.add_argument("--config", metavar="FILE", type=absolute, default=None,
                   help="YAML config file (default $JOBRUNBOOK_CONFIG, else none)")
    if targets:
        p.add_argument("--target", metavar="NAME", default=None,
                       help="the config file's target to use (default: the one the labels match, else the base)")
        if labels:
            p.add_argument("--label", metavar="K=V", action="append", default=None,
                           help="alert label choosing the target, repeatable (cluster=eu-1)")
    for group in groups:
        flag, _setting, text = SOURCE_FLAGS[group]
        if group == "health":
            p.add_argument(flag, action="append", default=None, help=text)
        elif group == "timeout":
            p.add_argument(flag, type=float, default=None, help=text)
        elif group == "logs":
            p.add_argument(flag, type=absolute_log_source, default=None, help=text)
        else:
            p.add_argument(flag, default=None, help=text)


def labels_from_pairs(pairs: list[str] | None) -> dict[str, str]:
    from jobrunbook._exceptions import ConfigError

    out: dict[str, str] = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ConfigError(f"--label wants k=v, got {pair[:60]!r}", hint="--label cluster=eu-1")
        out[key.strip()] = value
    return out


def _flags(args: argparse.Namespace, secrets: dict[str, str]) -> dict[str, Any]:
    from jobrunbook.config import log_source_settings

    flags: dict[str, Any] = {}
    for _group, (flag, setting, _text) in SOURCE_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value in (None, "", []):
            continue
        if setting == "log_source":
            flags.update(log_source_settings(value))
            continue
        if setting == "health_urls":
            from jobrunbook.config import parse_health_urls

            value = parse_health_urls(",".join(value))
        flags[setting] = value
    log_file = getattr(args, "log_file", None)
    if log_file:
        flags.update(log_source_settings(str(log_file)))
    return flags


def resolve_sources(args: argparse.Namespace, *, labels: Mapping[str, str] | None = None,
                    env: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> Sources:
    """The configuration with this command's flags (and ``extra`` settings) applied, and the target chosen."""
    secrets: dict[str, str] = {}
    flags = _flags(args, secrets) | dict(extra or {})
    chosen = labels if labels is not None else labels_from_pairs(getattr(args, "label", None))
    return sources_from(flags, config_path=getattr(args, "config", None), env=env, labels=chosen,
                        target=getattr(args, "target", None), secrets=secrets)


def sources_from(values: Mapping[str, Any], *, config_path: str | None = None, env: Mapping[str, str] | None = None,
                 labels: Mapping[str, str] | None = None, target: str | None = None,
                 secrets: Mapping[str, str] | None = None) -> Sources:
    """``Sources`` from settings given as values (what flags give), on top of the configuration in ``env``.

    A password in ``values["redis_url"]`` is taken out of the URL into the environment of the result, as
    a flag's is: ``sources_from({"redis_url": "redis://:pw@h:6379/0"}).env["JOBRUNBOOK_REDIS_PASSWORD"]``.
    """
    from jobrunbook.config import load_config

    env = dict(os.environ if env is None else env)
    values = dict(values)
    secrets = dict(secrets or {})
    if values.get("redis_url"):
        values["redis_url"], password = split_url_password(values["redis_url"])
        if password:
            secrets["redis_url"] = password
    config = load_config(config_path, env=env, flags=values)
    settings = config.target(target) if target else config.settings_for(labels)
    if "redis_url" in secrets:  # the flag set the base's Redis: its password goes where the base reads it
        env[config.base.redis_password_env] = secrets["redis_url"]
    return Sources(config=config, settings=settings, env=env, target=target)
