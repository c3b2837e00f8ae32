"""connect(): timeouts, wrong or missing password, unreachable Redis; the password never shows."""

from __future__ import annotations

import socket
import time

import pytest
from conftest import RedisServer, free_port
from jobrunbook._exceptions import ConfigError, RedisUnavailable
from jobrunbook.asynq.connection import PASSWORD_ENV, connect

SECRET = "s3cr3t-Pa55word"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("secured"), password=SECRET)
    yield server
    server.stop()


def test_password_from_url_or_env(secured, monkeypatch):
    assert connect(secured.url).ping()
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    assert connect(f"redis://127.0.0.1:{secured.port}/0").ping()


@pytest.mark.parametrize("how", ["wrong-url", "wrong-env", "none"])
def test_refused_password_is_a_clear_error_without_the_secret(secured, monkeypatch, how):
    url = f"redis://127.0.0.1:{secured.port}/0"
    if how == "wrong-url":
        url = f"redis://:{SECRET}-nope@127.0.0.1:{secured.port}/0"
    elif how == "wrong-env":
        monkeypatch.setenv(PASSWORD_ENV, SECRET + "-nope")
    else:
        monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(RedisUnavailable) as exc:
        connect(url, timeout=2)
    text = str(exc.value)
    assert SECRET not in text and "nope" not in text
    assert "password" in text and f"127.0.0.1:{secured.port}" in text and "redis-cli -u" in text


def test_unreachable_redis_names_the_redacted_url():
    port = free_port()
    with pytest.raises(RedisUnavailable) as exc:
        connect(f"redis://:{SECRET}@127.0.0.1:{port}/0", timeout=1)
    text = str(exc.value)
    assert "unreachable" in text and f"redis://:***@127.0.0.1:{port}/0" in text and SECRET not in text


def test_a_silent_server_times_out():
    with socket.socket() as listener:  # accepts the connection, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        t = time.monotonic()
        with pytest.raises(RedisUnavailable, match="timed out"):
            connect(f"redis://127.0.0.1:{port}/0", timeout=0.3)
        assert time.monotonic() - t < 3


def test_not_a_url():
    with pytest.raises(ConfigError) as exc:
        connect(f"http://:{SECRET}@host:1/0")
    assert SECRET not in str(exc.value)
