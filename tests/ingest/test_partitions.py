"""Day partitions of events (PostgreSQL) and the exactly-once key that survives them (both
databases): concurrent and retried submissions of a key store it once whatever its timestamp,
missing partitions are made on demand, the daily jobs make them ahead, and retention drops
whole expired days and deletes only the rows of the day the cutoff falls in."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import Unprocessable
from app.core.settings import Settings
from app.ingest import partitions, service
from app.ingest.retention import purge_expired_events
from app.ingest.service import IngestOutcome, ingest_events, validate_events
from app.models import Event, EventKey, Project
from app.schedule import run_daily_jobs
from tests.ingest.factories import event

Headers = dict[str, str]


def is_postgres(settings: Settings) -> bool:
    return settings.database_url.startswith("postgresql")


def iso(when: datetime) -> str:
    return when.isoformat()


def stored(app: FastAPI) -> list[tuple[str, str, datetime]]:
    with app.state.sessionmaker() as session:
        rows = session.execute(
            select(Event.trace_id, Event.span_id, Event.ts).order_by(Event.trace_id, Event.span_id)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def key_count(app: FastAPI) -> int:
    with app.state.sessionmaker() as session:
        return int(session.scalar(select(func.count()).select_from(EventKey)) or 0)


def partition_days(app: FastAPI) -> set[str]:
    engine: Engine = app.state.engine
    with engine.connect() as connection:
        return {f"{day:%Y-%m-%d}" for day in partitions.attached_partitions(connection)}


def project_id_of(app: FastAPI) -> int:
    with app.state.sessionmaker() as session:
        return int(session.scalar(select(Project.id).where(Project.name == "acme")) or 0)


def test_a_retry_with_another_timestamp_is_a_duplicate(
    app: FastAPI, client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    first = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)
    batch = [event(i, timestamp=iso(first)) for i in range(3)]
    assert (
        client.post("/api/v1/events", json={"events": batch}, headers=auth).json()["accepted"] == 3
    )
    # The same keys a day later (another partition on PostgreSQL) and one new key.
    retry = [event(i, timestamp=iso(first + timedelta(days=1))) for i in range(4)]
    answer = client.post("/api/v1/events", json={"events": retry}, headers=auth).json()
    assert (answer["accepted"], answer["duplicates"]) == (1, 3)
    rows = stored(app)
    assert [(trace, ts) for trace, _span, ts in rows] == [
        ("trace-00000", first),
        ("trace-00001", first),
        ("trace-00002", first),
        ("trace-00003", first + timedelta(days=1)),
    ]
    assert key_count(app) == 4


def test_concurrent_submissions_of_the_same_keys_store_each_once(
    app: FastAPI, checkpoint: dict[str, Any], settings: Settings
) -> None:
    """Eight writers send the same 200 keys at once, each with its own timestamps (spread
    over three days, so over three partitions on PostgreSQL)."""
    project_id = project_id_of(app)
    writers, keys = 8, 200
    start = threading.Barrier(writers)
    base = datetime(2026, 4, 1, tzinfo=UTC)

    def write(writer: int) -> IngestOutcome:
        batch = [
            event(i, timestamp=iso(base + timedelta(days=(i + writer) % 3, minutes=writer)))
            for i in range(keys)
        ]
        with app.state.sessionmaker() as session:
            start.wait()
            return ingest_events(session, project_id, validate_events(batch), settings)

    with ThreadPoolExecutor(writers) as pool:
        outcomes = list(pool.map(write, range(writers)))

    assert sum(outcome.accepted for outcome in outcomes) == keys
    assert sum(outcome.duplicates for outcome in outcomes) == keys * (writers - 1)
    rows = stored(app)
    assert len(rows) == keys
    assert len({(trace, span) for trace, span, _ts in rows}) == keys
    assert key_count(app) == keys


def _hold_key(app: FastAPI, project_id: int) -> tuple[Any, Callable[[], None]]:
    """An uncommitted claim of trace-00000's key, on a connection of its own."""
    engine: Engine = app.state.engine
    connection = engine.connect()  # begins IMMEDIATE on SQLite: the database's write lock
    connection.execute(
        text("INSERT INTO event_keys (project_id, trace_id, span_id) VALUES (:p, :t, :s)"),
        {"p": project_id, "t": "trace-00000", "s": "span-00000"},
    )
    return connection, connection.close


def _wait_until_blocked(app: FastAPI, settings: Settings) -> None:
    """PostgreSQL: until the writer waits on the held key's lock (up to 10 s). SQLite: the
    writer waits on the database lock; a short pause lets it get there."""
    if not is_postgres(settings):
        time.sleep(0.5)
        return
    deadline = time.monotonic() + 10
    with app.state.engine.connect() as probe:
        while time.monotonic() < deadline:
            waiting = probe.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
            ).scalar()
            probe.rollback()
            if waiting:
                return
            time.sleep(0.05)


