"""The run's report: ``report.html`` (self-contained, offline), ``outputs/index.html`` and ``rca.md``.

The notebooks are rendered by nbconvert's ``basic`` template (cell bodies
only: no require.js, no MathJax, no CDN) with inputs and prompts excluded and
HTML outputs sanitised; the page around them is ``templates/report.html.j2``
(Jinja2, autoescaped), so nothing in the page loads from outside and every
image is an inline data URI. The verdict block comes from the findings (see
``jobrunbook.findings``); a missing key reads "unknown", never an error.
"""

from __future__ import annotations

import base64
import html
import json
import os
import threading
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jobrunbook import clock
from jobrunbook.findings import read_findings, summarize_verdict
from jobrunbook.record import read_status

__all__ = ["clean_html", "render_report", "render_index", "write_rca", "verdict_line", "normalise_verdict", "notebook_body",
           "prewarm"]

UNKNOWN = "unknown"


_ENV = None


def _env():
    global _ENV
    if _ENV is None:
        import jinja2

        loader = jinja2.FileSystemLoader(str(resources.files("jobrunbook") / "templates"))
        _ENV = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.ChainableUndefined)
    return _ENV


def template(name: str):
    """One of jobrunbook's Jinja templates (``templates/``), autoescaped."""
    return _env().get_template(name)


def _css() -> str:
    """The report's stylesheet, with each cause's colour key (the charts use the same colours)."""
    from jobrunbook.diagnosis.causes import CAUSES, UNKNOWN_COLOUR

    base = (resources.files("jobrunbook") / "templates" / "report.css").read_text(encoding="utf-8")
    keys = [f".cause-{c.key.replace('_', '-')}::before{{background:{c.colour}}}" for c in CAUSES]
    return base + "\n" + "".join(keys) + f".cause-unknown::before{{background:{UNKNOWN_COLOUR}}}\n"


def _text(value: Any, limit: int = 500) -> str:
    if value in (None, "", [], {}):
        return UNKNOWN
    if isinstance(value, list | tuple):
        return ", ".join(_text(v, limit) for v in value)[:limit]
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_text(v, limit)}" for k, v in value.items())[:limit]
    return str(value)[:limit]


def _pct(value: Any, *, places: int = 1) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return UNKNOWN
    if x != x:
        return UNKNOWN
    return f"{x * 100:.{places}f} %" if x <= 1 else f"{x:.{places}f} %"


def _confidence(value: Any) -> tuple[float, str]:
    if isinstance(value, str) and value and not value.replace(".", "", 1).isdigit():
        return (0.0, value[:40])
    try:
        x = float(value)
    except (TypeError, ValueError):
        return (0.0, UNKNOWN)
    return (x if x <= 1 else x / 100, _pct(x, places=0))


