"""The known-good checkpoint an alert names (and the model's rollback target) is never one
replaced while an alert about it stood: a fix promoted over a regression does not make the
regressing checkpoint known-good."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.drift.champions import (
    alerts,
    calls,
    champions_since,
    days_ending_day_before_yesterday,
)
from tests.drift.traffic import post_events, run_drift


def test_a_checkpoint_replaced_while_alerted_is_not_known_good(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    """A from day 0, B from day 16 regresses (refusals 5% -> 20%) from day 20; the alert
    opens on B and names A. The team ships a fix, C, on day 24 instead of rolling back; the
    alert on B resolves `recovered` on C's clean days. C regresses from day 42: its alert
    must name A, the last champion that served without an alert. Until 2026-12-01 it named
    B (the latest earlier champion, never rolled back), and following it brought B's
    regression back; the model's own rollback target was B as well."""
    day = days_ending_day_before_yesterday(46)
    ids = champions_since(app, client, auth, {"A": day[0], "B": day[16], "C": day[24]})
    events = []
    for i in range(46):
        version = "A" if i < 16 else "B" if i < 24 else "C"
        events += calls(day[i], version, 100 if 20 <= i < 24 or i >= 42 else 25)
    post_events(client, auth, events)
    run_drift(client, auth, day[23], 24)
    [on_b] = alerts(client, auth, signal="refusal_rate", dimension="all", status="open")
    assert (on_b["checkpoint_id"], on_b["rollback_target"]["checkpoint_id"]) == (
        ids["B"],
        ids["A"],
    )
    for i in range(24, 46):
        run_drift(client, auth, day[i])
    [on_c] = alerts(client, auth, signal="refusal_rate", dimension="all", status="open")
    resolved = alerts(client, auth, signal="refusal_rate", dimension="all", status="resolved")
    assert [(a["id"], a["resolution"]) for a in resolved] == [(on_b["id"], "recovered")]
    assert on_c["checkpoint_id"] == ids["C"]
    assert on_c["rollback_target"] == {"checkpoint_id": ids["A"], "version": "A"}
    assert on_c["rollback"]["target"] == {"checkpoint_id": ids["A"], "version": "A"}
    model = client.get("/api/v1/models/m", headers=auth).json()
    assert model["rollback_target"]["checkpoint_id"] == ids["A"]
    done = client.post(
        "/api/v1/models/m/rollback",
        json={"alert_id": on_c["id"], "reason": "as the alert advised"},
        headers=auth,
    )
    assert done.status_code == 200, done.text
    assert done.json()["champion"]["id"] == ids["A"]
