"""Late events for a day already judged: rerunning that day alone must leave every later
day's CUSUM as judging the days in order would, since each day's statistic starts from the
day before."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import DriftJudgement
from tests.drift.champions import (
    calls,
    champions_since,
    days_ending_day_before_yesterday,
)
from tests.drift.traffic import post_events, run_drift

Headers = dict[str, str]


def cusum_by_day(app: FastAPI) -> dict[Any, tuple[float, float, int]]:
    """The whole population's refusal-rate CUSUM pair and rules per judged day."""
    with app.state.sessionmaker() as session:
        rows = session.execute(
            select(
                DriftJudgement.day,
                DriftJudgement.cusum,
                DriftJudgement.cusum_lower,
                DriftJudgement.rules,
            ).where(
                DriftJudgement.signal == "refusal_rate",
                DriftJudgement.dimension == "all",
                DriftJudgement.value == "all",
            )
        ).all()
    return {day: (cusum, lower, rules) for day, cusum, lower, rules in rows}


def test_rerunning_a_past_day_for_late_events_carries_its_cusum_into_the_later_days(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """14 reference days at 10% refusals, then day 14 judged on its first half only (10%);
    days 15-16 at 10%. The rest of day 14 arrives late, 60% refused, and day 14 alone is run
    again. Before, day 14's CUSUM jumped but days 15 and 16 kept the statistic built on the
    old day 14 (near 0), and day 17 would start from that stale state: the late evidence of a
    shift never reached the CUSUM that the alerts and the next days read."""
    day = days_ending_day_before_yesterday(17)
    champions_since(app, client, auth, {"A": day[0] - timedelta(days=1)})
    events: list[dict[str, Any]] = []
    for i, d in enumerate(day):
        events += calls(d, "A", refused=25, n=250) if i == 14 else calls(d, "A", refused=50)
    post_events(client, auth, events)
    run_drift(client, auth, day[16], backfill=17)
    late = [
        {**e, "trace_id": f"{e['trace_id']}-late"} for e in calls(day[14], "A", refused=150, n=250)
    ]
    post_events(client, auth, late)

    run_drift(client, auth, day[14])  # the late events: day 14 alone again
    after_one_rerun = cusum_by_day(app)
    run_drift(client, auth, day[16], backfill=3)  # days 14-16 in order
    in_order = cusum_by_day(app)

    assert in_order[day[14]][0] > 0  # the late half moved day 14's CUSUM
    assert in_order[day[15]][0] > 0  # and the next day starts from it
    for d in day[14:]:
        assert after_one_rerun[d][:2] == in_order[d][:2], d
        assert after_one_rerun[d][2] & 2 == in_order[d][2] & 2, d  # the CUSUM rule
