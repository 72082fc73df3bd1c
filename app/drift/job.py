"""The daily drift job: one UTC day's rollup, the monitors' verdicts and the alerts they open
or resolve, committed as one unit of work per project and day; and its scheduled run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import ColumnElement, bindparam, exists, func, or_, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from app.core.db import is_postgres, today_utc, utcnow
from app.core.errors import Problem, Unprocessable, database_unavailable
from app.core.jobs import JOB_STALE_AFTER, claim_period, daily_jobs_lock, finish_period
from app.core.links import Links
from app.drift import alerts, judge, monitors, references
from app.drift.rollup import compute_day, day_bounds, replace_day, stored_day
from app.drift.settings import drift_settings
from app.drift.signals import SignalRow
from app.models import DailySignal, DriftRun, Event, Feedback, JobRun, Model, Project

log = logging.getLogger("plumbline.scheduler")

DRIFT_JOB = "drift.daily"
CATCH_UP_DAYS = 14
"""The most days the scheduler runs at once after missing some (missed_days), and how far
back it retries failed ones (unfinished_days)."""
DRIFT_RETRY_BACKOFF = (timedelta(minutes=30), timedelta(hours=2), timedelta(hours=6))
"""The waits before a failed period's second, third and fourth attempts; after the fourth it
stays failed (its failed runs name the day to rerun by hand)."""
LATE_DATA_DAYS = 3
"""How many days before yesterday the scheduled daily run checks for late data and reruns
(late_data_since): exporters batching across midnight and next-morning uploads land within
it; a day older than that is left to a rerun by hand (POST /drift/run, the CLI)."""
JUDGED_AS_OF_MARGIN = timedelta(minutes=2)
"""How long before its commit an ingest transaction may stamp `received_at` (a large batch,
lock waits), and how long a day without rows may take from its read to its run's
`finished_at`: data received within it of a day's judgment counts as late (a spurious rerun
costs one day's rollup; a missed one, data never judged). A day's rows are stamped with the
time their rollup began reading it (rollup.replace_day)."""
_PROJECT_DRIFT_LOCK = select(func.pg_advisory_xact_lock(0x504C4452, bindparam("project_id")))
"""Two-key advisory lock ("PLDR", project) serialising one project's drift runs."""


_STEP = "plumbline_drift_step"
"""The attribute `_step` leaves on an exception: the step of the day's run that raised it."""


@contextmanager
def _step(name: str) -> Iterator[None]:
    """Names the step of a day's run an exception escapes from (the innermost one wins), so
    the failed run can say what failed without quoting the exception's text."""
    try:
        yield
    except Exception as exc:
        if not hasattr(exc, _STEP):
            with suppress(AttributeError):  # an exception type that takes no attributes
                setattr(exc, _STEP, name)
        raise


def failure_message(day: date, exc: BaseException) -> str:
    """What a failed run of `day` says to users: the exception's class and the step that
    raised it, never its text (a database error quotes its SQL and parameters); the text
    and traceback go to the server log."""
    step = getattr(exc, _STEP, "run")
    return f"{type(exc).__name__} in the {step} of {day} (details in the server log)"


@dataclass(frozen=True)
class ProjectFailure:
    """A project whose run of days failed on `day` (its later days were not judged);
    printed as the period's error and the CLI name it."""

    project_id: int
    day: date
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass
class DriftResult:
    day: date
    signals: int = 0
    alerts_opened: int = 0
    alerts_resolved: int = 0
    models: list[str] = field(default_factory=list)


