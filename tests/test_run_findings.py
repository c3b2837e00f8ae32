"""Findings JSON: versioned, written from notebooks, read back whatever is on disk."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from jobrunbook._exceptions import ConfigError
from jobrunbook.findings import RUN_DIR_ENV, SCHEMA, read_findings, summarize_verdict, write_findings


def test_roundtrip_of_notebook_values(tmp_path):
    when = datetime(2026, 11, 29, 18, 30, tzinfo=UTC)
    df = pd.DataFrame({"task_type": ["a", "b"], "failed": np.array([3, 4], dtype=np.int64)})
    path = write_findings("02_asynq", {"table": df, "ratio": np.float64(0.25), "at": when, "nan": float("nan"),
                                       "types": {"a"}}, tmp_path, now=when)
    assert path == tmp_path / "findings" / "02_asynq.json"
    doc = json.loads(path.read_text())
    assert doc == {"schema": SCHEMA, "section": "02_asynq", "status": "ok", "created_at": "2026-11-29T18:30:00Z",
                   "data": {"table": [{"task_type": "a", "failed": 3}, {"task_type": "b", "failed": 4}],
                            "ratio": 0.25, "at": "2026-11-29T18:30:00Z", "nan": None, "types": ["a"]}}
    assert read_findings(tmp_path)["02_asynq"] == doc


def test_run_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    write_findings("00_alert", {"severity": "critical"}, status="degraded")
    assert read_findings(tmp_path)["00_alert"]["status"] == "degraded"


@pytest.mark.parametrize("section, status", [("../x", "ok"), ("diagnosis", "ok"), ("05_x/y", "ok"), ("05_x", "bad")])
def test_bad_section_or_status_refused(tmp_path, section, status):
    with pytest.raises(ConfigError):
        write_findings(section, {}, tmp_path, status=status)
    assert not (tmp_path / "findings").exists() or not list((tmp_path / "findings").iterdir())


def test_unreadable_file_is_a_failed_entry_not_a_crash(tmp_path):
    (tmp_path / "findings").mkdir()
    (tmp_path / "findings" / "01_logs.json").write_text("{truncated")
    (tmp_path / "findings" / "03_metrics.json").write_text('{"hello": 1}')
    write_findings("04_deps", {"ok": True}, tmp_path)
    found = read_findings(tmp_path)
    assert list(found) == ["01_logs", "03_metrics", "04_deps"]
    assert found["01_logs"]["status"] == "failed" and "01_logs.json" in found["01_logs"]["data"]["error"]
    assert found["03_metrics"]["status"] == "failed" and found["04_deps"]["status"] == "ok"


def test_summarize_verdict_later_sections_win(tmp_path):
    write_findings("00_alert", {"severity": "warning", "failure_ratio": 0.12, "verdict": "early"}, tmp_path)
    write_findings("05_diagnosis", {"verdict": "late", "causes": [{"name": "x"}], "severity": ""}, tmp_path)
    v = summarize_verdict(read_findings(tmp_path))
    assert v == {"severity": "warning", "failure_ratio": 0.12, "verdict": "late", "causes": [{"name": "x"}]}
