"""Spans as the real OpenTelemetry SDK records them, for sending to the OTLP receiver."""

from __future__ import annotations

from fastapi.testclient import TestClient
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.types import Attributes


def recorded_span(attributes: Attributes) -> ReadableSpan:
    """One finished span holding `attributes`, recorded by the SDK."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("support-app").start_as_current_span("llm", attributes=attributes):
        pass
    provider.shutdown()
    (span,) = memory.get_finished_spans()
    return span


def export_spans(client: TestClient, auth: dict[str, str], spans: list[ReadableSpan]) -> None:
    """Sends `spans` as the SDK's OTLP/HTTP exporter does (protobuf); every one is accepted."""
    headers = {**auth, "content-type": "application/x-protobuf"}
    response = client.post(
        "/v1/traces", content=encode_spans(spans).SerializeToString(), headers=headers
    )
    assert response.status_code == 200, response.text
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 0, answer.partial_success.error_message
