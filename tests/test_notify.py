"""Notifications: real HTTP targets on 127.0.0.1:0; retries with backoff; never blocking; failures counted."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from jobrunbook.notify import Notifier, Target, build_event, slack_payload

STATUS = {"run_id": "20261129T183028Z-JobFailureRate-default-e4f4d901", "state": "done", "alertname": "JobFailureRate",
          "queue": "default", "task_type": "email:send", "severity": "warning"}
VERDICT = {"failure_ratio": 0.15, "severity": "warning",
           "causes": [{"name": "dependency down: postgres", "confidence": 0.8, "actions": []}],
           "escalation": {"deadline_utc": "2026-11-29T19:00:00Z", "next_step": "page the DB on-call", "who": "db"}}


class Target_:
    """A webhook target answering the codes in ``script`` in turn (then 200), after ``delay`` seconds."""

    def __init__(self, script=(), delay=0.0):
        self.script, self.delay, self.bodies = list(script), delay, []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                time.sleep(outer.delay)
                code = outer.script.pop(0) if outer.script else 200
                after = None
                if isinstance(code, tuple):  # (status, Retry-After seconds)
                    code, after = code
                self.send_response(code)
                if after is not None:
                    self.send_header("Retry-After", str(after))
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook/SECRET-PATH"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def results():
    return []


def _notifier(targets, results, **kw):
    sleeps = []
    n = Notifier(targets, on_result=lambda t, o: results.append((t, o)), sleep=sleeps.append, timeout=2, **kw)
    return n, sleeps


def test_headline_and_link_reach_slack_and_json_targets(results):
    slack, hook = Target_(), Target_()
    try:
        n, _ = _notifier([Target("slack", slack.url), Target("webhook", hook.url)], results)
        ev = build_event(STATUS, VERDICT, report_url="https://rb.example/runs/x/report.html")
        for f in n.submit(ev):
            assert f.result(10) is True
        text = slack.bodies[0]["text"]
        for part in ("WARNING", "15.0 %", "dependency down: postgres", "page the DB on-call", "2026-11-29T19:00:00Z",
                     "<https://rb.example/runs/x/report.html|report>"):
            assert part in text
        j = hook.bodies[0]
        assert (j["severity"], j["failure_pct"], j["top_cause"], j["next_step"], j["escalation_deadline"]) == (
            "warning", "15.0 %", "dependency down: postgres", "page the DB on-call", "2026-11-29T19:00:00Z")
        assert j["report_url"].endswith("/report.html") and j["source"] == "jobrunbook"
        assert sorted(results) == [("slack", "sent"), ("webhook", "sent")]
    finally:
        slack.close()
        hook.close()


def test_5xx_and_429_are_retried_with_backoff(results):
    t = Target_(script=[500, 429, 503])
    try:
        n, sleeps = _notifier([Target("webhook", t.url)], results, retries=3, backoff=0.5)
        assert n.submit(build_event(STATUS, VERDICT, report_url=""))[0].result(10) is True
        assert len(t.bodies) == 4 and sleeps == [0.5, 1.0, 2.0]
        assert results == [("webhook", "sent")]
    finally:
        t.close()


def test_retry_after_is_what_a_429_waits(results):
    t = Target_(script=[(429, 7), 503])
    try:
        n, sleeps = _notifier([Target("webhook", t.url)], results, retries=3, backoff=0.5)
        assert n.submit(build_event(STATUS, VERDICT, report_url=""))[0].result(10) is True
        assert len(t.bodies) == 3 and sleeps == [7.0, 1.0]  # the target's own wait, then the backoff
    finally:
        t.close()


def test_a_failed_notification_is_logged_and_counted_without_the_secret_url(results, caplog):
    refusing = Target_(script=[400])
    try:
        n, sleeps = _notifier([Target("slack", refusing.url), Target("webhook", "http://127.0.0.1:1/x")], results,
                              retries=2, backoff=0.1)
        with caplog.at_level(logging.WARNING, "jobrunbook.notify"):
            assert [f.result(10) for f in n.submit(build_event(STATUS, VERDICT, report_url=""))] == [False, False]
        assert len(refusing.bodies) == 1  # a 4xx is not retried
        assert sorted(results) == [("slack", "failed"), ("webhook", "failed")]
        assert "SECRET-PATH" not in caplog.text and "HTTP 400" in caplog.text and "ConnectionError" in caplog.text
    finally:
        refusing.close()


def test_submit_never_blocks_on_a_slow_target(results):
    slow = Target_(delay=1.5)
    try:
        n = Notifier([Target("webhook", slow.url)], on_result=lambda t, o: results.append(o))
        t0 = time.perf_counter()
        futures = n.submit(build_event(STATUS, VERDICT, report_url=""))
        assert time.perf_counter() - t0 < 0.05
        assert futures[0].result(10) is True
        n.close()
    finally:
        slow.close()


def test_slack_text_is_escaped():
    ev = build_event(STATUS | {"queue": "<!channel> & <@U1>"}, VERDICT, report_url="")
    assert "<!channel>" not in slack_payload(ev)["text"] and "&lt;!channel&gt; &amp;" in slack_payload(ev)["text"]


def test_targets_are_validated():
    with pytest.raises(Exception, match="http"):
        Target("slack", "file:///etc/passwd")
    with pytest.raises(Exception, match="kind"):
        Target("email", "http://x")
