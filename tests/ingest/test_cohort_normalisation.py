"""Cohort names and values are Unicode-normalised (NFC) at ingest, REST and OTLP, and in the
filters that name them: "café" typed composed (U+00E9) on one client and decomposed (e +
U+0301) on another is one cohort, not two halves each judged at half the volume."""

from __future__ import annotations

import unicodedata
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import today_utc
from app.models import Event, EventCohort
from tests.ingest.factories import event
from tests.ingest.spans import export_spans, recorded_span

Headers = dict[str, str]
COMPOSED = "caf\u00e9"
DECOMPOSED = "cafe\u0301"
REGION_COMPOSED = "r\u00e9gion"
REGION_DECOMPOSED = "re\u0301gion"


def post(client: TestClient, auth: Headers, events: list[dict[str, Any]]) -> Any:
    response = client.post("/api/v1/events", json={"events": events}, headers=auth)
    assert response.status_code == 202, response.text
    return response.json()


def test_composed_and_decomposed_cohorts_are_one_cohort(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], db: Session
) -> None:
    """Before: 2 cohort rows and 2 user_segment values for the same segment, 1 event each."""
    assert COMPOSED != DECOMPOSED and unicodedata.normalize("NFC", DECOMPOSED) == COMPOSED
    answer = post(
        client,
        auth,
        [
            event(0, cohort={"user_segment": COMPOSED, REGION_COMPOSED: "\u00eele"}),
            event(1, cohort={"user_segment": DECOMPOSED, REGION_DECOMPOSED: "i\u0302le"}),
        ],
    )
    assert answer["accepted"] == 2 and answer["rejected"] == []
    assert db.scalars(select(EventCohort.cohort)).all() == [
        {"user_segment": COMPOSED, REGION_COMPOSED: "\u00eele"}
    ]
    assert set(db.scalars(select(Event.user_segment))) == {COMPOSED}
    assert len(set(db.scalars(select(Event.cohort_id)))) == 1
    db.rollback()  # ends the read: on SQLite every transaction holds the write lock

    for typed in (COMPOSED, DECOMPOSED):
        listed = client.get(f"/api/v1/events?user_segment={quote(typed)}", headers=auth)
        assert listed.status_code == 200
        assert sorted(e["trace_id"] for e in listed.json()["items"]) == [
            "trace-00000",
            "trace-00001",
        ]


def test_an_otlp_span_joins_the_rest_cohort(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], db: Session
) -> None:
    post(client, auth, [event(0, cohort={"user_segment": COMPOSED})])
    span = recorded_span(
        {
            "plumbline.model": "support-bot",
            "plumbline.checkpoint": "v1",
            "plumbline.user_segment": DECOMPOSED,
            "input.value": "hi",
            "output.value": "hello",
        }
    )
    export_spans(client, auth, [span])
    assert db.scalars(select(Event.user_segment)).all() == [COMPOSED, COMPOSED]
    assert len(db.scalars(select(EventCohort.id)).all()) == 1


def test_a_whole_number_sent_as_a_float_is_the_integer_s_cohort(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], db: Session
) -> None:
    """pandas writes a column of whole numbers as floats once it held a missing value: a
    day's batch where some call lacked its tier sends tier 1.0, a day where none did sends 1.
    Before: 'tier' = '1' and '1.0', two cohorts of one tier, each judged on its own days."""
    post(client, auth, [event(0, cohort={"tier": 1, "plan": 2})])
    post(
        client, auth, [event(1, cohort={"tier": 1.0, "plan": 2.0}), event(2, cohort={"tier": 0.5})]
    )
    span = recorded_span(
        {
            "plumbline.model": "support-bot",
            "plumbline.checkpoint": "v1",
            "plumbline.cohort.tier": 1.0,
            "plumbline.cohort.plan": 2.0,
        }
    )
    export_spans(client, auth, [span])
    cohorts = db.scalars(select(EventCohort.cohort).order_by(EventCohort.id)).all()
    assert cohorts == [{"tier": "1", "plan": "2"}, {"tier": "0.5"}]
    assert len(db.scalars(select(Event.id)).all()) == 4


def test_two_names_equal_once_normalised_are_the_event_s_rejection(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    answer = post(
        client,
        auth,
        [event(0, cohort={REGION_COMPOSED: "a", REGION_DECOMPOSED: "b"}), event(1)],
    )
    assert answer["accepted"] == 1
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [(0, "cohort")]
    assert "normalised" in answer["rejected"][0]["error"]


def test_monitors_and_signal_filters_name_the_normalised_cohort(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    """A monitor typed with the decomposed value watches the stored (composed) cohort, and
    a signal or alert filter typed either way finds it."""
    day = today_utc() - timedelta(days=1)
    events = [event(i, timestamp=f"{day.isoformat()}T12:00:0{i}Z", fallback=True) for i in range(4)]
    for i, body in enumerate(events):
        body["cohort"] = {"user_segment": COMPOSED if i % 2 else DECOMPOSED}
    post(client, auth, events)
    monitor = {
        "model": "support-bot",
        "signal": "fallback_rate",
        "band": {"type": "fixed", "high": 0.5},
        "dimension": "user_segment",
        "value": DECOMPOSED,
        "min_volume": 1,
    }
    created = client.put("/api/v1/monitors", json=monitor, headers=auth)
    assert created.status_code in (200, 201), created.text
    assert created.json()["value"] == COMPOSED
    ran = client.post("/api/v1/drift/run", json={"date": day.isoformat()}, headers=auth)
    assert ran.status_code == 200, ran.text

    for typed in (COMPOSED, DECOMPOSED):
        query = f"dimension=user_segment&value={quote(typed)}&signal=fallback_rate"
        signals = client.get(f"/api/v1/signals?{query}", headers=auth).json()["items"]
        assert [(s["value"], s["denominator"]) for s in signals] == [(COMPOSED, 4)]
        alerts = client.get(f"/api/v1/alerts?{query}", headers=auth).json()["items"]
        assert [a["value"] for a in alerts] == [COMPOSED]
