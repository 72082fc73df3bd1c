"""A rerun that opens an alert (late events) leaves the later days as an in-order run would
have judged them: their CUSUM is recomputed after the rerun's alert changes."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import DriftJudgement, Model
from tests.drift.champions import (
    alerts,
    calls,
    checkpoints,
    date_history,
    days_ending_day_before_yesterday,
    promote,
    settings,
)
from tests.drift.traffic import post_events, run_drift

Headers = dict[str, str]


def refusal_cusum(app: FastAPI, model: str) -> dict[date, tuple[float, int]]:
    """The model's whole-population refusal CUSUM and rules per judged day."""
    with app.state.sessionmaker() as session:
        rows = session.execute(
            select(DriftJudgement.day, DriftJudgement.cusum, DriftJudgement.rules)
            .join(Model, Model.id == DriftJudgement.model_id)
            .where(
                Model.name == model,
                DriftJudgement.signal == "refusal_rate",
                DriftJudgement.dimension == "all",
            )
        ).all()
    return {day: (cusum, rules) for day, cusum, rules in rows}


def test_a_rerun_that_opens_an_alert_gives_the_later_days_of_an_in_order_run(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Two identical models, 2,000 calls a day, refusals 10% -> 11% from day 20, and 60 more
    calls on day 25, all refused. Model m has them from the start; model n's arrive late,
    after days 26-30 were judged, and day 25 is run again. Both are rebaselined after day 25
    (window days 6-19, the building shift's days left out) and judged to day 32. On m, day 25
    opens the alert and the later days, on the new reference, carry its statistic (4.31,
    firing). n's rerun of day 25 opens the same alert: its later days must read the same.
    Before, they were recomputed before the rerun opened it, so the first day on the new
    reference restarted at 0 (S 0.43, 0.85, ... never firing under an open alert)."""
    day = days_ending_day_before_yesterday(33)
    settings(client, auth)
    ids = {m: checkpoints(client, auth, m, ["A"])["A"] for m in ("m", "n")}
    for m in ("m", "n"):
        promote(client, auth, m, ids[m])
    date_history(app, [day[0], day[0]])

    def traffic(model: str) -> list[dict[str, Any]]:
        return [
            e for i in range(33) for e in calls(day[i], "A", 220 if i >= 20 else 200, model, 2000)
        ]

    def late(model: str) -> list[dict[str, Any]]:
        return [
            {**e, "trace_id": f"{e['trace_id']}-late"} for e in calls(day[25], "A", 60, model, n=60)
        ]

    post_events(client, auth, traffic("m") + late("m") + traffic("n"))
    run_drift(client, auth, day[25], 26)
    for m in ("m", "n"):
        body = {"reason": "refresh", "last_day": day[25].isoformat()}
        response = client.post(f"/api/v1/models/{m}/rebaseline", json=body, headers=auth)
        assert response.status_code == 201, response.text
        assert response.json()["last_day"] < day[20].isoformat()
    for i in range(26, 31):
        run_drift(client, auth, day[i])
    post_events(client, auth, late("n"))
    run_drift(client, auth, day[25])
    for i in range(31, 33):
        run_drift(client, auth, day[i])

    in_order, rerun = refusal_cusum(app, "m"), refusal_cusum(app, "n")
    assert in_order[day[26]][1] != 0  # the alert's statistic, carried to the new reference
    different = {
        d: (in_order[d], rerun[d]) for d in day[25:] if rerun[d] != pytest.approx(in_order[d])
    }
    assert not different, different
    opened = {
        a["model"]: (a["status"], a["day"])
        for a in alerts(client, auth, signal="refusal_rate", dimension="all")
    }
    assert opened == {"m": ("open", day[25].isoformat()), "n": ("open", day[25].isoformat())}
