"""The service's OpenAPI document (``GET /openapi.json``): the webhook's and the read API's schema.

The request body is the very model the webhook validates with (``webhook.Webhook``); the answers are
the pydantic models below, whose JSON schemas go into ``components``. Each endpoint describes itself in
its docstring (YAML after ``---``), which Starlette's ``SchemaGenerator`` collects from the routes.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema
from starlette.schemas import SchemaGenerator

from jobrunbook.webhook import Webhook

__all__ = ["RunRow", "ErrorBody", "Health", "AcceptedBody", "schema_generator", "components"]


class ErrorBody(BaseModel):
    error: str
    field: str


class Health(BaseModel):
    ok: bool
    queue_depth: int
    running: int


class AcceptedBody(BaseModel):
    """What one POST did: alert ids by what became of them (``store.Accepted``)."""

    status: str
    truncated: int
    queued: list[int]
    linked: dict[str, int]  # a new critical's id -> the open warning it escalates
    covered: dict[str, int]  # a new warning's id -> the critical whose run covers it (not run)
    deduplicated: int
    ignored: int
    capped: int
    queue_full: int
    displaced: list[int]
    resolved: list[int]
    resolved_unmatched: int
    resolved_duplicate: int


class RunRow(BaseModel):
    """One accepted alert and its run (``GET /runs``)."""

    model_config = ConfigDict(extra="ignore")

    id: int
    key: str
    fingerprint: str
    alertname: str
    severity: str
    queue: str
    task_type: str
    group_key: str
    labels: dict[str, str]
    starts_at: str
    received_at: str
    state: str  # queued | running | done | failed | capped | linked
    priority: int
    cap_reason: str | None = None  # group | queue
    linked_to: int | None = None
    attempts: int
    run_id: str | None = None
    report: str | None = None
    headline: str | None = None
    error: str | None = None
    owner: str | None = None  # the worker holding it (host:pid:token) while running or closing
    lease_until: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    resolved_at: str | None = None
    time_to_resolve_s: float | None = None
    close_state: str | None = None
    closing: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunRow:
        alert = json.loads(row.get("alert_json") or "{}")
        closing = row.get("closing_json")
        return cls.model_validate({
            **row, "labels": alert.get("labels") or {}, "closing": json.loads(closing) if closing else None,
            "report": f"/runs/{row['run_id']}/report.html" if row.get("run_id") else None})


def components() -> dict[str, Any]:
    """The models' JSON schemas, referenced as ``#/components/schemas/<Model>``."""
    _, defs = models_json_schema(
        [(Webhook, "validation"), (ErrorBody, "serialization"), (Health, "serialization"),
         (AcceptedBody, "serialization"), (RunRow, "serialization")],
        ref_template="#/components/schemas/{model}")
    return defs.get("$defs", {})


def schema_generator() -> SchemaGenerator:
    return SchemaGenerator({
        "openapi": "3.1.0",
        "info": {"title": "jobrunbook serve", "version": "1",
                 "description": "The Alertmanager webhook receiver of the Job Failure Rate runbook, and its reports."},
        "components": {
            "schemas": components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "basic": {"type": "http", "scheme": "basic"}},
        },
    })
