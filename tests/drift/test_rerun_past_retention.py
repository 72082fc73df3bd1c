"""Rerunning a day whose events retention has removed: the daily rollups are what retention
keeps, so the rerun must judge them again, not rewrite them from the events left (none)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.core.db import today_utc
from app.core.settings import Settings
from app.ingest.retention import run_scheduled_retention
from app.main import create_app
from tests.drift.champions import calls, champions_since
from tests.drift.traffic import post_events, run_drift

Headers = dict[str, str]
RETENTION_DAYS = 20


def stored_signals(client: TestClient, auth: Headers, day: Any) -> list[tuple[Any, ...]]:
    params = {"from": day.isoformat(), "to": day.isoformat(), "limit": 1000}
    items = client.get("/api/v1/signals", params=params, headers=auth).json()["items"]
    return sorted((i["signal"], i["dimension"], i["value"], i["denominator"]) for i in items)


def test_rerunning_a_day_past_retention_keeps_its_rollup(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    """A day 25 days back, rolled up while its events were kept, then its events purged
    (the service now runs with a 20-day retention: ingest refuses events past it, so they
    were sent while they were inside it). Before, a backfill reaching it (the API allows 90
    days) replaced its rollup with the nothing left of its events: the signals the retention
    promise keeps were erased for good."""
    day = today_utc() - timedelta(days=RETENTION_DAYS + 5)
    champions_since(app, client, auth, {"A": day - timedelta(days=1)})
    post_events(client, auth, calls(day, "A", refused=50, n=100))
    run_drift(client, auth, day)
    rolled_up = stored_signals(client, auth, day)
    assert ("refusal_rate", "all", "all", 100) in rolled_up
    short = create_app(settings.model_copy(update={"retention_days": RETENTION_DAYS}))
    with TestClient(short) as later:
        run_scheduled_retention(short.state.sessionmaker, short.state.settings)

        ran = run_drift(later, auth, day + timedelta(days=1), backfill=2)

        assert stored_signals(later, auth, day) == rolled_up
    assert ran["days"][0]["signals"] == len(rolled_up)
