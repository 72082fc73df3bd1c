"""A rebaseline while a shift is building (its CUSUM past the release level, no alert yet)
must not freeze the shift's days into the new normal."""

from __future__ import annotations

from datetime import date

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import AuditLog
from tests.drift.champions import alerts, calls, champions_since, days_ending_day_before_yesterday
from tests.drift.test_late_data_cusum import cusum_by_day
from tests.drift.traffic import post_events, run_drift

Headers = dict[str, str]


def shift_building(app: FastAPI, client: TestClient, auth: Headers) -> list[date]:
    """A from day 0, 2,000 calls a day for 60 days, refusals 10% -> 11% from day 20, judged
    to day 25: S 2.56, past its release level (1.65), no alert yet. -> the days."""
    day = days_ending_day_before_yesterday(60)
    champions_since(app, client, auth, {"A": day[0]})
    events = []
    for i in range(60):
        events += calls(day[i], "A", 220 if i >= 20 else 200, n=2000)
    post_events(client, auth, events)
    run_drift(client, auth, day[25], 26)
    assert alerts(client, auth) == []
    statistic, _lower, rules = cusum_by_day(app)[day[25]]
    assert rules == 0 and statistic > 2.5  # past its release level, not yet at h
    return day


def test_a_rebaseline_names_the_building_shift_whose_days_it_left_out(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """As below. A window of days 16-25 holds four known-good days (20-25 are the shift's):
    the 422 must say why, naming the CUSUM (S, h, onset) and that accept_alert_days takes
    its days. Before, it said only "only 4 known-good day(s)". The default window moves
    back to days 6-19, and the audit record names the CUSUM whose days it left out."""
    day = shift_building(app, client, auth)
    body = {"reason": "refresh", "last_day": day[25].isoformat()}
    refused = client.post(
        "/api/v1/models/m/rebaseline", json={**body, "first_day": day[16].isoformat()}, headers=auth
    )
    assert refused.status_code == 422, refused.text
    detail = refused.text
    assert "only 4 known-good day(s)" in detail, detail
    assert "refusal_rate all=all (S 2.56, h 3.31" in detail, detail
    assert f"from {day[20].isoformat()}" in detail and "accept_alert_days" in detail, detail
    response = client.post("/api/v1/models/m/rebaseline", json=body, headers=auth)
    assert response.status_code == 201, response.text
    with app.state.sessionmaker() as session:
        [details] = session.scalars(
            select(AuditLog.details).where(AuditLog.action == "drift.rebaselined")
        ).all()
    left_out = [
        (b["signal"], b["dimension"], b["onset"]) for b in details["building_shifts_left_out"]
    ]
    assert ("refusal_rate", "all", day[20].isoformat()) in left_out, details


def test_a_rebaseline_while_a_shift_builds_leaves_its_days_out(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A from day 0, 2,000 calls a day, refusals 10% -> 11% from day 20 for good (each day
    adds 0.43 to the CUSUM; h is 3.31, crossed on day 27 when nothing intervenes). The
    model is rebaselined after day 25, with S at 2.56, past its release level (1.65), and no
    alert open yet, then judged day by day to 59. The window must not take days 20-25 (the
    shift's, from the day after S last stood at 0). Before, it took days 12-25, the CUSUM
    restarted against a centre moved part of the way to the shift, and nothing alerted in
    the 34 days after; now the shift alerts again once S climbs back from 0."""
    day = shift_building(app, client, auth)
    body = {"reason": "monthly refresh", "last_day": day[25].isoformat()}
    response = client.post("/api/v1/models/m/rebaseline", json=body, headers=auth)
    assert response.status_code == 201, response.text
    reference = response.json()
    for i in range(26, 60):
        run_drift(client, auth, day[i])
    found = alerts(client, auth, signal="refusal_rate", dimension="all")
    assert reference["last_day"] < day[20].isoformat(), reference
    assert [a["status"] for a in found] == ["open"], found
    assert found[0]["evidence"]["reference"]["version"] == reference["version"]
