"""The in-process cron: APScheduler runs the daily jobs on PLUMBLINE_DRIFT_CRON (UTC): the drift
job, then retention (events past PLUMBLINE_RETENTION_DAYS are deleted once yesterday's rollups
exist, and so the deletes never compete with the drift job's reads).

APScheduler fires in every process that starts it (several replicas, `uvicorn --workers N`),
so the job guards itself twice: on PostgreSQL it first takes an advisory lock, so it never
overlaps another process's run or a `plumbline drift run` backfill; then it claims its period
(the UTC day it computes) by inserting a unique (job, period) row into job_runs, so exactly one
process runs it. A claim left 'running' by a process that died is taken over: on PostgreSQL at
once (holding the lock proves nobody else is running the job; a dead process's lock died with
its connection), on SQLite after JOB_STALE_AFTER. A missed period (service down at the cron
time) is caught up at the next start."""

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
from app.services import drift, ingest
from app.settings import Settings

log = logging.getLogger("plumbline.scheduler")

DRIFT_JOB = "drift.daily"
RETENTION_JOB = "retention.daily"
# Any constant shared by every process; the bytes of "plumbline-drift" folded into a bigint.
DRIFT_LOCK_KEY = int.from_bytes(b"pl-drift", "big") & 0x7FFFFFFFFFFFFFFF
# Without a lock to prove a claimant dead (SQLite), a claim this old is presumed abandoned: a
# day's drift takes minutes, so this never takes a period from a live process.
JOB_STALE_AFTER = timedelta(hours=2)


@contextmanager
def drift_lock(sessions: sessionmaker[Session]) -> Iterator[bool]:
    """Serialises drift runs across processes on PostgreSQL (SQLite has one writer anyway);
    yields whether a cross-process lock is held."""
    with sessions() as session:
        engine = session.get_bind()
    assert isinstance(engine, Engine)  # sessions are bound to the app's engine
    if engine.dialect.name != "postgresql":
        yield False
        return
    # Its own connection: a session-level lock lives as long as the connection holding it.
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": DRIFT_LOCK_KEY})
        connection.commit()
        try:
            yield True
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": DRIFT_LOCK_KEY})
            connection.commit()


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_period(
    sessions: sessionmaker[Session], job: str, period: str, stale_before: datetime
) -> bool:
    """True for exactly one caller per (job, period), whichever process asks; a claim still
    'running' that started before `stale_before` belongs to a dead process and is taken over."""
    with sessions() as session:
        dialect_insert = postgresql.insert if is_postgres(session) else sqlite.insert
        stmt = (
            dialect_insert(JobRun)
            .values(job=job, period=period, owner=_owner(), status="running", started_at=utcnow())
            .on_conflict_do_nothing(index_elements=["job", "period"])
            .returning(JobRun.id)
        )
        claimed = session.scalar(stmt) is not None
        if not claimed:
            abandoned = JobRun.status == "running", JobRun.started_at < stale_before
            taken = session.execute(
                update(JobRun)
                .where(JobRun.job == job, JobRun.period == period, *abandoned)
                .values(owner=_owner(), started_at=utcnow(), error=None)
            )
            claimed = taken.rowcount == 1  # type: ignore[attr-defined]
            if claimed:
                log.warning("%s %s: took over a claim abandoned by a stopped process", job, period)
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
    with drift_lock(sessions) as alone:
        stale_before = utcnow() if alone else utcnow() - JOB_STALE_AFTER
        if not claim_period(sessions, DRIFT_JOB, period, stale_before):
            return None
        try:
            results = drift.run_all_projects(sessions, day, "schedule")
        except Exception as exc:
            log.exception("drift job for %s failed", period)
            _finish(sessions, DRIFT_JOB, period, f"{type(exc).__name__}: {exc}")
            raise
        # Inside the lock: once it is released, a 'running' claim reads as abandoned.
        _finish(sessions, DRIFT_JOB, period, None)
    log.info("drift job for %s: %d signal rows", period, sum(r.signals for r in results))
    return results


def run_scheduled_retention(
    sessions: sessionmaker[Session], settings: Settings, now: datetime | None = None
) -> int | None:
    """Today's retention purge, batch after batch until nothing expired is left, unless another
    process has claimed today (-> None); returns the number of batches run. It holds the drift
    lock too, so its deletes never run under a drift backfill reading the same days."""
    period = (now or utcnow()).astimezone(UTC).date().isoformat()
    with drift_lock(sessions) as alone:
        stale_before = utcnow() if alone else utcnow() - JOB_STALE_AFTER
        if not claim_period(sessions, RETENTION_JOB, period, stale_before):
            return None
        batches = 1
        try:
            while ingest.purge_expired_events(sessions, settings):
                batches += 1
        except Exception as exc:
            log.exception("retention job for %s failed", period)
            _finish(sessions, RETENTION_JOB, period, f"{type(exc).__name__}: {exc}")
            raise
        _finish(sessions, RETENTION_JOB, period, None)
    log.info("retention job for %s: %d batch(es)", period, batches)
    return batches


def run_daily_jobs(
    sessions: sessionmaker[Session], settings: Settings, now: datetime | None = None
) -> None:
    """Drift first, then retention, which runs even when drift failed (its events still age)."""
    try:
        run_scheduled_drift(sessions, now)
    finally:
        run_scheduled_retention(sessions, settings, now)


def start_scheduler(sessions: sessionmaker[Session], settings: Settings) -> BackgroundScheduler:
    """Started from the app's lifespan when settings.run_scheduler is on."""
    scheduler = BackgroundScheduler(timezone=UTC)
    trigger = CronTrigger.from_crontab(settings.drift_cron, timezone=UTC)
    scheduler.add_job(
        run_daily_jobs,
        trigger,
        args=[sessions, settings],
        id=DRIFT_JOB,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=3600,
    )
    # Catch-up: periods nobody ran (the claims make this a no-op otherwise).
    scheduler.add_job(run_daily_jobs, args=[sessions, settings], id=f"{DRIFT_JOB}.catch-up")
    scheduler.start()
    return scheduler
