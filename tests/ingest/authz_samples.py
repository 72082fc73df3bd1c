"""Project A's production traffic, for tests/test_authorization.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

# After the registry (seeded by the authorization test itself); events need a checkpoint.
ORDER = 30

# No marker in the trace id: project B may use the same id for its own traces, and its
# answers echo what it sent. A's secrets are in the events' text.
TRACE_ID = "trace-shared-0001"


def seed(client: TestClient, auth: dict[str, str], ids: dict[str, Any]) -> None:
    event = {
        "trace_id": TRACE_ID,
        "span_id": "s1",
        "timestamp": "2024-05-01T12:00:00Z",
        "checkpoint_id": ids["checkpoint_id"],
        "cohort": {"route": "alpha-secret-route", "user_segment": "alpha-secret-segment"},
        "input": "alpha-secret question",
        "output": "alpha-secret answer",
    }
    response = client.post("/api/v1/events", json={"events": [event]}, headers=auth)
    assert response.status_code == 202 and response.json()["accepted"] == 1, response.text
    feedback = {"trace_id": TRACE_ID, "value": "down", "comment": "alpha-secret comment"}
    assert client.post("/api/v1/feedback", json=feedback, headers=auth).status_code == 200
    settings = {"online_eval": {"refusal": True}}
    assert client.put("/api/v1/project/settings", json=settings, headers=auth).status_code == 200
    ids["trace_id"] = TRACE_ID


BODIES: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("POST", "/api/v1/events"): lambda ids: {
        "events": [
            {
                "trace_id": ids["trace_id"],
                "span_id": "s1",
                "timestamp": "2024-05-01T12:00:00Z",
                "checkpoint_id": ids["checkpoint_id"],
                "output": "taken over",
            }
        ]
    },
    ("POST", "/api/v1/feedback"): lambda ids: {"trace_id": ids["trace_id"], "value": "up"},
    ("PUT", "/api/v1/project/settings"): lambda ids: {"online_eval": {"json_validation": True}},
}