def run_day(
    session: Session,
    links: Links,
    project_id: int,
    day: date,
    trigger: str,
    carry_forward: bool = True,
    expired_before: datetime | None = None,
) -> DriftResult:
    """Rollup, references, verdicts and alerts for one day, committed as one unit of work.

    One run per project at a time: two overlapping runs (the API's beside the schedule's, or
    two clicks) would both replace the day's rows, freeze the same reference version and open
    the same alert, and the second failed with a 500. On PostgreSQL a per-project advisory lock
    held until commit makes the second wait and then redo the day (every step is idempotent);
    SQLite's transactions hold its one write lock from their first statement anyway.
    `carry_forward`: see judge.judge_day (off for the days of a backfill before its last,
    which the backfill judges again in order anyway).
    `expired_before`: the retention cutoff (app/ingest/retention.retention_cutoff; None for
    events kept for good). A day starting before it that has a stored rollup is judged from
    that rollup: its events are gone, in whole or in part, and rolling them up again replaced
    the signals retention promises to keep with what was left (nothing). Such a day without
    a stored rollup (old events just ingested) is rolled up as usual."""
    if is_postgres(session):
        session.execute(_PROJECT_DRIFT_LOCK, {"project_id": project_id})
    with _step("rollup"):
        kept: list[SignalRow] = []
        if expired_before is not None and day_bounds(day)[0] < expired_before:
            kept = stored_day(session, project_id, day)
        if kept:
            return judge_rows(session, links, project_id, day, kept, trigger, carry_forward)
        read_at = utcnow()
        rows = compute_day(session, project_id, day)
        replace_day(session, project_id, day, rows, computed_at=read_at)
    return judge_rows(session, links, project_id, day, rows, trigger, carry_forward)


def judge_rows(
    session: Session,
    links: Links,
    project_id: int,
    day: date,
    rows: list[SignalRow],
    trigger: str,
    carry_forward: bool = True,
) -> DriftResult:
    """The day's stored rows judged, alerts moved, the run recorded; commits.

    The project's drift settings are read once. Per model: its reference is frozen first
    when one is due (references.active_for_day; the day being judged never enters it), then
    every monitored row of the served checkpoint is judged (judge.judge_day) and the
    verdicts move the alerts. bench/alerts.py calls this with simulated rows it stored
    itself, so it measures this very code."""
    result = DriftResult(day=day, signals=len(rows))
    by_model: dict[int, list[SignalRow]] = {}
    for row in rows:
        by_model.setdefault(row.model_id, []).append(row)
    with _step("settings"):
        models = session.scalars(select(Model).where(Model.project_id == project_id)).all()
        high_risk = judge.declared_high_risk(session, project_id) if by_model else set()
        settings = drift_settings(session, project_id)
    for model in models:
        with _step("references"):
            monitors.ensure_defaults(session, project_id, model.id)
            reference = references.active_for_day(session, model, day, settings)
        with _step("verdicts"):
            verdicts = judge.judge_day(
                session,
                model,
                day,
                by_model.get(model.id, []),
                reference,
                high_risk,
                settings.daily_alpha,
                carry_forward,
            )
        with _step("alerts"):
            opened, resolved = alerts.apply_verdicts(session, links, model, day, verdicts)
        if opened and carry_forward:
            # A rerun that opened (or reopened) an alert: the later days it is open on start
            # from its statistic on a reference frozen from none of its days
            # (judge._state_under_alert), so they are recomputed again now that it exists.
            # judge_day recomputed them first because alerts read the later days' rules.
            # Until 2026-12-01 they kept the recomputation made without the alert: S 0.43,
            # 0.85, ... never firing, where an in-order run stood at 4.31, firing.
            with _step("verdicts"):
                judge.carry_forward_model(session, model, day)
        result.alerts_opened += opened
        result.alerts_resolved += resolved
        if model.id in by_model:
            result.models.append(model.name)
    with _step("commit"):
        session.add(
            DriftRun(
                project_id=project_id,
                day=day,
                trigger=trigger,
                status="succeeded",
                signals=result.signals,
                alerts_opened=result.alerts_opened,
                finished_at=utcnow(),
            )
        )
        session.commit()
    return result


