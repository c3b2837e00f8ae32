"""The receiver's edges (issue 15): any body that fails to parse is a 400 with a JSON error, never a 5xx or a
reset; --allow-no-token stays on loopback; kernels see an allow-list of the environment, no service secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests
from _service_helpers import accept_only, AUTH, ROOT, ServerThread, fixture_json, make_service
from jobrunbook.findings import RUN_DIR_ENV
from jobrunbook.service.cli import is_loopback


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    with accept_only(tmp_path_factory.mktemp("outputs")) as pair:
        yield pair


def _with_label(value: str) -> bytes:
    body = fixture_json("firing-warning.json")
    body["alerts"][0]["labels"]["queue"] = "QUEUE"
    return json.dumps(body).encode().replace(b'"QUEUE"', value.encode())


UNPARSEABLE = {
    "100,000-deep arrays": b"[" * 100_000 + b"]" * 100_000,
    "1,000,000 [ (under the 1 MiB cap)": b"[" * 1_000_000,
    "100,000-deep objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "deep inside a valid body": _with_label('"x", "annotations": ' + "[" * 50_000 + "]" * 50_000),
    "lone surrogate in a label value": _with_label(r'"\ud800 queue"'),
    "lone surrogate in a label name": json.dumps(fixture_json("firing-warning.json")).encode().replace(
        b'"component"', rb'"comp\udfffonent"'),
    "UTF-16 body with a lone surrogate": json.dumps(fixture_json("firing-warning.json")).replace(
        '"default"', '"\\udc00"').encode("utf-16"),
    "invalid UTF-8": b'{"version": "4", "receiver": "\xc3\x28"}',
    "an integer of 5,000 digits": json.dumps(fixture_json("firing-warning.json")).encode().replace(
        b'"truncatedAlerts": 0', b'"truncatedAlerts": ' + b"9" * 5000),
    "NUL bytes only": b"\x00" * 1000,
}


@pytest.mark.parametrize("body", list(UNPARSEABLE.values()), ids=list(UNPARSEABLE))
def test_a_body_that_fails_to_parse_is_400_with_a_json_error(receiver, body):
    srv, store = receiver
    assert len(body) <= 1 << 20
    r = srv.post(body)
    assert r.status_code == 400, r.text[:300]
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] and r.json()["field"] == ""
    assert store.list() == []
    assert srv.get("/healthz", auth=False).json()["ok"] is True  # still serving


def test_a_nul_in_a_label_value_is_stored_and_listed(receiver):
    """NUL is valid JSON text (\\u0000): accepted, and the row reads back (Postgres columns get U+FFFD)."""
    srv, store = receiver
    r = srv.post(_with_label(r'"a\u0000b"'))
    assert r.status_code == 200 and len(r.json()["queued"]) == 1
    [row] = srv.get("/runs").json()
    assert row["labels"]["queue"] == "a\x00b"
    store_row = store.get(row["id"])
    assert store_row["queue"] in ("a\x00b", "a\ufffdb")


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("192.168.1.10", False), ("runbook.example", False),
])
def test_loopback_is_told_apart(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_allow_no_token_refuses_a_host_the_network_reaches(tmp_path, host):
    env = {k: v for k, v in os.environ.items() if k != "JOBRUNBOOK_WEBHOOK_TOKEN"}
    out = subprocess.run([sys.executable, "-m", "jobrunbook.cli", "serve", "--allow-no-token", "--host", host,
                          "--port", "0", "--outputs", str(tmp_path / "outputs")], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"--allow-no-token with --host {host}" in out.stderr and "--host 127.0.0.1" in out.stderr
    assert "listening" not in out.stdout


SECRETS = {
    "JOBRUNBOOK_WEBHOOK_TOKEN": "tok-9c1e0b7f2d4a4e55b1f3",
    "JOBRUNBOOK_SLACK_WEBHOOK_URL": "https://hooks.slack.example/services/T0/B0/slack-secret-7d1",
    "JOBRUNBOOK_NOTIFY_URL": "https://notify.example/hook?token=notify-secret-52a",
    "JOBRUNBOOK_STORE": "postgresql://svc:store-secret-e41@db.example/jobrunbook",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-0f9a",
}


def _printed_env(notebook) -> dict:
    nb = json.loads(notebook.read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    return json.loads(text)


@pytest.mark.parametrize("warm", [False, True], ids=["fresh kernels", "warm pool"])
def test_kernels_get_an_allow_list_of_the_environment_never_a_service_secret(tmp_path, monkeypatch, warm):
    """A notebook prints its kernel's whole environment; no secret of the service is in it, by name or value."""
    from jobrunbook.kernels import KernelPool
    from jobrunbook.run.execute import execute_run
    from jobrunbook.run.params import RunParams

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("JOBRUNBOOK_LOG_SOURCE", "file")  # a source setting: allowed by name
    monkeypatch.setenv("JOBRUNBOOK_LOG_FILE", "/var/log/worker.log")
    pool = KernelPool(size=1).start() if warm else None
    try:
        run = execute_run(RunParams(fingerprint="00aa11bb22cc33dd"), notebooks_dir=ROOT / "tests" / "notebooks" / "env",
                          outputs_dir=tmp_path, env={"JOBRUNBOOK_REDIS_PASSWORD": "what-the-source-needs"},
                          pool=pool, timeout=60, render=False)
    finally:
        if pool is not None:
            pool.close()
    assert run.state == "done", run.sections
    env = _printed_env(run.run_dir / "notebooks" / "00_env.ipynb")
    executed = (run.run_dir / "notebooks" / "00_env.ipynb").read_text()
    for name, value in SECRETS.items():
        assert name not in env
        assert value not in executed
    # what the sources need is there: the secret passed for this run, the source settings, the run directory
    assert env["JOBRUNBOOK_REDIS_PASSWORD"] == "what-the-source-needs"
    assert env["JOBRUNBOOK_LOG_SOURCE"] == "file" and env[RUN_DIR_ENV] == str(run.run_dir)
    assert env["PATH"] == os.environ["PATH"]


