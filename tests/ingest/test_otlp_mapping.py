"""OTLP decoding and span mapping, fed with the wire bytes the real OpenTelemetry SDK produces."""

from __future__ import annotations

import base64
import gzip
import json
import re
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import Attributes

from app.ingest.otlp import (
    JSON_CONTENT_TYPE,
    PROTOBUF_CONTENT_TYPE,
    DecodeError,
    PayloadTooLarge,
    SpanRejection,
    UnsupportedMediaType,
    decode_export_request,
    export_response,
    response_content_type,
    spans_to_events,
    status_body,
)

DATA = Path(__file__).parent / "data"
LIMIT = 4 * 1024 * 1024


# --- Recording real spans and sending real bytes --------------------------------------------


@dataclass
class Recording:
    """What the SDK exported: the OTLP request and the finished spans by name."""

    request: ExportTraceServiceRequest
    spans: dict[str, ReadableSpan]

    def ids(self, name: str) -> tuple[str, str]:
        context = self.spans[name].context
        assert context is not None
        return format(context.trace_id, "032x"), format(context.span_id, "016x")


def record(build: Callable[[Tracer], None], resource: dict[str, Any] | None = None) -> Recording:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource or {}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    build(provider.get_tracer("plumbline.tests"))
    finished = exporter.get_finished_spans()
    provider.shutdown()
    return Recording(encode_spans(finished), {span.name: span for span in finished})


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as the spec writes it: lowerCamelCase keys, integer enums, hex ids."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for holder in [span, *span.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in holder:
                            holder[key] = base64.b64decode(holder[key]).hex()
    return json.dumps(document, ensure_ascii=False).encode()


