"""Timestamps at the edges of the calendar: every event is judged on its own, so one whose
instant cannot be held is that event's rejection, never its batch's."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.ingest.factories import event

Headers = dict[str, str]


@pytest.mark.parametrize(
    "timestamp",
    ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"],
    ids=["before-year-1-in-utc", "after-year-9999-in-utc"],
)
def test_a_timestamp_outside_the_calendar_once_in_utc_is_rejected_per_event(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], timestamp: str
) -> None:
    """Valid as written, but its UTC instant is outside what a datetime holds: one rejection
    at that index, the batch's other events stored."""
    body = {"events": [event(0), event(1, timestamp=timestamp), event(2)]}
    response = client.post("/api/v1/events", json=body, headers=auth)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["accepted"] == 2 and answer["duplicates"] == 0
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [(1, "timestamp")]
    stored = client.get("/api/v1/events", headers=auth).json()["items"]
    assert sorted(item["trace_id"] for item in stored) == ["trace-00000", "trace-00002"]


def test_a_naive_listing_bound_is_read_as_utc_as_event_timestamps_are(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    """`from` inclusive, `to` exclusive, an instant without an offset being UTC."""
    events = [
        event(0, timestamp="2024-05-01T23:59:59.999999Z"),
        event(1, timestamp="2024-05-02T00:00:00Z"),
        event(2, timestamp="2024-05-02T01:30:00+02:00"),  # 2024-05-01T23:30Z
    ]
    assert (
        client.post("/api/v1/events", json={"events": events}, headers=auth).json()["accepted"] == 3
    )

    def listed(query: str) -> list[str]:
        response = client.get(f"/api/v1/events?{query}", headers=auth)
        assert response.status_code == 200, response.text
        return sorted(item["trace_id"] for item in response.json()["items"])

    assert listed("from=2024-05-02T00:00:00") == ["trace-00001"]
    assert listed("to=2024-05-02T00:00:00") == ["trace-00000", "trace-00002"]
    assert listed("from=2024-05-01T23:45:00&to=2024-05-02T00:00:00") == ["trace-00000"]
    assert listed("from=2024-05-02T01:45:00%2B02:00") == ["trace-00000", "trace-00001"]


def test_a_listing_bound_outside_the_calendar_in_utc_is_a_422(
    client: TestClient, auth: Headers
) -> None:
    response = client.get("/api/v1/events?from=0001-01-01T00:30:00%2B01:00", headers=auth)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
