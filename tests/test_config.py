"""Configuration: precedence, secrets refused, unknown keys, label-matched targets, public() without secrets."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import RedisServer

from jobrunbook._exceptions import ConfigError
from jobrunbook.asynq.connection import connect
from jobrunbook.config import Settings, load_config, load_settings, settings_for


def write(tmp_path, text: str, name: str = "jobrunbook.yml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_defaults_then_file_then_env(tmp_path):
    path = write(tmp_path, """
        metrics_url: http://worker.file:8080/metrics
        prometheus_url: http://prom.file:9090
        task_timeout_s: 40
        metric_names:
          processed: app_jobs_total
    """)
    assert Settings().prometheus_url == ""
    from_file = load_settings(path, env={})
    assert from_file.prometheus_url == "http://prom.file:9090"
    assert from_file.task_timeout_s == 40.0
    assert from_file.metric_names.processed == "app_jobs_total"
    assert from_file.metric_names.duration == "job_duration_seconds"  # untouched default
    env = {"JOBRUNBOOK_PROMETHEUS_URL": "http://prom.env:9090", "JOBRUNBOOK_TASK_TIMEOUT_S": "75",
           "JOBRUNBOOK_METRIC_FAILED_VALUES": "failed,error", "JOBRUNBOOK_HEALTH_URLS":
           "payments=https://pay.example/health,https://mail.example/ping"}
    both = load_settings(path, env=env)
    assert both.prometheus_url == "http://prom.env:9090"  # env beats file
    assert both.metrics_url == "http://worker.file:8080/metrics"  # file beats default
    assert both.task_timeout_s == 75.0
    assert both.metric_names.failed_values == ("failed", "error")
    assert both.metric_names.processed == "app_jobs_total"
    assert both.health_urls == {"payments": "https://pay.example/health", "mail.example": "https://mail.example/ping"}


def test_config_file_from_env_variable(tmp_path):
    path = write(tmp_path, "alertmanager_url: http://am:9093\n")
    assert load_settings(env={"JOBRUNBOOK_CONFIG": str(path)}).alertmanager_url == "http://am:9093"
    # --config wins over $JOBRUNBOOK_CONFIG
    other = write(tmp_path, "alertmanager_url: http://am2:9093\n", "other.yml")
    assert load_settings(other, env={"JOBRUNBOOK_CONFIG": str(path)}).alertmanager_url == "http://am2:9093"


def test_log_source_shorthand_from_jobrunbook_run():
    s = load_settings(env={"JOBRUNBOOK_LOG_SOURCE": "k8s:deployment/jobs-worker", "JOBRUNBOOK_NAMESPACE": "jobs"})
    assert (s.log_source, s.worker_deployment, s.namespace) == ("kubectl", "jobs-worker", "jobs")


@pytest.mark.parametrize("text, key, env_name", [
    ("redis_url: redis://:hunter2@redis:6379/0\n", "redis_url", "JOBRUNBOOK_REDIS_PASSWORD"),
    ("redis_url: redis://hunter2@redis:6379/0\n", "redis_url", "JOBRUNBOOK_REDIS_PASSWORD"),
    ("postgres_dsn: postgresql://app:hunter2@db/app\n", "postgres_dsn", "JOBRUNBOOK_POSTGRES_DSN"),
    ("redis_password: hunter2\n", "redis_password", "JOBRUNBOOK_REDIS_PASSWORD"),
    ("prometheus_url: https://admin:hunter2@prom:9090\n", "prometheus_url", "JOBRUNBOOK_PROMETHEUS_URL"),
    ("health_urls:\n  pay: https://pay.example/health?token=hunter2\n", "health_urls.pay", "JOBRUNBOOK_HEALTH_URLS"),
])
def test_secret_in_file_is_refused(tmp_path, text, key, env_name):
    path = write(tmp_path, "# comment\n" + text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    message = str(err.value)
    assert "hunter2" not in message
    assert f"{path} line {1 + len(text.splitlines())}" in message  # the line of the secret itself
    assert key in message
    assert f"${env_name}" in message


def test_secret_in_target_names_the_variable_to_use(tmp_path):
    path = write(tmp_path, """
        targets:
          - name: eu-1
            match: {cluster: eu-1}
            redis_url: redis://:hunter2@redis.eu-1:6379/0
    """)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "hunter2" not in str(err.value)
    assert "line 4" in str(err.value)
    assert "redis_password_env" in str(err.value)


def test_unknown_key_names_file_line_and_valid_keys(tmp_path):
    path = write(tmp_path, """
        redis_url: redis://redis:6379/0
        targets:
          - name: eu-1
            match: {cluster: eu-1}
            prometheus_ulr: http://prom.eu-1:9090
    """)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    text = str(err.value)
    assert f"{path} line 5" in text
    assert "'prometheus_ulr'" in text and "did you mean 'prometheus_url'" in text
    assert "valid keys:" in text and "alertmanager_url" in text
    top = write(tmp_path, "redis_url: redis://r:6379/0\nmetric_names:\n  procesed: x\n", "top.yml")
    with pytest.raises(ConfigError, match=r"top.yml line 3: unknown metric name setting 'procesed'"):
        load_config(top, env={})


@pytest.mark.parametrize("text, fragment", [
    ("task_timeout_s: soon\n", "task_timeout_s must be a number"),
    ("log_source: syslog\n", "log_source must be one of"),
    ("metrics_url: worker:8080/metrics\n", "metrics_url is not a http/https URL"),
    ("redis_url: http://redis:6379\n", "redis_url is not a redis/rediss/unix URL"),
    ("- just a list\n", "must hold a mapping"),
    ("redis_url: [unclosed\n", "is not valid YAML"),
    ("targets:\n  - name: a\n    match: {cluster: '(unclosed'}\n", "not a valid regular expression"),
])
def test_bad_values_are_config_errors(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        load_config(write(tmp_path, text), env={})


def test_bad_env_value_names_the_variable():
    with pytest.raises(ConfigError, match="environment: JOBRUNBOOK_SOURCE_TIMEOUT_S must be a number"):
        load_config(env={"JOBRUNBOOK_SOURCE_TIMEOUT_S": "-1"})


def two_clusters(tmp_path):
    return write(tmp_path, """
        redis_url: redis://redis.default:6379/0
        prometheus_url: http://prom.global:9090
        targets:
          - name: eu-1
            match: {cluster: eu-1}
            redis_url: redis://redis.eu-1:6379/0
            redis_password_env: EU_REDIS_PASSWORD
            namespace: jobs-eu
          - name: us-jobs
            match: {cluster: 'us-.*', namespace: jobs}
            redis_url: redis://redis.us:6379/2
            postgres_dsn_env: US_POSTGRES_DSN
          - name: us-other
            match: {cluster: 'us-.*'}
            redis_url: redis://redis.us:6379/3
    """)


def test_targets_chosen_by_labels(tmp_path):
    config = load_config(two_clusters(tmp_path), env={"JOBRUNBOOK_ALERTMANAGER_URL": "http://am:9093"})
    eu = config.settings_for({"alertname": "JobFailureRate", "cluster": "eu-1", "queue": "default"})
    assert (eu.target, eu.redis_url, eu.namespace) == ("eu-1", "redis://redis.eu-1:6379/0", "jobs-eu")
    assert eu.prometheus_url == "http://prom.global:9090"  # inherited from the file's base
    assert eu.alertmanager_url == "http://am:9093"  # inherited from the environment
    # first match wins: us-jobs before the broader us-other
    assert config.settings_for({"cluster": "us-east", "namespace": "jobs"}).target == "us-jobs"
    assert config.settings_for({"cluster": "us-east", "namespace": "billing"}).target == "us-other"
    # regexes are anchored: "eu-10" is not "eu-1"; no match -> the base
    assert config.settings_for({"cluster": "eu-10"}).target == "default"
    assert config.settings_for({}).redis_url == "redis://redis.default:6379/0"
    assert [s.target for s in config.all_settings()] == ["default", "eu-1", "us-jobs", "us-other"]
    env = {"JOBRUNBOOK_CONFIG": str(tmp_path / "jobrunbook.yml"), "EU_REDIS_PASSWORD": "eu pw/1",
           "US_POSTGRES_DSN": "postgresql://u:p@db.us/app"}
    assert settings_for({"cluster": "eu-1"}, env=env).redis_url_with_secret(env) == \
        "redis://:eu%20pw%2F1@redis.eu-1:6379/0"
    us = settings_for({"cluster": "us-1", "namespace": "jobs"}, env=env)
    assert us.postgres_dsn(env) == "postgresql://u:p@db.us/app"
    assert us.postgres_dsn({}) is None


def test_public_never_holds_a_password(tmp_path):
    password = "pw-Zq81-secret"
    server = RedisServer(tmp_path, password=password)
    try:
        env = {"JOBRUNBOOK_REDIS_URL": server.url, "JOBRUNBOOK_PROMETHEUS_URL": f"https://ops:{password}@prom:9090",
               "JOBRUNBOOK_POSTGRES_DSN": f"postgresql://postgres:{password}@127.0.0.1:5432/postgres",
               "JOBRUNBOOK_HEALTH_URLS": f"pay=https://pay.example/health?token={password}"}
        settings = load_settings(env=env)
        public = settings.public()
        blob = json.dumps(public)
        assert password not in blob
        assert password not in repr(settings)
        assert public["redis_url"] == f"redis://127.0.0.1:{server.port}/0"
        assert public["prometheus_url"] == "https://ops:***@prom:9090"
        # the secret is there at run time, from the environment, and it works
        client = connect(settings.redis_url_with_secret(env))
        assert client.ping() is True
        assert Settings.from_public(public).redis_url_with_secret(env) == server.url
        # without the environment, the same settings cannot log in
        with pytest.raises(Exception, match="password|NOAUTH|auth"):
            connect(Settings.from_public(public).redis_url_with_secret({}))
    finally:
        server.stop()


def test_redis_password_from_its_own_variable(tmp_path):
    server = RedisServer(tmp_path, password="other-pw")
    try:
        settings = load_settings(env={"JOBRUNBOOK_REDIS_URL": f"redis://127.0.0.1:{server.port}/0"})
        url = settings.redis_url_with_secret({"JOBRUNBOOK_REDIS_PASSWORD": "other-pw"})
        assert connect(url).ping() is True
        assert "other-pw" not in json.dumps(settings.public())
        # a password embedded in $JOBRUNBOOK_REDIS_URL is not handed to a different server
        other = settings.replace(redis_url="redis://10.1.2.3:6379/0")
        assert other.redis_url_with_secret({"JOBRUNBOOK_REDIS_URL": server.url}) == "redis://10.1.2.3:6379/0"
    finally:
        server.stop()


def test_settings_refuse_a_password_in_redis_url():
    with pytest.raises(ConfigError, match=r"redis_url holds a password \(redis://:\*\*\*@h:6379/0\)"):
        Settings(redis_url="redis://:pw@h:6379/0")


def test_example_config_loads():
    from conftest import ROOT

    config = load_config(ROOT / "deploy" / "jobrunbook.example.yml", env={})
    assert len(config.targets) >= 2
    assert all(s.target for s in config.all_settings())
