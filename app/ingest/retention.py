"""Retention: events older than PLUMBLINE_RETENTION_DAYS are removed (the daily rollups
stay), with their exactly-once keys, once a day after the drift job (app/schedule.py), under
the same lock so it never competes with a drift backfill reading the same days.

The window is one setting for the whole deployment, so every project's window ends at the same
instant, `cutoff`. On PostgreSQL every day partition that ends at or before the cutoff holds
nothing but expired rows of every project and is dropped whole (detach, delete its keys,
drop: app/ingest/partitions.py); only the rows before the cutoff in the day the cutoff falls
in are deleted row by row, in bounded batches. SQLite (one table) deletes every expired row
in batches. Were windows ever per project, whole partitions past the longest window would
still drop, and the days between a project's window and the longest would be row deletes of
that project only."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import Connection, Engine, Table, delete, select, text, tuple_
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import is_postgres, utcnow
from app.core.jobs import JOB_STALE_AFTER, claim_period, daily_jobs_lock, finish_period
from app.core.settings import Settings
from app.ingest.partitions import (
    attached_partitions,
    detach_expired,
    expired_partitions,
    partition_day,
)
from app.models import Event, EventKey, Project

log = logging.getLogger("plumbline.scheduler")

RETENTION_JOB = "retention.daily"
RETENTION_BATCH_ROWS = 5000
_KEYS = cast(Table, EventKey.__table__)


def retention_cutoff(settings: Settings) -> datetime:
    """The instant before which events are removed (drift keeps those days' rollups and
    judges them again as stored, app/drift/job.run_day)."""
    return utcnow() - timedelta(days=settings.retention_days)


def purge_expired_events(sessions: sessionmaker[Session], settings: Settings) -> bool:
    """Removes events older than `retention_days` (daily rollups stay): whole partitions
    first (PostgreSQL), then one bounded batch of row deletes per project. Returns whether a
    full batch was deleted, i.e. more rows may be left."""
    cutoff = retention_cutoff(settings)
    with sessions() as session:
        project_ids = list(session.scalars(select(Project.id)).all())
        postgres = is_postgres(session)
        engine = session.get_bind()
    if postgres:
        assert isinstance(engine, Engine)
        drop_expired_partitions(engine, project_ids, cutoff)
    more = False
    with sessions() as session:
        for project_id in project_ids:
            more = delete_expired_rows(session, project_id, cutoff) or more
    return more


def drop_expired_partitions(engine: Engine, project_ids: list[int], cutoff: datetime) -> int:
    """Drops every day partition that ends at or before `cutoff`; returns how many. Each is
    detached first (a moment's ACCESS EXCLUSIVE on `events`), so deleting its keys, project by
    project, blocks no ingest; a run that died half-way is finished by the next, before it
    detaches anything: late events may have made that day's partition again since, and
    detaching it renames it to the name the leftover still holds."""
    with engine.connect() as connection:
        dropped = _drop_detached(connection, project_ids)
        expired = [
            name
            for day, name in sorted(attached_partitions(connection).items())
            # The day ends at or before the cutoff.
            if day < cutoff.astimezone(UTC).date()
        ]
        connection.rollback()
        for name in expired:
            detach_expired(connection, partition_day(name))
            connection.commit()
        return dropped + _drop_detached(connection, project_ids)


def _drop_detached(connection: Connection, project_ids: list[int]) -> int:
    """Drops every detached expired partition with its exactly-once keys; returns how many."""
    leftovers = expired_partitions(connection)
    connection.rollback()
    for name in leftovers:
        for project_id in project_ids:
            connection.execute(
                text(
                    f"DELETE FROM event_keys k USING {name} e "
                    "WHERE e.project_id = :project_id AND k.project_id = :project_id "
                    "AND k.trace_id = e.trace_id AND k.span_id = e.span_id"
                ),
                {"project_id": project_id},
            )
            connection.commit()
        connection.execute(text(f"DROP TABLE {name}"))
        connection.commit()
        log.info("retention: dropped partition %s", name)
    return len(leftovers)


def delete_expired_rows(session: Session, project_id: int, cutoff: datetime) -> bool:
    """One batch of one project's expired rows and their keys, oldest first, walking the
    (project_id, ts) index. The batch's ids are read first, so the keys deleted are exactly
    those of the events deleted. Returns whether the batch was full."""
    ids = session.scalars(
        select(Event.id)
        .where(Event.project_id == project_id, Event.ts < cutoff)
        .order_by(Event.ts)
        .limit(RETENTION_BATCH_ROWS)
    ).all()
    if ids:
        batch = Event.project_id == project_id, Event.id.in_(ids)
        session.execute(
            delete(_KEYS).where(
                _KEYS.c.project_id == project_id,
                tuple_(_KEYS.c.trace_id, _KEYS.c.span_id).in_(
                    select(Event.trace_id, Event.span_id).where(*batch)
                ),
            )
        )
        session.execute(delete(Event).where(*batch))
    session.commit()
    return len(ids) == RETENTION_BATCH_ROWS


def run_scheduled_retention(
    sessions: sessionmaker[Session], settings: Settings, now: datetime | None = None
) -> int | None:
    """Today's retention purge, batch after batch until nothing expired is left, unless another
    process has claimed today (-> None); returns the number of batches run. It holds the drift
    lock too, so its deletes never run under a drift backfill reading the same days."""
    period = (now or utcnow()).astimezone(UTC).date().isoformat()
    with daily_jobs_lock(sessions) as alone:
        stale_before = utcnow() if alone else utcnow() - JOB_STALE_AFTER
        if not claim_period(sessions, RETENTION_JOB, period, stale_before):
            return None
        batches = 1
        try:
            while purge_expired_events(sessions, settings):
                batches += 1
        except Exception as exc:
            log.exception("retention job for %s failed", period)
            finish_period(sessions, RETENTION_JOB, period, f"{type(exc).__name__}: {exc}")
            raise
        finish_period(sessions, RETENTION_JOB, period, None)
    log.info("retention job for %s: %d batch(es)", period, batches)
    return batches
