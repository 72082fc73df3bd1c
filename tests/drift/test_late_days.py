"""The scheduled daily run reruns the recent days that received late data (LATE_DATA_DAYS
before yesterday): events of a day that arrived after it was judged, ratings made since of
its traces, and a rated call of a later day that took a trace's carrier from it. Before, the
schedule judged yesterday once: alerts stayed decided on partial data, and a trace whose
carrier moved to a later day counted on both days until someone reran the earlier one."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.core.db import today_utc
from app.core.links import Links
from app.drift import job
from app.drift.job import JUDGED_AS_OF_MARGIN, LATE_DATA_DAYS, run_scheduled_drift
from app.models import ChampionHistory, DailySignal, Event, Project
from tests.conftest import new_key
from tests.drift.champions import (
    alerts,
    calls,
    checkpoints,
    promote,
    sent_an_hour_ago,
    settings,
)
from tests.drift.traffic import at, post_events

Headers = dict[str, str]
CAP = {"model": "m", "signal": "refusal_rate", "band": {"type": "fixed", "high": 0.1}}


def schedule(app: FastAPI, day: date) -> list[date]:
    """The scheduled daily run at 00:15 UTC of `day` -> the days it ran (oldest first)."""
    now = datetime.combine(day, time(0, 15), tzinfo=UTC)
    results = run_scheduled_drift(app.state.sessionmaker, Links.of(app.state.settings), now)
    assert results is not None
    return sorted({r.day for r in results})


def model_since(app: FastAPI, client: TestClient, auth: Headers, start: date) -> None:
    """Model m of the key's project, checkpoint A champion since noon of `start`, capped at
    10% refusals."""
    settings(client, auth)
    ids = checkpoints(client, auth, "m", ["A"])
    promote(client, auth, "m", ids["A"])
    with app.state.sessionmaker() as session:
        session.execute(
            update(ChampionHistory)
            .where(ChampionHistory.checkpoint_id == ids["A"])
            .values(created_at=datetime.combine(start, time(12), tzinfo=UTC))
        )
        session.commit()
    assert client.put("/api/v1/monitors", json=CAP, headers=auth).is_success


def computed_at(app: FastAPI, project: str) -> dict[date, datetime]:
    """The project's days -> when their stored rows were computed."""
    with app.state.sessionmaker() as session:
        rows = session.execute(
            select(DailySignal.day, func.min(DailySignal.computed_at))
            .join(Project, Project.id == DailySignal.project_id)
            .where(Project.name == project)
            .group_by(DailySignal.day)
        ).all()
    return dict(rows)


def refusals_on(app: FastAPI, day: date) -> tuple[float, int]:
    """(numerator, denominator) of the day's stored all-traffic refusal_rate row."""
    with app.state.sessionmaker() as session:
        row = session.execute(
            select(DailySignal.numerator, DailySignal.denominator).where(
                DailySignal.day == day,
                DailySignal.signal == "refusal_rate",
                DailySignal.dimension == "all",
            )
        ).one()
    return row.numerator, row.denominator


def thumbs_down(app: FastAPI) -> dict[date, tuple[float, int]]:
    """Day -> (numerator, denominator) of the project-wide thumbs_down_rate rows."""
    with app.state.sessionmaker() as session:
        rows = session.execute(
            select(DailySignal.day, DailySignal.numerator, DailySignal.denominator).where(
                DailySignal.signal == "thumbs_down_rate", DailySignal.dimension == "all"
            )
        ).all()
    return {day: (numerator, denominator) for day, numerator, denominator in rows}


