"""A day the scheduler claimed and failed (a transient error: the database dropped the
connection) is retried on later ticks, a few times with growing waits, within the catch-up
window; every failed attempt stays visible as a failed run and on the period's claim."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from app.core.jobs import JOB_STALE_AFTER, claim_period
from app.core.links import Links
from app.drift import job
from app.models import DriftRun, JobRun
from tests.drift.champions import alerts, calls, champions_since, sent_an_hour_ago
from tests.drift.traffic import post_events

Headers = dict[str, str]
NOW = datetime(2026, 5, 2, 0, 15, tzinfo=UTC)
CAP = {"model": "m", "signal": "refusal_rate", "band": {"type": "fixed", "high": 0.1}}


def dropping_connection(monkeypatch: pytest.MonkeyPatch, day: date, times: int) -> None:
    """The rollup of `day` fails `times` times as a dropped connection does, then works."""
    compute_day = job.compute_day
    left = [times]

    def compute(session: Any, project_id: int, when: date) -> Any:
        if when == day and left[0] > 0:
            left[0] -= 1
            raise OperationalError(
                "SELECT 1", {}, Exception("server closed the connection unexpectedly")
            )
        return compute_day(session, project_id, when)

    monkeypatch.setattr(job, "compute_day", compute)


def claim(app: FastAPI, day: date) -> JobRun:
    with app.state.sessionmaker() as session:
        return session.scalars(
            select(JobRun).where(JobRun.job == job.DRIFT_JOB, JobRun.period == day.isoformat())
        ).one()


def runs_of(app: FastAPI, day: date) -> list[str]:
    with app.state.sessionmaker() as session:
        return list(
            session.scalars(
                select(DriftRun.status).where(DriftRun.day == day).order_by(DriftRun.id)
            )
        )


def test_a_day_whose_scheduled_run_failed_is_retried_at_the_next_tick(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refusals capped at 10%; a regression begins on May 2nd (60% refused, as on May 3rd).
    The tick judging May 2nd loses its connection. Before, that day was never judged again:
    the next tick ran May 3rd alone, the alert opened on May 3rd (a day late) and May 2nd's
    evidence was lost. Now the next tick runs May 2nd again first: the alert opens on May
    2nd, the period succeeds on its second attempt and the failed attempt stays visible."""
    sessions, links = app.state.sessionmaker, Links.of(app.state.settings)
    first = NOW.date() - timedelta(days=1)
    regression = first + timedelta(days=1)
    champions_since(app, client, auth, {"A": first - timedelta(days=1)})
    assert client.put("/api/v1/monitors", json=CAP, headers=auth).is_success
    post_events(client, auth, calls(first, "A", refused=5, n=100))
    for day in (regression, regression + timedelta(days=1)):
        post_events(client, auth, calls(day, "A", refused=60, n=100))
    sent_an_hour_ago(app, "acme")  # none of it arrives late (job.LATE_DATA_DAYS)
    assert job.run_scheduled_drift(sessions, links, NOW) is not None
    dropping_connection(monkeypatch, regression, times=1)
    job.run_scheduled_drift(sessions, links, NOW + timedelta(days=1))
    assert claim(app, regression).status == "failed"

    results = job.run_scheduled_drift(sessions, links, NOW + timedelta(days=2))

    assert results is not None
    assert [r.day for r in results] == [regression, regression + timedelta(days=1)]
    [alert] = alerts(client, auth, signal="refusal_rate", dimension="all")
    assert alert["day"] == regression.isoformat()
    retried = claim(app, regression)
    assert (retried.status, retried.attempts, retried.error) == ("succeeded", 2, None)
    assert runs_of(app, regression) == ["failed", "succeeded"]


