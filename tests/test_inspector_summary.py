"""summarize / render_text / `jobrunbook inspect` on a fixture."""

from __future__ import annotations

import argparse
import json

import pytest
from _asynq_helpers import generated_at, truth
from conftest import load_fixture_snapshot
from jobrunbook._exceptions import NotFound
from jobrunbook.asynq import summary as S
from jobrunbook.asynq.inspector import Inspector

# calendar-sensitive (daily counters, expiries, windows, deadlines): `make test-dates` runs these under faketime
pytestmark = pytest.mark.dates


def test_summary_dict_and_text(rclient):
    load_fixture_snapshot(rclient, "bad-deploy")
    want = truth("bad-deploy")
    s = S.summarize(Inspector(rclient, clock=lambda: generated_at("bad-deploy")), top=3)
    json.dumps(s)
    assert s["totals"]["retry"] == sum(q["counts"]["retry"] for q in want["queues"]) == 48
    assert [q["queue"] for q in s["queues"]] == ["critical", "default"]
    top = s["failure_groups"][0]
    assert (top["queue"], top["task_type"], top["count"]) == ("critical", "payment:capture", 31)
    assert top["fingerprint"].startswith("handler not found for task")
    assert len(s["failure_groups"]) == 3 and s["failures"]["groups_total"] > 3
    assert s["history"]["critical"]["days"][0]["processed"] == 113 and not s["errors"]
    assert all(h["ok"] for h in s["health"].values())
    text = S.render_text(s)
    assert text.index("Top failing task types") < text.index("Top error groups") < text.index("Queues")
    assert "critical/payment:capture" in text and "31" in text and "Health default: ok" in text


def _args(**kw):
    p = argparse.ArgumentParser()
    S.add_arguments(p)
    argv = []
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return p.parse_args(argv)


def test_cli_json_and_unknown_queue(rclient, redis_server, capsys):
    load_fixture_snapshot(rclient, "mixed")
    assert S.command(_args(redis_url=redis_server.url, queue="default", json=True)) == 0
    out = json.loads(capsys.readouterr().out)
    assert [q["queue"] for q in out["queues"]] == ["default"] and out["queues"][0]["retry"] == 25
    assert sum(g["count"] for g in out["failure_groups"]) <= 34
    with pytest.raises(NotFound, match="'nope'.*critical, default"):
        S.command(_args(redis_url=redis_server.url, queue="nope"))