class BackfillStopped(Problem):
    """A day of a run of days failed: the days before it are committed, it and the days
    after it are as they were, their CUSUM carried from the last committed day; rerun from
    `day` (the run ending with `last_day` is `rerun`: `date` and `backfill`).

    A Problem, so an API caller gets a problem+json saying so instead of a bare 500: a
    server-side failure, but the detail names the day and the run to repeat. The cause
    stays out of it (its text may carry SQL and table names); run_days logs it and records
    the failed run (`_record_failed_day`), for the API, the CLI and the scheduler alike."""

    status = 500
    title = "Drift backfill stopped"

    def __init__(self, day: date, last_day: date, cause: Exception) -> None:
        rerun = {"date": last_day.isoformat(), "backfill": (last_day - day).days + 1}
        super().__init__(
            f"drift for {day} failed (the cause is in the server log); the days before it"
            f" are committed, rerun from {day} (date {rerun['date']}, backfill"
            f" {rerun['backfill']})",
            failed_day=day.isoformat(),
            rerun=rerun,
        )
        self.day = day
        self.cause = cause


def run_days(
    session: Session,
    links: Links,
    project_id: int,
    last_day: date,
    backfill: int,
    trigger: str,
    expired_before: datetime | None = None,
) -> list[DriftResult]:
    """`backfill` days ending with `last_day`, oldest first (baselines build on earlier days);
    only the last one carries its CUSUM into days judged after it (judge.judge_day): each
    earlier one is followed by its next day anyway. `expired_before`: see run_day.

    Each day commits on its own. When a day fails, that follow-up never comes: the day is
    rolled back, the days judged after the last committed one get their CUSUM carried from
    it (judge.carry_forward_after), so the project is as if the run had stopped there, and
    BackfillStopped names the day to rerun from (a database outage is raised as itself, so
    requests answer it 503 as any other). Without that, a backfill rerun for late
    events that failed on its second day left every later day (and the next new day, which
    starts from them) on the statistic of the days it had just rewritten.
    Requests check first that `last_day` has ended (`ended_day`); the scheduler runs the day
    before its clock's today."""
    first = last_day - timedelta(days=backfill - 1)
    results: list[DriftResult] = []
    for offset in range(backfill):
        day = first + timedelta(days=offset)
        try:
            results.append(
                run_day(
                    session,
                    links,
                    project_id,
                    day,
                    trigger,
                    carry_forward=offset == backfill - 1,
                    expired_before=expired_before,
                )
            )
        except Exception as exc:
            session.rollback()
            if database_unavailable(exc):  # expected during an outage: no traceback spam
                log.warning("drift for project %s on %s: database unavailable", project_id, day)
            else:
                log.error(
                    "drift for project %s failed on %s; rerun from it",
                    project_id,
                    day,
                    exc_info=exc,
                )
            with suppress(AttributeError):  # before anything below can fail in its turn
                setattr(exc, _FAILED_DAY, day)
            if results:
                _carry_forward_committed(session, project_id, results[-1].day)
            _record_failed_day(session, project_id, day, trigger, exc)
            if database_unavailable(exc):
                raise  # transient, and answered as such (a 503 with Retry-After)
            raise BackfillStopped(day, last_day, exc) from exc
    return results


def _carry_forward_committed(session: Session, project_id: int, last_committed: date) -> None:
    """Best effort, like the record of the failure: when the database is still down this fails
    too, which is logged and must not replace the failure being raised (nor lose its day)."""
    try:
        judge.carry_forward_after(session, project_id, last_committed)
        session.commit()
    except Exception:
        session.rollback()
        log.warning(
            "drift for project %s: could not carry the statistics of %s forward",
            project_id,
            last_committed,
        )


_FAILED_DAY = "plumbline_drift_failed_day"
"""The attribute run_days leaves on an exception it recorded: the day that failed."""


def _record_failed_day(
    session: Session, project_id: int, day: date, trigger: str, exc: Exception
) -> None:
    """The failed run of `day` (failure_message), whoever ran it: the API, the CLI or the
    scheduler. Best effort: during a database outage the record itself fails, which is logged
    and must not hide the failure being raised."""
    try:
        session.add(
            DriftRun(
                project_id=project_id,
                day=day,
                trigger=trigger,
                status="failed",
                error=failure_message(day, exc),
                finished_at=utcnow(),
            )
        )
        session.commit()
    except Exception:
        session.rollback()
        log.warning("drift for project %s: could not record the failed run of %s", project_id, day)