def normalise_verdict(verdict: Mapping[str, Any]) -> dict[str, Any]:
    """Display-ready strings from the verdict keys, whatever shape they arrived in.

    A cause's confidence is said once, as a word (``level``), its score kept for a hover
    (``confidence_score``); a cause's size is its share of the failed tasks. Causes keep the diagnosis's
    order (by failed tasks) when they carry a share, else they are ordered by confidence.
    """
    causes_in = verdict.get("causes")
    causes = []
    for c in causes_in if isinstance(causes_in, list) else []:
        if not isinstance(c, Mapping):
            c = {"name": c}
        rank, conf = _confidence(c.get("confidence"))
        evidence = c.get("evidence")
        evidence = [evidence] if isinstance(evidence, str | Mapping) else evidence if isinstance(evidence, list) else []
        actions = []
        for a in c.get("actions") if isinstance(c.get("actions"), list) else []:
            a = a if isinstance(a, Mapping) else {"title": a}
            actions.append({"title": _text(a.get("title"), 700),
                            "command": str(a.get("command") or "")[:2000],
                            "changes_state": a.get("changes_state") is True})
        share = c.get("share") if isinstance(c.get("share"), int | float) else None
        level = c.get("level") if isinstance(c.get("level"), str) and c.get("level") else None
        causes.append({"key": _text(c.get("key"), 40) if c.get("key") else "", "name": _text(c.get("name"), 200),
                       "onset": _text(c.get("onset"), 300) if c.get("onset") else "",
                       "confidence": level[:20] if level else conf, "rank": rank,
                       "confidence_score": f"score {rank:.2f} of 1" if level else "",
                       "share": share, "share_pct": _pct(share) if share is not None else "",
                       "failures": c.get("failures") if isinstance(c.get("failures"), int) else None,
                       "evidence": [_text(e, 400) for e in evidence][:8], "actions": actions})
    if not any(c["share"] is not None for c in causes):
        causes.sort(key=lambda c: -c["rank"])
    top = causes[0] if causes else None
    named = top is not None and verdict.get("top_cause") != UNKNOWN
    esc = verdict.get("escalation") if isinstance(verdict.get("escalation"), Mapping) else {}
    severity = _text(verdict.get("severity"), 40)
    types = verdict.get("task_types")
    if isinstance(types, list):
        types = [t.get("task_type", t.get("name", t)) if isinstance(t, Mapping) else t for t in types]
    top_action = next((a for a in (top["actions"] if top else []) if a["command"]), None)
    ratios = verdict.get("ratios") if isinstance(verdict.get("ratios"), Mapping) else {}

    def ratio(who: str) -> dict[str, str] | None:
        r = ratios.get(who)
        if not isinstance(r, Mapping) or r.get("ratio") is None:
            return None
        counts = (f"{r['failed']:,.0f} failed of {r['processed']:,.0f}, " if isinstance(r.get("failed"), int | float)
                  and isinstance(r.get("processed"), int | float) else "")
        return {"pct": _pct(r.get("ratio")), "source": counts + _text(r.get("source"), 200)}

    return {
        "headline": _text(verdict.get("verdict"), 400) if verdict.get("verdict") else
        (f"Likely cause: {top['name']}" if top else "unknown: no verdict was recorded"),
        "severity": severity,
        "severity_label": severity.upper() if severity != UNKNOWN else "",
        "severity_class": severity.lower() if severity.lower() in ("critical", "warning", "info") else "unknown",
        "failure_pct": _pct(verdict.get("failure_ratio")),
        "failure_source": _text(verdict.get("failure_ratio_source"), 200) if verdict.get("failure_ratio_source") else "",
        "ratio_app": ratio("app"),
        "ratio_asynq": ratio("asynq"),
        "ratio_differ": _text(ratios.get("reason"), 600) if ratios.get("differ") else "",
        "task_types": _text(types, 300),
        "cause_key": top["key"] if top else "",
        "cause_name": (top["name"] if named else f"unknown (strongest candidate: {top['name']})") if top else UNKNOWN,
        "cause_confidence": top["confidence"] if top else UNKNOWN,
        "cause_score": top["confidence_score"] if top else "",
        "cause_share": top["share_pct"] if top else "",
        "cause_failures": top["failures"] if top else None,
        "cause_evidence": top["evidence"] if top else [],
        "cause_onset": top["onset"] if top else "",
        "other_causes": causes[1:4],
        "top_action": top_action,
        "actions": [a for a in (top["actions"] if top else []) if a is not top_action],
        "deadline": _text(esc.get("deadline_utc"), 60),
        "deadline_relative": _text(esc.get("remaining") or esc.get("deadline_relative"), 60)
        if esc.get("remaining") or esc.get("deadline_relative") else "",
        "started_from": _text(esc.get("started_from"), 200) if esc.get("started_from") else "",
        "next_step": _text(esc.get("next_step"), 300),
        "who": _text(esc.get("who"), 120),
    }


def verdict_line(verdict: Mapping[str, Any]) -> str:
    """One line for a terminal or a notification: cause first, then severity and failure rate."""
    v = normalise_verdict(verdict)
    return (f"{v['cause_name']} ({v['cause_confidence']}) | {v['severity']} | failures {v['failure_pct']} | "
            f"{v['task_types']} | {v['headline']}")


_EXPORTER: Any = None
_EXPORTER_LOCK = threading.Lock()  # one exporter for the process (its templates compiled once), used by one at a time


