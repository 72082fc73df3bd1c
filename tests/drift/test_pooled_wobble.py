"""The freeze pools each signal's day-to-day wobble across the values of a dimension
(docs/statistics.md §8.1, app/stats/pooling.py): a route's between-day variance is no
longer estimated from its own 14-28 days alone, whose noise (a relative SD of 27% and more)
made slow shifts late on routes whose wobble came out high. A cohort added after the freeze
keeps its own estimate, and no frozen entry changes."""

from __future__ import annotations

import random
from datetime import date
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import DailySignal, DriftReference
from app.stats.bands import estimate_rate_reference
from app.stats.pooling import MIN_POOL_COHORTS
from tests.drift.champions import calls, champions_since, days_ending_day_before_yesterday
from tests.drift.traffic import post_events, run_drift

Headers = dict[str, str]
ROUTES = [f"r{i}" for i in range(MIN_POOL_COHORTS + 1)]
LATE = "late"  # first serves on day LATE_FROM
LATE_FROM, DAYS, CALLS = 16, 31, 300


def traffic(day: list[date]) -> list[dict[str, Any]]:
    """300 calls a route a day, refused about 8% of the time with a 25% day-to-day wobble."""
    rng = random.Random(7)
    events = []
    for i, d in enumerate(day):
        for route in ROUTES + ([LATE] if i >= LATE_FROM else []):
            refused = round(CALLS * 0.08 * rng.lognormvariate(0.0, 0.25))
            events += [
                {**event, "trace_id": f"{route}-{event['trace_id']}", "cohort": {"route": route}}
                for event in calls(d, "A", refused, n=CALLS)
            ]
    return events


def counts(app: FastAPI, routes: list[str], days: list[date]) -> tuple[np.ndarray, np.ndarray]:
    """(routes x days) refusal numerators and denominators as the rollup stored them."""
    x, n = np.zeros((len(routes), len(days))), np.zeros((len(routes), len(days)))
    with app.state.sessionmaker() as session:
        for row in session.scalars(
            select(DailySignal).where(
                DailySignal.signal == "refusal_rate",
                DailySignal.dimension == "route",
                DailySignal.day.in_(days),
            )
        ):
            if row.value in routes:
                i, j = routes.index(row.value), days.index(row.day)
                x[i, j], n[i, j] = row.numerator, row.denominator
    return x, n


def test_the_freeze_pools_a_signals_wobble_across_routes_and_a_late_route_keeps_its_own(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    day = days_ending_day_before_yesterday(DAYS)
    champions_since(app, client, auth, {"A": day[0]})  # reference_days 14, warmup 0
    post_events(client, auth, traffic(day))
    run_drift(client, auth, day[15], 16)
    with app.state.sessionmaker() as session:
        [reference] = session.scalars(select(DriftReference)).all()
        window, stats = [date.fromisoformat(d) for d in reference.days], dict(reference.stats)
    assert window == day[:14]
    x, n = counts(app, ROUTES, window)
    pooled = estimate_rate_reference(x, n, groups=np.zeros(len(ROUTES), int))
    own = estimate_rate_reference(x, n)
    entries = [stats[f"refusal_rate|route|{r}"] for r in ROUTES]
    np.testing.assert_allclose([e[1] for e in entries], pooled.between_var, rtol=1e-9)
    np.testing.assert_allclose([e[0] for e in entries], pooled.center, rtol=1e-9)
    np.testing.assert_allclose([e[2] for e in entries], pooled.center_var, rtol=1e-9)
    assert [e[3] for e in entries] == pooled.days_used.tolist()
    # Each route's own 14 days alone (the entries before) scatter far more.
    cv_own = np.sqrt(own.between_var) / own.center
    cv_pooled = np.sqrt(pooled.between_var) / pooled.center
    assert np.ptp(cv_pooled) < 0.5 * np.ptp(cv_own)
    # "all" is a dimension of one value: its own estimate, as before.
    x_all, n_all = x.sum(0, keepdims=True), n.sum(0, keepdims=True)
    assert stats["refusal_rate|all|all"][1] == estimate_rate_reference(x_all, n_all).between_var[0]

    # The late route: its own 14 days (16-29), added on day 30; no frozen entry changes.
    run_drift(client, auth, day[30], 15)
    with app.state.sessionmaker() as session:
        [reference] = session.scalars(select(DriftReference)).all()
        grown = dict(reference.stats)
        [added] = reference.cohorts_added
        added_days = [date.fromisoformat(d) for d in added.days]
    assert added.value == LATE and added_days == day[16:30]
    assert {k: v for k, v in grown.items() if k in stats} == stats
    x_late, n_late = counts(app, [LATE], added_days)
    alone = estimate_rate_reference(x_late, n_late)
    assert grown[f"refusal_rate|route|{LATE}"][:3] == [
        float(alone.center[0]),
        float(alone.between_var[0]),
        float(alone.center_var[0]),
    ]
