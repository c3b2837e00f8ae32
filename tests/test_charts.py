"""Each chart function: plain data in, a Figure with the right marks out, a PNG saved."""

from __future__ import annotations

import pandas as pd
import pytest
from jobrunbook import charts
from jobrunbook._exceptions import ConfigError, DataError
from matplotlib.dates import date2num

# calendar-sensitive (daily counters, expiries, windows, deadlines): `make test-dates` runs these under faketime
pytestmark = pytest.mark.dates

T = pd.date_range("2026-11-29T18:00Z", periods=20, freq="1min")


def test_failure_ratio_thresholds_and_alert_start(tmp_path):
    df = pd.DataFrame({"time": list(T) * 2, "failure_ratio": [0.05] * 20 + [0.3] * 20,
                       "task_type": ["a"] * 20 + ["b"] * 20})
    fig = charts.failure_ratio_chart(df, alert_start="2026-11-29T18:10:00Z")
    ax = fig.axes[0]
    horizontal = sorted(line.get_ydata()[0] for line in ax.lines if len(set(line.get_ydata())) == 1
                        and line.get_label().startswith(("warning", "critical")))
    assert horizontal == [10.0, 25.0]
    vertical = [line for line in ax.lines if line.get_xdata()[0] == line.get_xdata()[-1] and len(line.get_xdata()) == 2]
    start = date2num(pd.Timestamp("2026-11-29T18:10:00Z"))
    assert any(abs(date2num(line.get_xdata()[0]) - start) < 1e-9 for line in vertical)
    assert {line.get_label() for line in ax.lines} >= {"a", "b"}
    png = charts.save_chart(fig, tmp_path, "failure_ratio")
    assert png == tmp_path / "charts" / "failure_ratio.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig._repr_png_()[:4] == b"\x89PNG"


def test_failures_stacked_by_cause():
    df = pd.DataFrame({"task_type": ["email:send", "email:send", "report:generate"],
                       "cause": ["db refused", "timeout", "timeout"], "count": [7, 2, 5]})
    ax = charts.failures_by_cause_chart(df).axes[0]
    assert len(ax.patches) == 4  # 2 task types x 2 causes
    assert sorted(p.get_width() for p in ax.patches) == [0, 2, 5, 7]
    assert max(p.get_x() + p.get_width() for p in ax.patches) == 9  # stacked, not overlaid


def test_queue_depth_and_daily_and_durations():
    ax = charts.queue_depth_chart(pd.DataFrame({"queue": ["default", "low"], "retry": [120, 3],
                                                "archived": [40, 0]})).axes[0]
    assert sorted(p.get_height() for p in ax.patches) == [0, 3, 40, 120]
    daily = pd.DataFrame({"date": ["2026-11-28", "2026-11-29", "2026-11-29"], "processed": [100, 50, 50],
                          "failed": [1, 20, 10], "queue": ["a", "a", "b"]})
    fig = charts.daily_history_chart(daily)
    assert [p.get_height() for p in fig.axes[0].patches] == [100, 100, 1, 30]
    assert list(fig.axes[1].lines[0].get_ydata()) == [1.0, 30.0]
    dur = pd.DataFrame({"task_type": ["a", "b"], "p50": [1, 2], "p95": [5, 9], "p99": [8, 29.5], "timeout_s": [30, 30]})
    ax = charts.duration_chart(dur).axes[0]
    assert len(ax.patches) == 6 and len(ax.collections) == 2  # a timeout line per task type
    ax = charts.duration_chart(dur.drop(columns="timeout_s"), timeout_s=30).axes[0]
    # the one configured timeout is drawn over each type's bars, at 30 s, and said once in the legend
    assert [seg[0][1] for c in ax.collections for seg in c.get_segments()] == [30, 30]
    assert [t.get_text() for t in ax.get_legend().get_texts()].count("timeout") == 1


def test_empty_and_wrong_input():
    fig = charts.queue_depth_chart(pd.DataFrame(columns=["queue", "retry", "archived"]))
    assert fig.axes[0].texts[0].get_text() == "no queue"
    with pytest.raises(DataError, match="missing failure_ratio"):
        charts.failure_ratio_chart(pd.DataFrame({"time": T}))
    with pytest.raises(ConfigError):
        charts.save_chart(fig, "/tmp", "../escape")


