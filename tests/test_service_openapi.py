"""GET /openapi.json describes the webhook and the read API; schemathesis fuzzes the live service from it.

Bounded: a fixed number of examples per operation, no example database. Checks: no 5xx, every status code
and content type is one the schema names, every JSON body matches its schema.
"""

from __future__ import annotations

import jsonschema
import pytest
import schemathesis
from schemathesis import GenerationMode
from _service_helpers import AUTH, ServerThread, fixture_bytes, fixture_json, make_service
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The receiver (no worker) with a few accepted alerts, so /runs and the index have rows to show."""
    app, store, _ = make_service(tmp_path_factory.mktemp("outputs"), worker=False, max_queued=2)
    srv = ServerThread(app)
    for name in ("firing-warning.json", "firing-critical-grouped.json", "firing-mixed-with-resolved.json",
                 "resolved.json"):
        assert srv.post(fixture_bytes(name)).status_code == 200
    yield srv
    srv.stop()


OPERATIONS = [("/alerts", "POST"), ("/healthz", "GET"), ("/metrics", "GET"), ("/runs", "GET"),
              ("/runs/{run_id}/{path}", "GET"), ("/", "GET")]
# invalid input only where there is input: a body, a query parameter, path parameters
CASES = [(p, m, GenerationMode.POSITIVE) for p, m in OPERATIONS] + [
    (p, m, GenerationMode.NEGATIVE) for p, m in OPERATIONS if p in ("/alerts", "/runs", "/runs/{run_id}/{path}")]


@pytest.mark.parametrize("path, method, mode", CASES, ids=[f"{m} {p} {g.value}" for p, m, g in CASES])
@pytest.mark.parametrize("token", [True, False], ids=["token", "no token"])
def test_every_operation_answers_as_its_schema_says(live, path, method, mode, token):
    """Schemathesis makes the requests from the live service's own schema; every answer is checked."""
    operation = schemathesis.openapi.from_url(live.url + "/openapi.json")[path][method]
    seen = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=30 if token else 10, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def check(case):
        seen.append(case.call_and_validate(headers=AUTH if token else None, checks=CHECKS).status_code)

    check()
    assert seen and all(code < 500 for code in seen)
    if not token and path not in ("/healthz", "/metrics"):
        assert set(seen) <= {401, 404, 405}  # nothing is read or written without the token


def test_the_schema_is_the_webhook_model_and_names_every_endpoint(live):
    doc = live.get("/openapi.json", auth=False).json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {"/alerts", "/healthz", "/metrics", "/runs", "/runs/{run_id}/{path}", "/"}
    request = doc["paths"]["/alerts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    components = doc["components"]["schemas"]
    resolver = {"$defs": components, **components["Webhook"]}
    # the captured Alertmanager bodies are valid by it; a body without groupKey is not
    validator = jsonschema.Draft202012Validator(_inline(resolver, components))
    assert request == {"$ref": "#/components/schemas/Webhook"}
    for name in ("firing-warning.json", "firing-critical-grouped.json", "resolved.json"):
        validator.validate(fixture_json(name))
    broken = fixture_json("firing-warning.json")
    del broken["groupKey"]
    assert not validator.is_valid(broken)
    assert set(doc["paths"]["/alerts"]["post"]["responses"]) >= {"200", "400", "401", "413", "415", "422", "503"}


def _inline(node, components):
    """The schema with ``#/components/schemas/X`` references replaced by their definitions (for jsonschema)."""
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            return _inline(components[ref.rsplit("/", 1)[1]], components)
        return {k: _inline(v, components) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, components) for v in node]
    return node
