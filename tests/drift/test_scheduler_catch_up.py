"""The scheduler after missing days (the service was down): every missed day is run, oldest
first, not yesterday alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.links import Links
from app.drift.job import DRIFT_JOB, run_scheduled_drift
from app.models import DriftRun, JobRun
from tests.drift.champions import alerts, calls, champions_since
from tests.drift.traffic import post_events

Headers = dict[str, str]
NOW = datetime(2026, 5, 2, 0, 15, tzinfo=UTC)
CAP = {"model": "m", "signal": "refusal_rate", "band": {"type": "fixed", "high": 0.1}}


def test_the_days_missed_while_the_service_was_down_are_run_at_the_next_start(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """May 1st runs on schedule; the service is then down until May 5th. Refusals capped at
    10%: May 2nd, a missed day, is 60% refused. Before, the start on May 5th ran May 4th
    alone: May 2nd and 3rd were never judged and their shift never alerted."""
    sessions, links = app.state.sessionmaker, Links.of(app.state.settings)
    first = NOW.date() - timedelta(days=1)
    champions_since(app, client, auth, {"A": first - timedelta(days=1)})
    assert client.put("/api/v1/monitors", json=CAP, headers=auth).is_success
    missed = first + timedelta(days=1)
    post_events(client, auth, calls(missed, "A", refused=60, n=100))
    assert run_scheduled_drift(sessions, links, NOW) is not None

    results = run_scheduled_drift(sessions, links, NOW + timedelta(days=3))

    days = [first + timedelta(days=offset) for offset in (1, 2, 3)]
    assert results is not None and [r.day for r in results] == days
    with sessions() as session:
        periods = session.execute(
            select(JobRun.period, JobRun.status).where(JobRun.job == DRIFT_JOB)
        ).all()
        judged = session.scalars(select(DriftRun.day).where(DriftRun.status == "succeeded"))
        assert sorted(set(judged)) == [first, *days]
    assert sorted(periods) == [(d.isoformat(), "succeeded") for d in [first, *days]]
    [alert] = alerts(client, auth, signal="refusal_rate", dimension="all")
    assert alert["day"] == missed.isoformat()
    assert run_scheduled_drift(sessions, links, NOW + timedelta(days=3)) is None