def notebook_body(path: Path, exporter: Any = None) -> str:
    """The executed notebook as HTML: outputs and markdown only, sanitised, images inline."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return exporter.from_notebook_node(nb)[0] if exporter is not None else _convert(nb)


def _convert(nb: Any) -> str:
    global _EXPORTER
    with _EXPORTER_LOCK:
        if _EXPORTER is None:
            _EXPORTER = _exporter()
        return _EXPORTER.from_notebook_node(nb)[0]


def prewarm() -> None:
    """Build the exporter and convert a small notebook once (nbconvert's imports, its templates), so that the
    first report does not pay for them: a run calls it while its first kernels start."""
    import nbformat

    _convert(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# warm"), nbformat.v4.new_code_cell(
        "x", outputs=[nbformat.v4.new_output("display_data", data={"text/html": "<table><tr><td>1</td></tr></table>",
                                                                   "text/markdown": "**x**"})])]))


_DROP_WITH_CONTENT = frozenset({"script", "style", "iframe", "object", "embed", "template"})
_TAGS = frozenset({"a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "details", "div", "dl", "dt",
                   "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre",
                   "s", "small", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot",
                   "th", "thead", "tr", "u", "ul"})
_ATTRS = {"*": {"class", "id", "title"}, "a": {"href"}, "img": {"alt", "width", "height", "src"},
          "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}, "span": {"style"}, "div": {"style"}}
_CSS = {"color", "font-size", "font-weight", "background-color", "text-align", "font-family"}


def _attribute(tag: str, name: str, value: str) -> str | None:
    # an image may only be inline: a remote src would load from the network (and stall offline)
    if tag == "img" and name == "src" and not value.startswith("data:image/"):
        return None
    return value


def clean_html(text: str) -> str:
    """Sanitise HTML from notebooks (nh3): an allowlist of tags and CSS properties, inline images only."""
    import nh3

    return nh3.clean(str(text), tags=set(_TAGS), clean_content_tags=set(_DROP_WITH_CONTENT), attributes=_ATTRS,
                     attribute_filter=_attribute, url_schemes={"http", "https", "mailto", "data"},
                     filter_style_properties=_CSS, strip_comments=True, link_rel=None)


def _exporter():
    from nbconvert import HTMLExporter

    # basic = cell bodies only (no require.js, no MathJax); sanitize_html routes HTML through clean_html
    return HTMLExporter(template_name="basic", exclude_input=True, exclude_input_prompt=True,
                        exclude_output_prompt=True, sanitize_html=True, embed_images=False,
                        filters={"clean_html": clean_html})


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def _now_text() -> str:
    return clock.utcnow().strftime("%Y-%m-%d %H:%M:%S UTC")


def _resolution(run_dir: Path, status: Mapping[str, Any], findings: Mapping[str, Any]) -> dict[str, Any] | None:
    """How the incident ended, for a resolved run: times, the failure rate then and now, what was done, a timeline."""
    if status.get("state") != "resolved" and not status.get("resolved_at"):
        return None
    from markupsafe import Markup

    from jobrunbook.tables import format_duration, render_table

    closing = status.get("closing") if isinstance(status.get("closing"), Mapping) else {}
    alert = (findings.get("00_alert") or {}).get("data") or {}
    ttr = status.get("time_to_resolve_s")
    audit = _audit(run_dir)
    done = [a for a in audit if not a.get("dry_run") and a.get("step") in ("done", "restore", "refused", "verify",
                                                                             "interrupted")]
    rows = [{"time": a.get("ts"), "step": a.get("step"), "action": a.get("action") or "restore",
             "queue": (a.get("filter") or {}).get("queue", ""), "tasks": a.get("done", a.get("restored")),
             "export": Path(str(a["export"])).name if a.get("export") else "", "who": a.get("who", "")}
            for a in done]
    events = [(status.get("starts_at"), "the alert fired"), (status.get("started_at"), "the runbook run started"),
              (status.get("ended_at"), "the report was ready")]
    events += [(a.get("ts"), f"remediation {a.get('step')}: {a.get('action') or 'restore'} "
                             f"{(a.get('filter') or {}).get('queue', '')}" + (" (dry run)" if a.get("dry_run") else ""))
               for a in audit if a.get("step") not in ("batch",) and not str(a.get("command", "")).endswith(
                   "(planned by 06)")]
    events.append((status.get("resolved_at"), f"resolved by {closing.get('resolved_by') or 'Alertmanager'}"))
    timeline = [{"time": when, "what": what} for when, what in sorted((e for e in events if e[0]),
                                                                      key=lambda e: str(e[0]))]
    ratio_now = closing.get("failure_ratio_now")
    return {
        "resolved_at": _when_text(status.get("resolved_at")),
        "time_to_resolve": format_duration(ttr) if isinstance(ttr, int | float) else UNKNOWN,
        "ratio_then": _pct(alert.get("failure_ratio")),
        "ratio_now": _pct(ratio_now),
        "ratio_source": _text(closing.get("failure_ratio_source"), 200) if closing.get("failure_ratio_source") else "",
        "chart": _resolution_chart(findings, status),
        "done": Markup(render_table(rows, kinds={"export": "id", "who": "id"})) if rows else None,
        "timeline": Markup(render_table(timeline, kinds={"what": "text"}, limit=60)),
    }


def _when_text(value: Any) -> str:
    from jobrunbook.tables import format_time

    return format_time(value) if value else UNKNOWN


def _audit(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "audit.jsonl"
    out = []
    if path.exists():
        for raw in path.read_text(encoding="utf-8").splitlines()[-500:]:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def _resolution_chart(findings: Mapping[str, Any], status: Mapping[str, Any]) -> str | None:
    """The failure ratio the metrics section recorded, redrawn with the alert's start and its resolve."""
    series = (((findings.get("03_metrics") or {}).get("data") or {}).get("prometheus") or {}).get("series")
    if not series:
        return None
    from jobrunbook.charts import failure_ratio_chart

    try:
        fig = failure_ratio_chart(series, alert_start=status.get("starts_at") or None,
                                  resolved_at=status.get("resolved_at") or None, title="Failure ratio until resolved")
        return "data:image/png;base64," + base64.b64encode(fig.png_bytes()).decode()
    except Exception:  # noqa: BLE001 - a chart that cannot be drawn leaves the rest of the page
        return None


def render_report(run_dir: str | os.PathLike, *, status: Mapping[str, Any] | None = None,
                  bodies: Mapping[str, str] | None = None) -> Path:
    """Write ``run_dir/report.html`` from the executed notebooks, the findings and status.json.

    ``bodies``: section name -> its notebook already converted (``notebook_body``, by the run as each
    section ended); the others are converted here."""
    from markupsafe import Markup

    from jobrunbook.history import alert_history

    run_dir = Path(run_dir)
    status = dict(status or read_status(run_dir))
    findings = read_findings(run_dir)
    v = normalise_verdict(summarize_verdict(findings))
    states = status.get("sections") or {}
    names = sorted(set(states) | {p.stem for p in (run_dir / "notebooks").glob("*.ipynb")})
    sections = []
    for name in names:
        st = states.get(name, {})
        nb_path = run_dir / "notebooks" / f"{name}.ipynb"
        try:
            body = Markup((bodies or {}).get(name) or notebook_body(nb_path)) if nb_path.exists() else \
                Markup("<p>The notebook did not start; see the error above.</p>")
        except Exception as exc:  # noqa: BLE001 - one unreadable notebook must not hide the others
            body = Markup("<p class='failed-note'>Could not render this notebook: {}</p>").format(
                f"{type(exc).__name__}: {exc}")
        elapsed = st.get("elapsed_s")
        sections.append({"section": name, "state": st.get("state", UNKNOWN), "error": st.get("error"),
                         "degraded": st.get("degraded"),
                         "elapsed": f"{elapsed:.1f} s" if isinstance(elapsed, int | float) else "", "body": body})
    failed = [s for s in sections if s["state"] not in ("ok", "degraded")]
    degraded = [s for s in sections if s["state"] == "degraded"]
    shown = "".join(str(s["body"]) for s in sections)
    charts = [{"name": p.stem, "uri": uri} for p in sorted((run_dir / "charts").glob("*.png"))
              if (uri := _data_uri(p)).split(",", 1)[1] not in shown]  # figures no section displayed
    try:
        history = alert_history(status, run_dir.parent)
    except Exception:  # noqa: BLE001 - the past of an alert is a courtesy, never a reason to lose the report
        history = None
    page = template("report.html.j2").render(
        v=v, status=status, sections=sections, failed=failed, degraded=degraded, charts=charts, css=Markup(_css()),
        generated=_now_text(), history=history, resolution=_resolution(run_dir, status, findings))
    out = run_dir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def index_page(outputs_dir: str | os.PathLike, not_run: list[Mapping[str, Any]] = ()) -> str:
    """The outputs index as HTML: every run by queue/task type, then by alert, newest first; ``not_run`` are the
    service's alerts that were recorded without a run (``capped``; ``linked``: a warning its critical's run
    covers, shown beside that run and linking to it), from ``Store.list``."""
    from markupsafe import Markup

    from jobrunbook.history import grouped_runs, read_runs

    outputs_dir = Path(outputs_dir)
    runs = []
    for st in read_runs(outputs_dir):
        run_id = st["run_id"]
        runs.append({**st,
                     "time": str(st.get("started_at") or "")[:19].replace("T", " "),
                     "state": st.get("state", UNKNOWN), "verdict": _text(st.get("verdict"), 200),
                     "href": f"{quote(run_id)}/report.html" if st["has_report"] else None})
    count = len(runs)
    for row in not_run:
        covering = row.get("covering_run_id")
        note = (f"not run: covered by the critical run {covering}" if row.get("state") == "linked" and covering
                else "not run: covered by a critical's run" if row.get("state") == "linked"
                else f"not run: {'the queue was full' if row.get('cap_reason') == 'queue' else 'over the per-group cap'}")
        runs.append({"run_id": f"alert #{row.get('id')}", "queue": row.get("queue"), "task_type": row.get("task_type"),
                     "fingerprint": row.get("fingerprint"), "alertname": row.get("alertname"),
                     "severity": row.get("severity"), "started_at": row.get("received_at"),
                     "time": str(row.get("received_at") or "")[:19].replace("T", " "), "state": row.get("state"),
                     "verdict": note, "href": f"{quote(covering)}/report.html" if covering else None})
    return template("index.html.j2").render(groups=grouped_runs(runs), count=count, not_run=len(not_run),
                                            css=Markup(_css()), generated=_now_text())


def render_index(outputs_dir: str | os.PathLike) -> Path:
    """Write ``outputs_dir/index.html`` (``index_page``)."""
    outputs_dir = Path(outputs_dir)
    out = outputs_dir / "index.html"
    tmp = out.with_suffix(f".html.{os.getpid()}.tmp")  # several writers (workers, replicas) share the folder
    tmp.write_text(index_page(outputs_dir), encoding="utf-8")
    os.replace(tmp, out)
    return out


def _md(value: Any) -> str:
    """Untrusted text made inert in Markdown: HTML escaped, table pipes and backticks neutralised."""
    return html.escape(_text(value, 500), quote=False).replace("|", "\\|").replace("`", "'").replace("\n", " ")


def _resolution_lines(closing: Mapping[str, Any]) -> list[str]:
    """The Resolution section of rca.md: when Alertmanager resolved it, and the failure ratio then."""
    v = closing.get("failure_ratio_now")
    now = f"{v * 100:.2f} %" if isinstance(v, int | float) else "unknown"
    rows = [f"| {_md(name)} | {t * 100:.0f} % | {'below' if b else 'above' if b is False else 'unknown'} |"
            for (name, t), b in zip((closing.get("thresholds") or {}).items(), (closing.get("below") or {}).values(),
                                    strict=False)]
    return ["## Resolution", "",
            f"Resolved by {_md(closing.get('resolved_by') or 'Alertmanager')} at {_md(closing.get('resolved_at'))}; "
            f"time to resolve: "
            f"{_md(closing.get('time_to_resolve_s'))} s.", "",
            f"Failure ratio now: **{now}** ({_md(closing.get('failure_ratio_source'))}, checked "
            f"{_md(closing.get('checked_at'))}).", "", "| threshold | value | now |", "|---|---|---|", *rows, ""]


def write_rca(run_dir: str | os.PathLike, *, status: Mapping[str, Any] | None = None) -> Path:
    """Write ``run_dir/rca.md``: timeline, figures, cause, actions, for the post-incident review."""
    run_dir = Path(run_dir)
    status = dict(status or read_status(run_dir))
    verdict = summarize_verdict(read_findings(run_dir))
    v = normalise_verdict(verdict)
    lines = [f"# Incident summary: {_md(status.get('alertname'))} on queue {_md(status.get('queue'))}", "",
             f"**Verdict:** {_md(v['headline'])}", "", "## Timeline (UTC)", "",
             "| when | what |", "|---|---|"]
    events = [(status.get("starts_at"), "alert started firing"), (status.get("started_at"), "runbook run started")]
    for name, st in sorted((status.get("sections") or {}).items()):
        events.append((st.get("ended_at"), f"section {name}: {st.get('state')}"))
    events.append((status.get("ended_at"), f"run finished: {status.get('state')}"))
    if status.get("resolved_at"):
        events.append((status.get("resolved_at"), "alert resolved"))
    for when, what in sorted((e for e in events if e[0]), key=lambda e: str(e[0])):
        lines.append(f"| {_md(when)} | {_md(what)} |")
    lines += ["", "## Figures", "",
              f"- Severity: {_md(v['severity'])}",
              f"- Failure rate: {_md(v['failure_pct'])}" + (f" ({_md(v['failure_source'])})" if v["failure_source"] else ""),
              *([f"- Failed, by asynq's own counters: {_md(v['ratio_asynq']['pct'])} ({_md(v['ratio_asynq']['source'])})"]
                if v["ratio_asynq"] else []),
              *([f"- The two differ: {_md(v['ratio_differ'])}"] if v["ratio_differ"] else []),
              f"- Task types failing: {_md(v['task_types'])}",
              f"- Run duration: {_md(status.get('duration_s'))} s; sections not completed: "
              f"{_md(status.get('failed_sections') or 'none')}"]
    if status.get("time_to_resolve_s") is not None:
        lines.append(f"- Time to resolve: {_md(status.get('time_to_resolve_s'))} s")
    charts = sorted((run_dir / "charts").glob("*.png"))
    lines += [f"- ![{_md(p.stem)}](charts/{quote(p.name)})" for p in charts]
    share = f"{v['cause_share']} of failed tasks, " if v["cause_share"] else ""
    lines += ["", "## Cause", "", f"**{_md(v['cause_name'])}** ({_md(share) if share else ''}"
                                  f"{_md(v['cause_confidence'])} confidence)", ""]
    if v["cause_onset"]:
        lines += [f"Onset: {_md(v['cause_onset'])}", ""]
    lines += [f"- {_md(e)}" for e in v["cause_evidence"]]
    if v["other_causes"]:
        lines += ["", "Other candidates: " + ", ".join(
            f"{_md(c['name'])} ({_md(c['share_pct'] + ' of failed tasks' if c['share_pct'] else c['confidence'])})"
            for c in v["other_causes"])]
    lines += ["", "## Actions", ""]
    actions = ([v["top_action"]] if v["top_action"] else []) + v["actions"]
    for a in actions or [{"title": UNKNOWN, "command": ""}]:
        lines.append(f"1. {_md(a['title'])}")
        if a["command"]:
            lines += ["", "   ```sh", "   " + a["command"].replace("```", "'''").replace("\n", "\n   "), "   ```"]
    audit = run_dir / "audit.jsonl"
    if audit.exists():
        lines += ["", "## Actions taken (audit.jsonl)", ""]
        for raw in audit.read_text(encoding="utf-8").splitlines()[-50:]:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if rec.get("step") == "batch":
                continue
            count = rec.get("done", rec.get("count", rec.get("restored")))
            lines.append(f"- {_md(rec.get('ts'))}: {_md(rec.get('step'))} {_md(rec.get('action') or 'restore')} "
                         f"{_md((rec.get('filter') or {}).get('queue', ''))}"
                         + (f", {_md(count)} task(s)" if count is not None else "")
                         + (" (dry run)" if rec.get("dry_run") else ""))
    counted = f" ({_md(v['deadline_relative'])}, counted from {_md(v['started_from'])})" if v["started_from"] else ""
    lines += ["", "## Escalation", "", f"Deadline {_md(v['deadline'])}{counted}; next step: {_md(v['next_step'])}"
              + ("" if v["who"] in v["next_step"] else f"; who: {_md(v['who'])}"), "", f"Report: report.html (run {_md(status.get('run_id'))})", ""]
    if isinstance(status.get("closing"), Mapping):
        lines += _resolution_lines(status["closing"])
    out = run_dir / "rca.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    return out
