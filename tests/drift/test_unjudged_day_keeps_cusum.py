"""A day with data but nothing testable (a quiet weekend of a calibration-only model) leaves
every CUSUM where it stood, like a day without data."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import DriftJudgement
from tests.drift.champions import (
    champions_since,
    days_ending_day_before_yesterday,
)
from tests.drift.traffic import at, post_events, run_drift

Headers = dict[str, str]


def scored(day: date, n: int, flipped: bool) -> list[dict[str, Any]]:
    """n calls with a probability and a label; calibrated-ish, or every label flipped."""
    events = []
    for k in range(n):
        probability = 0.05 + 0.9 * (k % 20) / 19
        positive = (k * 7919 % 100) / 100 < probability
        events.append(
            {
                "trace_id": f"{day}-{k}",
                "timestamp": at(day, k * 60),
                "model": "m",
                "checkpoint_version": "A",
                "probability": round(probability, 3),
                "label": "1" if positive != flipped else "0",
            }
        )
    return events


def test_a_day_too_small_to_judge_keeps_the_brier_cusum_of_the_day_before(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Before, when none of the model-day's rows could be tested (30 labelled rows, below the
    50 calibration needs) the judge returned before carrying the state, so the day stored 0
    for every CUSUM and the next day restarted from 0: a shift under way lost its evidence
    to one quiet day."""
    day = days_ending_day_before_yesterday(17)
    champions_since(app, client, auth, {"A": day[0] - timedelta(days=1)})
    events: list[dict[str, Any]] = []
    for i, d in enumerate(day):
        events += scored(d, 30 if i == 16 else 200, flipped=i in (14, 15))
    post_events(client, auth, events)
    run_drift(client, auth, day[16], backfill=17)
    with app.state.sessionmaker() as session:
        cusum = dict(
            session.execute(
                select(DriftJudgement.day, DriftJudgement.cusum).where(
                    DriftJudgement.signal == "brier_score", DriftJudgement.dimension == "all"
                )
            ).all()
        )
    assert cusum[day[15]] > 0
    assert cusum[day[16]] == cusum[day[15]]