def test_served_runs_kernels_never_see_the_webhook_token(tmp_path, monkeypatch):
    """The same through the service: POST an alert, the run's kernel prints its environment."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    from _service_helpers import wait_for

    app, store, _ = make_service(tmp_path, notebooks=ROOT / "tests" / "notebooks" / "env", concurrency=1)
    srv = ServerThread(app)
    try:
        assert srv.post(fixture_json("firing-warning.json")).status_code == 200
        row = wait_for(lambda: next((r for r in store.list() if r["state"] in ("done", "failed")), None), 120, 0.2,
                       "the run")
        assert row["state"] == "done", row["error"]
        env = _printed_env(tmp_path / row["run_id"] / "notebooks" / "00_env.ipynb")
        assert not set(SECRETS) & set(env)
        assert not [v for v in SECRETS.values() if v in json.dumps(env)]
        listed = requests.get(f"{srv.url}/runs/{row['run_id']}/notebooks/00_env.ipynb", headers=AUTH, timeout=10)
        assert listed.status_code == 200 and SECRETS["JOBRUNBOOK_WEBHOOK_TOKEN"] not in listed.text
    finally:
        srv.stop()


@pytest.mark.parametrize("dsn", ["postgresql://svc:pw-5ecret-91@[bad/jobrunbook",
                                 "postgresql://svc:pw-5ecret-91@127.0.0.1:1/jobrunbook",
                                 "postgresql://svc:pw-5ecret-91@127.0.0.1:notaport/jobrunbook"])
def test_a_store_that_cannot_be_opened_is_named_without_its_password(tmp_path, dsn):
    from jobrunbook._exceptions import ConfigError
    from jobrunbook.service.store import open_store

    with pytest.raises(ConfigError) as err:
        open_store(tmp_path, {"JOBRUNBOOK_STORE": dsn})
    said = f"{err.value} {getattr(err.value, 'hint', '')}"
    assert "pw-5ecret-91" not in said
    assert "Postgres" in said and "pg_isready" in said