def ended_day(day: date) -> date:
    """`day`, refused (422) unless it is over in UTC: a day in progress holds part of its
    traffic, which would read as a volume drop and a shift, and as the newest judged day it
    would stop references moving for every day before it (references.active_for_day)."""
    if day >= today_utc():
        raise Unprocessable(
            f"date: {day} has not ended yet (UTC); the latest day to run is yesterday",
            field="date",
        )
    return day


def run_all_projects(
    sessions: sessionmaker[Session],
    links: Links,
    day: date,
    trigger: str,
    backfill: int = 1,
    expired_before: datetime | None = None,
    late_days: int = 0,
) -> tuple[list[DriftResult], list[ProjectFailure]]:
    """Every project's days, each project in its own transactions -> (results, failures).

    A project whose day fails is rolled back to its last committed day, recorded as a failed
    run of its own (a DriftRun with the error) and named in the failures; the other projects
    go on, so one project's bad data never costs every later project its rollup and alerts.
    `late_days` (the scheduled daily run: LATE_DATA_DAYS): a project with late data on one of
    the `late_days` days before the backfill's first day (late_data_since) is run from the
    oldest such day instead, through `day`, in order (a rerun equals an in-order run); the
    other projects run their `backfill` days only."""
    with sessions() as session:
        project_ids = session.scalars(select(Project.id).order_by(Project.id)).all()
    results: list[DriftResult] = []
    failures: list[ProjectFailure] = []
    first = day - timedelta(days=backfill - 1)
    for project_id in project_ids:
        with sessions() as session:
            try:
                since = late_data_since(
                    session, project_id, day - timedelta(days=late_days), first, day
                )
                days = backfill if since is None else (day - since).days + 1
                results += run_days(session, links, project_id, day, days, trigger, expired_before)
            except Exception as exc:
                failures.append(_record_failure(session, project_id, day, trigger, exc))
    return results, failures


def late_data_since(
    session: Session, project_id: int, first: date, before: date, through: date
) -> date | None:
    """The oldest day from `first` up to `before` (excluded) whose stored judgment missed data
    that has arrived since, or None: a few EXISTS probes per day in one query, each bounded
    to the day's events (one partition on PostgreSQL) and, for the later calls, to the days
    up to `through` (the run's last day; never the partitions made ahead), stopping at its
    first hit.

    A day's judgment is as of its rollup (`_judged_as_of`); a day never run has none and is
    not checked (the scheduler does not judge the past of a new install). What it missed:
    * an event of the day received after it (exporters batching across midnight, a client
      uploading its logs the next morning);
    * a rating of a trace with a call on the day, made after it (POST /feedback): the day's
      calls of that trace took it, and may carry it;
    * a rated served call of a trace with a rated served call on the day, made on a later day
      and received after it: it may have taken the trace's carrier (the latest rated call,
      ingest._place_carriers) from the day, which then counted the trace a second time, on
      the later day too, until rerun. A late call made before the day's calls never moves
      the carrier onto it (the day's call stays the later one), so later days only."""
    days = [first + timedelta(days=offset) for offset in range((before - first).days)]
    judged = _judged_as_of(session, project_id, days)
    if not judged:
        return None
    checked = sorted(judged)
    late = session.execute(
        select(*(_late_on(project_id, day, judged[day], through) for day in checked))
    ).one()
    return next((day for day, found in zip(checked, late, strict=True) if found), None)


def _judged_as_of(session: Session, project_id: int, days: list[date]) -> dict[date, datetime]:
    """Day -> the time its stored judgment is as of, less JUDGED_AS_OF_MARGIN: its rows'
    earliest `computed_at` (when their rollup began reading the day), or for a day rolled up
    with no rows its latest succeeded run's `finished_at`. Days never run are absent.
    Until 2026-12-01 the unmargined time was used: an event stamped before it by an ingest
    transaction that committed after the rollup read the day was in neither."""
    if not days:
        return {}
    rolled_up = session.execute(
        select(DailySignal.day, func.min(DailySignal.computed_at))
        .where(DailySignal.project_id == project_id, DailySignal.day.in_(days))
        .group_by(DailySignal.day)
    ).all()
    judged = session.execute(
        select(DriftRun.day, func.max(DriftRun.finished_at))
        .where(
            DriftRun.project_id == project_id,
            DriftRun.day.in_(days),
            DriftRun.status == "succeeded",
            DriftRun.finished_at.is_not(None),
        )
        .group_by(DriftRun.day)
    ).all()
    as_of = {day: at for day, at in (*judged, *rolled_up) if at is not None}
    return {day: at - JUDGED_AS_OF_MARGIN for day, at in as_of.items()}


