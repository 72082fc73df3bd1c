"""Ingest interns each event's cohort: equal cohorts share one `event_cohorts` row per project,
whatever their key order, batch or retry, and the row repeats what the event says."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.ingest.cohorts import cohort_digest
from app.models import Event, EventCohort, Project
from tests.conftest import new_key
from tests.ingest.factories import event

CHAT = {"route": "/chat", "prompt_version": "p3", "user_segment": "free", "locale": "de"}
SHUFFLED = {"locale": "de", "user_segment": "free", "prompt_version": "p3", "route": "/chat"}
SEARCH = {"route": "/search", "locale": "de"}


def post(client: TestClient, auth: dict[str, str], events: list[dict[str, Any]]) -> Any:
    response = client.post("/api/v1/events", json={"events": events}, headers=auth)
    assert response.status_code == 202, response.text
    return response.json()


def cohort_ids_by_trace(db: Session) -> dict[str, int | None]:
    db.expire_all()
    return dict(db.execute(select(Event.trace_id, Event.cohort_id)).all())


def test_equal_cohorts_share_one_row_in_any_key_order_batch_or_retry(
    client: TestClient, auth: dict[str, str], checkpoint: dict[str, Any], db: Session
) -> None:
    first = [event(0, cohort=CHAT), event(1, cohort=SHUFFLED), event(2, cohort=SEARCH)]
    post(client, auth, first)
    later = [event(3, cohort=SHUFFLED), event(4, cohort={})]
    post(client, auth, later)
    assert post(client, auth, first + later)["duplicates"] == 5  # a retry adds no cohort

    ids = cohort_ids_by_trace(db)
    assert None not in ids.values()
    assert ids["trace-00000"] == ids["trace-00001"] == ids["trace-00003"]
    assert len({ids["trace-00000"], ids["trace-00002"], ids["trace-00004"]}) == 3
    rows = {row.id: row for row in db.scalars(select(EventCohort))}
    assert len(rows) == 3
    chat = rows[ids["trace-00000"]]
    assert chat.cohort == CHAT and chat.digest == cohort_digest(SHUFFLED)
    assert (chat.route, chat.prompt_version, chat.user_segment) == ("/chat", "p3", "free")
    search = rows[ids["trace-00002"]]
    assert (search.route, search.prompt_version, search.user_segment) == ("/search", None, None)
    assert rows[ids["trace-00004"]].cohort == {}
    # The stored event's own columns agree with its cohort's row.
    stored = db.scalars(select(Event).where(Event.trace_id == "trace-00002")).one()
    assert stored.route == search.route and stored.cohort == search.cohort


def test_each_project_interns_its_own_cohorts(
    app: FastAPI,
    client: TestClient,
    auth: dict[str, str],
    checkpoint: dict[str, Any],
    db: Session,
) -> None:
    post(client, auth, [event(0, cohort=CHAT)])
    other = {"Authorization": f"Bearer {new_key(app, 'other')}"}
    client.post(
        "/api/v1/checkpoints", json={"model": "support-bot", "version": "v1"}, headers=other
    ).raise_for_status()
    post(client, other, [event(0, cohort=SHUFFLED)])

    owners = dict(db.execute(select(Project.name, Project.id)).all())
    events = db.execute(select(Event.project_id, Event.cohort_id)).all()
    cohorts = dict(db.execute(select(EventCohort.id, EventCohort.project_id)).all())
    assert len(cohorts) == 2
    # Every event points at a cohort row of its own project.
    assert sorted(cohorts[cohort_id] == project for project, cohort_id in events) == [True] * 2
    assert set(cohorts.values()) == {owners["acme"], owners["other"]}
