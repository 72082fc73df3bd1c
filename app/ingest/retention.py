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
that project only.

A running canary holds back its window: the events of its two checkpoints (candidate and
champion) from its `started_at` stay until it has ended, however low the retention was set
after it started. Starting a canary longer than the retention is refused (422), but the
retention is an environment setting read at start, so no request can refuse lowering it, and
refusing to start the service would stop ingest for one canary's sake; without the hold, the
running canary would lose its first days mid-run and decide on the rest (its counts shrink,
a harm already shown can disappear). On PostgreSQL a held day's partition is not dropped
whole; its other rows are deleted row by row."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    delete,
    false,
    not_,
    or_,
    select,
    text,
    tuple_,
)
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
from app.models import Canary, Event, EventKey, Project
from app.models.canaries import CanaryStatus

log = logging.getLogger("plumbline.scheduler")

RETENTION_JOB = "retention.daily"
RETENTION_BATCH_ROWS = 5000
_KEYS = cast(Table, EventKey.__table__)


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def retention_cutoff(settings: Settings, now: datetime | None = None) -> datetime:
    """The instant before which events are removed (drift keeps those days' rollups and
    judges them again as stored, app/drift/job.run_day), and ingest refuses events
    (app/ingest/service.ingest_events). A window reaching before year 1 keeps everything:
    its cutoff is the earliest instant, never an overflow."""
    now = utcnow() if now is None else now
    if settings.retention_days >= (now - _EARLIEST).days:
        return _EARLIEST
    return now - timedelta(days=settings.retention_days)


def purge_expired_events(sessions: sessionmaker[Session], settings: Settings) -> bool:
    """Removes events older than `retention_days` (daily rollups stay): whole partitions
    first (PostgreSQL), then one bounded batch of row deletes per project. Returns whether a
    full batch was deleted, i.e. more rows may be left."""
    cutoff = retention_cutoff(settings)
    with sessions() as session:
        project_ids = list(session.scalars(select(Project.id)).all())
        postgres = is_postgres(session)
        engine = session.get_bind()
        holds = {p: running_canary_holds(session, p) for p in project_ids}
        session.rollback()
    if postgres:
        assert isinstance(engine, Engine)
        # A day partition holding a running canary's events is not dropped whole.
        starts = [start for held in holds.values() for _ids, start in held]
        drop_expired_partitions(engine, project_ids, min([cutoff, *starts]))
    more = False
    with sessions() as session:
        for project_id in project_ids:
            more = delete_expired_rows(session, project_id, cutoff, holds[project_id]) or more
    return more


Hold = tuple[tuple[int, int], datetime]
"""A running canary's window: its two checkpoints (candidate, champion) and its start."""


def running_canary_holds(session: Session, project_id: int) -> list[Hold]:
    """The windows of a project's running canaries, which retention keeps until they end."""
    rows = session.execute(
        select(Canary.checkpoint_id, Canary.champion_id, Canary.started_at).where(
            Canary.project_id == project_id, Canary.status == CanaryStatus.running
        )
    ).all()
    return [((candidate, champion), start) for candidate, champion, start in rows]


def _held(holds: list[Hold]) -> ColumnElement[bool]:
    """Events a running canary still counts (checkpoint_id and ts are never NULL, so NOT of
    it is exact)."""
    if not holds:
        return false()
    return or_(*(and_(Event.checkpoint_id.in_(ids), Event.ts >= start) for ids, start in holds))


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


def delete_expired_rows(
    session: Session,
    project_id: int,
    cutoff: datetime,
    holds: list[Hold] | None = None,
) -> bool:
    """One batch of one project's expired rows and their keys, oldest first, walking the
    (project_id, ts) index, except the events its running canaries still count (`holds`:
    their checkpoints and starts). The batch's ids are read first, so the keys deleted are
    exactly those of the events deleted. Returns whether the batch was full."""
    ids = session.scalars(
        select(Event.id)
        .where(Event.project_id == project_id, Event.ts < cutoff, not_(_held(holds or [])))
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
