"""POST /api/v1/events: per-event validation, checkpoint resolution, bounded text,
idempotent retries, backpressure; GET /api/v1/events and /api/v1/traces/{trace_id}."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any
from unittest.mock import patch

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.settings import Settings
from app.ingest.deps import ingest_gate
from app.ingest.schemas import body_is_plainly_storable, text_problem
from app.main import create_app
from app.models import Event
from tests.conftest import new_key
from tests.ingest.factories import event

Headers = dict[str, str]


def post(client: TestClient, auth: Headers, events: list[Any]) -> Any:
    return client.post("/api/v1/events", json={"events": events}, headers=auth)


def stored(db: Session) -> list[tuple[str, str]]:
    """What the database holds; the read transaction ends at once (SQLite: one writer)."""
    try:
        rows = db.execute(select(Event.trace_id, Event.span_id).order_by(Event.trace_id)).all()
    finally:
        db.rollback()
    return [(row[0], row[1]) for row in rows]


def test_each_event_is_validated_on_its_own_and_only_valid_ones_are_stored(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], db: Session
) -> None:
    other = client.post(
        "/api/v1/checkpoints", json={"model": "other-bot", "version": "o1"}, headers=auth
    ).json()
    batch = [
        event(0),
        {k: v for k, v in event(1).items() if k != "timestamp"},
        event(2, probability=1.5),
        event(3, checkpoint_version="v9"),
        event(4, model="nobody"),
        event(5, checkpoint_version=None, checkpoint_id=checkpoint["id"]),
        event(6, checkpoint_id=other["id"]),
        event(7, surprise=True),
        "not an object",
        event(9, model=None),
        event(10, checkpoint_version=None, model=None, checkpoint_id=999_999),
        event(11, cohort={"route": "r" * 201}),
    ]
    response = post(client, auth, batch)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 2 and body["duplicates"] == 0
    rejected = {r["index"]: r for r in body["rejected"]}
    assert sorted(rejected) == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert rejected[1]["field"] == "timestamp"
    assert rejected[2]["field"] == "probability"
    assert rejected[3]["field"] == "checkpoint" and "no version 'v9'" in rejected[3]["error"]
    assert "no model named 'nobody'" in rejected[4]["error"]
    assert "belongs to model 'other-bot'" in rejected[6]["error"]
    assert rejected[7]["field"] == "surprise"
    assert "checkpoint_id, or model and checkpoint_version" in rejected[9]["error"]
    assert "no checkpoint 999999" in rejected[10]["error"]
    assert "longer than 200" in rejected[11]["error"]
    # The partial batch wrote exactly what it reported accepted.
    assert stored(db) == [("trace-00000", "span-00000"), ("trace-00005", "span-00005")]


@pytest.mark.parametrize("named_by", ["id only", "name only"])
def test_a_batch_naming_checkpoints_one_way_only_resolves_them(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], db: Session, named_by: str
) -> None:
    """The checkpoint lookup takes the batch's ids and names as two IN lists; either may be
    empty, and the other must still find its checkpoints (and miss unknown ones)."""
    if named_by == "id only":
        known = {"model": None, "checkpoint_version": None, "checkpoint_id": checkpoint["id"]}
        unknown = {"model": None, "checkpoint_version": None, "checkpoint_id": 999_999}
    else:
        known, unknown = {"checkpoint_version": "v1"}, {"checkpoint_version": "v404"}
    response = post(client, auth, [event(0, **known), event(1, **unknown)])
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [(1, "checkpoint")]
    assert stored(db) == [("trace-00000", "span-00000")]


def test_a_retry_never_double_counts(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], db: Session
) -> None:
    batch = [event(i) for i in range(3)] + [event(3, span_id=None), event(0)]
    first = post(client, auth, batch).json()
    assert (first["accepted"], first["duplicates"], first["rejected"]) == (4, 1, [])
    again = post(client, auth, batch).json()
    assert (again["accepted"], again["duplicates"]) == (0, 5)
    assert len(stored(db)) == 4
    assert ("trace-00003", "") in stored(db)
    # Same trace, another span: a different event.
    assert post(client, auth, [event(0, span_id="span-other")]).json()["accepted"] == 1


def test_text_is_bounded_and_marked_truncated(
    settings: Settings, checkpoint: dict[str, Any]
) -> None:
    app = create_app(settings.model_copy(update={"max_text_chars": 100}))
    auth = {"Authorization": f"Bearer {new_key(app, 'acme')}"}
    with TestClient(app) as client:
        post(client, auth, [event(0, input="x" * 250), event(1, output="y" * 100)])
        items = client.get("/api/v1/events", headers=auth).json()["items"]
    by_trace = {item["trace_id"]: item for item in items}
    assert by_trace["trace-00000"]["input"] == "x" * 100
    assert by_trace["trace-00000"]["truncated"] is True
    assert by_trace["trace-00001"]["output"] == "y" * 100
    assert by_trace["trace-00001"]["truncated"] is False


def test_too_many_events_and_bad_envelopes_are_refused_whole(
    settings: Settings, checkpoint: dict[str, Any]
) -> None:
    app = create_app(settings.model_copy(update={"max_events_per_request": 3}))
    auth = {"Authorization": f"Bearer {new_key(app, 'acme')}"}
    with TestClient(app) as client:
        too_many = post(client, auth, [event(i) for i in range(4)])
        assert too_many.status_code == 413
        assert too_many.headers["content-type"] == "application/problem+json"
        assert "limit is 3" in too_many.json()["detail"]
        not_json = client.post(
            "/api/v1/events",
            content=b'{"events": [',
            headers={**auth, "content-type": "application/json"},
        )
        assert not_json.status_code == 422 and "invalid JSON" in not_json.json()["detail"]
        not_a_list = client.post("/api/v1/events", json={"events": 5}, headers=auth)
        assert not_a_list.status_code == 422 and not_a_list.json()["errors"][0]["field"] == "events"
        assert client.get("/api/v1/events", headers=auth).json()["items"] == []


def test_values_the_database_cannot_store_are_refused_per_event(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], db: Session
) -> None:
    raw = (
        '{"events": ['
        + ",".join(
            [
                '{"trace_id": "nul", "timestamp": "2024-05-01T00:00:00Z", "model": "support-bot",'
                ' "checkpoint_version": "v1", "output": "a\\u0000b"}',
                '{"trace_id": "nan", "timestamp": "2024-05-01T00:00:00Z", "model": "support-bot",'
                ' "checkpoint_version": "v1", "attributes": {"score": NaN}}',
                '{"trace_id": "ok", "timestamp": "2024-05-01T00:00:00", "model": "support-bot",'
                ' "checkpoint_version": "v1"}',
            ]
        )
        + "]}"
    )
    response = client.post(
        "/api/v1/events", content=raw, headers={**auth, "content-type": "application/json"}
    )
    assert response.status_code == 202, response.text
    errors = {r["index"]: r["error"] for r in response.json()["rejected"]}
    assert "NUL" in errors[0] and "attributes: holds NaN" in errors[1]
    assert stored(db) == [("ok", "")]
    naive = client.get("/api/v1/traces/ok", headers=auth).json()["events"][0]["timestamp"]
    assert naive == "2024-05-01T00:00:00Z"
    # A number past a double's range parses as Infinity, which the body scan cannot see.
    overflow = (
        '{"events": [{"trace_id": "huge", "timestamp": "2024-05-01T00:00:00Z", "model": '
        '"support-bot", "checkpoint_version": "v1", "attributes": {"x": [1, {"y": 1e400}]}}]}'
    )
    assert body_is_plainly_storable(overflow.encode())
    refused = client.post(
        "/api/v1/events", content=overflow, headers={**auth, "content-type": "application/json"}
    ).json()
    assert refused["rejected"][0]["error"] == "attributes: holds NaN or Infinity, which JSON cannot"
    assert stored(db) == [("ok", "")]


def test_an_emoji_cut_in_half_refuses_its_event_not_the_batch(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], db: Session
) -> None:
    """JavaScript's slice (and an OpenTelemetry SDK's attribute-length limit) can cut an
    emoji between its two UTF-16 halves, and JSON.stringify then writes the lone half as an
    escape: valid JSON, which only that event's text cannot be stored as."""
    events = [
        event(0, timestamp="2024-05-01T00:00:00Z"),
        event(1, timestamp="2024-05-01T00:00:00Z", input="Thanks! \ud83d"),
        event(2, timestamp="2024-05-01T00:00:00Z", output="\ude00 and the rest"),
        event(3, timestamp="2024-05-01T00:00:00Z"),
    ]
    response = client.post(
        "/api/v1/events",
        content=json.dumps({"events": events}),
        headers={**auth, "content-type": "application/json"},
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["accepted"], answer["duplicates"]) == (2, 0)
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [(1, None), (2, None)]
    assert all("lone surrogate" in r["error"] for r in answer["rejected"])
    assert stored(db) == [("trace-00000", "span-00000"), ("trace-00003", "span-00003")]


