"""One parameter chain: Settings -> RunParams -> every notebook's parameters cell -> Context, and they agree."""

from __future__ import annotations

import ast
import json

import papermill
import pytest
from conftest import ROOT
from jobrunbook._exceptions import ConfigError
from jobrunbook.config import Settings
from jobrunbook.run.execute import check_parameters
from jobrunbook.run.params import RunParams, build_params, params_from_alert
from jobrunbook.sections import context

SECTION_NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FIXTURE_NOTEBOOKS = sorted((ROOT / "tests" / "notebooks").rglob("*.ipynb"))
TYPES = {str: "str", dict: "dict", float: "float", int: "int"}


@pytest.mark.parametrize("path", SECTION_NOTEBOOKS + FIXTURE_NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_notebook_declares_exactly_runparams(path):
    declared = papermill.inspect_notebook(str(path))
    fields = RunParams.model_fields
    assert list(declared) == list(fields), "parameters cell and RunParams disagree on the names (or their order)"
    for name, field in fields.items():
        p = declared[name]
        assert ast.literal_eval(p["default"]) == field.default, (name, p["default"], field.default)
        assert p["inferred_type_name"] == TYPES[type(field.default)], (name, p["inferred_type_name"])
        assert p["help"], f"{name}: the parameters cell says nothing about it"


def test_section_notebooks_hand_every_parameter_to_the_context():
    names = set(RunParams.model_fields)
    for path in SECTION_NOTEBOOKS:
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        call = next("".join(c["source"]) for c in cells if "runbook.context(" in "".join(c["source"]))
        tree = ast.parse(call)
        kwargs = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)).keywords
        assert {k.arg for k in kwargs} == names, path.name
        assert all(isinstance(k.value, ast.Name) and k.value.id == k.arg for k in kwargs), path.name


def test_unknown_or_misspelt_parameters_are_errors():
    with pytest.raises(ConfigError, match="unknown run parameter 'queu'"):
        context(queu="default")
    with pytest.raises(ConfigError, match="unknown run parameter 'redis_url'"):
        build_params({"redis_url": "redis://h:6379/0"})  # sources travel in `sources`, never as loose names
    with pytest.raises(ConfigError, match="sources"):
        build_params({"sources": {"redis_ulr": "redis://h:6379/0"}})


def test_a_notebook_missing_a_parameter_refuses_the_run(tmp_path):
    nb = json.loads(SECTION_NOTEBOOKS[0].read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    cell["source"] = [line for line in cell["source"] if not line.startswith("sources:")]
    bad = tmp_path / "00_alert.ipynb"
    bad.write_text(json.dumps(nb))
    with pytest.raises(ConfigError, match="does not declare the run parameter.*sources"):
        check_parameters([("00_alert", bad)], RunParams())


def test_settings_travel_to_the_context_unchanged():
    settings = Settings(redis_url="redis://redis.eu:6379/2", metrics_url="http://worker:8080/metrics",
                        log_source="kubectl", worker_deployment="jobs", namespace="eu", task_timeout_s=42,
                        health_urls={"mail": "https://mail.example/health"})
    alert = {"status": "firing", "labels": {"alertname": "JobFailureRateCritical", "severity": "critical",
                                            "queue": "critical", "task_type": "email:send", "cluster": "eu-1"},
             "startsAt": "2026-11-29T18:30:27.292Z", "fingerprint": "e4f4d901c8ab50ef"}
    params = params_from_alert(alert, settings)
    # what papermill injects is JSON-like: the same dict comes back out of a notebook
    injected = json.loads(json.dumps(params.as_dict()))
    ctx = context(**injected)
    assert ctx.params == params
    assert ctx.settings == settings
    assert ctx.params.labels["cluster"] == "eu-1"
    assert (ctx.queue, ctx.task_type, ctx.severity) == ("critical", "email:send", "critical")
    assert ctx.log_source == "k8s:deployment/jobs@eu" and ctx.task_timeout_s == 42
    assert ctx.health_urls == ["https://mail.example/health"]


def test_labels_are_data_never_parameter_names():
    alert = {"status": "firing", "labels": {"alertname": "JobFailureRate", "run_dir": "/etc", "sources": "x",
                                            "queue": "default"},
             "startsAt": "2026-11-29T18:30:27Z", "fingerprint": "abcdef0123456789"}
    params = params_from_alert(alert)
    assert params.run_dir == "" and params.sources == {}
    assert params.labels["run_dir"] == "/etc" and params.labels["sources"] == "x"