@pytest.mark.parametrize("first_writer_commits", [True, False])
def test_a_writer_waits_for_an_uncommitted_claim_of_its_key(
    app: FastAPI, checkpoint: dict[str, Any], settings: Settings, first_writer_commits: bool
) -> None:
    """The second writer of a key learns the first one's fate: a commit makes its event a
    duplicate, a rollback lets it store the event."""
    project_id = project_id_of(app)
    holder, release = _hold_key(app, project_id)
    try:
        with ThreadPoolExecutor(1) as pool:

            def write() -> IngestOutcome:
                with app.state.sessionmaker() as session:
                    return ingest_events(session, project_id, validate_events([event(0)]), settings)

            pending = pool.submit(write)
            _wait_until_blocked(app, settings)
            if first_writer_commits:
                holder.commit()
            else:
                holder.rollback()
            outcome = pending.result(timeout=60)
    finally:
        release()
    if first_writer_commits:
        assert (outcome.accepted, outcome.duplicates) == (0, 1)
        assert stored(app) == []
    else:
        assert (outcome.accepted, outcome.duplicates) == (1, 0)
        assert [trace for trace, _span, _ts in stored(app)] == ["trace-00000"]
    assert key_count(app) == 1


def test_feedback_joins_events_of_a_trace_across_days_both_ways(
    app: FastAPI, client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    late = datetime(2026, 5, 1, 23, 59, 59, tzinfo=UTC)
    early = late + timedelta(seconds=2)  # the next day: another partition
    before = client.post(
        "/api/v1/feedback", json={"trace_id": "t-a", "value": "down"}, headers=auth
    )
    assert before.status_code in (200, 201, 202), before.text
    spans = [
        event(0, trace_id="t-a", span_id="s1", timestamp=iso(late)),
        event(1, trace_id="t-a", span_id="s2", timestamp=iso(early)),
        event(2, trace_id="t-b", span_id="s1", timestamp=iso(late)),
        event(3, trace_id="t-b", span_id="s2", timestamp=iso(early)),
    ]
    client.post("/api/v1/events", json={"events": spans}, headers=auth)
    after = client.post("/api/v1/feedback", json={"trace_id": "t-b", "value": "up"}, headers=auth)
    assert after.status_code in (200, 201, 202), after.text
    with app.state.sessionmaker() as session:
        feedback = session.execute(
            select(Event.trace_id, Event.span_id, Event.feedback).order_by(
                Event.trace_id, Event.span_id
            )
        ).all()
    assert [tuple(row) for row in feedback] == [
        ("t-a", "s1", -1),
        ("t-a", "s2", -1),
        ("t-b", "s1", 1),
        ("t-b", "s2", 1),
    ]


def test_ingest_makes_missing_partitions_and_the_daily_jobs_make_them_ahead(
    app: FastAPI, client: TestClient, auth: Headers, checkpoint: dict[str, Any], settings: Settings
) -> None:
    now = utcnow()
    odd = [now - timedelta(days=400), now - timedelta(days=30)]
    batch = [event(i, timestamp=iso(when)) for i, when in enumerate(odd)]
    answer = client.post("/api/v1/events", json={"events": batch}, headers=auth).json()
    assert answer["accepted"] == 2
    if is_postgres(settings):
        assert {f"{when:%Y-%m-%d}" for when in odd} <= partition_days(app)
    run_daily_jobs(app.state.sessionmaker, settings, now + timedelta(days=40))
    if not is_postgres(settings):
        return
    days = partition_days(app)
    ahead = {
        f"{now + timedelta(days=40 + n):%Y-%m-%d}"
        for n in range(partitions.PARTITION_DAYS_AHEAD + 1)
    }
    assert ahead <= days


def test_retention_drops_expired_days_whole_and_deletes_rows_of_the_cutoff_day(
    app: FastAPI, client: TestClient, auth: Headers, checkpoint: dict[str, Any], settings: Settings
) -> None:
    now = utcnow()
    cutoff = now - timedelta(days=30)
    batch = [
        event(0, timestamp=iso(now - timedelta(days=45))),  # a whole expired day
        event(1, timestamp=iso(now - timedelta(days=31))),  # a whole expired day
        event(2, timestamp=iso(cutoff - timedelta(seconds=1))),  # the cutoff's day, expired
        event(3, timestamp=iso(cutoff + timedelta(minutes=1))),  # kept
        event(4, timestamp=iso(now)),  # kept
    ]
    client.post("/api/v1/events", json={"events": batch}, headers=auth)
    short = settings.model_copy(update={"retention_days": 30})

    assert purge_expired_events(app.state.sessionmaker, short) is False

    assert [trace for trace, _span, _ts in stored(app)] == ["trace-00003", "trace-00004"]
    assert key_count(app) == 2  # the expired events' keys went with them
    if is_postgres(settings):
        days = partition_days(app)
        assert f"{now - timedelta(days=45):%Y-%m-%d}" not in days
        assert f"{now - timedelta(days=31):%Y-%m-%d}" not in days
        assert f"{cutoff:%Y-%m-%d}" in days  # partly kept: its rows were deleted one by one
    # An expired event sent again is stored again (its key went); a kept one is a duplicate.
    again = client.post("/api/v1/events", json={"events": batch[:1] + batch[3:4]}, headers=auth)
    assert (again.json()["accepted"], again.json()["duplicates"]) == (1, 1)


def test_retention_finishes_a_partition_left_detached_by_a_dead_run(
    app: FastAPI, client: TestClient, auth: Headers, checkpoint: dict[str, Any], settings: Settings
) -> None:
    if not is_postgres(settings):
        pytest.skip("SQLite keeps one table")
    old = utcnow() - timedelta(days=50)
    client.post("/api/v1/events", json={"events": [event(0, timestamp=iso(old))]}, headers=auth)
    engine: Engine = app.state.engine
    with engine.connect() as connection:  # a run that died after detaching
        partitions.detach_expired(connection, old.date())
        connection.commit()
    assert stored(app) == [] and key_count(app) == 1

    # Late events for that day make its partition again before the next run.
    late = client.post(
        "/api/v1/events", json={"events": [event(1, timestamp=iso(old))]}, headers=auth
    )
    assert late.json()["accepted"] == 1 and key_count(app) == 2

    # The day is past retention: its new partition is detached under the leftover's name.
    purge_expired_events(app.state.sessionmaker, settings.model_copy(update={"retention_days": 30}))

    with engine.connect() as connection:
        assert partitions.expired_partitions(connection) == []
    assert f"{old:%Y-%m-%d}" not in partition_days(app)
    assert stored(app) == [] and key_count(app) == 0


def test_partition_ddl_waits_for_no_insert(app: FastAPI, settings: Settings, db: Session) -> None:
    """Attaching a day takes SHARE UPDATE EXCLUSIVE on events, which an open transaction
    that has written events does not block."""
    if not is_postgres(settings):
        pytest.skip("SQLite keeps one table")
    day = datetime(2027, 1, 1, tzinfo=UTC).date()
    db.execute(text("SELECT count(*) FROM events"))  # holds ACCESS SHARE until rollback
    db.execute(text("LOCK TABLE events IN ROW EXCLUSIVE MODE"))
    try:
        assert partitions.create_partitions(app.state.engine, [day]) == [day]
    finally:
        db.rollback()
    assert f"{day:%Y-%m-%d}" in partition_days(app)


def test_a_batch_naming_too_many_new_days_is_refused_whole(
    client: TestClient,
    auth: Headers,
    checkpoint: dict[str, Any],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each new day becomes a table: a batch scattered over many days is a 422, never a
    thousand partitions; within the bound it is stored."""
    if not is_postgres(settings):
        pytest.skip("SQLite keeps one table")
    monkeypatch.setattr(service, "MAX_NEW_DAYS_PER_BATCH", 3)
    start = datetime(1950, 1, 1, tzinfo=UTC)
    scattered = [event(i, timestamp=iso(start + timedelta(days=30 * i))) for i in range(4)]
    refused = client.post("/api/v1/events", json={"events": scattered}, headers=auth)
    assert refused.status_code == 422 and refused.json()["field"] == "events", refused.text
    accepted = client.post("/api/v1/events", json={"events": scattered[:3]}, headers=auth)
    assert accepted.json()["accepted"] == 3


def test_a_staging_table_made_by_a_refused_batch_is_made_again(
    app: FastAPI, checkpoint: dict[str, Any], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL creates the staging table once per pooled connection; the connection only
    counts as having one after a commit, so a batch refused after creating it (the creation
    rolled back with it) leaves the connection's next batch to create it again."""
    if not is_postgres(settings):
        pytest.skip("SQLite inserts without a staging table")
    engine = create_engine(app.state.engine.url, pool_size=1, max_overflow=0)  # one connection
    project_id = project_id_of(app)
    start = datetime(1960, 1, 1, tzinfo=UTC)
    # The later batches' day exists, so they need no DDL connection of their own.
    partitions.create_partitions(app.state.engine, [start.date()])
    scattered = [event(i, timestamp=iso(start + timedelta(days=30 * i))) for i in range(4)]
    monkeypatch.setattr(service, "MAX_NEW_DAYS_PER_BATCH", 2)
    try:
        with Session(engine) as session, pytest.raises(Unprocessable):
            ingest_events(session, project_id, validate_events(scattered), settings)
        for attempt in range(2):  # the second batch finds the table the first one committed
            with Session(engine) as session:
                batch = validate_events([event(10 + attempt, timestamp=iso(start))])
                assert ingest_events(session, project_id, batch, settings).accepted == 1
    finally:
        engine.dispose()
