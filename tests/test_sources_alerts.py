"""Related alerts from a real Alertmanager into which the test posts alerts."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
import yaml
from conftest import free_port
from jobrunbook.sources.alerts import ALERT_COLUMNS, RELATED_ALERTS, alert_filters, related_alerts
from sources_support import HTTPStub, SilentServer, closed_port, find_binary, wait_for_http


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory):
    binary = find_binary("alertmanager", "prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("alertmanager")
    config = {"route": {"receiver": "null", "group_by": ["alertname"], "group_wait": "0s"},
              "receivers": [{"name": "null"}]}
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([binary, f"--config.file={tmp / 'alertmanager.yml'}", f"--storage.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                             f"--web.external-url={url}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(url + "/-/ready", 20, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def post_alerts(url: str, alerts: list[dict]) -> None:
    resp = requests.post(url + "/api/v2/alerts", json=alerts, timeout=5)
    assert resp.status_code == 200, resp.text


def test_firing_resolved_silenced_and_unrelated(alertmanager):
    now = datetime.now(timezone.utc)
    started = now - timedelta(minutes=3)
    post_alerts(alertmanager, [
        {"labels": {"alertname": "DBConnectionExhausted", "severity": "critical", "cluster": "eu-1"},
         "annotations": {"summary": "Postgres connections at 98%"}, "startsAt": iso(started),
         "endsAt": iso(now + timedelta(hours=1)), "generatorURL": "http://prometheus/graph"},
        {"labels": {"alertname": "DBConnectionExhausted", "severity": "critical", "cluster": "us-1"},
         "startsAt": iso(started), "endsAt": iso(now + timedelta(hours=1))},
        {"labels": {"alertname": "HighErrorRate", "severity": "warning", "cluster": "eu-1"},
         "startsAt": iso(now - timedelta(hours=2)), "endsAt": iso(now - timedelta(hours=1))},  # resolved
        {"labels": {"alertname": "JobQueueBacklog", "severity": "warning", "cluster": "eu-1"},
         "startsAt": iso(started), "endsAt": iso(now + timedelta(hours=1))},
        {"labels": {"alertname": "Watchdog", "severity": "none"}, "startsAt": iso(started),
         "endsAt": iso(now + timedelta(hours=1))},
    ])
    silence = {"matchers": [{"name": "alertname", "value": "JobQueueBacklog", "isRegex": False, "isEqual": True}],
               "startsAt": iso(now - timedelta(minutes=1)), "endsAt": iso(now + timedelta(hours=1)),
               "createdBy": "test", "comment": "known backlog"}
    assert requests.post(alertmanager + "/api/v2/silences", json=silence, timeout=5).status_code == 200
    deadline = time.monotonic() + 10
    while True:  # until Alertmanager has applied the silence
        result = related_alerts(alertmanager)
        assert result.ok, result.message
        if result.data["suppressed"] == ["JobQueueBacklog"]:
            break
        assert time.monotonic() < deadline, result.message
        time.sleep(0.2)
    assert result.data["firing"] == {"JobQueueBacklog": False, "DBConnectionExhausted": True, "HighErrorRate": False}
    alerts = result.data["alerts"]
    assert list(alerts.columns) == ALERT_COLUMNS
    assert "Watchdog" not in set(alerts["alertname"]) and "HighErrorRate" not in set(alerts["alertname"])
    assert alerts.iloc[0]["alertname"] == "DBConnectionExhausted"
    assert (alerts["alertname"] == "DBConnectionExhausted").sum() == 2
    backlog = alerts[alerts["alertname"] == "JobQueueBacklog"].iloc[0]
    assert backlog["state"] == "suppressed" and len(backlog["silenced_by"]) == 1
    assert alerts.loc[alerts["labels"].map(lambda x: x.get("cluster") == "eu-1")
                      & (alerts["alertname"] == "DBConnectionExhausted"), "summary"].tolist() == [
        "Postgres connections at 98%"]
    assert result.message.startswith("firing now: DBConnectionExhausted (critical, 2 alerts, since ")
    assert "silenced or inhibited: JobQueueBacklog" in result.message
    assert abs((alerts["starts_at"].iloc[0] - started).total_seconds()) < 0.001

    # narrowed by the alert's labels: one cluster
    us = related_alerts(alertmanager, matchers={"cluster": "us-1"})
    assert len(us.data["alerts"]) == 1 and us.data["firing"]["DBConnectionExhausted"]
    # configurable names
    custom = related_alerts(alertmanager, names=("Watchdog", "HighErrorRate"))
    assert custom.data["firing"] == {"Watchdog": True, "HighErrorRate": False}
    nothing = related_alerts(alertmanager, names=("NoSuchAlert",))
    assert nothing.ok and nothing.data["firing"] == {"NoSuchAlert": False} and "none of NoSuchAlert" in nothing.message


def test_alertmanager_rejects_bad_filter(alertmanager):
    result = related_alerts(alertmanager, matchers={"bad label!": "x"})
    assert result.status == "error" and "400" in result.message
    assert result.hint.startswith("curl -sG") and "active=true" in result.hint


def test_alertmanager_down_timeout_and_not_alertmanager():
    down = related_alerts(f"http://127.0.0.1:{closed_port()}")
    assert down.status == "down" and "Alertmanager connection refused" in down.message
    silent = SilentServer()
    try:
        slow = related_alerts(silent.url(), timeout=0.5)
    finally:
        silent.close()
    assert slow.status == "timeout" and "0.5 s" in slow.message
    stub = HTTPStub()
    stub.routes["/api/v2/alerts"] = (200, "text/html", "<html>login</html>")
    try:
        wrong = related_alerts(stub.url())
    finally:
        stub.close()
    assert wrong.status == "error" and "JSON list" in wrong.message
    assert alert_filters(RELATED_ALERTS, {"queue": 'de"f'}) == [
        'alertname=~"JobQueueBacklog|DBConnectionExhausted|HighErrorRate"', 'queue="de\\"f"']