def test_a_trace_whose_carrier_moved_to_the_next_day_counts_once_after_the_next_run(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A trace rated down before its calls: call A at D 23:50, D judged, call B at D+1 00:05
    (the exporter flushed after midnight) becomes the carrier. Before, the schedule judged
    D+1 alone: the trace counted on D (1 of 1) and on D+1 (1 of 1)."""
    day = today_utc() - timedelta(days=3)
    model_since(app, client, auth, day - timedelta(days=1))
    rate = client.post("/api/v1/feedback", json={"trace_id": "t", "value": "down"}, headers=auth)
    assert rate.is_success, rate.text
    call = {"trace_id": "t", "model": "m", "checkpoint_version": "A", "refusal": False}
    post_events(client, auth, [{**call, "span_id": "a", "timestamp": at(day, 86_400 - 600)}])
    sent_an_hour_ago(app, "acme")
    assert schedule(app, day + timedelta(days=1)) == [day]
    assert thumbs_down(app) == {day: (1, 1)}
    judged = computed_at(app, "acme")[day]
    next_day = day + timedelta(days=1)

    post_events(client, auth, [{**call, "span_id": "b", "timestamp": at(next_day, 300)}])
    ran = schedule(app, day + timedelta(days=2))

    assert thumbs_down(app) == {next_day: (1, 1)}
    assert computed_at(app, "acme")[day] > judged
    assert ran == [day, next_day]


def late_project(app: FastAPI, client: TestClient, auth: Headers) -> tuple[date, Headers]:
    """Two projects with the same traffic on D and D+1 (100 calls a day, 5 refused; capped at
    10%) and 100 more calls on D, 40 of them refused (D: 45 of 200, 22.5%): "ontime" sent
    them before D was judged, "acme" (the key `auth`) after -> D, ontime's key."""
    day = today_utc() - timedelta(days=3)
    ontime = {"Authorization": f"Bearer {new_key(app, 'ontime')}"}
    for key in (auth, ontime):
        model_since(app, client, key, day - timedelta(days=1))
        post_events(client, key, calls(day, "A", refused=5, n=100))
    extra = [{**e, "trace_id": f"{e['trace_id']}-more"} for e in calls(day, "A", 40, n=100)]
    post_events(client, ontime, extra)
    for project in ("acme", "ontime"):
        sent_an_hour_ago(app, project)
    assert schedule(app, day + timedelta(days=1)) == [day]
    post_events(client, auth, extra)
    for key in (auth, ontime):
        post_events(client, key, calls(day + timedelta(days=1), "A", refused=5, n=100))
    return day, ontime


def alert_state(client: TestClient, auth: Headers) -> list[tuple[Any, ...]]:
    keys = ("day", "status", "dimension", "observed", "volume")
    return [tuple(a[k] for k in keys) for a in alerts(client, auth, signal="refusal_rate")]


def test_late_events_that_cross_the_band_alert_as_if_they_had_arrived_in_time(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Before, acme's D stayed judged on its first 100 calls (5%): no alert, where ontime,
    which sent the same calls in time, had one open on D at 22.5% of 200."""
    day, ontime = late_project(app, client, auth)
    assert alert_state(client, auth) == []

    ran = schedule(app, day + timedelta(days=2))

    expected = alert_state(client, ontime)
    assert ("all", 0.225, 200) in {(d, o, v) for _day, _s, d, o, v in expected}
    assert alert_state(client, auth) == expected
    assert ran == [day, day + timedelta(days=1)]


def test_a_project_without_late_data_keeps_its_rows_while_anothers_late_day_is_rerun(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """ontime's D is not touched (its rows keep their computed_at); acme's D is rolled up
    again, with the late calls: 45 refusals of 200."""
    day, _ontime = late_project(app, client, auth)
    before = {project: computed_at(app, project)[day] for project in ("acme", "ontime")}

    schedule(app, day + timedelta(days=2))

    assert computed_at(app, "ontime")[day] == before["ontime"]
    assert computed_at(app, "acme")[day] > before["acme"]
    with app.state.sessionmaker() as session:
        refused = session.execute(
            select(DailySignal.numerator, DailySignal.denominator)
            .join(Project, Project.id == DailySignal.project_id)
            .where(
                Project.name == "acme",
                DailySignal.day == day,
                DailySignal.signal == "refusal_rate",
                DailySignal.dimension == "all",
            )
        ).one()
    assert tuple(refused) == (45, 200)


def test_a_day_older_than_the_window_is_not_rerun(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """D and D+1 judged on schedule, late calls for both, then the service down until
    D+5: the run of D+5 catches up D+2 to D+4, reruns D+1 (LATE_DATA_DAYS before yesterday)
    and leaves D, older than that, as judged."""
    day = today_utc() - timedelta(days=LATE_DATA_DAYS + 2)
    next_day = day + timedelta(days=1)
    model_since(app, client, auth, day - timedelta(days=1))
    for judged in (day, next_day):
        post_events(client, auth, calls(judged, "A", refused=5, n=100))
        sent_an_hour_ago(app, "acme")
        assert schedule(app, judged + timedelta(days=1)) == [judged]
    before = computed_at(app, "acme")
    for judged in (day, next_day):
        late = [{**e, "trace_id": f"{e['trace_id']}-late"} for e in calls(judged, "A", 1, n=10)]
        post_events(client, auth, late)

    ran = schedule(app, day + timedelta(days=LATE_DATA_DAYS + 2))

    after = computed_at(app, "acme")
    assert after[day] == before[day]
    assert after[next_day] > before[next_day]
    assert ran == [next_day + timedelta(days=offset) for offset in range(LATE_DATA_DAYS + 1)]


def test_a_rating_made_after_the_day_was_judged_counts_on_it_after_the_next_run(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A trace answered on D, rated down once D was judged (POST /feedback the next day).
    Before, D kept its rollup without the rating: no thumbs-down row at all."""
    day = today_utc() - timedelta(days=3)
    model_since(app, client, auth, day - timedelta(days=1))
    call = {"trace_id": "t", "model": "m", "checkpoint_version": "A", "refusal": False}
    post_events(client, auth, [{**call, "timestamp": at(day, 43_200)}])
    sent_an_hour_ago(app, "acme")
    schedule(app, day + timedelta(days=1))
    rate = client.post("/api/v1/feedback", json={"trace_id": "t", "value": "down"}, headers=auth)
    assert rate.is_success, rate.text

    schedule(app, day + timedelta(days=2))

    assert thumbs_down(app) == {day: (1, 1)}


def test_a_day_judged_before_any_of_its_events_arrived_is_rerun(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A client uploading D's logs the next morning, after D was judged without a single
    event: the day has no stored rows, its succeeded run dates the judgment. Before, D stayed
    empty: 60 refusals of 100 calls never rolled up nor alerted."""
    day = today_utc() - timedelta(days=3)
    model_since(app, client, auth, day - timedelta(days=1))
    schedule(app, day + timedelta(days=1))
    assert computed_at(app, "acme") == {}
    post_events(client, auth, calls(day, "A", refused=60, n=100))

    schedule(app, day + timedelta(days=2))

    [alert] = alerts(client, auth, signal="refusal_rate", dimension="all")
    assert (alert["day"], alert["observed"], alert["volume"]) == (day.isoformat(), 0.6, 100)


def test_an_event_stamped_before_the_rollup_wrote_its_rows_but_stored_after_it_read_is_late(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """An ingest transaction stamps `received_at` before it commits, and a rollup writes its
    rows (`computed_at`) after it read the day: an event stamped 30 s before the rows were
    written may have committed after the read, and be in neither. Before, only data received
    after `computed_at` was late: such a day was never rerun (10 refusals of 10 never
    counted)."""
    day = today_utc() - timedelta(days=3)
    model_since(app, client, auth, day - timedelta(days=1))
    post_events(client, auth, calls(day, "A", refused=5, n=100))
    sent_an_hour_ago(app, "acme")
    assert schedule(app, day + timedelta(days=1)) == [day]
    judged = computed_at(app, "acme")[day]
    straggler = [{**e, "trace_id": f"{e['trace_id']}-race"} for e in calls(day, "A", 10, n=10)]
    post_events(client, auth, straggler)
    with app.state.sessionmaker() as session:
        session.execute(
            update(Event)
            .where(Event.trace_id.like("%-race"))
            .values(received_at=judged - JUDGED_AS_OF_MARGIN / 4)
        )
        session.commit()

    ran = schedule(app, day + timedelta(days=2))

    assert ran == [day, day + timedelta(days=1)]
    assert refusals_on(app, day) == (15, 110)


def test_an_event_stored_while_the_rollup_read_the_day_is_late_without_any_margin(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The day's rows are stamped with the time their rollup began reading it: an event
    stored after that read, before the rows were written, is late however short the margin.
    Before, the rows were stamped when written, after the event (10 refusals never counted
    once the scan took longer than the margin). PostgreSQL: SQLite's drift run holds the one
    write lock from its first statement, so no event is stored during its read."""
    if not app.state.settings.database_url.startswith("postgresql"):
        pytest.skip("SQLite stores nothing while a drift run reads")
    monkeypatch.setattr(job, "JUDGED_AS_OF_MARGIN", timedelta(0))
    day = today_utc() - timedelta(days=3)
    model_since(app, client, auth, day - timedelta(days=1))
    post_events(client, auth, calls(day, "A", refused=5, n=100))
    sent_an_hour_ago(app, "acme")
    read = job.compute_day
    straggler = [{**e, "trace_id": f"{e['trace_id']}-scan"} for e in calls(day, "A", 10, n=10)]

    def store_during_the_read(session: Session, project_id: int, when: date) -> Any:
        rows = read(session, project_id, when)
        if when == day and straggler:
            post_events(client, auth, straggler)
            straggler.clear()
        return rows

    monkeypatch.setattr(job, "compute_day", store_during_the_read)
    assert schedule(app, day + timedelta(days=1)) == [day]
    monkeypatch.setattr(job, "compute_day", read)

    assert schedule(app, day + timedelta(days=2)) == [day, day + timedelta(days=1)]
    assert refusals_on(app, day) == (15, 110)
