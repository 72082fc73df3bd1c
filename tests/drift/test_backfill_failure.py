"""A backfill that fails partway: the days before the failing one are committed, and the
days after it must not be left with a CUSUM built on what those committed days said before
the backfill (the next new day would start from that stale state). The backfill stops, says
which day to rerun from, and leaves every later day's statistic carried from the last
committed day."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError

from app.core.links import Links
from app.drift import job
from app.drift import queries as drift_queries
from app.models import DriftRun, JobRun, Project
from tests.drift.champions import calls, champions_since, days_ending_day_before_yesterday
from tests.drift.test_late_data_cusum import cusum_by_day
from tests.drift.traffic import fail_rollup_on, post_events, run_drift

Headers = dict[str, str]


def test_a_backfill_failing_partway_stops_with_the_day_to_resume_from_and_later_days_consistent(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """14 reference days at 10% refusals, days 14-16 judged at 10%. Late events make day 14
    60% refused; a backfill of days 14-15 commits day 14 and fails on day 15. Before, day 14
    was committed without carrying its CUSUM forward (the backfill meant to judge day 15
    next), so days 15 and 16 kept the statistic built on the old day 14 and the failure
    named no day. Now the backfill stops naming day 15, and days 15-16 hold the statistic
    judging the days in order gives."""
    day = days_ending_day_before_yesterday(17)
    champions_since(app, client, auth, {"A": day[0] - timedelta(days=1)})
    events: list[dict[str, Any]] = []
    for i, d in enumerate(day):
        events += calls(d, "A", refused=25, n=250) if i == 14 else calls(d, "A", refused=50)
    post_events(client, auth, events)
    run_drift(client, auth, day[16], backfill=17)
    late = [
        {**e, "trace_id": f"{e['trace_id']}-late"} for e in calls(day[14], "A", refused=150, n=250)
    ]
    post_events(client, auth, late)
    fail_rollup_on(monkeypatch, day[15])
    with app.state.sessionmaker() as session, pytest.raises(job.BackfillStopped) as stopped:
        project_id = session.scalars(select(Project.id).where(Project.name == "acme")).one()
        job.run_days(session, Links.of(app.state.settings), project_id, day[15], 2, "cli")
    assert stopped.value.day == day[15]
    assert f"rerun from {day[15]}" in str(stopped.value)
    after_failure = cusum_by_day(app)

    monkeypatch.undo()
    run_drift(client, auth, day[16], backfill=3)  # days 14-16 in order
    in_order = cusum_by_day(app)

    assert in_order[day[15]][0] > 0  # the late half of day 14 reaches day 15
    for d in day[14:]:
        assert after_failure[d][:2] == in_order[d][:2], d
        assert after_failure[d][2] & 2 == in_order[d][2] & 2, d  # the CUSUM rule


def test_a_backfill_stopped_by_a_database_outage_answers_503(
    client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outage is transient: the request answers it as any other (503, Retry-After), not as
    a stopped backfill's 500."""
    second = days_ending_day_before_yesterday(2)[1]
    closed = OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    fail_rollup_on(monkeypatch, second, error=closed)
    response = client.post(
        "/api/v1/drift/run", json={"date": second.isoformat(), "backfill": 2}, headers=auth
    )
    assert response.status_code == 503, response.text
    assert "Retry-After" in response.headers