def test_json_values_are_stored_as_sent_whichever_encoder_writes_them(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    """PostgreSQL's COPY encodes cohort and attributes with orjson, and an integer beyond
    64 bits (which orjson refuses) with json.dumps: both must store exactly what was sent."""
    plain = {"score": 0.1, "small": 2.5e-7, "flag": False, "none": None, "tags": ["é", "🙂"]}
    wide = {**plain, "id": 2**70, "nested": {"ids": [2**64, -(2**63) - 1]}}
    response = post(
        client,
        auth,
        [
            event(0, attributes=plain, cohort={"route": "/ü", "tier": "gold"}),
            event(1, attributes=wide),
        ],
    )
    assert response.status_code == 202 and response.json()["accepted"] == 2, response.text
    first = client.get("/api/v1/traces/trace-00000", headers=auth).json()["events"][0]
    second = client.get("/api/v1/traces/trace-00001", headers=auth).json()["events"][0]
    assert first["attributes"] == plain
    assert first["cohort"] == {"route": "/ü", "tier": "gold"}
    assert second["attributes"] == wide


def test_full_gate_answers_429_with_retry_after(
    app: FastAPI, client: TestClient, auth: Headers, checkpoint: dict[str, Any], db: Session
) -> None:
    gate = ingest_gate(app)
    held = 0
    while gate.try_acquire():
        held += 1
    assert held == gate.capacity
    try:
        refused = post(client, auth, [event(0)])
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == str(gate.retry_after_s)
        assert refused.headers["content-type"] == "application/problem+json"
        assert stored(db) == []
    finally:
        for _ in range(held):
            gate.release()
    assert post(client, auth, [event(0)]).status_code == 202
    assert gate.in_flight == 0


def test_a_batch_arriving_at_a_full_gate_waits_for_a_place_instead_of_being_refused(
    app: FastAPI, client: TestClient, auth: Headers, checkpoint: dict[str, Any], db: Session
) -> None:
    """The place is given back by another thread while the request waits (within the
    gate's wait): the request is admitted and stored, not answered 429."""
    gate = ingest_gate(app)
    held = 0
    while gate.try_acquire():
        held += 1
    assert gate.wait_s > 0
    waiting = threading.Event()

    def release_once_a_request_waits() -> None:
        waiting.wait(30)
        gate.release()

    releaser = threading.Thread(target=release_once_a_request_waits)
    releaser.start()
    try:
        with patch.object(gate, "try_acquire", side_effect=_noting(gate.try_acquire, waiting)):
            admitted = post(client, auth, [event(0)])
    finally:
        releaser.join()
        for _ in range(held - 1):
            gate.release()
    assert admitted.status_code == 202
    assert stored(db) == [("trace-00000", "span-00000")]
    assert gate.in_flight == 0


def _noting(try_acquire: Callable[[], bool], waiting: threading.Event) -> Callable[[], bool]:
    """try_acquire that flags `waiting` when it finds the gate full."""

    def attempt() -> bool:
        got = try_acquire()
        if not got:
            waiting.set()
        return got

    return attempt


def test_listing_filters_and_pages_with_a_cursor(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    batch = [
        event(0, eval_passed=True, fallback=False, refusal=False),
        event(1, eval_passed=False, fallback=True, timestamp="2024-05-02T08:00:00Z"),
        event(2, checkpoint_version="v2", refusal=True, cohort={"user_segment": "pro"}),
        event(3, cohort={"route": "/search", "prompt_version": "p4", "user_segment": "free"}),
        event(4, feedback="down"),
    ]
    assert post(client, auth, batch).json()["accepted"] == 5

    def traces(**params: Any) -> list[str]:
        response = client.get("/api/v1/events", params=params, headers=auth)
        assert response.status_code == 200, response.text
        return sorted(item["trace_id"][-1] for item in response.json()["items"])

    assert traces() == ["0", "1", "2", "3", "4"]
    assert traces(model="support-bot") == ["0", "1", "2", "3", "4"]
    assert traces(model="nobody") == []
    assert traces(checkpoint_id=checkpoint["id"]) == ["0", "1", "3", "4"]
    assert traces(**{"from": "2024-05-02T00:00:00Z"}) == ["1"]
    assert traces(to="2024-05-02T00:00:00Z") == ["0", "2", "3", "4"]
    assert traces(route="/search") == ["3"]
    assert traces(user_segment="pro") == ["2"]
    assert traces(prompt_version="p4") == ["3"]
    assert traces(eval_passed="false") == ["1"]
    assert traces(fallback="true") == ["1"]
    assert traces(refusal="true") == ["2"]
    assert traces(feedback="down") == ["4"]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/events", params=params, headers=auth).json()
        seen += [item["trace_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"trace-0000{i}" for i in range(5)] and len(seen) == 5
    item = client.get("/api/v1/events", params={"route": "/search"}, headers=auth).json()
    first = item["items"][0]
    assert (first["model"], first["checkpoint_version"]) == ("support-bot", "v1")
    assert first["cohort"] == {"route": "/search", "prompt_version": "p4", "user_segment": "free"}
    assert first["source"] == "rest" and first["latency_ms"] == 120.5


def test_a_trace_returns_its_events_in_time_order(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    batch = [
        event(0, trace_id="t-1", span_id="b", timestamp="2024-05-01T12:00:02Z"),
        event(1, trace_id="t-1", span_id="a", timestamp="2024-05-01T12:00:01Z"),
        event(2, trace_id="t-2"),
    ]
    post(client, auth, batch)
    trace = client.get("/api/v1/traces/t-1", headers=auth).json()
    assert [e["span_id"] for e in trace["events"]] == ["a", "b"]
    assert trace["feedback"] is None
    missing = client.get("/api/v1/traces/nope", headers=auth)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ('{"events": [{"input": "caf\\u00e9 \\ud83d\\ude00 ok"}]}', False),
        ('{"events": [{"input": "nul \\u0000 here"}]}', False),
        ('{"events": [{"input": "lone \\udc00"}]}', False),
        ('{"events": [{"attributes": {"x": NaN}}]}', False),
        ('{"events": [{"attributes": {"x": -Infinity}}]}', False),
        ('{"events": [{"input": "caf\\u00e9, plain text, 3.5"}]}', True),
        ('{"events": [{"input": "café — déjà vu"}]}', True),
    ],
)
def test_the_whole_body_scan_sends_every_suspicious_batch_down_the_per_event_checks(
    text: str, plain: bool
) -> None:
    """The scan may only say "plain" when no event can hold what PostgreSQL refuses;
    escaped surrogate pairs (valid emoji) merely take the slower, exact path."""
    assert body_is_plainly_storable(text.encode()) is plain
    if plain:
        parsed = json.loads(text)
        for raw in parsed["events"]:
            assert all(text_problem(v) is None for v in raw.values() if isinstance(v, str))
