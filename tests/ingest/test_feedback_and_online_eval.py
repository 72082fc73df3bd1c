"""Feedback joins its events in either order; online evaluation fills what clients left empty."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Event, Feedback
from tests.ingest.factories import event

Headers = dict[str, str]


def post_events(client: TestClient, auth: Headers, events: list[dict[str, Any]]) -> Any:
    response = client.post("/api/v1/events", json={"events": events}, headers=auth)
    assert response.status_code == 202, response.text
    return response.json()


def feedback(client: TestClient, auth: Headers, trace_id: str, value: str, comment: str) -> Any:
    body = {"trace_id": trace_id, "value": value, "comment": comment}
    response = client.post("/api/v1/feedback", json=body, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


def stored_state(db: Session, trace_id: str) -> tuple[list[tuple[str, int | None]], Any]:
    """(span, feedback) of the trace's events and its feedback row, as the database has them."""
    try:
        events = db.execute(
            select(Event.span_id, Event.feedback)
            .where(Event.trace_id == trace_id)
            .order_by(Event.span_id)
        ).all()
        row = db.execute(
            select(Feedback.value, Feedback.comment).where(Feedback.trace_id == trace_id)
        ).one()
    finally:
        db.rollback()
    return [(span, value) for span, value in events], tuple(row)


def spans(trace_id: str, **fields: Any) -> list[dict[str, Any]]:
    return [event(i, trace_id=trace_id, span_id=f"s{i}", **fields) for i in range(2)]


def test_feedback_before_or_after_its_events_ends_in_the_same_state(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], db: Session
) -> None:
    post_events(client, auth, spans("events-first"))
    answer = feedback(client, auth, "events-first", "down", "wrong order number")
    assert answer["events_updated"] == 2

    assert (
        feedback(client, auth, "feedback-first", "down", "wrong order number")["events_updated"]
        == 0
    )
    post_events(client, auth, spans("feedback-first"))

    after = stored_state(db, "events-first")
    before = stored_state(db, "feedback-first")
    assert after == before == ([("s0", -1), ("s1", -1)], (-1, "wrong order number"))
    trace = client.get("/api/v1/traces/feedback-first", headers=auth).json()
    assert trace["feedback"] == "down" and trace["feedback_comment"] == "wrong order number"
    assert [e["feedback"] for e in trace["events"]] == ["down", "down"]


def test_the_latest_feedback_wins_also_for_events_arriving_later(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], db: Session
) -> None:
    feedback(client, auth, "t", "down", "bad")
    post_events(client, auth, [event(0, trace_id="t", span_id="s0", feedback="up")])
    feedback(client, auth, "t", "up", "fixed now")
    post_events(client, auth, [event(1, trace_id="t", span_id="s1")])
    assert stored_state(db, "t") == ([("s0", 1), ("s1", 1)], (1, "fixed now"))
    listed = client.get("/api/v1/events", params={"feedback": "up"}, headers=auth).json()
    assert len(listed["items"]) == 2


def test_feedback_is_validated(client: TestClient, auth: Headers) -> None:
    bad = client.post("/api/v1/feedback", json={"trace_id": "t", "value": "meh"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "body.value"


def test_online_evaluation_settings_are_checked_when_set(client: TestClient, auth: Headers) -> None:
    def put(online_eval: Any) -> Any:
        return client.put(
            "/api/v1/project/settings", json={"online_eval": online_eval}, headers=auth
        )

    assert put({"llm_judge": True}).status_code == 422
    unknown_param = put({"is_compliant": {"params": {"pii": ["dna"]}}})
    assert unknown_param.status_code == 422
    assert "online_eval.is_compliant.params.pii" in unknown_param.json()["detail"]
    assert put({"refusal": {"colour": 1}}).status_code == 422
    config = {"refusal": True, "json_validation": {"params": {"allow_code_fence": True}}}
    assert put(config).json() == {"online_eval": config}
    assert client.get("/api/v1/project/settings", headers=auth).json() == {"online_eval": config}


def test_online_evaluation_fills_only_what_the_client_left_empty(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    config = {"refusal": True, "json_validation": {"params": {"allow_code_fence": True}}}
    client.put("/api/v1/project/settings", json={"online_eval": config}, headers=auth)
    long_json = '{"items": [' + ",".join(['"x"'] * 30_000) + "]}"
    batch = [
        event(0, output="I'm sorry, but I can't help with that request."),
        event(1, output='```json\n{"order": 42}\n```'),
        event(2, output="Order 42 ships today."),
        event(3, output="I cannot help with that.", refusal=False, eval_passed=True),
        event(4, output=None),
        event(5, output=long_json),
    ]
    assert post_events(client, auth, batch)["accepted"] == 6
    items = client.get("/api/v1/events", headers=auth).json()["items"]
    by_index = {int(item["trace_id"][-1]): item for item in items}
    flags = {i: (by_index[i]["refusal"], by_index[i]["eval_passed"]) for i in by_index}
    assert flags == {
        0: (True, False),
        1: (False, True),
        2: (False, False),
        3: (False, True),  # what the client said stands
        4: (None, None),  # the evaluators cannot judge a missing output: stored, unjudged
        5: (False, True),  # judged on the whole output, stored truncated
    }
    assert by_index[5]["truncated"] is True


def test_a_repeated_or_changed_rating_stays_on_the_calls_the_first_one_rated(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], db: Session
) -> None:
    """The user rates the first answer down and the conversation goes on: the next call,
    made after the rating, keeps its own (no) feedback at ingest. Before, the client's retry
    of the same rating (or the user changing it) stamped every stored call of the trace, the
    later one included, so the later call became the trace's last rated call (the canary then
    put the rating on that call's arm). Now a rating again changes the value on the calls
    the trace's rating is on, and reaches no call made after the last of them."""
    post_events(client, auth, [event(0, trace_id="t", span_id="s0")])
    assert feedback(client, auth, "t", "down", "wrong")["events_updated"] == 1
    later = event(1, trace_id="t", span_id="s1", timestamp="2024-05-01T12:05:00Z")
    post_events(client, auth, [later])
    assert stored_state(db, "t") == ([("s0", -1), ("s1", None)], (-1, "wrong"))

    assert feedback(client, auth, "t", "down", "wrong")["events_updated"] == 1  # a retry
    assert stored_state(db, "t") == ([("s0", -1), ("s1", None)], (-1, "wrong"))
    assert feedback(client, auth, "t", "up", "fixed")["events_updated"] == 1  # changed
    assert stored_state(db, "t") == ([("s0", 1), ("s1", None)], (1, "fixed"))
