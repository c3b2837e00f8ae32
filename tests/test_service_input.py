"""Hostile and broken webhook input: the right 4xx, or handled safely; nothing executed, nothing outside outputs/."""

from __future__ import annotations

import json
import os

import pytest
import requests
from _service_helpers import accept_only, AUTH, TOKEN, ServerThread, fixture_bytes, fixture_json, make_service, wait_for
from jobrunbook.record import read_status

CANARY = "/tmp/jobrunbook-service-pwned"
HOSTILE = {
    "traversal": "../../../../tmp/evil",
    "nul": "default\x00../../etc",
    "shell": f'q"; touch {CANARY}; $(touch {CANARY}) `touch {CANARY}` | rm -rf / &',
    "unicode": "队列\u202e\U0001f525" * 1000,  # 4,000 characters: under the 4,096 cap
}


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    with accept_only(tmp_path_factory.mktemp("outputs")) as pair:
        yield pair


def _without(body: dict, path: list) -> dict:
    body = json.loads(json.dumps(body))
    node = body
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    return body


@pytest.mark.parametrize("data, status, field", [
    (b"{not json", 400, ""),
    (b"", 400, ""),
    (b"\xff\xfe\x00", 400, ""),
    (b"[1, 2]", 422, ""),
    (json.dumps(fixture_json("firing-warning.json") | {"version": "3"}).encode(), 422, "version"),
    (json.dumps(fixture_json("firing-warning.json") | {"version": 4}).encode(), 422, "version"),
    (json.dumps(_without(fixture_json("firing-warning.json"), ["groupKey"])).encode(), 422, "groupKey"),
    (json.dumps(_without(fixture_json("firing-warning.json"), ["alerts"])).encode(), 422, "alerts"),
    (json.dumps(_without(fixture_json("firing-warning.json"), ["alerts", 0, "fingerprint"])).encode(), 422,
     "alerts.0.fingerprint"),
    (json.dumps(_without(fixture_json("firing-warning.json"), ["alerts", 0, "labels", "alertname"])).encode(), 422,
     "alerts.0.labels"),
    (json.dumps(fixture_json("firing-warning.json") | {"status": "maybe"}).encode(), 422, "status"),
    (json.dumps(fixture_json("firing-warning.json") | {"truncatedAlerts": -1}).encode(), 422, "truncatedAlerts"),
])
def test_bad_bodies_get_a_4xx_naming_the_field(receiver, data, status, field):
    srv, store = receiver
    r = srv.post(data)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and r.json()["error"]
    assert store.list() == []


def test_bad_times_and_label_names_are_refused(receiver):
    srv, store = receiver
    body = fixture_json("firing-warning.json")
    body["alerts"][0]["startsAt"] = "yesterday"
    r = srv.post(body)
    assert r.status_code == 422 and r.json()["field"] == "alerts.0.startsAt"
    body = fixture_json("firing-warning.json")
    body["alerts"][0]["labels"]["../../etc"] = "x"
    r = srv.post(body)
    assert r.status_code == 422 and r.json()["field"] == "alerts.0.labels" and "label name" in r.json()["error"]
    body = fixture_json("firing-warning.json")
    body["alerts"][0]["fingerprint"] = "../../x"
    assert srv.post(body).json()["field"] == "alerts.0.fingerprint"
    body = fixture_json("firing-warning.json")
    body["alerts"][0]["labels"]["queue"] = "\U0001f525" * 5000
    r = srv.post(body)
    assert r.status_code == 422 and r.json()["field"] == "alerts.0.labels.queue"
    assert store.list() == []


def test_ten_megabyte_body_is_413(receiver):
    srv, store = receiver
    big = b'{"version": "4", "pad": "' + b"x" * (10 << 20) + b'"}'
    r = srv.post(big)
    assert r.status_code == 413 and r.json()["field"] == "body"
    # chunked, no Content-Length: the cap holds while streaming
    r = requests.post(srv.url + "/alerts", data=iter([b"x" * (1 << 16)] * 40), headers=AUTH, timeout=30)
    assert r.status_code == 413
    assert store.list() == []


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN},
    {"Authorization": f"Token {TOKEN}"}, {"Authorization": "Basic !!!"}, {"Authorization": "Bearer " + "a" * 10000},
])
def test_wrong_or_missing_token_is_401(receiver, headers):
    srv, store = receiver
    r = srv.post(fixture_bytes("firing-warning.json"), headers=headers)
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    assert TOKEN not in r.text
    assert store.list() == []


def test_wrong_content_type_is_415(receiver):
    srv, _ = receiver
    r = srv.post(fixture_bytes("firing-warning.json"), headers={"Authorization": AUTH["Authorization"],
                                                                "Content-Type": "text/html"})
    assert r.status_code == 415


def test_hostile_label_values_run_safely(tmp_path):
    """Real runs (real engine, trivial notebooks) for labels holding ../, NUL, shell and long unicode."""
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    before = set(os.listdir(tmp_path))
    app, store, _ = make_service(outputs, concurrency=2)
    srv = ServerThread(app)
    try:
        body = fixture_json("firing-warning.json")
        template = body["alerts"][0]
        body["alerts"] = []
        for i, value in enumerate(HOSTILE.values()):
            alert = json.loads(json.dumps(template))
            alert["labels"]["queue"] = value
            alert["labels"]["task_type"] = value[:200]
            alert["fingerprint"] = f"{i:016x}"
            body["alerts"].append(alert)
        r = srv.post(body)
        assert r.status_code == 200 and len(r.json()["queued"]) == 4
        wait_for(lambda: all(x["state"] in ("done", "failed") for x in store.list()), 120, 0.2, "hostile runs")
        rows = store.list()
        for row in rows:
            assert row["state"] == "done", row["error"]
            run_dir = outputs / row["run_id"]
            assert run_dir.parent == outputs and run_dir.is_dir() and not run_dir.is_symlink()
            assert all(c.isalnum() or c in "._-" for c in row["run_id"])
            params = json.loads((run_dir / "params.json").read_text())
            assert "\x00" not in params["queue"] and len(params["queue"]) <= 256
            assert read_status(run_dir)["state"] == "done"
        listing = srv.get("/runs").json()
        assert {r["labels"]["queue"] for r in listing} == set(HOSTILE.values())  # stored as received, served as JSON
    finally:
        srv.stop()
    assert not os.path.exists(CANARY)
    assert set(os.listdir(tmp_path)) == before
    assert not (tmp_path.parent / "tmp" / "evil").exists()