def _late_on(project_id: int, day: date, as_of: datetime, through: date) -> ColumnElement[bool]:
    """Whether `day` of the project has data its judgment as of `as_of` missed
    (late_data_since), looking for later calls up to the end of `through`."""
    start, end = day_bounds(day)
    last_end = day_bounds(through)[1]
    on_day = (Event.project_id == project_id) & (Event.ts >= start) & (Event.ts < end)
    later = aliased(Event)
    return or_(
        exists().where(on_day, Event.received_at > as_of),
        exists().where(
            on_day,
            Feedback.project_id == project_id,
            Feedback.trace_id == Event.trace_id,
            Feedback.created_at > as_of,
        ),
        exists().where(
            on_day,
            Event.feedback.is_not(None),
            Event.shadow_of.is_(None),
            later.project_id == project_id,
            later.trace_id == Event.trace_id,
            later.ts >= end,
            later.ts < last_end,
            later.feedback.is_not(None),
            later.shadow_of.is_(None),
            later.received_at > as_of,
        ),
    )


def _record_failure(
    session: Session, project_id: int, day: date, trigger: str, exc: Exception
) -> ProjectFailure:
    """-> the failure as the period and the CLI name it. run_days has logged and recorded the
    failed run of the day that failed (a backfill's days before it are committed); a failure
    outside any day's run is recorded here, as a failed run of `day`."""
    session.rollback()
    cause = exc.cause if isinstance(exc, BackfillStopped) else exc
    failed_day = getattr(cause, _FAILED_DAY, None)
    if failed_day is None:
        log.exception("drift for project %s up to %s failed", project_id, day)
        failed_day = day
        _record_failed_day(session, project_id, day, trigger, cause)
    resume = f" (rerun from {failed_day})" if failed_day != day else ""
    name = f"project {project_id}: {type(cause).__name__}{resume}"
    return ProjectFailure(project_id, failed_day, name)


def run_scheduled_drift(
    sessions: sessionmaker[Session],
    links: Links,
    now: datetime | None = None,
    expired_before: datetime | None = None,
    new_days: bool = True,
) -> list[DriftResult] | None:
    """Yesterday's drift for every project, with the days missed since the last claimed
    period (`missed_days`) and the failed days due for a retry (`unfinished_days`) before it,
    oldest first; None when there was nothing to claim (another process has claimed it all).
    `new_days` False (the retry ticks, `retry_failed_drift`): the due retries only.

    Each day is claimed as its own period. The service down for three days used to run
    yesterday alone at its next start: the days between were never judged, no alert saw
    them, and since only the newest day moves references, running them by hand later froze
    nothing. Every project runs from the oldest claimed day through the newest claimed
    period as one backfill (run_days: a retried day's later days are judged again after it,
    in order), so a project failing on a day stops there (BackfillStopped names the day to
    rerun from) while the others go on. A claimed period fails when a project failed on it
    or on a day before it (the newest claimed period also fails for a failure after it, so
    its retry reruns that day too); a failed period is claimed again after the next wait of
    DRIFT_RETRY_BACKOFF, on any process's tick. Before, a day whose run failed (a dropped
    connection) was never judged again: the next tick started after it.
    The daily run (`new_days`) also reruns each project's recent days that received late data
    (LATE_DATA_DAYS, run_all_projects' `late_days`); the retry ticks do not, so a retry reruns
    what failed and nothing else.
    `expired_before`: see run_day."""
    now = now or utcnow()
    yesterday: date = now.astimezone(UTC).date() - timedelta(days=1)
    with daily_jobs_lock(sessions) as alone:
        stale_before = utcnow() if alone else utcnow() - JOB_STALE_AFTER
        candidates = set(unfinished_days(sessions, yesterday))
        if new_days:
            candidates.update(missed_days(sessions, yesterday))
        claimed = [
            day
            for day in sorted(candidates)
            if claim_period(
                sessions,
                DRIFT_JOB,
                day.isoformat(),
                stale_before,
                retry_due=now,
                max_attempts=len(DRIFT_RETRY_BACKOFF) + 1,
            )
        ]
        if not claimed:
            return None
        periods = [day.isoformat() for day in claimed]
        last_day = max(claimed[-1], min(yesterday, _latest_period(sessions) or yesterday))
        backfill = (last_day - claimed[0]).days + 1
        try:
            results, failures = run_all_projects(
                sessions,
                links,
                last_day,
                "schedule",
                backfill,
                expired_before,
                LATE_DATA_DAYS if new_days else 0,
            )
        except Exception as exc:
            log.exception("drift job for %s failed", ", ".join(periods))
            for period in periods:
                error = f"{type(exc).__name__} (details in the server log)"
                finish_period(sessions, DRIFT_JOB, period, error, now, DRIFT_RETRY_BACKOFF)
            raise
        # Inside the lock: once it is released, a 'running' claim reads as abandoned.
        for day in claimed:
            failed = [f for f in failures if f.day <= day or day == claimed[-1]]
            named = "; ".join(str(f) for f in failed) or None
            finish_period(sessions, DRIFT_JOB, day.isoformat(), named, now, DRIFT_RETRY_BACKOFF)
    log.info(
        "drift job for %s: %d signal rows", ", ".join(periods), sum(r.signals for r in results)
    )
    return results


