"""The one-pass validation of a REST body against the per-event path it shortcuts: for a clean
batch both give the same events; a batch with any invalid event is answered exactly as the
per-event path answers it (rejections by index and field, the rest kept)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from app.ingest import service as ingest
from app.ingest.schemas import body_is_plainly_storable
from tests.ingest.factories import event

CLEAN: list[dict[str, Any]] = [
    event(0),
    event(1, timestamp="2024-05-01T12:00:00"),  # naive: read as UTC
    event(2, timestamp="2024-05-01T14:00:00+02:00"),
    event(3, cohort={"route": "/a", "tier": 3, "beta": True, "ratio": 0.5}),
    event(4, label=7, probability=0.25, latency_ms=12),
    event(5, span_id=None, attributes={"nested": {"list": [1, "two", None]}}),
    event(6, input="café — déjà vu ✓", output=None),
    {"trace_id": "by-id", "timestamp": "2024-05-01T12:00:00Z", "checkpoint_id": 4},
]


def per_event(events: list[Any]) -> ingest.ValidatedBatch:
    return ingest.validate_events(events, storable_checked=False)


def test_a_clean_batch_validates_in_one_pass_to_what_the_per_event_path_gives() -> None:
    body = json.dumps({"events": CLEAN}).encode()
    assert body_is_plainly_storable(body)
    fast = ingest.validate_batch_json(body, storable_checked=True)
    slow = per_event(CLEAN)
    assert fast.size == slow.size == len(CLEAN)
    assert fast.rejected == slow.rejected == []
    assert fast.valid == slow.valid


def test_a_batch_with_invalid_events_is_answered_as_the_per_event_path_answers_it() -> None:
    events = [
        *CLEAN[:3],
        event(10, timestamp="yesterday"),
        event(11, checkpoint_version=None),
        event(12, cohort={"route": "x" * 201}),
        event(13, probability=1.5, latency_ms=-1),
        "not an event",
        event(14, latency_ms=1e300),
        *CLEAN[3:],
    ]
    body = json.dumps({"events": events}).encode()
    batch = ingest.validate_batch_json(body, body_is_plainly_storable(body))
    assert batch == per_event(events)
    assert [(r.index, r.field) for r in batch.rejected] == [
        (3, "timestamp"),
        (4, None),
        (5, "cohort"),
        (6, "latency_ms"),
        (7, None),
        (8, "latency_ms"),
    ]
    assert "(and 1 more)" in batch.rejected[3].error
    assert [index for index, _ in batch.valid] == [0, 1, 2, 9, 10, 11, 12, 13]


@pytest.mark.parametrize(
    "body",
    [b'{"events": {}}', b'{"events": []', b'{"evnts": []}', b'{"events": [], "extra": 1}', b"[]"],
)
def test_a_malformed_envelope_is_a_validation_error_for_the_caller(body: bytes) -> None:
    with pytest.raises(ValidationError):
        ingest.validate_batch_json(body, storable_checked=True)


def built(index: int, **overrides: Any) -> dict[str, Any]:
    """An event as the OTLP receiver builds it in memory: a datetime, not its text."""
    return event(index, timestamp=datetime(2024, 5, 1, 12, tzinfo=UTC), **overrides)


def test_a_clean_built_batch_validates_in_one_pass_to_what_the_per_event_path_gives() -> None:
    events = [
        built(0),
        built(1, cohort={"route": "/a", "tier": 3}, label=7, probability=0.25),
        built(2, span_id=None, attributes={"nested": {"list": [1, "two", None, 0.5]}}),
        built(3, input="café — déjà vu ✓", output=None),
    ]
    fast = ingest.validate_built_events(events)
    assert fast == per_event(events)
    assert [index for index, _ in fast.valid] == [0, 1, 2, 3]


def test_unstorable_built_events_are_rejected_by_index_as_the_per_event_path_does() -> None:
    """No body scan vouches for built events: each event's own walk must still find a NUL, a
    lone surrogate or a NaN anywhere in it, nested included."""
    events = [
        built(0),
        built(1, input="nul \x00 here"),
        built(2, attributes={"metadata": {"deep": ["ok", float("nan")]}}),
        built(3, output="lone \ud800 surrogate"),
        built(4, cohort={"route": "/x\x00"}),
        built(5),
    ]
    batch = ingest.validate_built_events(events)
    assert batch == per_event(events)
    assert [index for index, _ in batch.valid] == [0, 5]
    assert [r.index for r in batch.rejected] == [1, 2, 3, 4]
    assert "NUL" in batch.rejected[0].error
    assert "NaN" in batch.rejected[1].error
    assert "surrogate" in batch.rejected[2].error
