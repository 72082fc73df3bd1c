"""Retention deletes events past `retention_days`, in batches, and leaves the rollups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.settings import Settings
from app.drift.job import DRIFT_JOB
from app.ingest import retention
from app.ingest.retention import RETENTION_JOB, purge_expired_events, run_scheduled_retention
from app.models import Checkpoint, DailySignal, Event, JobRun
from app.schedule import run_daily_jobs
from tests.ingest.factories import event

Headers = dict[str, str]


def iso(days_ago: float) -> str:
    return (utcnow() - timedelta(days=days_ago)).isoformat()


def test_events_past_retention_are_deleted_and_rollups_stay(
    app: FastAPI,
    client: TestClient,
    auth: Headers,
    checkpoint: dict[str, Any],
    settings: Settings,
    db: Session,
) -> None:
    batch = [event(i, timestamp=iso(40 + i)) for i in range(3)]
    batch += [event(10 + i, timestamp=iso(i)) for i in range(2)]
    client.post("/api/v1/events", json={"events": batch}, headers=auth)
    stored_checkpoint = db.get_one(Checkpoint, checkpoint["id"])
    db.add(
        DailySignal(
            project_id=stored_checkpoint.project_id,
            model_id=stored_checkpoint.model_id,
            checkpoint_id=stored_checkpoint.id,
            day=(utcnow() - timedelta(days=41)).date(),
            signal="fallback_rate",
            dimension="all",
            value="all",
            numerator=1,
            denominator=3,
            rate=1 / 3,
        )
    )
    db.commit()

    more = purge_expired_events(
        app.state.sessionmaker, settings.model_copy(update={"retention_days": 30})
    )

    assert more is False  # one partial batch: nothing left
    try:
        remaining = db.scalars(select(Event.trace_id).order_by(Event.trace_id)).all()
        signals = db.scalar(select(func.count()).select_from(DailySignal))
    finally:
        db.rollback()
    assert remaining == ["trace-00010", "trace-00011"]
    assert signals == 1


def test_the_daily_jobs_purge_expired_events_once_a_day_after_drift(
    app: FastAPI,
    client: TestClient,
    auth: Headers,
    checkpoint: dict[str, Any],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client.post(
        "/api/v1/events",
        json={
            "events": [event(i, timestamp=iso(40 + i)) for i in range(5)]
            + [event(9, timestamp=iso(1))]
        },
        headers=auth,
    )
    monkeypatch.setattr(retention, "RETENTION_BATCH_ROWS", 2)  # 5 expired rows: 2 + 2 + 1
    sessions = app.state.sessionmaker
    short = settings.model_copy(update={"retention_days": 30})
    now = datetime.now(UTC)

    # SQLite deletes rows in batches; PostgreSQL drops the five expired days whole, leaving
    # no rows for its batch.
    postgres = settings.database_url.startswith("postgresql")
    assert run_scheduled_retention(sessions, short, now) == (1 if postgres else 3)
    assert run_scheduled_retention(sessions, short, now) is None  # claimed for today
    client.post("/api/v1/events", json={"events": [event(20, timestamp=iso(50))]}, headers=auth)
    run_daily_jobs(sessions, short, now + timedelta(days=1))

    with sessions() as session:
        remaining = session.scalars(select(Event.trace_id).order_by(Event.trace_id)).all()
        claims = session.execute(
            select(JobRun.job, JobRun.period, JobRun.status).order_by(JobRun.id)
        ).all()
    assert remaining == ["trace-00009"]
    today, tomorrow = now.date(), now.date() + timedelta(days=1)
    assert [tuple(c) for c in claims] == [
        (RETENTION_JOB, today.isoformat(), "succeeded"),
        (DRIFT_JOB, today.isoformat(), "succeeded"),  # the drift job's period is yesterday
        (RETENTION_JOB, tomorrow.isoformat(), "succeeded"),
    ]
