"""Spans as the real OpenTelemetry SDK records them, for sending to the OTLP receiver."""

from __future__ import annotations

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