@dataclass(frozen=True)
class Wire:
    content_type: str
    content_encoding: str | None

    def body(self, request: ExportTraceServiceRequest) -> bytes:
        is_json = self.content_type.startswith(JSON_CONTENT_TYPE)
        raw = otlp_json(request) if is_json else request.SerializeToString()
        return gzip.compress(raw) if self.content_encoding == "gzip" else raw

    def send(self, request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
        body = self.body(request)
        return decode_export_request(body, self.content_type, self.content_encoding, LIMIT)


PROTOBUF = Wire(PROTOBUF_CONTENT_TYPE, None)
WIRES = [
    pytest.param(PROTOBUF, id="protobuf"),
    pytest.param(Wire(PROTOBUF_CONTENT_TYPE, "gzip"), id="protobuf-gzip"),
    pytest.param(Wire(JSON_CONTENT_TYPE, None), id="json"),
    pytest.param(Wire(f"{JSON_CONTENT_TYPE}; charset=utf-8", "gzip"), id="json-gzip"),
]


def mapped(
    recording: Recording, wire: Wire = PROTOBUF
) -> tuple[list[dict[str, Any]], list[SpanRejection]]:
    return spans_to_events(wire.send(recording.request))


def only_event(recording: Recording, wire: Wire = PROTOBUF) -> dict[str, Any]:
    events, rejections = mapped(recording, wire)
    assert rejections == []
    assert len(events) == 1
    return events[0]


def sdk_time(nanoseconds: int | None) -> datetime:
    assert nanoseconds is not None
    return datetime.fromtimestamp(nanoseconds // 1000 / 1e6, tz=UTC)


# --- The three attribute conventions --------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
def test_openinference_llm_span_under_a_server_span(wire: Wire) -> None:
    def build(tracer: Tracer) -> None:
        server = {"http.route": "/chat", "session.id": "sess-1", "user.id": "user-1"}
        with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER, attributes=server):
            llm: Attributes = {
                "openinference.span.kind": "LLM",
                "llm.model_name": "ft:gpt-4o-mini:acme:v7",
                "metadata": json.dumps({"plumbline.model": "support-bot", "user_segment": "pro"}),
                "llm.input_messages.0.message.role": "system",
                "llm.input_messages.0.message.content": "Be brief.",
                "llm.input_messages.1.message.role": "user",
                "llm.input_messages.1.message.content": "Where is my order?",
                "llm.input_messages.2.message.role": "assistant",
                "llm.input_messages.2.message.content": "Which order?",
                "llm.input_messages.3.message.role": "user",
                "llm.input_messages.3.message.content": "Number 42.",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": "Order 42 ships today.",
                "llm.token_count.prompt": 31,
                "llm.token_count.completion": 7,
                "llm.token_count.total": 38,
                "llm.prompt_template.version": "v3",
                "tag.tags": ["beta", "eu"],
            }
            with tracer.start_as_current_span("ChatOpenAI", attributes=llm):
                pass

    recording = record(build)
    event = only_event(recording, wire)

    llm_span = recording.spans["ChatOpenAI"]
    assert (event["trace_id"], event["span_id"]) == recording.ids("ChatOpenAI")
    assert event["timestamp"] == sdk_time(llm_span.start_time)
    assert llm_span.end_time is not None and llm_span.start_time is not None
    assert event["latency_ms"] == (llm_span.end_time - llm_span.start_time) / 1e6
    assert event["model"] == "support-bot"
    assert event["checkpoint_version"] == "ft:gpt-4o-mini:acme:v7"
    assert "checkpoint_id" not in event
    assert event["cohort"] == {"route": "/chat", "prompt_version": "v3", "user_segment": "pro"}
    assert event["input"] == "Number 42."
    assert event["output"] == "Order 42 ships today."
    assert [event[key] for key in ("eval_passed", "fallback", "refusal", "should_refuse")] == [
        None
    ] * 4
    assert event["probability"] is None and event["label"] is None
    assert (event["input_tokens"], event["output_tokens"]) == (31, 7)
    assert event["attributes"] == {
        "session_id": "sess-1",
        "user_id": "user-1",
        "tags": ["beta", "eu"],
        "model_name": "ft:gpt-4o-mini:acme:v7",
        "prompt_template_version": "v3",
        "input_tokens": 31,
        "output_tokens": 7,
        "total_tokens": 38,
        "span_name": "ChatOpenAI",
        "status_code": "UNSET",
    }


def test_openinference_input_and_output_values_are_unwrapped_when_openai_shaped() -> None:
    request = {
        "model": "ft:gpt-4o:acme:v2",
        "messages": [
            {"role": "system", "content": "You describe images."},
            {"role": "user", "content": "Earlier question"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}},
                ],
            },
        ],
    }
    response = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "A cat."}}]}

    def build(tracer: Tracer) -> None:
        base = {"openinference.span.kind": "LLM", "plumbline.model": "vision-bot"}
        values = {
            "openai-shaped": (json.dumps(request), json.dumps(response)),
            "plain-text": ("Hello there", "General Kenobi"),
            "other-json": ('{"query": "weather"}', '["sunny"]'),
            "completion": (
                json.dumps({"prompt": "Once upon"}),
                '{"choices": [{"text": " a time"}]}',
            ),
        }
        for name, (input_value, output_value) in values.items():
            attributes = {**base, "input.value": input_value, "output.value": output_value}
            with tracer.start_as_current_span(name, attributes=attributes):
                pass

    events, _ = mapped(record(build))
    by_name = {event["attributes"]["span_name"]: event for event in events}

    assert by_name["openai-shaped"]["input"] == "What is in this picture?"
    assert by_name["openai-shaped"]["output"] == "A cat."
    assert (by_name["plain-text"]["input"], by_name["plain-text"]["output"]) == (
        "Hello there",
        "General Kenobi",
    )
    assert (by_name["other-json"]["input"], by_name["other-json"]["output"]) == (
        '{"query": "weather"}',
        '["sunny"]',
    )
    assert (by_name["completion"]["input"], by_name["completion"]["output"]) == (
        "Once upon",
        " a time",
    )


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("segment", ["message.", ""], ids=["traceai-message-segment", "bare"])
def test_genai_indexed_messages_as_traceai_emits_them(wire: Wire, segment: str) -> None:
    def build(tracer: Tracer) -> None:
        with tracer.start_as_current_span("agent", attributes={"gen_ai.span.kind": "AGENT"}):
            llm: Attributes = {
                "gen_ai.span.kind": "LLM",
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "support-ft",
                "gen_ai.response.model": "support-ft-v7-2024-06-01",
                f"gen_ai.input.messages.0.{segment}role": "user",
                f"gen_ai.input.messages.0.{segment}content": "Cancel my plan",
                f"gen_ai.output.messages.0.{segment}role": "assistant",
                f"gen_ai.output.messages.0.{segment}content": "Your plan is cancelled.",
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 5,
                "gen_ai.prompt.template.version": "7",
                "gen_ai.conversation.id": "conv-9",
                "metadata": json.dumps({"model": "support-bot", "checkpoint": "v7"}),
            }
            with tracer.start_as_current_span("chat support-ft", attributes=llm):
                pass

    event = only_event(record(build), wire)

    assert event["model"] == "support-bot"
    assert event["checkpoint_version"] == "v7"  # explicit checkpoint beats the reported name
    assert event["input"] == "Cancel my plan"
    assert event["output"] == "Your plan is cancelled."
    assert event["cohort"] == {"prompt_version": "7"}
    attributes = event["attributes"]
    assert attributes["model_name"] == "support-ft-v7-2024-06-01"
    assert attributes["session_id"] == "conv-9"
    assert (attributes["input_tokens"], attributes["output_tokens"]) == (12, 5)
    assert attributes["total_tokens"] == 17
    # The token counts are event fields too: the drift job's token signals read them.
    assert (event["input_tokens"], event["output_tokens"]) == (12, 5)


