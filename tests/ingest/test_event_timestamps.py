"""Timestamps at the edges of the calendar: every event is judged on its own, so one whose
instant cannot be held is that event's rejection, never its batch's."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.db import utcnow
from app.core.settings import Settings
from app.main import create_app
from tests.conftest import new_key
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


def test_an_event_stamped_further_ahead_than_the_allowed_clock_skew_is_rejected_per_event(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    """A client whose clock runs days ahead filed its calls under days the drift job judges
    later (2031 in older tests): they never showed where they belong. Now such an event is
    that event's rejection, naming the bound; one within the skew is stored."""
    now = utcnow()
    body = {
        "events": [
            event(0, timestamp=(now + timedelta(minutes=5)).isoformat()),
            event(1, timestamp=(now + timedelta(days=2)).isoformat()),
            event(2, timestamp="2031-01-01T00:00:00Z"),
        ]
    }
    response = client.post("/api/v1/events", json=body, headers=auth)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["accepted"] == 1 and answer["duplicates"] == 0
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [
        (1, "timestamp"),
        (2, "timestamp"),
    ]
    assert "ahead of the server's clock" in answer["rejected"][0]["error"]
    assert "PLUMBLINE_INGEST_MAX_CLOCK_SKEW_S" in answer["rejected"][0]["error"]
    stored = client.get("/api/v1/events", headers=auth).json()["items"]
    assert [item["trace_id"] for item in stored] == ["trace-00000"]


def test_the_clock_skew_allowed_is_a_setting(settings: Settings) -> None:
    """PLUMBLINE_INGEST_MAX_CLOCK_SKEW_S=0 refuses any timestamp after the server's now."""
    app = create_app(settings.model_copy(update={"ingest_max_clock_skew_s": 0}))
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {new_key(app, 'acme')}"}
        client.post(
            "/api/v1/checkpoints", json={"model": "support-bot", "version": "v1"}, headers=auth
        ).raise_for_status()
        ahead = (utcnow() + timedelta(minutes=5)).isoformat()
        body = {"events": [event(0), event(1, timestamp=ahead)]}
        answer = client.post("/api/v1/events", json=body, headers=auth).json()
    assert answer["accepted"] == 1
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [(1, "timestamp")]
