"""Background work in the service process, and how several processes share it.

Loops: each is a plain function `(sessionmaker, settings) -> bool` that does one bounded batch
of work rows claimed in the database (queued runs, due webhook deliveries) and says whether it
found work; the loop polls again at once when it did. Work rows survive restarts and several
processes can share them.

Scheduled jobs: APScheduler fires in every process that starts it (several replicas,
`uvicorn --workers N`), so a daily job guards itself twice: on PostgreSQL it first takes an
advisory lock (`daily_jobs_lock`), so it never overlaps another process's run or a
`plumbline drift` backfill; then it claims its period by inserting a unique (job, period) row
into job_runs (`claim_period`), so exactly one process runs it. A claim left 'running' by a
process that died is taken over: on PostgreSQL at once (holding the lock proves nobody else is
running the job; a dead process's lock died with its connection), on SQLite after
JOB_STALE_AFTER. A period that failed is claimed again, once its `retry_at` has passed, by
whichever process asks first (`finish_period` sets it from the job's backoff). What runs, and
when, is app/schedule.py."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import is_postgres, utcnow
from app.core.errors import database_unavailable
from app.core.settings import Settings
from app.models import JobRun

log = logging.getLogger("plumbline.jobs")

# Any constant shared by every process: the bytes of "pl-drift" folded into a bigint (the
# value predates the lock guarding retention too; changing it would let an old and a new
# process run side by side during an upgrade).
DAILY_JOBS_LOCK_KEY = int.from_bytes(b"pl-drift", "big") & 0x7FFFFFFFFFFFFFFF
# Without a lock to prove a claimant dead (SQLite), a claim this old is presumed abandoned: a
# day's drift takes minutes, so this never takes a period from a live process.
JOB_STALE_AFTER = timedelta(hours=2)

WorkFn = Callable[[sessionmaker[Session], Settings], bool]


@dataclass(frozen=True)
class Loop:
    name: str
    work: WorkFn


class BackgroundWorkers:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, loops: list[Loop]) -> None:
        for loop in loops:
            thread = threading.Thread(
                target=self._run, args=(loop,), name=f"plumbline-{loop.name}", daemon=True
            )
            thread.start()
            self.threads.append(thread)

    def _run(self, loop: Loop) -> None:
        while not self.stopping.is_set():
            try:
                found = loop.work(self.sessions, self.settings)
            except Exception as exc:
                if database_unavailable(exc):  # expected during an outage: no traceback spam
                    log.warning("background loop %s: database unavailable", loop.name)
                else:
                    log.exception("background loop %s failed; retrying", loop.name)
                found = False
            if not found:
                self.stopping.wait(self.settings.worker_poll_s)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Graceful: each loop finishes its current batch (bounded work) before exiting."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=timeout_s)


_IN_PROCESS = threading.RLock()
"""The daily jobs of one process (its cron run, its catch-up, its retry ticks: APScheduler runs
different jobs side by side) one at a time, on either database."""


@contextmanager
def daily_jobs_lock(sessions: sessionmaker[Session]) -> Iterator[bool]:
    """Serialises the daily jobs (drift, retention, `plumbline drift` backfills) within the
    process and, on PostgreSQL, across processes (SQLite has one writer anyway); yields
    whether a cross-process lock is held."""
    with _IN_PROCESS, _daily_jobs_lock(sessions) as alone:
        yield alone


@contextmanager
def _daily_jobs_lock(sessions: sessionmaker[Session]) -> Iterator[bool]:
    with sessions() as session:
        engine = session.get_bind()
    assert isinstance(engine, Engine)  # sessions are bound to the app's engine
    if engine.dialect.name != "postgresql":
        yield False
        return
    # Its own connection: a session-level lock lives as long as the connection holding it.
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": DAILY_JOBS_LOCK_KEY})
        connection.commit()
        try:
            yield True
        finally:
            connection.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": DAILY_JOBS_LOCK_KEY}
            )
            connection.commit()


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_period(
    sessions: sessionmaker[Session],
    job: str,
    period: str,
    stale_before: datetime,
    retry_due: datetime | None = None,
    max_attempts: int | None = None,
) -> bool:
    """True for exactly one caller per (job, period), whichever process asks; a claim still
    'running' that started before `stale_before` belongs to a dead process and is taken over,
    as the period's next attempt (the dead run counts as a failed one).
    With `retry_due` (the caller's clock), a 'failed' period whose `retry_at` has come is
    claimed again too, as its next attempt (one conditional UPDATE: one caller wins).
    With `max_attempts`, a period abandoned that many times is not taken over but closed as
    failed, without retry: a day whose run kills its process (memory) would otherwise take the
    process down again at every takeover, for good."""
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
            if max_attempts is not None:
                _close_abandoned_for_good(session, job, period, abandoned, max_attempts)
            taken = session.execute(
                update(JobRun)
                .where(JobRun.job == job, JobRun.period == period, *abandoned)
                .values(
                    owner=_owner(), started_at=utcnow(), error=None, attempts=JobRun.attempts + 1
                )
            )
            claimed = taken.rowcount == 1  # type: ignore[attr-defined]
            if claimed:
                log.warning("%s %s: took over a claim abandoned by a stopped process", job, period)
        if not claimed and retry_due is not None:
            retried = session.execute(
                update(JobRun)
                .where(
                    JobRun.job == job,
                    JobRun.period == period,
                    JobRun.status == "failed",
                    JobRun.retry_at <= retry_due,
                )
                .values(
                    owner=_owner(),
                    status="running",
                    started_at=utcnow(),
                    finished_at=None,
                    error=None,
                    retry_at=None,
                    attempts=JobRun.attempts + 1,
                )
            )
            claimed = retried.rowcount == 1  # type: ignore[attr-defined]
            if claimed:
                log.warning("%s %s: retrying the failed period", job, period)
        session.commit()
    return claimed


def _close_abandoned_for_good(
    session: Session, job: str, period: str, abandoned: tuple[Any, ...], max_attempts: int
) -> None:
    closed = session.execute(
        update(JobRun)
        .where(
            JobRun.job == job, JobRun.period == period, JobRun.attempts >= max_attempts, *abandoned
        )
        .values(
            status="failed",
            error=f"abandoned by a stopped process on each of {max_attempts} attempts; "
            "not retried (see the server log, rerun it by hand)",
            finished_at=utcnow(),
            retry_at=None,
        )
    )
    if closed.rowcount:  # type: ignore[attr-defined]
        log.error("%s %s: abandoned %d times, closed as failed", job, period, max_attempts)


def finish_period(
    sessions: sessionmaker[Session],
    job: str,
    period: str,
    error: str | None,
    now: datetime | None = None,
    backoff: Sequence[timedelta] = (),
) -> None:
    """Records the claimed period's outcome. A failure after attempt n is retried from
    `now + backoff[n - 1]` (claim_period's `retry_due`) while there is such a wait; after
    that, or without `backoff`, it stays failed."""
    with sessions() as session:
        retry_at = None
        if error and backoff:
            attempts = session.scalar(
                select(JobRun.attempts).where(JobRun.job == job, JobRun.period == period)
            )
            if attempts is not None and attempts <= len(backoff):
                retry_at = (now or utcnow()) + backoff[attempts - 1]
        session.execute(
            update(JobRun)
            .where(JobRun.job == job, JobRun.period == period)
            .values(
                status="failed" if error else "succeeded",
                error=error,
                finished_at=utcnow(),
                retry_at=retry_at,
            )
        )
        session.commit()
