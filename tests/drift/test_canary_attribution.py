"""Which checkpoint the daily job judges while a canary takes part of the traffic: the
champion's, whatever the canary's share; the canary has its own sequential test."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.drift.judge import canary_candidates
from app.models import Canary, Model
from app.models.canaries import CanaryDecision, CanaryStatus
from tests.drift.champions import (
    alerts,
    calls,
    champions_since,
    checkpoints,
    days_ending_day_before_yesterday,
)
from tests.drift.traffic import post_events, run_drift

Headers = dict[str, str]
CANARY_FROM = 18


def _canary_at_60_percent(
    app: FastAPI, client: TestClient, auth: Headers, champion: int, canary: int
) -> dict[str, int]:
    """A the champion from day 0 (its reference: days 0-13, 25 of 500 refused), every day
    500 calls of A until canary B starts at midnight of day 18 and takes 300 of the day's
    500 calls (60%) through day 23, A the other 200 (refusals as `champion` and `canary`
    per 1,000 of each). The days run one by one, as the scheduler does."""
    day = days_ending_day_before_yesterday(24)
    ids = champions_since(app, client, auth, {"A": day[0]})
    ids.update(checkpoints(client, auth, "m", ["B"]))
    start = datetime.combine(day[CANARY_FROM], time.min, tzinfo=UTC)
    r = client.post(
        "/api/v1/models/m/canaries",
        json={"checkpoint_id": ids["B"], "start": start.isoformat(), "max_days": 14},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    events: list[dict[str, Any]] = []
    for i in range(24):
        if i < CANARY_FROM:
            events += calls(day[i], "A", 25)
        else:
            events += calls(day[i], "A", champion * 200 // 1000, n=200)
            events += calls(day[i], "B", canary * 300 // 1000, n=300)
    post_events(client, auth, events)
    run_drift(client, auth, day[CANARY_FROM - 1], CANARY_FROM)
    for i in range(CANARY_FROM, 24):
        run_drift(client, auth, day[i])
    return ids


def test_a_canary_serving_most_of_the_traffic_does_not_hide_the_champions_regression(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The champion A regresses (refusals 5% -> 20%) from the day canary B, a good one (5%),
    takes 60% of the calls. Until 2026-12-01 the job judged the day's most-served checkpoint
    only: B, on A's reference, all six days, so A's regression on 40% of the users opened
    no alert at all. A's rows are judged now: the alert is on A from day 18."""
    ids = _canary_at_60_percent(app, client, auth, champion=200, canary=50)
    day = days_ending_day_before_yesterday(24)
    opened = alerts(client, auth, signal="refusal_rate", dimension="all")
    assert [(a["checkpoint_id"], a["day"]) for a in opened] == [
        (ids["A"], day[CANARY_FROM].isoformat())
    ]
    assert opened[0]["observed"] == 0.2 and opened[0]["volume"] == 200


def test_a_bad_canary_serving_most_of_the_traffic_opens_no_drift_alert(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The reverse: B regresses (20%) on its 60%, A stays at 5%. A's rows are judged and
    are fine, so the drift job opens nothing (B's own sequential test guards it); until
    2026-12-01 B's rows were judged on A's reference and its shift entered the CUSUM of the
    cohort, which A's next days then carried."""
    _canary_at_60_percent(app, client, auth, champion=50, canary=200)
    assert alerts(client, auth, signal="refusal_rate", dimension="all") == []


def test_a_canary_decided_promote_and_never_promoted_ends_at_its_decision(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Review R2: the window of a canary decided 'promote' ran until its promotion, so one
    never promoted (the registry refused it, or nobody did) set its candidate aside for good:
    left serving most of the calls beside the champion, it was judged by nothing, and the
    champion's scraps were judged in its place. Now it ends at the decision."""
    day = days_ending_day_before_yesterday(24)
    ids = _canary_at_60_percent(app, client, auth, champion=50, canary=50)
    decided = datetime.combine(day[20], time(6), tzinfo=UTC)
    with app.state.sessionmaker() as session:
        session.execute(
            update(Canary).values(
                status=CanaryStatus.promote, decision=CanaryDecision.promote, ended_at=decided
            )
        )
        session.commit()
        model = session.scalars(select(Model)).one()
        assert canary_candidates(session, model, day[20]) == {ids["B"]}
        assert canary_candidates(session, model, day[21]) == set()