def test_genai_json_string_messages_of_the_otel_semantic_conventions() -> None:
    input_messages = [
        {"role": "system", "parts": [{"type": "text", "content": "Answer in French."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Good morning"}]},
    ]
    output_messages = [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Bonjour"}],
            "finish_reason": "stop",
        }
    ]

    def build(tracer: Tracer) -> None:
        attributes: Attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "translator-ft",
            "gen_ai.input.messages": json.dumps(input_messages),
            "gen_ai.output.messages": json.dumps(output_messages),
            "plumbline.model": "translator",
            "plumbline.checkpoint": 42,
        }
        with tracer.start_as_current_span("chat translator-ft", attributes=attributes):
            pass

    event = only_event(record(build))

    assert (event["input"], event["output"]) == ("Good morning", "Bonjour")
    assert event["checkpoint_id"] == 42
    assert "checkpoint_version" not in event
    assert event["attributes"]["model_name"] == "translator-ft"


def test_plumbline_attributes_fill_the_event_fields() -> None:
    def build(tracer: Tracer) -> None:
        attributes: Attributes = {
            "plumbline.model": "billing-bot",
            "plumbline.checkpoint": "2024-06-01",
            "plumbline.route": "summarize",
            "plumbline.user_segment": "enterprise",
            "plumbline.prompt_version": "p9",
            "plumbline.fallback": True,
            "plumbline.refusal": False,
            "plumbline.eval_passed": True,
            "plumbline.should_refuse": False,
            "plumbline.probability": 0.83,
            "plumbline.label": "billing",
            "plumbline.cohort.region": "eu-west",
            "plumbline.ticket_source": "email",
            "plumbline.fallback_reason": "timeout",
            "http.route": "/ignored-because-route-is-explicit",
        }
        with tracer.start_as_current_span("manual llm call", attributes=attributes):
            pass

    event = only_event(record(build))

    assert event["model"] == "billing-bot"
    assert event["checkpoint_version"] == "2024-06-01"
    assert event["cohort"] == {
        "region": "eu-west",
        "route": "summarize",
        "prompt_version": "p9",
        "user_segment": "enterprise",
    }
    assert (event["fallback"], event["refusal"]) == (True, False)
    assert (event["eval_passed"], event["should_refuse"]) == (True, False)
    assert (event["probability"], event["label"]) == (0.83, "billing")
    assert event["attributes"]["metadata"] == {
        "plumbline.ticket_source": "email",
        "plumbline.fallback_reason": "timeout",
    }


@pytest.mark.parametrize(
    ("attributes", "is_llm_span"),
    [
        ({"openinference.span.kind": "llm"}, True),
        ({"openinference.span.kind": "CHAIN"}, False),
        ({"openinference.span.kind": "EMBEDDING", "llm.model_name": "e5"}, False),
        ({"gen_ai.span.kind": "LLM"}, True),
        ({"gen_ai.span.kind": "TOOL", "gen_ai.request.model": "m"}, False),
        ({"gen_ai.operation.name": "text_completion"}, True),
        ({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e5"}, False),
        ({"gen_ai.request.model": "m"}, True),
        ({"llm.request.type": "chat", "gen_ai.request.model": "m"}, True),
        ({"llm.request.type": "embedding", "gen_ai.request.model": "e5"}, False),
        ({"llm.request.type": "rerank", "gen_ai.request.model": "r"}, False),
        ({"openinference.span.kind": "CHAIN", "plumbline.model": "bot"}, True),
        ({"http.route": "/chat"}, False),
    ],
)
def test_which_spans_are_llm_spans(attributes: dict[str, Any], is_llm_span: bool) -> None:
    def build(tracer: Tracer) -> None:
        with tracer.start_as_current_span("span", attributes=attributes):
            pass

    events, rejections = mapped(record(build))

    assert len(events) + len(rejections) == int(is_llm_span)


# --- Context flowing down the trace ---------------------------------------------------------


def test_context_flows_down_with_the_nearest_ancestor_winning() -> None:
    def build(tracer: Tracer) -> None:
        root = {
            "plumbline.route": "support",
            "session.id": "sess-root",
            "user.id": "user-root",
            "metadata": json.dumps(
                {"model": "support-bot", "user_segment": "free", "cohort": {"region": "us"}}
            ),
        }
        with tracer.start_as_current_span("gateway", attributes=root):
            server = {"http.route": "/v1/chat", "session.id": "sess-server", "tag.tags": ["t1"]}
            with tracer.start_as_current_span("POST /v1/chat", attributes=server):
                chain = {
                    "openinference.span.kind": "CHAIN",
                    "metadata": json.dumps({"user_segment": "pro"}),
                }
                with tracer.start_as_current_span("chain", attributes=chain):
                    llm = {
                        "openinference.span.kind": "LLM",
                        "user.id": "user-own",
                        "metadata": json.dumps({"cohort.region": "eu"}),
                    }
                    with tracer.start_as_current_span("llm", attributes=llm):
                        pass

    event = only_event(record(build))

    assert event["model"] == "support-bot"  # from the root's metadata
    assert event["cohort"] == {"region": "eu", "route": "support", "user_segment": "pro"}
    assert event["attributes"]["session_id"] == "sess-server"
    assert event["attributes"]["user_id"] == "user-own"
    assert event["attributes"]["tags"] == ["t1"]


def test_http_route_of_the_server_span_is_the_route_unless_one_is_explicit() -> None:
    def build(tracer: Tracer) -> None:
        for name, explicit in (("implicit", {}), ("explicit", {"plumbline.route": "triage"})):
            server = {"http.route": f"/{name}", "plumbline.model": "bot"}
            with tracer.start_as_current_span(f"server {name}", attributes=server):
                llm = {"openinference.span.kind": "LLM", **explicit}
                with tracer.start_as_current_span(name, attributes=llm):
                    pass

    events, rejections = mapped(record(build))

    routes = {event["attributes"]["span_name"]: event["cohort"]["route"] for event in events}
    assert rejections == []
    assert routes == {"implicit": "/implicit", "explicit": "triage"}


def test_context_stays_within_its_trace() -> None:
    def build(tracer: Tracer) -> None:
        llm = {"gen_ai.span.kind": "LLM"}
        with (
            tracer.start_as_current_span("traced", attributes={"plumbline.model": "bot"}),
            tracer.start_as_current_span("inner", attributes=llm),
        ):
            pass
        with (
            tracer.start_as_current_span("other trace", attributes={"session.id": "s"}),
            tracer.start_as_current_span("orphan", attributes=llm),
        ):
            pass

    recording = record(build)
    events, rejections = mapped(recording)

    assert [event["span_id"] for event in events] == [recording.ids("inner")[1]]
    assert [(r.trace_id, r.span_id) for r in rejections] == [recording.ids("orphan")]


def test_a_span_wrapping_an_llm_span_is_context_not_a_second_event() -> None:
    def build(tracer: Tracer) -> None:
        wrapper = {"plumbline.model": "support-bot", "plumbline.checkpoint": "v9"}
        with tracer.start_as_current_span("answer question", attributes=wrapper):
            langchain = {"openinference.span.kind": "LLM", "llm.model_name": "ft:acme:v9"}
            with tracer.start_as_current_span("ChatOpenAI", attributes=langchain):
                openai: Attributes = {
                    "openinference.span.kind": "LLM",
                    "llm.model_name": "ft:acme:v9",
                    "llm.token_count.prompt": 3,
                }
                with tracer.start_as_current_span("ChatCompletion", attributes=openai):
                    pass

    recording = record(build)
    event = only_event(recording)

    assert event["span_id"] == recording.ids("ChatCompletion")[1]
    assert (event["model"], event["checkpoint_version"]) == ("support-bot", "v9")


def test_resource_attributes_are_the_outermost_context() -> None:
    def build(tracer: Tracer) -> None:
        attributes = {"gen_ai.span.kind": "LLM", "metadata": json.dumps({"checkpoint": "v2"})}
        with tracer.start_as_current_span("llm", attributes=attributes):
            pass

    resource = {"plumbline.model": "edge-bot", "plumbline.checkpoint": "v1"}
    event = only_event(record(build, resource=resource))

    assert (event["model"], event["checkpoint_version"]) == ("edge-bot", "v2")


# --- Metadata, rejections, status -----------------------------------------------------------


def test_metadata_reserved_keys_with_or_without_prefix_and_the_rest_kept() -> None:
    metadata = {
        "model": "loses-to-the-attribute",
        "checkpoint": 7,
        "plumbline.route": "faq",
        "fallback": True,
        "refusal": "false",
        "probability": 0.4,
        "label": 1,
        "cohort": {"locale": "de"},
        "cohort.channel": "email",
        "customer": "acme",
        "eval_passed": "maybe",
    }

    def build(tracer: Tracer) -> None:
        attributes = {
            "openinference.span.kind": "LLM",
            "plumbline.model": "faq-bot",
            "metadata": json.dumps(metadata),
        }
        with tracer.start_as_current_span("llm", attributes=attributes):
            pass

    event = only_event(record(build))

    assert event["model"] == "faq-bot"
    assert event["checkpoint_id"] == 7
    assert event["cohort"] == {"locale": "de", "channel": "email", "route": "faq"}
    assert (event["fallback"], event["refusal"], event["eval_passed"]) == (True, False, None)
    assert (event["probability"], event["label"]) == (0.4, 1)
    assert event["attributes"]["metadata"] == {"customer": "acme", "eval_passed": "maybe"}


def test_unparseable_metadata_is_kept_not_lost() -> None:
    def build(tracer: Tracer) -> None:
        attributes = {"plumbline.model": "bot", "metadata": "{not json"}
        with tracer.start_as_current_span("llm", attributes=attributes):
            pass

    event = only_event(record(build))

    assert event["attributes"]["metadata"] == {"metadata": "{not json"}


def test_llm_span_without_a_plumbline_model_is_rejected_with_a_reason() -> None:
    def build(tracer: Tracer) -> None:
        with tracer.start_as_current_span("tool", attributes={"openinference.span.kind": "TOOL"}):
            llm = {"openinference.span.kind": "LLM", "llm.model_name": "ft:gpt-4o:acme:v1"}
            with tracer.start_as_current_span("llm", attributes=llm):
                pass

    recording = record(build)
    events, rejections = mapped(recording)

    assert events == []
    trace_id, span_id = recording.ids("llm")
    assert len(rejections) == 1
    assert (rejections[0].trace_id, rejections[0].span_id) == (trace_id, span_id)
    assert "plumbline.model" in rejections[0].reason


def test_llm_spans_with_unusable_ids_or_times_are_rejected() -> None:
    def build(tracer: Tracer) -> None:
        for name in ("zero trace id", "short span id", "no start"):
            with tracer.start_as_current_span(name, attributes={"plumbline.model": "bot"}):
                pass

    request = record(build).request
    spans = {span.name: span for span in request.resource_spans[0].scope_spans[0].spans}
    spans["zero trace id"].trace_id = bytes(16)
    spans["short span id"].span_id = b"\x01\x02"
    spans["no start"].start_time_unix_nano = 0

    events, rejections = spans_to_events(request)

    assert events == []
    reasons = sorted(rejection.reason for rejection in rejections)
    assert reasons == [
        "span has no start time",
        "span_id must be 8 bytes, not all zero",
        "trace_id must be 16 bytes, not all zero",
    ]


def test_spans_whose_malformed_ids_run_together_stay_two_spans() -> None:
    """A span is its (trace id, span id) pair whatever the ids' lengths: two spans whose ids
    written one after the other are the same bytes are still two spans, each refused."""

    def build(tracer: Tracer) -> None:
        for name in ("a", "b"):
            with tracer.start_as_current_span(name, attributes={"plumbline.model": "bot"}):
                pass

    request = record(build).request
    spans = {span.name: span for span in request.resource_spans[0].scope_spans[0].spans}
    spans["a"].trace_id, spans["a"].span_id = b"\x01\x02", b"\x03"
    spans["b"].trace_id, spans["b"].span_id = b"\x01", b"\x02\x03"

    events, rejections = spans_to_events(request)

    assert events == []
    assert sorted((r.trace_id, r.span_id) for r in rejections) == [("01", "0203"), ("0102", "03")]


def test_error_status_is_reported_without_inventing_a_fallback() -> None:
    def build(tracer: Tracer) -> None:
        with tracer.start_as_current_span("llm", attributes={"plumbline.model": "bot"}) as span:
            span.set_status(Status(StatusCode.ERROR, "upstream timeout"))

    event = only_event(record(build))

    assert event["attributes"]["status_code"] == "ERROR"
    assert event["attributes"]["status_message"] == "upstream timeout"
    assert event["fallback"] is None


def test_every_any_value_kind_flattens_to_plain_python() -> None:
    """The SDK cannot set kvlist or bytes attributes, so they are added to its encoded span."""

    def build(tracer: Tracer) -> None:
        attributes: Attributes = {"openinference.span.kind": "LLM", "plumbline.scores": [0.5, 2.0]}
        with tracer.start_as_current_span("llm", attributes=attributes):
            pass

    request = record(build).request
    span = request.resource_spans[0].scope_spans[0].spans[0]
    metadata = AnyValue()
    metadata.kvlist_value.values.add(key="model", value=AnyValue(string_value="kv-bot"))
    metadata.kvlist_value.values.add(key="attempt", value=AnyValue(int_value=2))
    metadata.kvlist_value.values.add(key="nested", value=AnyValue(kvlist_value=KeyValueList()))
    span.attributes.extend(
        [
            KeyValue(key="metadata", value=metadata),
            KeyValue(key="plumbline.blob", value=AnyValue(bytes_value=b"\x00\xff")),
            KeyValue(key="plumbline.empty", value=AnyValue()),
        ]
    )

    event = only_event(Recording(PROTOBUF.send(request), {}))

    assert event["model"] == "kv-bot"
    assert event["attributes"]["metadata"] == {
        "attempt": 2,
        "nested": {},
        "plumbline.scores": [0.5, 2.0],
        "plumbline.blob": "AP8=",
        "plumbline.empty": None,
    }


@pytest.mark.parametrize("wire", WIRES)
def test_unicode_content_survives_every_encoding(wire: Wire) -> None:
    question, answer = "Grüße aus 東京 — what's «this»? 🚀", "Ça marche, 東京タワー ✅"

    def build(tracer: Tracer) -> None:
        attributes = {
            "openinference.span.kind": "LLM",
            "plumbline.model": "modèle-ü",
            "session.id": "séance-🚀",
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": question,
            "output.value": answer,
        }
        with tracer.start_as_current_span("llm ✨", attributes=attributes):
            pass

    event = only_event(record(build), wire)

    assert (event["input"], event["output"], event["model"]) == (question, answer, "modèle-ü")
    assert event["attributes"]["session_id"] == "séance-🚀"
    assert event["attributes"]["span_name"] == "llm ✨"


# --- Decoding -------------------------------------------------------------------------------


def parent_child_and_linked_spans() -> Recording:
    def build(tracer: Tracer) -> None:
        with (
            tracer.start_as_current_span("parent", attributes={"plumbline.model": "bot"}) as parent,
            tracer.start_as_current_span("child", attributes={"gen_ai.span.kind": "LLM"}),
        ):
            pass
        tracer.start_span("linked", links=[Link(parent.get_span_context())]).end()

    return record(build)


def test_json_with_hex_ids_decodes_to_the_same_request_as_protobuf() -> None:
    recording = parent_child_and_linked_spans()
    json_wire = Wire(JSON_CONTENT_TYPE, None)

    from_json = json_wire.send(recording.request)

    assert from_json == PROTOBUF.send(recording.request)
    assert re.search(rb'"traceId": "[0-9a-f]{32}"', json_wire.body(recording.request))
    [event], _ = spans_to_events(from_json)
    assert (event["trace_id"], event["span_id"]) == recording.ids("child")
    [linked] = [span for span in from_json.resource_spans[0].scope_spans[0].spans if span.links]
    link = linked.links[0]
    assert (link.trace_id.hex(), link.span_id.hex()) == recording.ids("parent")


def test_spec_shaped_json_with_uppercase_hex_and_string_int64s() -> None:
    body = (DATA / "otlp_trace_openinference.json").read_bytes()

    request = decode_export_request(body, JSON_CONTENT_TYPE, None, LIMIT)
    [event], rejections = spans_to_events(request)

    span = request.resource_spans[0].scope_spans[0].spans[1]
    assert span.links[0].trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert rejections == []
    assert event["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert event["span_id"] == "eee19b7ec3c1b175"
    assert event["timestamp"] == datetime(2018, 12, 13, 14, 51, 0, 300000, tzinfo=UTC)
    assert event["latency_ms"] == 500.0
    assert (event["model"], event["checkpoint_version"]) == (
        "support-bot",
        "ft:gpt-4o-mini:acme:v7",
    )
    assert event["cohort"] == {"route": "/chat"}
    assert (event["input"], event["output"]) == ("Where is my order?", "It ships today.")
    assert event["attributes"]["session_id"] == "sess-7"
    assert event["attributes"]["total_tokens"] == 16
    assert event["attributes"]["status_code"] == "OK"


def snake_case_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower(): snake_case_keys(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [snake_case_keys(item) for item in value]
    return value


def test_json_field_names_may_be_snake_case() -> None:
    document = json.loads((DATA / "otlp_trace_openinference.json").read_text())
    body = json.dumps(snake_case_keys(document)).encode()

    request = decode_export_request(body, JSON_CONTENT_TYPE, None, LIMIT)

    assert request == decode_export_request(
        json.dumps(document).encode(), JSON_CONTENT_TYPE, None, LIMIT
    )


def test_deflate_and_concatenated_gzip_members_decode() -> None:
    request = parent_child_and_linked_spans().request
    raw = request.SerializeToString()
    half = len(raw) // 2
    two_members = gzip.compress(raw[:half]) + gzip.compress(raw[half:])

    assert (
        decode_export_request(zlib.compress(raw), PROTOBUF_CONTENT_TYPE, "deflate", LIMIT)
        == request
    )
    assert decode_export_request(two_members, PROTOBUF_CONTENT_TYPE, "GZIP", LIMIT) == request


GARBAGE = [
    pytest.param(b"not a protobuf", PROTOBUF_CONTENT_TYPE, None, id="protobuf-garbage"),
    pytest.param(b"{not json", JSON_CONTENT_TYPE, None, id="json-syntax"),
    pytest.param(b"\xff\xfe\xfa", JSON_CONTENT_TYPE, None, id="json-not-utf8"),
    pytest.param(b"[1, 2]", JSON_CONTENT_TYPE, None, id="json-not-an-object"),
    pytest.param(b"[" * 100_000, JSON_CONTENT_TYPE, None, id="json-too-deep"),
    pytest.param(b'{"resourceSpans": {}}', JSON_CONTENT_TYPE, None, id="json-wrong-shape"),
    pytest.param(
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "not-hex"}]}]}]}',
        JSON_CONTENT_TYPE,
        None,
        id="json-id-not-hex",
    ),
    pytest.param(b"definitely not gzip", PROTOBUF_CONTENT_TYPE, "gzip", id="gzip-garbage"),
    pytest.param(gzip.compress(b"x" * 1000)[:-12], PROTOBUF_CONTENT_TYPE, "gzip", id="gzip-cut"),
]


