"""Backs the scale-out claim in the README: every statement the service sends to the events
table names one project, so a store sharded by project_id (Citus, distribution column
project_id) routes each one to a single shard. The statements are captured from a real flow
through the API, the dashboards, the drift job and retention, not listed by hand."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event

from app.ingest.retention import purge_expired_events
from tests.ingest.factories import event as event_body
from tests.web.test_pages import sign_in

EVENTS_TABLE = re.compile(r'\b(FROM|JOIN|INTO|UPDATE)\s+"?events"?(\s|$|\()', re.IGNORECASE)


def capture_events_statements(app: FastAPI) -> list[str]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if EVENTS_TABLE.search(statement):
            statements.append(" ".join(statement.split()))

    event.listen(app.state.engine, "before_cursor_execute", record)
    return statements


def test_every_events_statement_is_scoped_to_one_project(
    app: FastAPI, client: TestClient, auth: dict[str, str], admin_key: str
) -> None:
    statements = capture_events_statements(app)
    checkpoint = client.post(
        "/api/v1/checkpoints", json={"model": "support-bot", "version": "v1"}, headers=auth
    ).json()
    client.post(
        "/api/v1/models/support-bot/promote",
        json={"checkpoint_id": checkpoint["id"], "reason": "first"},
        headers=auth,
    )
    batch = [
        event_body(
            i,
            eval_passed=i % 3 != 0,
            refusal=i % 5 == 0,
            should_refuse=i % 7 == 0,
            probability=(i % 10) / 10,
            label=str(i % 2),
        )
        for i in range(40)
    ]
    assert client.post("/api/v1/events", json={"events": batch}, headers=auth).status_code == 202
    client.post("/api/v1/feedback", json={"trace_id": "trace-00003", "value": "down"}, headers=auth)
    client.get("/api/v1/events", params={"route": "/chat", "refusal": True}, headers=auth)
    client.get("/api/v1/traces/trace-00003", headers=auth)
    assert (
        client.post("/api/v1/drift/run", json={"date": "2024-05-01"}, headers=auth).status_code
        == 200
    )
    client.post("/api/v1/datasets", json={"name": "from-prod"}, headers=auth)
    client.post(
        "/api/v1/datasets/from-prod/versions/from-traces",
        json={"trace_ids": ["trace-00001", "trace-00002"]},
        headers=auth,
    )
    sign_in(client, admin_key)
    for page in ("/traces", "/traces/trace-00003", "/alerts", "/drift"):
        assert client.get(page).status_code == 200, page
    while purge_expired_events(app.state.sessionmaker, app.state.settings):
        pass

    kinds = {statement.split()[0].upper() for statement in statements}
    assert {"SELECT", "UPDATE", "DELETE"} <= kinds and kinds & {"INSERT", "COPY"}, kinds
    unscoped = [s for s in statements if "project_id" not in s]
    assert unscoped == []
