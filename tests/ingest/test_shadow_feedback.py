"""A shadow answer shares its served request's trace but never reached the user, so the
user's feedback on that trace is the served answer's alone, in either order of arrival."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.ingest.factories import event

Headers = dict[str, str]

TRACE = "trace-served"
SERVED = event(0, trace_id=TRACE, span_id="served")
SHADOW = event(1, trace_id=TRACE, span_id="shadow", checkpoint_version="v2", shadow_of=TRACE)


def _send_events(client: TestClient, auth: Headers) -> None:
    body = {"events": [SERVED, SHADOW]}
    answer = client.post("/api/v1/events", json=body, headers=auth).json()
    assert answer["accepted"] == 2, answer


def _send_feedback(client: TestClient, auth: Headers) -> int:
    body = {"trace_id": TRACE, "value": "down"}
    response = client.post("/api/v1/feedback", json=body, headers=auth)
    assert response.status_code == 200, response.text
    updated: int = response.json()["events_updated"]
    return updated


@pytest.mark.parametrize("feedback_first", [False, True], ids=["after", "before"])
def test_feedback_on_a_trace_is_not_copied_onto_its_shadow_answer(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], feedback_first: bool
) -> None:
    if feedback_first:
        assert _send_feedback(client, auth) == 0
        _send_events(client, auth)
    else:
        _send_events(client, auth)
        assert _send_feedback(client, auth) == 1  # the served answer only
    items = client.get(f"/api/v1/traces/{TRACE}", headers=auth).json()["events"]
    assert {item["span_id"]: item["feedback"] for item in items} == {
        "served": "down",
        "shadow": None,
    }
    listed = client.get("/api/v1/events?feedback=down", headers=auth).json()["items"]
    assert [item["span_id"] for item in listed] == ["served"]
