"""A shift's days never become its own reference (docs/statistics.md §8.10), even when the
CUSUM is still accumulating it as the new champion's window fills: freezing it then restarted
the CUSUM against the shift itself, and the regression went uncaught for weeks."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import DriftReference
from tests.drift.champions import (
    alerts,
    calls,
    champions_since,
    days_ending_day_before_yesterday,
)
from tests.drift.traffic import post_events, run_drift


def test_a_shift_under_way_when_the_window_fills_does_not_become_the_reference(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    """A refuses exactly 5% (25/500) from day 0; B, promoted on day 16, too, until day 26,
    from which B refuses 6.6% (33/500) for good: 1.6 predictive SDs a day, which the CUSUM
    (k = 1) catches within ~10 days against A's reference. B's 14-day window fills on day 30,
    with days 26-29 of the shift in it."""
    n_days = 58
    day = days_ending_day_before_yesterday(n_days)
    ids = champions_since(app, client, auth, {"A": day[0], "B": day[16]})
    events = []
    for i in range(n_days):
        events += calls(day[i], "A" if i < 16 else "B", 33 if i >= 26 else 25)
    post_events(client, auth, events)
    run_drift(client, auth, day[n_days - 1], n_days)
    with app.state.sessionmaker() as session:
        frozen = [
            (r.checkpoint_id, r.trigger, r.days)
            for r in session.scalars(select(DriftReference).order_by(DriftReference.version))
        ]
    opened = alerts(client, auth, signal="refusal_rate", dimension="all")
    shift_days = {d.isoformat() for d in day[26:]}
    b_refs = [days for checkpoint, _, days in frozen if checkpoint == ids["B"]]
    leaked = sorted(shift_days & {d for days in b_refs for d in days})
    assert not leaked, (leaked, [(a["day"], a["status"]) for a in opened])
    assert [(a["status"], a["checkpoint_id"]) for a in opened] == [("open", ids["B"])]
    assert day[29].isoformat() < opened[0]["day"] <= day[36].isoformat()
