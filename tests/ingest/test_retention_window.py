"""Ingest refuses events older than the event retention (PLUMBLINE_RETENTION_DAYS), per event,
as it refuses events too far ahead of the server's clock: accepted, such an event was deleted
by the next retention run and, sent again after it, stored anew (counted twice), under a day
whose drift was already judged."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.core.db import utcnow
from app.core.settings import Settings
from app.ingest.retention import purge_expired_events, retention_cutoff
from app.main import create_app
from tests.ingest.factories import event

Headers = dict[str, str]
RETENTION_DAYS = 30
DAY_NS = 24 * 3600 * 10**9


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"retention_days": RETENTION_DAYS})


def iso(days_ago: float) -> str:
    return (utcnow() - timedelta(days=days_ago)).isoformat()


def stored_traces(client: TestClient, auth: Headers) -> list[str]:
    items = client.get("/api/v1/events", params={"limit": 1000}, headers=auth).json()["items"]
    return sorted(item["trace_id"] for item in items)


def test_an_event_older_than_the_retention_is_rejected_per_event(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    """30-day retention: an event 31 days old is that event's rejection (field `timestamp`,
    naming the setting); one 29 days old and one of today are stored."""
    events = [event(0, timestamp=iso(29)), event(1, timestamp=iso(31)), event(2, timestamp=iso(0))]
    body = {"events": events}
    response = client.post("/api/v1/events", json=body, headers=auth)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["accepted"] == 2 and answer["duplicates"] == 0
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [(1, "timestamp")]
    assert "older than the event retention" in answer["rejected"][0]["error"]
    assert "PLUMBLINE_RETENTION_DAYS" in answer["rejected"][0]["error"]
    assert stored_traces(client, auth) == ["trace-00000", "trace-00002"]


def test_an_expired_event_sent_again_after_the_purge_is_not_counted_again(
    app: FastAPI, client: TestClient, auth: Headers, checkpoint: dict[str, Any], settings: Settings
) -> None:
    """The exactly-once case: before, the 31-day-old event was accepted, the retention run
    deleted it with its key, and the client's retry was accepted again (1 + 1 accepted for
    one call). Now it is refused both times and nothing is stored; the 29-day-old one
    survives the purge and its retry is a duplicate."""
    body = {"events": [event(0, timestamp=iso(29)), event(1, timestamp=iso(31))]}
    first = client.post("/api/v1/events", json=body, headers=auth).json()
    while purge_expired_events(app.state.sessionmaker, settings):
        pass
    again = client.post("/api/v1/events", json=body, headers=auth).json()
    assert (first["accepted"], first["duplicates"], len(first["rejected"])) == (1, 0, 1)
    assert (again["accepted"], again["duplicates"], len(again["rejected"])) == (0, 1, 1)
    assert stored_traces(client, auth) == ["trace-00000"]


def spans_started(days_ago: list[float]) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("support-app")
    attributes = {
        "plumbline.model": "support-bot",
        "plumbline.checkpoint": "v1",
        "input.value": "Summarize my ticket",
        "output.value": "Your printer is offline.",
    }
    for age in days_ago:
        start = time.time_ns() - int(age * DAY_NS)
        span = tracer.start_span(f"llm {age} days ago", attributes=attributes, start_time=start)
        span.end(end_time=start + 10**6)
    provider.shutdown()
    return list(memory.get_finished_spans())


def test_a_span_started_before_the_retention_is_a_partial_success(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    """OTLP: the span started 31 days ago is refused and named in `partial_success`; the one
    of 29 days ago is stored."""
    headers = {**auth, "content-type": "application/x-protobuf"}
    body = encode_spans(spans_started([29, 31])).SerializeToString()
    response = client.post("/v1/traces", content=body, headers=headers)
    assert response.status_code == 200, response.text
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert "older than the event retention" in answer.partial_success.error_message
    assert len(stored_traces(client, auth)) == 1


def test_a_window_reaching_before_year_1_keeps_every_event(
    settings: Settings, client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    """PLUMBLINE_RETENTION_DAYS=1000000 reaches before year 1: its cutoff is the calendar's
    first instant (no overflow, so no 500 at ingest or in the retention job), and an event
    of year 1 is accepted."""
    forever = settings.model_copy(update={"retention_days": 10**6})
    assert retention_cutoff(forever).year == 1
    body = {"events": [event(0, timestamp="0001-01-01T00:00:00Z")]}
    app = create_app(forever)
    with TestClient(app) as forever_client:
        answer = forever_client.post("/api/v1/events", json=body, headers=auth).json()
        assert purge_expired_events(app.state.sessionmaker, forever) is False
    assert (answer["accepted"], answer["rejected"]) == (1, [])
