"""An alert's known-good target stops being offered once the champion history shows it bad."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.drift.champions import (
    alerts,
    calls,
    champions_since,
    date_history,
    days_ending_day_before_yesterday,
    rollback,
)
from tests.drift.traffic import post_events, run_drift


def test_an_alert_stops_naming_a_target_rolled_back_for_cause_since(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    """A from day 0, B from day 16 regresses (5% -> 20% refused) from day 20; the alert
    opens on B and names A. The team rolls back to A on day 24, then (A failing them some
    other way) back to B on day 26, where B's regression goes on and the alert stays open.
    Both checkpoints have been rolled back for cause: the model has no known-good target.
    Until 2026-12-01 the alert still offered "roll back to A" (its rollback link, and a
    rollback made for it without `to` went to A)."""
    day = days_ending_day_before_yesterday(30)
    ids = champions_since(app, client, auth, {"A": day[0], "B": day[16]})
    events = []
    for i in range(30):
        version = "A" if i < 16 or 24 <= i < 26 else "B"
        events += calls(day[i], version, 100 if 20 <= i < 24 or i >= 26 else 25)
    post_events(client, auth, events)
    run_drift(client, auth, day[23], 24)
    [opened] = alerts(client, auth, signal="refusal_rate", dimension="all", status="open")
    assert opened["rollback_target"]["checkpoint_id"] == ids["A"]
    rollback(client, auth, "m", "A")
    rollback(client, auth, "m", "B")
    date_history(app, [day[0], day[16], day[24], day[26]])
    for i in range(24, 30):
        run_drift(client, auth, day[i])
    [alert] = alerts(client, auth, signal="refusal_rate", dimension="all", status="open")
    assert (alert["id"], alert["checkpoint_id"]) == (opened["id"], ids["B"])
    assert client.get("/api/v1/models/m", headers=auth).json()["rollback_target"] is None
    assert alert["rollback_target"] is None
    assert alert["rollback"] is None
    r = client.post(
        "/api/v1/models/m/rollback",
        json={"alert_id": alert["id"], "reason": "from the alert"},
        headers=auth,
    )
    assert r.status_code == 409, r.text
    assert client.get("/api/v1/models/m", headers=auth).json()["champion"]["id"] == ids["B"]
