"""Retention: events older than PLUMBLINE_RETENTION_DAYS are deleted (the daily rollups
stay), in bounded batches, once a day after the drift job (app/schedule.py), under the same
lock so its deletes never compete with a drift backfill reading the same days."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import utcnow
from app.core.jobs import JOB_STALE_AFTER, claim_period, daily_jobs_lock, finish_period
from app.core.settings import Settings
from app.models import Event, Project

log = logging.getLogger("plumbline.scheduler")

RETENTION_JOB = "retention.daily"
RETENTION_BATCH_ROWS = 5000


def purge_expired_events(sessions: sessionmaker[Session], settings: Settings) -> bool:
    """Deletes events older than `retention_days` in bounded batches (daily rollups stay).

    Per project, so each delete walks the (project_id, ts) index from its oldest end instead
    of scanning history. Returns whether a full batch was deleted, i.e. more may be left."""
    cutoff = utcnow() - timedelta(days=settings.retention_days)
    more = False
    with sessions() as session:
        project_ids = session.scalars(select(Project.id)).all()
        for project_id in project_ids:
            expired = (
                select(Event.id)
                .where(Event.project_id == project_id, Event.ts < cutoff)
                .order_by(Event.ts)
                .limit(RETENTION_BATCH_ROWS)
            )
            result = session.execute(delete(Event).where(Event.id.in_(expired)))
            session.commit()
            deleted = max(int(getattr(result, "rowcount", 0) or 0), 0)
            more = more or deleted == RETENTION_BATCH_ROWS
    return more


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
