"""What runs in the background of every service process, and when.

Loops over work rows (queued evaluation runs, due webhook deliveries, running canaries due for
their periodic evaluation) run continuously; the
daily jobs run on PLUMBLINE_DRIFT_CRON (UTC): the event partitions of the coming days
(PostgreSQL), the drift job, then retention. Missed periods
(service down at the cron time) are caught up at the next start, the drift job's oldest first
(app/drift/job.missed_days); a drift day whose run failed is retried by the retry ticks
(every DRIFT_RETRY_TICK) once its wait is over (app/drift/job.DRIFT_RETRY_BACKOFF). How
several processes share this safely is app/core/jobs.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.canaries.service import evaluate_due_canaries
from app.core.jobs import Loop
from app.core.links import Links
from app.core.settings import Settings
from app.drift.job import DRIFT_JOB, retry_failed_drift, run_scheduled_drift
from app.evaluations.worker import work_runs
from app.ingest.partitions import create_partitions_ahead
from app.ingest.retention import retention_cutoff, run_scheduled_retention
from app.webhooks.sender import deliver_webhooks

DRIFT_RETRY_TICK = timedelta(minutes=15)
"""How often the scheduler looks for failed drift days whose retry is due (a few queries)."""


def registered_loops() -> list[Loop]:
    """The loops the service runs; each domain adds its own line here."""
    return [
        Loop("evaluation-runs", work_runs),
        Loop("webhook-deliveries", deliver_webhooks),
        Loop("canary-evaluations", evaluate_due_canaries),
    ]


def run_daily_jobs(
    sessions: sessionmaker[Session], settings: Settings, now: datetime | None = None
) -> None:
    """Partitions ahead first (idempotent, so every process may run it: ingest would create a
    missing day on demand anyway, this keeps DDL off the ingest path), then drift, then
    retention, which runs even when drift failed (its events still age)."""
    with sessions() as session:
        engine = session.get_bind()
    assert isinstance(engine, Engine)  # sessions are bound to the app's engine
    create_partitions_ahead(engine, (now or datetime.now(UTC)).astimezone(UTC).date())
    try:
        run_scheduled_drift(sessions, Links.of(settings), now, retention_cutoff(settings))
    finally:
        run_scheduled_retention(sessions, settings, now)


def retry_daily_jobs(
    sessions: sessionmaker[Session], settings: Settings, now: datetime | None = None
) -> None:
    """The retry tick: failed drift days whose wait is over, and nothing new."""
    retry_failed_drift(sessions, Links.of(settings), now, retention_cutoff(settings))


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
    scheduler.add_job(
        retry_daily_jobs,
        IntervalTrigger(seconds=DRIFT_RETRY_TICK.total_seconds(), timezone=UTC),
        args=[sessions, settings],
        id=f"{DRIFT_JOB}.retry",
        max_instances=1,
        coalesce=True,
    )
    # Catch-up: periods nobody ran (the claims make this a no-op otherwise).
    scheduler.add_job(run_daily_jobs, args=[sessions, settings], id=f"{DRIFT_JOB}.catch-up")
    scheduler.start()
    return scheduler
