"""The in-process cron: APScheduler runs the daily drift job on PLUMBLINE_DRIFT_CRON (UTC).

APScheduler fires in every process that starts it (several replicas, `uvicorn --workers N`),
so the job guards itself twice: each period (the UTC day it computes) is claimed by inserting
a unique (job, period) row into job_runs, so exactly one process runs it; and on PostgreSQL the
run holds an advisory lock, so it never overlaps a `plumbline drift run` backfill from another
process. A missed period (service down at the cron time) is caught up at the next start."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from app.db import is_postgres, utcnow
from app.models import JobRun
from app.services import drift
from app.settings import Settings

log = logging.getLogger("plumbline.scheduler")

DRIFT_JOB = "drift.daily"
# Any constant shared by every process; the bytes of "plumbline-drift" folded into a bigint.
DRIFT_LOCK_KEY = int.from_bytes(b"pl-drift", "big") & 0x7FFFFFFFFFFFFFFF


@contextmanager
def drift_lock(sessions: sessionmaker[Session]) -> Iterator[None]:
    """Serialises drift runs across processes on PostgreSQL (SQLite has one writer anyway)."""
    with sessions() as session:
        engine = session.get_bind()
    assert isinstance(engine, Engine)  # sessions are bound to the app's engine
    if engine.dialect.name != "postgresql":
        yield
        return
    # Its own connection: a session-level lock lives as long as the connection holding it.
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": DRIFT_LOCK_KEY})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": DRIFT_LOCK_KEY})
            connection.commit()


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_period(sessions: sessionmaker[Session], job: str, period: str) -> bool:
    """True for exactly one caller per (job, period), whichever process asks."""
    with sessions() as session:
        dialect_insert = postgresql.insert if is_postgres(session) else sqlite.insert
        stmt = (
            dialect_insert(JobRun)
            .values(job=job, period=period, owner=_owner(), status="running", started_at=utcnow())
            .on_conflict_do_nothing(index_elements=["job", "period"])
            .returning(JobRun.id)
        )
        claimed = session.scalar(stmt) is not None
        session.commit()
    return claimed


def _finish(sessions: sessionmaker[Session], job: str, period: str, error: str | None) -> None:
    with sessions() as session:
        session.execute(
            update(JobRun)
            .where(JobRun.job == job, JobRun.period == period)
            .values(status="failed" if error else "succeeded", error=error, finished_at=utcnow())
        )
        session.commit()


def run_scheduled_drift(
    sessions: sessionmaker[Session], now: datetime | None = None
) -> list[drift.DriftResult] | None:
    """Yesterday's drift for every project, unless another process has claimed it (-> None)."""
    day: date = (now or utcnow()).astimezone(UTC).date() - timedelta(days=1)
    period = day.isoformat()
    if not claim_period(sessions, DRIFT_JOB, period):
        return None
    try:
        with drift_lock(sessions):
            results = drift.run_all_projects(sessions, day, "schedule")
    except Exception as exc:
        log.exception("drift job for %s failed", period)
        _finish(sessions, DRIFT_JOB, period, f"{type(exc).__name__}: {exc}")
        raise
    _finish(sessions, DRIFT_JOB, period, None)
    log.info("drift job for %s: %d signal rows", period, sum(r.signals for r in results))
    return results


def start_scheduler(sessions: sessionmaker[Session], settings: Settings) -> BackgroundScheduler:
    """Started from the app's lifespan when settings.run_scheduler is on."""
    scheduler = BackgroundScheduler(timezone=UTC)
    trigger = CronTrigger.from_crontab(settings.drift_cron, timezone=UTC)
    scheduler.add_job(
        run_scheduled_drift,
        trigger,
        args=[sessions],
        id=DRIFT_JOB,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=3600,
    )
    # Catch-up: yesterday's period, if nobody ran it (the claim makes this a no-op otherwise).
    scheduler.add_job(run_scheduled_drift, args=[sessions], id=f"{DRIFT_JOB}.catch-up")
    scheduler.start()
    return scheduler