@pytest.mark.parametrize(("body", "content_type", "content_encoding"), GARBAGE)
def test_undecodable_bodies_raise_decode_error_with_a_message(
    body: bytes, content_type: str, content_encoding: str | None
) -> None:
    with pytest.raises(DecodeError) as raised:
        decode_export_request(body, content_type, content_encoding, LIMIT)

    assert isinstance(raised.value, ValueError)
    assert raised.value.http_status == 400
    assert str(raised.value)


@pytest.mark.parametrize(
    ("content_type", "content_encoding"),
    [("text/plain", None), ("application/protobuf+json", None), (JSON_CONTENT_TYPE, "br")],
)
def test_unsupported_media_is_415(content_type: str, content_encoding: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as raised:
        decode_export_request(b"{}", content_type, content_encoding, LIMIT)

    assert raised.value.http_status == 415
    assert isinstance(raised.value, DecodeError)


def test_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(bytes(64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100_000

    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as raised:
            decode_export_request(bomb, PROTOBUF_CONTENT_TYPE, "gzip", LIMIT)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert raised.value.http_status == 413
    # zlib joins its output blocks, so a bounded inflate peaks near twice the limit;
    # an unbounded one would hold all 64 MiB.
    assert peak_bytes < 4 * LIMIT


def test_the_limit_counts_every_gzip_member_and_uncompressed_bodies() -> None:
    member = gzip.compress(bytes(LIMIT // 2 + 1))

    with pytest.raises(PayloadTooLarge):
        decode_export_request(member + member, PROTOBUF_CONTENT_TYPE, "gzip", LIMIT)
    with pytest.raises(PayloadTooLarge):
        decode_export_request(bytes(LIMIT + 1), PROTOBUF_CONTENT_TYPE, None, LIMIT)


# --- Responses ------------------------------------------------------------------------------


def test_partial_success_response_decodes_back_in_both_encodings() -> None:
    as_protobuf = export_response(2, "2 spans had no plumbline.model", PROTOBUF_CONTENT_TYPE)
    as_json = export_response(2, "2 spans had no plumbline.model", JSON_CONTENT_TYPE)

    for response in (
        ExportTraceServiceResponse.FromString(as_protobuf),
        json_format.Parse(as_json, ExportTraceServiceResponse()),
    ):
        assert response.partial_success.rejected_spans == 2
        assert response.partial_success.error_message == "2 spans had no plumbline.model"


def test_full_success_response_is_the_empty_message() -> None:
    assert export_response(0, "", PROTOBUF_CONTENT_TYPE) == b""
    assert json.loads(export_response(0, "", f"{JSON_CONTENT_TYPE}; charset=utf-8")) == {}


def test_status_body_is_a_google_rpc_status_in_the_request_encoding() -> None:
    message = "traceId 'zz' is not hex — résumé"

    from_protobuf = status_pb2.Status.FromString(status_body(message, PROTOBUF_CONTENT_TYPE))
    from_json = json_format.Parse(status_body(message, JSON_CONTENT_TYPE), status_pb2.Status())

    assert from_protobuf == from_json == status_pb2.Status(code=3, message=message)


def test_responses_use_the_request_encoding_and_default_to_protobuf() -> None:
    assert response_content_type("Application/JSON; charset=utf-8") == JSON_CONTENT_TYPE
    assert response_content_type(PROTOBUF_CONTENT_TYPE) == PROTOBUF_CONTENT_TYPE
    assert response_content_type("text/plain") == PROTOBUF_CONTENT_TYPE
    assert response_content_type(None) == PROTOBUF_CONTENT_TYPE


@pytest.mark.parametrize("wire", WIRES)
def test_indexed_messages_are_ordered_by_number_and_odd_keys_are_ignored(wire: Wire) -> None:
    """Twelve turns: message 11 is the last user turn (after 2, not between 1 and 2); keys
    that are not `<list>.<number>.[message.]role|content` never become messages."""

    def build(tracer: Tracer) -> None:
        llm: Attributes = {"plumbline.model": "support-bot", "plumbline.checkpoint": "v1"}
        for index in range(12):
            role = "user" if index % 2 == 0 or index == 11 else "assistant"
            llm[f"llm.input_messages.{index}.message.role"] = role
            llm[f"llm.input_messages.{index}.message.content"] = f"turn {index}"
        llm["llm.input_messages.x.message.role"] = "user"
        llm["llm.input_messages.x.message.content"] = "not a turn"
        llm["llm.input_messages.12.message.name"] = "ignored"
        llm["llm.output_messages.0.message.contents.0.message_content.text"] = "a part"
        llm["gen_ai.output.messages.0.role"] = "assistant"
        llm["gen_ai.output.messages.0.content"] = "the answer"
        with tracer.start_as_current_span("chat", attributes=llm):
            pass

    event = only_event(record(build), wire)
    assert event["input"] == "turn 11"
    # llm.output_messages has no role/content pair, so the GenAI list answers.
    assert event["output"] == "the answer"