def test_failed_days_are_retried_a_few_times_with_growing_waits_then_left_for_a_rerun(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry ticks (job.retry_failed_drift) take a failed period once its wait is over:
    30 minutes, then 2 hours, then 6 hours; after the fourth attempt it stays failed (the
    failure names the day to rerun by hand), and a retry tick claims no new day."""
    sessions, links = app.state.sessionmaker, Links.of(app.state.settings)
    day = NOW.date() - timedelta(days=1)
    compute_day = job.compute_day
    champions_since(app, client, auth, {"A": day - timedelta(days=1)})
    post_events(client, auth, calls(day, "A", refused=5, n=100))
    dropping_connection(monkeypatch, day, times=99)
    job.run_scheduled_drift(sessions, links, NOW)

    def tick(after: timedelta) -> Callable[[], Any]:
        return lambda: job.retry_failed_drift(sessions, links, NOW + after)

    assert job.retry_failed_drift(sessions, links, NOW + timedelta(minutes=20)) is None
    elapsed = timedelta(0)
    for attempt, wait in enumerate((timedelta(minutes=30), timedelta(hours=2)), start=2):
        elapsed += wait
        assert tick(elapsed)() is not None
        assert claim(app, day).attempts == attempt
        assert tick(elapsed + wait / 2)() is None  # the next wait is longer
    elapsed += timedelta(hours=6)
    assert tick(elapsed)() is not None
    given_up = claim(app, day)
    assert (given_up.status, given_up.attempts, given_up.retry_at) == ("failed", 4, None)
    assert tick(elapsed + timedelta(days=1))() is None
    assert runs_of(app, day) == ["failed"] * 4

    monkeypatch.setattr(job, "compute_day", compute_day)
    assert tick(elapsed + timedelta(days=1, hours=1))() is None  # claims no new day
    assert claim(app, day).status == "failed"
    with app.state.sessionmaker() as session:
        periods = session.scalars(select(JobRun.period).where(JobRun.job == job.DRIFT_JOB))
        assert list(periods) == [day.isoformat()]


def test_a_day_failing_while_the_database_is_down_is_retried_even_when_carrying_forward_fails(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick catches up three missed days; the connection drops on the second, and the
    database is still down when the job carries the first day's statistics forward. Before,
    that second failure escaped before the failed day was noted, so the failure was put on the
    newest day: the second day's claim read succeeded and it was never judged again. Now the
    second day (and the one after it, which starts from it) fail and are retried."""
    sessions, links = app.state.sessionmaker, Links.of(app.state.settings)
    first = NOW.date() - timedelta(days=1)
    champions_since(app, client, auth, {"A": first - timedelta(days=1)})
    days = [first + timedelta(days=k) for k in range(4)]
    for day in days:
        post_events(client, auth, calls(day, "A", refused=5, n=100))
    assert job.run_scheduled_drift(sessions, links, NOW) is not None
    dropping_connection(monkeypatch, days[2], times=1)

    def database_still_down(*_args: Any) -> None:
        raise OperationalError("UPDATE", {}, Exception("server closed the connection"))

    monkeypatch.setattr(job.judge, "carry_forward_after", database_still_down)
    job.run_scheduled_drift(sessions, links, NOW + timedelta(days=3))

    assert [claim(app, d).status for d in days[1:]] == ["succeeded", "failed", "failed"]
    assert runs_of(app, days[2]) == ["failed"]


def test_a_day_whose_run_kills_its_process_is_taken_over_a_bounded_number_of_times(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A day's run that kills its process (it runs out of memory) leaves its claim 'running';
    the next process takes the claim over and dies the same way. Before, a takeover did not
    count as an attempt, so the day was taken over, and the service taken down, at every
    tick for good. Now each takeover is an attempt, and at the limit the day is closed as
    failed, not retried, with an error saying so."""
    sessions, links = app.state.sessionmaker, Links.of(app.state.settings)
    first = NOW.date() - timedelta(days=1)
    champions_since(app, client, auth, {"A": first - timedelta(days=1)})
    post_events(client, auth, calls(first, "A", refused=5, n=100))
    later = datetime.now(UTC) + timedelta(days=1)  # every claim before it reads abandoned
    limit = len(job.DRIFT_RETRY_BACKOFF) + 1
    for attempt in range(1, limit + 1):  # a process claims the day, then dies while running it
        assert claim_period(sessions, job.DRIFT_JOB, first.isoformat(), later, max_attempts=limit)
        assert (claim(app, first).status, claim(app, first).attempts) == ("running", attempt)

    with sessions() as session:  # the last one died hours ago (SQLite has no lock to tell)
        session.execute(
            update(JobRun)
            .where(JobRun.job == job.DRIFT_JOB)
            .values(started_at=datetime.now(UTC) - 2 * JOB_STALE_AFTER)
        )
        session.commit()

    assert job.run_scheduled_drift(sessions, links, NOW) is None

    closed = claim(app, first)
    assert (closed.status, closed.retry_at, closed.attempts) == ("failed", None, limit)
    assert closed.error is not None and "abandoned" in closed.error
    assert runs_of(app, first) == []
    assert job.run_scheduled_drift(sessions, links, NOW + timedelta(hours=12)) is None
