"""report.html, index.html and rca.md: offline, escaped, verdict first; opened in headless Chromium."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from _browser import open_report
from conftest import ROOT
from jobrunbook.findings import write_findings
from jobrunbook.report import render_index, render_report, write_rca
from jobrunbook.run import execute_run, params_from_labels
from jobrunbook.record import write_status

# calendar-sensitive (daily counters, expiries, windows, deadlines): `make test-dates` runs these under faketime
pytestmark = pytest.mark.dates

NOTEBOOKS = ROOT / "tests" / "notebooks"


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _refs(page: str) -> list[tuple[str, dict]]:
    p = _Refs()
    p.feed(page)
    return p.tags


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    params = params_from_labels(["alertname=JobFailureRateCritical", "severity=critical", "queue=default",
                                 "task_type=email:send"])
    return execute_run(params, notebooks_dir=NOTEBOOKS / "basic", outputs_dir=out, timeout=60)


def test_report_loads_nothing_from_outside(run):
    page = run.report.read_text()
    tags = _refs(page)
    assert not [t for t, a in tags if t == "script"]  # no script at all: no require.js, no MathJax
    for tag, attrs in tags:
        if tag == "a":
            continue  # a link is followed on a click, not loaded
        for key in ("src", "href", "data", "srcset", "poster"):
            value = (attrs.get(key) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "file:")), (tag, key, value[:80])
    imgs = [a["src"] for t, a in tags if t == "img"]
    assert len(imgs) == 2 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert "@import" not in page and "url(http" not in page


def test_report_verdict_first_then_sections_without_code(run):
    page = run.report.read_text()
    verdict_at = page.index('id="verdict"')
    assert verdict_at < page.index('id="s-00_alert"') < page.index('id="s-06_remediation"')
    head = page[verdict_at:page.index("<nav")]
    for text in ("Postgres refuses connections: email:send failing at 31%", "CRITICAL" if False else "critical",
                 "31.0 %", "email:send", "Database connection exhausted", "82 %",
                 "psql -c &#39;select count(*) from pg_stat_activity&#39;",
                 "jobrunbook remediate run --queue default --state retry --task-type email:send",
                 "2026-11-29T18:45:27Z", "page the database on-call", "dba-oncall", "External API down (10 %)"):
        assert text in head, text
    assert "02_asynq" in head and "deliberately broken" in head  # the failed section is called out up top
    assert "write_findings(" not in page and "import pandas" not in page  # no input cells
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "An Exception was encountered" in page


def test_clean_html_keeps_structure_drops_active_and_remote_content():
    dirty = ('<h2 id="x">Step</h2><p onclick="steal()">text</p><script>alert(1)</script>'
             '<style>body{display:none}</style><img src="https://evil.example/x.png" alt="r">'
             '<img src="data:image/png;base64,AAAA" alt="ok"><a href="javascript:alert(1)">j</a>'
             '<a href="https://runbooks.example.com/x">runbook</a><iframe src="https://x"></iframe>'
             '<table><tr><td colspan="2">1 &lt;b&gt;</td></tr></table><span style="color:red;position:fixed">!</span>')
    from jobrunbook.report import clean_html

    out = clean_html(dirty)
    assert '<h2 id="x">Step</h2>' in out and "<p>text</p>" in out and '<td colspan="2">1 &lt;b&gt;</td>' in out
    assert '<img src="data:image/png;base64,AAAA" alt="ok">' in out and '<img alt="r">' in out
    assert '<a href="https://runbooks.example.com/x">runbook</a>' in out and "javascript" not in out
    for gone in ("<script", "alert(1)", "onclick", "display:none", "evil.example", "<iframe", "position"):
        assert gone not in out, gone
    assert re.search(r'<span style="color: ?red;?">!</span>', out)  # the allowed property kept, alone


def test_missing_or_malformed_verdict_keys_read_unknown(tmp_path):
    run_dir = tmp_path / "r1"
    write_status(run_dir, {"run_id": "r1", "state": "done", "alertname": "<b>x</b>", "queue": "q", "sections": {}})
    write_findings("05_diagnosis", {"causes": "garbage", "escalation": 3, "failure_ratio": "n/a",
                                    "task_types": [{"task_type": "a:b"}, 7]}, run_dir)
    page = render_report(run_dir).read_text()
    assert page.count("unknown") >= 5 and "a:b, 7" in page and "&lt;b&gt;x&lt;/b&gt;" in page
    write_findings("05_diagnosis", {"causes": [{"name": "n", "confidence": "high", "actions": ["just text"]},
                                               "bare cause"]}, run_dir)
    page = render_report(run_dir).read_text()
    # the confidence is said once, as the word the finding gave
    assert re.search(r"Likely cause: n\s*<span class=\"conf\">\(confidence <abbr[^>]*>high</abbr>\)", page)
    assert "just text" in page
    (run_dir / "findings").mkdir(exist_ok=True)
    for f in (run_dir / "findings").iterdir():
        f.unlink()
    page = render_report(run_dir).read_text()
    assert "unknown: no verdict was recorded" in page
    assert "unknown: no verdict was recorded" in write_rca(run_dir).read_text()


def test_rca_has_timeline_figures_cause_actions(run):
    rca = (run.run_dir / "rca.md").read_text()
    for heading in ("## Timeline (UTC)", "## Figures", "## Cause", "## Actions", "## Escalation"):
        assert heading in rca
    assert "section 02_asynq: failed" in rca and "Failure rate: 31.0 %" in rca
    assert "**Database connection exhausted** (82 % confidence)" in rca
    assert "   jobrunbook remediate run --queue default --state retry --task-type email:send" in rca
    assert "(charts/failure_ratio.png)" in rca


def test_index_lists_runs_newest_first(tmp_path):
    for run_id, started, verdict in (("old", "2026-01-01T00:00:00Z", "first <i>one</i>"),
                                     ("new", "2026-02-01T00:00:00Z", "second")):
        write_status(tmp_path / run_id, {"run_id": run_id, "started_at": started, "alertname": "JobFailureRate",
                                         "queue": "default", "severity": "warning", "state": "done",
                                         "verdict": verdict})
        (tmp_path / run_id / "report.html").write_text("x")
    page = render_index(tmp_path).read_text()
    assert page.index('href="new/report.html"') < page.index('href="old/report.html"')
    assert "first &lt;i&gt;one&lt;/i&gt;" in page and "2026-02-01 00:00:00" in page


# --- headless Chromium --------------------------------------------------------


def test_report_in_headless_chromium(run):
    page = open_report(run.report, screenshot="report-fixture.png")
    assert len(page["images"]) == 2 and all(ok and w > 0 for ok, w in page["images"]), page["images"]
    assert page["width"] <= 1280, f"horizontal overflow: scrollWidth {page['width']}"
    assert page["title"].startswith("Postgres refuses connections")
    assert all(u.startswith(("file:", "data:")) for u in page["requested"]), page["requested"]
    assert page["png"][:8] == b"\x89PNG\r\n\x1a\n" and len(page["png"]) > 10_000


def _run_of(outputs, run_id: str, started: str, fingerprint: str, cause: str, queue: str = "critical"):
    write_status(outputs / run_id, {"run_id": run_id, "started_at": started, "alertname": "JobFailureRateCritical",
                                    "queue": queue, "task_type": "webhook:deliver", "severity": "critical",
                                    "state": "done", "fingerprint": fingerprint, "top_cause_name": cause,
                                    "verdict": f"{cause}: something", "sections": {}})
    write_findings("05_diagnosis", {"verdict": f"{cause}: something"}, outputs / run_id)
    return render_report(outputs / run_id)


def test_a_report_says_how_often_its_alert_fired_and_what_it_was_last_time(tmp_path):
    _run_of(tmp_path, "r-old", "2026-11-20T10:00:00Z", "abc123abc123abcd", "Timeout")  # 10 days before: out
    _run_of(tmp_path, "r-1", "2026-11-28T10:00:00Z", "abc123abc123abcd", "Dependency failure")
    _run_of(tmp_path, "r-other", "2026-11-29T09:00:00Z", "ffff0000ffff0000", "Panic")  # another alert
    page = _run_of(tmp_path, "r-2", "2026-11-30T10:00:00Z", "abc123abc123abcd", "Rate limited").read_text()
    assert "This alert fired 2 times in the last 7 days" in page
    assert 'Last time the top cause was <b>Dependency failure</b> (<a href="../r-1/report.html">r-1</a>)' in page
    assert "r-old" not in page and "r-other" not in page
    first = (tmp_path / "r-1" / "report.html").read_text()
    assert "This alert fired" not in first  # nothing before it


def test_index_groups_runs_by_target_then_alert(tmp_path):
    for run_id, started, fp, queue in (("a1", "2026-11-28T10:00:00Z", "aaaa0000aaaa0000", "critical"),
                                       ("b1", "2026-11-29T10:00:00Z", "bbbb0000bbbb0000", "critical"),
                                       ("a2", "2026-11-30T10:00:00Z", "aaaa0000aaaa0000", "critical"),
                                       ("c1", "2026-11-27T10:00:00Z", "cccc0000cccc0000", "low")):
        _run_of(tmp_path, run_id, started, fp, "Timeout", queue)
    page = render_index(tmp_path).read_text()
    # critical/webhook:deliver (newest run first), then low; within it, alert aaaa (a2, a1) before bbbb (b1)
    order = [page.index(f'href="{r}/report.html"') for r in ("a2", "a1", "b1", "c1")]
    assert order == sorted(order)
    assert page.index("critical / webhook:deliver") < page.index("low / webhook:deliver")
    assert page.count("fingerprint aaaa0000aaaa0000 · 2 run(s)") == 1