def test_a_stopped_backfill_answers_a_problem_naming_the_day_to_rerun_from_without_internals(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the API caller got a generic 500 "an unexpected error occurred" and the day to
    rerun from was only in the server log. Now the answer is a problem+json naming the failed
    day and the run to repeat (which then succeeds), and nothing of the cause (SQL, table
    names) reaches the caller."""
    day = days_ending_day_before_yesterday(3)
    champions_since(app, client, auth, {"A": day[0] - timedelta(days=1)})
    post_events(client, auth, [e for d in day for e in calls(d, "A", refused=50)])
    internals = ProgrammingError(
        "SELECT secret_column FROM events", {}, Exception("no such column")
    )
    fail_rollup_on(monkeypatch, day[1], error=internals)
    response = client.post(
        "/api/v1/drift/run", json={"date": day[2].isoformat(), "backfill": 3}, headers=auth
    )
    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert f"drift for {day[1]} failed" in problem["detail"]
    assert f"rerun from {day[1]}" in problem["detail"]
    assert problem["failed_day"] == day[1].isoformat()
    assert problem["rerun"] == {"date": day[2].isoformat(), "backfill": 2}
    for internal in ("SELECT", "secret_column", "ProgrammingError", "no such column"):
        assert internal not in response.text
    signal_days = {
        row["day"] for row in client.get("/api/v1/signals?limit=1000", headers=auth).json()["items"]
    }
    assert signal_days == {day[0].isoformat()}  # the day before the failure is committed

    monkeypatch.undo()
    rerun = run_drift(client, auth, day[2], backfill=problem["rerun"]["backfill"])
    assert [d["day"] for d in rerun["days"]] == [day[1].isoformat(), day[2].isoformat()]


def failed_runs(app: FastAPI) -> list[tuple[date, str, str | None]]:
    with app.state.sessionmaker() as session:
        rows = session.execute(
            select(DriftRun.day, DriftRun.trigger, DriftRun.error)
            .where(DriftRun.status == "failed")
            .order_by(DriftRun.id)
        ).all()
    return [(day, trigger, error) for day, trigger, error in rows]


def test_a_failed_day_records_what_failed_for_users_and_logs_the_cause(
    app: FastAPI,
    client: TestClient,
    auth: Headers,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The scheduler's rollup of May 1st fails with a database error quoting its SQL and
    parameters. Before, the failed run stored 'ProgrammingError: (...) SELECT secret_column
    FROM events WHERE project_id = ... [parameters: ...]' for anyone reading drift runs. Now
    it stores the exception class, the day and the step; the SQL is in the server log only."""
    now = datetime(2026, 5, 2, 0, 15, tzinfo=UTC)
    day = now.date() - timedelta(days=1)
    champions_since(app, client, auth, {"A": day - timedelta(days=1)})
    post_events(client, auth, calls(day, "A", refused=5, n=50))

    def failing(session: Any, project_id: int, when: date) -> Any:
        raise ProgrammingError(
            "SELECT secret_column FROM events WHERE project_id = %(p)s", {"p": 41}, Exception("x")
        )

    monkeypatch.setattr(job, "compute_day", failing)
    with caplog.at_level(logging.ERROR, logger="plumbline.scheduler"):
        job.run_scheduled_drift(app.state.sessionmaker, Links.of(app.state.settings), now)

    [(failed_day, trigger, error)] = failed_runs(app)
    assert (failed_day, trigger) == (day, "schedule")
    assert error == f"ProgrammingError in the rollup of {day} (details in the server log)"
    with app.state.sessionmaker() as session:
        claim = session.scalars(select(JobRun).where(JobRun.job == job.DRIFT_JOB)).one()
    for stored in (error, claim.error):
        for internal in ("SELECT", "secret_column", "41", "parameters"):
            assert internal not in str(stored)
    assert "secret_column" in caplog.text  # the detail is logged for operators


def test_a_backfill_stopped_through_the_api_records_the_failed_run_as_the_scheduler_does(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three days through POST /drift/run, the second one's rollup failing. Before, the API
    answered the stopped backfill but recorded no failed run: the overview's last run and the
    drift runs showed the first day's success, as if nothing had failed. Now the failed day is
    a failed run (trigger `api`) worded as the scheduler's, once."""
    day = days_ending_day_before_yesterday(3)
    champions_since(app, client, auth, {"A": day[0] - timedelta(days=1)})
    post_events(client, auth, [e for d in day for e in calls(d, "A", refused=50)])
    fail_rollup_on(monkeypatch, day[1])
    response = client.post(
        "/api/v1/drift/run", json={"date": day[2].isoformat(), "backfill": 3}, headers=auth
    )
    assert response.status_code == 500, response.text

    error = f"RuntimeError in the rollup of {day[1]} (details in the server log)"
    assert failed_runs(app) == [(day[1], "api", error)]
    with app.state.sessionmaker() as session:
        project_id = session.scalars(select(Project.id).where(Project.name == "acme")).one()
        last = drift_queries.last_drift_run(session, project_id)
    assert last is not None and (last.day, last.status) == (day[1], "failed")