def test_durations_of_very_different_types_all_show():
    # the mixed demo: webhook:deliver answers in ~20 ms, report:generate runs ~10 s; on a linear axis the
    # fast type's bars were under a pixel tall and its slot looked empty
    dur = pd.DataFrame({"task_type": ["report:generate", "webhook:deliver"], "p50": [1.9, 0.012],
                        "p95": [9.4, 0.019], "p99": [9.9, 0.024], "timeout_s": [5, 1800]})
    ax = charts.duration_chart(dur).axes[0]
    assert ax.get_yscale() == "log"
    low, high = ax.get_ylim()
    fast = [p for p in ax.patches if p.get_x() > 0.5]  # webhook:deliver's three bars
    assert len(fast) == 3 and all(p.get_height() > low for p in fast)
    assert low < 0.012 and high > 9.9
    assert [seg[0][1] for c in ax.collections for seg in c.get_segments()] == [5]  # report:generate's own timeout
    # each timeout says its value: the drawn line at the line, the off-scale one (30 min) above the bars
    assert sorted(t.get_text() for t in ax.texts) == ["timeout 30 min", "timeout 5.0 s"]
    same_scale = charts.duration_chart(dur.assign(p50=[1.9, 0.5], p95=[9.4, 0.9], p99=[9.9, 1.2])).axes[0]
    assert same_scale.get_yscale() == "linear"


def test_chart_handed_over_as_data_is_drawn_into_its_notebook(tmp_path, monkeypatch):
    import base64
    import json

    import nbformat
    from jobrunbook import chartspec
    from matplotlib.figure import Figure

    data = pd.DataFrame({"queue": ["default", "low"], "retry": [120, 3], "archived": [7, 40]})
    assert isinstance(chartspec.figure("queue_depth_chart", data), Figure)  # a notebook run by hand draws
    monkeypatch.setenv(chartspec.DEFER_ENV, "1")
    spec = chartspec.figure("queue_depth_chart", data)
    bad = chartspec.figure("duration_chart", pd.DataFrame({"task_type": ["a"]}))  # no p50/p95/p99 columns
    assert isinstance(spec, chartspec.ChartSpec) and isinstance(bad, chartspec.ChartSpec)
    run_dir = tmp_path / "run"
    chartspec.save_spec(spec, run_dir, "queue_depth", "02_asynq")
    chartspec.save_spec(bad, run_dir, "durations", "03_metrics")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("show()", outputs=[
        nbformat.v4.new_output("display_data", data=spec.bundle("queue_depth")),
        nbformat.v4.new_output("display_data", data=bad.bundle("durations"))])])
    path = tmp_path / "02_asynq.ipynb"
    nbformat.write(nb, path)
    assert [p.stem for p in chartspec.pending_specs(run_dir)] == ["durations", "queue_depth"]
    assert chartspec.render_specs(run_dir) == ["queue_depth"]  # the bad one is said, not raised
    assert "needs columns" in (run_dir / "charts" / "durations.error").read_text()
    assert chartspec.embed_charts(path, run_dir) == 2
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    png = (run_dir / "charts" / "queue_depth.png").read_bytes()
    assert base64.b64decode(outputs[0].data["image/png"]) == png and png[:4] == b"\x89PNG"
    assert outputs[1].data == {"text/plain": "chart durations could not be drawn: " +
                               (run_dir / "charts" / "durations.error").read_text()}
    assert chartspec.CHART_MIME not in path.read_text()
    # the spec keeps the figure's data: the same chart again from the JSON alone
    doc = json.loads((run_dir / "charts" / "queue_depth.json").read_text())
    assert doc["section"] == "02_asynq" and doc["data"][1] == {"queue": "low", "retry": 3, "archived": 40}
    assert chartspec.ChartSpec.from_json(doc).draw().axes[0].get_title() == spec.draw().axes[0].get_title()
    with pytest.raises(ValueError, match="unknown chart kind"):
        chartspec.ChartSpec("os.system", [])