def retry_failed_drift(
    sessions: sessionmaker[Session],
    links: Links,
    now: datetime | None = None,
    expired_before: datetime | None = None,
) -> list[DriftResult] | None:
    """The retry ticks between the daily runs: the failed days whose wait is over, never a
    new day (that waits for PLUMBLINE_DRIFT_CRON); None when none was due."""
    return run_scheduled_drift(sessions, links, now, expired_before, new_days=False)


def _latest_period(sessions: sessionmaker[Session]) -> date | None:
    with sessions() as session:
        latest = session.scalar(select(func.max(JobRun.period)).where(JobRun.job == DRIFT_JOB))
    return None if latest is None else date.fromisoformat(latest)


def unfinished_days(sessions: sessionmaker[Session], yesterday: date) -> list[date]:
    """The claimed days of the catch-up window (CATCH_UP_DAYS through `yesterday`) that may
    be claimed again: failed ones still to be retried (claim_period checks that their wait
    is over) and ones still 'running' (claim_period takes them over only from a process
    that died)."""
    first = yesterday - timedelta(days=CATCH_UP_DAYS - 1)
    with sessions() as session:
        periods = session.scalars(
            select(JobRun.period).where(
                JobRun.job == DRIFT_JOB,
                JobRun.period >= first.isoformat(),
                JobRun.period <= yesterday.isoformat(),
                (JobRun.status == "running")
                | ((JobRun.status == "failed") & JobRun.retry_at.is_not(None)),
            )
        ).all()
    return [date.fromisoformat(period) for period in periods]


def missed_days(sessions: sessionmaker[Session], yesterday: date) -> list[date]:
    """The days after the latest claimed drift period through `yesterday` (at most
    CATCH_UP_DAYS; older ones are left to `plumbline drift run --backfill`, and logged);
    just `yesterday` when no period was ever claimed (a new install has no past to judge)."""
    latest = _latest_period(sessions)
    if latest is None or latest >= yesterday:
        return [yesterday]
    first = latest + timedelta(days=1)
    if (yesterday - first).days >= CATCH_UP_DAYS:
        log.warning(
            "drift days %s to %s were never run; catching up the last %d only",
            first,
            yesterday,
            CATCH_UP_DAYS,
        )
        first = yesterday - timedelta(days=CATCH_UP_DAYS - 1)
    return [first + timedelta(days=offset) for offset in range((yesterday - first).days + 1)]
