"""Carriers under concurrent ingest (PostgreSQL): two batches of one rated trace, each unable
to see the other's uncommitted calls, still leave the trace one carrier per checkpoint."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text

from app.core.db import utcnow
from app.core.settings import Settings
from app.ingest import service
from app.ingest.service import IngestOutcome, ingest_events, validate_events
from app.models import Event, Project
from tests.ingest.factories import event

Headers = dict[str, str]


def _lock_waiters(engine: Engine, expected: int) -> int:
    """How many sessions wait on a lock, polled until `expected` do (up to 10 s)."""
    deadline = time.monotonic() + 10
    waiting = 0
    with engine.connect() as probe:
        while time.monotonic() < deadline:
            waiting = int(
                probe.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    )
                ).scalar()
                or 0
            )
            probe.rollback()
            if waiting >= expected:
                break
            time.sleep(0.05)
    return waiting


def test_two_concurrent_batches_of_a_rated_trace_leave_one_carrier(
    app: FastAPI, client: TestClient, auth: Headers, checkpoint: dict[str, Any], settings: Settings
) -> None:
    """Both batches store their call of the rated trace, then wait on the trace's lock (held
    here until both wait); the one let through second reads the first's call, so the latest
    call alone carries the rating. Without the lock each placed a carrier on its own call."""
    if settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite runs one writer at a time")
    with app.state.sessionmaker() as session:
        project_id = int(session.scalar(select(Project.id).where(Project.name == "acme")) or 0)
    rated = client.post("/api/v1/feedback", json={"trace_id": "t", "value": "down"}, headers=auth)
    assert rated.is_success, rated.text
    now = utcnow()
    # The calls' cohort interned beforehand: a batch interning a new cohort holds its row
    # until it commits, which would make the other batch wait before its insert.
    first = event(1, timestamp=(now - timedelta(hours=1)).isoformat())
    assert client.post("/api/v1/events", json={"events": [first]}, headers=auth).is_success
    engine: Engine = app.state.engine
    holder = engine.connect()
    holder.execute(
        text("SELECT pg_advisory_xact_lock(:key)"),
        {"key": service._trace_lock_key(project_id, "t")},
    )

    def write(span: str, minutes_ago: int) -> IngestOutcome:
        call = event(
            0,
            trace_id="t",
            span_id=span,
            timestamp=(now - timedelta(minutes=minutes_ago)).isoformat(),
        )
        with app.state.sessionmaker() as session:
            return ingest_events(session, project_id, validate_events([call]), settings)

    try:
        with ThreadPoolExecutor(2) as pool:
            pending = [pool.submit(write, "early", 20), pool.submit(write, "late", 10)]
            waiting = _lock_waiters(engine, 2)
            holder.rollback()
            outcomes = [p.result(timeout=60) for p in pending]
    finally:
        holder.close()
    assert waiting == 2
    assert [outcome.accepted for outcome in outcomes] == [1, 1]
    with app.state.sessionmaker() as session:
        rows = session.execute(
            select(Event.span_id, Event.feedback, Event.carried_feedback)
            .where(Event.trace_id == "t")
            .order_by(Event.span_id)
        ).all()
    assert [tuple(row) for row in rows] == [("early", -1, None), ("late", -1, -1)]


def test_a_batch_of_many_rated_traces_takes_a_bounded_number_of_locks(
    app: FastAPI, settings: Settings
) -> None:
    """A lock per trace took one advisory lock per rated trace in the batch (up to 10,000),
    and two such batches at once exhausted PostgreSQL's shared lock table ("out of shared
    memory" for every session). The traces share TRACE_LOCK_BUCKETS locks per project."""
    if settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite takes no advisory locks")
    advisory = text(
        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    )
    with app.state.sessionmaker() as session:
        service._place_carriers(session, 1, {f"trace-{i}" for i in range(5_000)})
        held = session.scalar(advisory)
        session.rollback()
    assert held == service.TRACE_LOCK_BUCKETS
