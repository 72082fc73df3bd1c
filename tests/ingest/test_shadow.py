"""Shadow answers (`shadow_of`) in through REST and OTLP: stored, shown with their trace, and
refused per event when the reference is malformed."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Tracer

from app.ingest.otlp import spans_to_events
from tests.conftest import new_key
from tests.ingest.factories import event
from tests.ingest.test_otlp_mapping import record
from tests.ingest.test_otlp_receiver import exporter, send_with_sdk
from tests.web.test_pages import sign_in

Headers = dict[str, str]


def test_rest_stores_shadow_answers_and_refuses_malformed_references(
    client: TestClient, auth: Headers, admin_key: str, checkpoint: dict[str, Any]
) -> None:
    batch = [
        event(1, checkpoint_version="v1"),
        event(
            2,
            trace_id="trace-00001",
            span_id="shadow",
            checkpoint_version="v2",
            shadow_of="trace-00001",
        ),
        event(3, shadow_of=""),
        event(4, shadow_of="x" * 65),
        event(5, shadow_of="bad\u0000id"),
    ]
    response = client.post("/api/v1/events", json={"events": batch}, headers=auth)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [
        (2, "shadow_of"),
        (3, "shadow_of"),
        (4, None),
    ]
    assert "shadow_of" in body["rejected"][2]["error"]
    events = client.get("/api/v1/traces/trace-00001", headers=auth).json()["events"]
    shadow_of = {e["checkpoint_version"]: e["shadow_of"] for e in events}
    assert shadow_of == {"v1": None, "v2": "trace-00001"}
    sign_in(client, admin_key)
    page = client.get("/traces/trace-00001").text
    assert page.count('<span class="badge">shadow</span>') == 1
    assert "answered off the serving path" in page


def _served_and_shadow(tracer: Tracer) -> None:
    """One request: the champion answers it, the candidate answers it again off the path."""
    with tracer.start_as_current_span("POST /chat", attributes={"http.route": "/chat"}):
        trace_id = format(otel_trace.get_current_span().get_span_context().trace_id, "032x")
        served = {
            "plumbline.model": "support-bot",
            "plumbline.checkpoint": "v1",
            "plumbline.refusal": False,
        }
        with tracer.start_as_current_span("served", attributes=served):
            pass
        shadow = {
            "plumbline.model": "support-bot",
            "plumbline.checkpoint": "v2",
            "plumbline.refusal": True,
            "plumbline.shadow_of": trace_id,
        }
        with tracer.start_as_current_span("shadow", attributes=shadow):
            pass


def test_otlp_maps_plumbline_shadow_of_from_attributes_and_metadata() -> None:
    recording = record(_served_and_shadow)
    events, rejections = spans_to_events(recording.request)
    assert rejections == []
    by_version = {e["checkpoint_version"]: e for e in events}
    trace_id, _ = recording.ids("shadow")
    assert by_version["v1"]["shadow_of"] is None
    assert by_version["v2"]["shadow_of"] == trace_id

    def in_metadata(tracer: Tracer) -> None:
        metadata = {"model": "support-bot", "checkpoint": "v2", "shadow_of": "abc123"}
        attributes = {"openinference.span.kind": "LLM", "metadata": json.dumps(metadata)}
        with tracer.start_as_current_span("llm", attributes=attributes):
            pass

    [from_metadata], _ = spans_to_events(record(in_metadata).request)
    assert from_metadata["shadow_of"] == "abc123"


def test_the_real_exporter_lands_a_shadow_answer_beside_the_served_one(
    app: FastAPI, live_server: str, client: TestClient, auth: Headers
) -> None:
    send_with_sdk(_served_and_shadow, exporter(live_server, new_key(app, "acme")))
    events = client.get("/api/v1/events", headers=auth).json()["items"]
    by_version = {e["checkpoint_version"]: e for e in events}
    assert set(by_version) == {"v1", "v2"}
    assert by_version["v1"]["shadow_of"] is None
    assert by_version["v2"]["shadow_of"] == by_version["v1"]["trace_id"]
    assert by_version["v2"]["refusal"] is True
