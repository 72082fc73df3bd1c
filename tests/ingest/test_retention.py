"""Retention deletes events past `retention_days`, in batches, and leaves the rollups."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.models import Checkpoint, DailySignal, Event
from app.services.ingest import purge_expired_events
from app.settings import Settings
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
