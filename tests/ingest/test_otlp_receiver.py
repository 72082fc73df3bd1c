"""POST /v1/traces end to end: the real OpenTelemetry SDK and its OTLP/HTTP exporter send
spans to a real uvicorn server; the events must land exactly once with the mapped fields."""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
from fastapi import FastAPI
from fastapi.testclient import TestClient
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer
from opentelemetry.util.types import Attributes

from app.core.settings import Settings
from app.ingest.deps import ingest_gate
from app.main import create_app
from tests.conftest import new_key

Headers = dict[str, str]
PROTOBUF = "application/x-protobuf"


def exporter(base_url: str, key: str, path: str = "/v1/traces") -> OTLPSpanExporter:
    session = requests.Session()
    session.trust_env = False  # 127.0.0.1 only, whatever proxy the environment names
    return OTLPSpanExporter(
        endpoint=base_url + path,
        headers={"Authorization": f"Bearer {key}"},
        compression=Compression.Gzip,
        timeout=10,
        session=session,
    )


def send_with_sdk(build: Callable[[Tracer], None], span_exporter: OTLPSpanExporter) -> None:
    """The way an app does it: a TracerProvider with a BatchSpanProcessor, flushed."""
    provider = TracerProvider(resource=Resource.create({"service.name": "support-app"}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    build(provider.get_tracer("support-app"))
    assert provider.force_flush(10_000)
    provider.shutdown()


def recorded(build: Callable[[Tracer], None]) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(memory))
    build(provider.get_tracer("support-app"))
    provider.force_flush()
    spans = list(memory.get_finished_spans())
    provider.shutdown()
    return spans


def trace_id_of(spans: list[ReadableSpan]) -> str:
    context = spans[0].context
    assert context is not None
    return format(context.trace_id, "032x")


def openinference(tracer: Tracer) -> None:
    server = {"http.route": "/chat", "session.id": "sess-1"}
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER, attributes=server):
        llm = {
            "openinference.span.kind": "LLM",
            "llm.model_name": "v2",
            "metadata": json.dumps({"plumbline.model": "support-bot", "user_segment": "pro"}),
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "Where is my order?",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "It ships today.",
            "llm.prompt_template.version": "p3",
        }
        with tracer.start_as_current_span("ChatOpenAI", attributes=llm):
            pass


def genai(tracer: Tracer) -> None:
    with tracer.start_as_current_span("agent", attributes={"gen_ai.span.kind": "AGENT"}):
        llm = {
            "gen_ai.span.kind": "LLM",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "support-ft",
            "gen_ai.input.messages.0.message.role": "user",
            "gen_ai.input.messages.0.message.content": "Cancel my plan",
            "gen_ai.output.messages.0.message.role": "assistant",
            "gen_ai.output.messages.0.message.content": "I can't help with that.",
            "gen_ai.prompt.template.version": "7",
            "metadata": json.dumps({"model": "support-bot", "checkpoint": "v1"}),
        }
        with tracer.start_as_current_span("chat support-ft", attributes=llm):
            pass


def openllmetry(tracer: Tracer) -> None:
    """GenAI semantic conventions up to 1.26, as OpenLLMetry (Traceloop) writes them: token
    counts as prompt/completion tokens, messages as indexed gen_ai.prompt / gen_ai.completion,
    the kind of call as llm.request.type: the retrieval's embedding call is not a model call
    of the bot, though it names a gen_ai.request.model under the bot's workflow span."""
    workflow = {
        "traceloop.span.kind": "workflow",
        "plumbline.model": "support-bot",
        "plumbline.checkpoint": "v2",
    }
    with tracer.start_as_current_span("support.workflow", attributes=workflow):
        embedding = {
            "llm.request.type": "embedding",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.usage.prompt_tokens": 6,
        }
        with tracer.start_as_current_span("openai.embeddings", attributes=embedding):
            pass
        llm = {
            "llm.request.type": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "support-ft",
            "gen_ai.response.model": "support-ft-2024-06-01",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "Where is my refund?",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "It was sent on Monday.",
            "gen_ai.usage.prompt_tokens": 14,
            "gen_ai.usage.completion_tokens": 9,
            "llm.usage.total_tokens": 23,
        }
        with tracer.start_as_current_span("openai.chat", attributes=llm):
            pass


def genai_span_events(tracer: Tracer) -> None:
    """GenAI semantic conventions 1.26-1.27 (Semantic Kernel, the first OpenAI v2
    instrumentation): the prompt and the completion as span events, each a JSON list."""
    llm = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "support-ft",
        "gen_ai.usage.prompt_tokens": 11,
        "gen_ai.usage.completion_tokens": 4,
        "plumbline.model": "support-bot",
        "plumbline.checkpoint": "v1",
    }
    with tracer.start_as_current_span("chat.completions support-ft", attributes=llm) as span:
        prompt = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Is my order late?"},
        ]
        span.add_event("gen_ai.content.prompt", {"gen_ai.prompt": json.dumps(prompt)})
        completion = [{"role": "assistant", "content": "No, it arrives tomorrow."}]
        span.add_event("gen_ai.content.completion", {"gen_ai.completion": json.dumps(completion)})


def genai_message_events(tracer: Tracer) -> None:
    """GenAI semantic conventions 1.28-1.36 as span events (Azure AI Inference, Semantic
    Kernel): one event per message, its body in gen_ai.event.content."""
    llm = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "support-ft",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 4,
        "plumbline.model": "support-bot",
        "plumbline.checkpoint": "v1",
    }
    with tracer.start_as_current_span("chat support-ft", attributes=llm) as span:
        system = json.dumps({"content": "Be brief."})
        span.add_event("gen_ai.system.message", {"gen_ai.event.content": system})
        user = json.dumps({"content": "Is my order late?"})
        span.add_event("gen_ai.user.message", {"gen_ai.event.content": user})
        answer = {"content": "No, it arrives tomorrow."}
        choice = json.dumps({"index": 0, "message": answer, "finish_reason": "stop"})
        span.add_event("gen_ai.choice", {"gen_ai.event.content": choice})


def plumbline(tracer: Tracer) -> None:
    attributes: Attributes = {
        "plumbline.model": "support-bot",
        "plumbline.checkpoint": "v1",
        "plumbline.route": "summarize",
        "plumbline.user_segment": "enterprise",
        "plumbline.fallback": True,
        "plumbline.refusal": False,
        "plumbline.eval_passed": True,
        "input.value": "Summarize my ticket",
        "output.value": "Your printer is offline.",
    }
    with tracer.start_as_current_span("manual llm call", attributes=attributes):
        pass


CONVENTIONS: dict[str, tuple[Callable[[Tracer], None], dict[str, Any]]] = {
    "openinference": (
        openinference,
        {
            "checkpoint_version": "v2",
            "cohort": {"route": "/chat", "prompt_version": "p3", "user_segment": "pro"},
            "input": "Where is my order?",
            "output": "It ships today.",
        },
    ),
    "genai": (
        genai,
        {
            "checkpoint_version": "v1",
            "cohort": {"prompt_version": "7"},
            "input": "Cancel my plan",
            "output": "I can't help with that.",
        },
    ),
    "openllmetry": (
        openllmetry,
        {
            "checkpoint_version": "v2",
            "input": "Where is my refund?",
            "output": "It was sent on Monday.",
            "input_tokens": 14,
            "output_tokens": 9,
        },
    ),
    **{
        name: (
            build,
            {
                "checkpoint_version": "v1",
                "input": "Is my order late?",
                "output": "No, it arrives tomorrow.",
                "input_tokens": 11,
                "output_tokens": 4,
            },
        )
        for name, build in (
            ("genai-span-events", genai_span_events),
            ("genai-message-events", genai_message_events),
        )
    },
    "plumbline": (
        plumbline,
        {
            "checkpoint_version": "v1",
            "cohort": {"route": "summarize", "user_segment": "enterprise"},
            "fallback": True,
            "refusal": False,
            "eval_passed": True,
            "input": "Summarize my ticket",
            "output": "Your printer is offline.",
        },
    ),
}


@pytest.fixture
def key(app: FastAPI) -> str:
    return new_key(app, "acme")


def events_of(client: TestClient, auth: Headers) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get("/api/v1/events", headers=auth).json()["items"]
    return items


@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_the_real_exporter_lands_each_convention_exactly_once(
    live_server: str, client: TestClient, auth: Headers, key: str, convention: str
) -> None:
    build, expected = CONVENTIONS[convention]
    send_with_sdk(build, exporter(live_server, key))
    events = events_of(client, auth)
    assert len(events) == 1
    stored = events[0]
    assert stored["model"] == "support-bot" and stored["source"] == "otlp"
    assert {field: stored[field] for field in expected} == expected
    assert stored["latency_ms"] is not None and len(stored["trace_id"]) == 32


def test_a_re_export_of_the_same_spans_is_stored_once(
    live_server: str, client: TestClient, auth: Headers, key: str
) -> None:
    spans = recorded(openinference) + recorded(genai)
    span_exporter = exporter(live_server, key, "/tracer/v1/traces")
    assert span_exporter.export(spans) is SpanExportResult.SUCCESS
    assert span_exporter.export(spans) is SpanExportResult.SUCCESS
    span_exporter.shutdown()
    assert len(events_of(client, auth)) == 2
    trace = client.get(f"/api/v1/traces/{trace_id_of(spans)}", headers=auth).json()
    assert len(trace["events"]) == 1


def otlp_json(spans: list[ReadableSpan]) -> bytes:
    """OTLP/JSON as the spec writes it: hex trace and span ids, lowerCamelCase keys."""
    document = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(document).encode()


@pytest.fixture
def http(live_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server, trust_env=False, timeout=10) as session:
        yield session


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_json_encoding_with_hex_ids(
    http: httpx.Client, client: TestClient, auth: Headers, key: str, compressed: bool
) -> None:
    spans = recorded(plumbline)
    body = otlp_json(spans)
    headers = {"content-type": "application/json", "X-Api-Key": key}
    if compressed:
        body, headers["content-encoding"] = gzip.compress(body), "gzip"
    response = http.post("/v1/traces", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    trace = client.get(f"/api/v1/traces/{trace_id_of(spans)}", headers=auth).json()
    assert trace["events"][0]["cohort"]["route"] == "summarize"


def test_rejected_spans_come_back_as_partial_success(
    http: httpx.Client, client: TestClient, auth: Headers, key: str
) -> None:
    def build(tracer: Tracer) -> None:
        plumbline(tracer)
        with tracer.start_as_current_span(
            "unknown", attributes={"plumbline.model": "support-bot", "plumbline.checkpoint": "v9"}
        ):
            pass
        with tracer.start_as_current_span("no model", attributes={"gen_ai.request.model": "x"}):
            pass

    body = encode_spans(recorded(build)).SerializeToString()
    headers = {"content-type": PROTOBUF, "authorization": f"Bearer {key}"}
    response = http.post("/v1/traces", content=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == PROTOBUF
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 2
    assert "no version 'v9'" in answer.partial_success.error_message
    assert "no Plumbline model" in answer.partial_success.error_message
    assert len(events_of(client, auth)) == 1


def test_spans_holding_what_postgresql_refuses_are_rejected_one_by_one(
    http: httpx.Client, client: TestClient, auth: Headers, key: str
) -> None:
    """The whole-batch scan only decides who takes the exact per-event checks: a NUL in the
    text and NaN in the metadata are refused per span, the clean span beside them is stored."""

    def build(tracer: Tracer) -> None:
        plumbline(tracer)
        base = {"plumbline.model": "support-bot", "plumbline.checkpoint": "v1"}
        with tracer.start_as_current_span("nul", attributes={**base, "input.value": "a\x00b"}):
            pass
        nan_metadata = {**base, "metadata": json.dumps({"score": float("nan")})}
        with tracer.start_as_current_span("nan", attributes=nan_metadata):
            pass

    body = encode_spans(recorded(build)).SerializeToString()
    headers = {"content-type": PROTOBUF, "authorization": f"Bearer {key}"}
    response = http.post("/v1/traces", content=body, headers=headers)
    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 2
    assert "NUL" in answer.partial_success.error_message
    assert "NaN" in answer.partial_success.error_message
    assert [event["input"] for event in events_of(client, auth)] == ["Summarize my ticket"]


def test_an_otlp_json_export_holding_an_emoji_cut_in_half_is_stored(
    http: httpx.Client, client: TestClient, auth: Headers, key: str
) -> None:
    """An SDK's attribute-length limit cuts JavaScript strings between an emoji's UTF-16
    halves, and the OTLP/JSON exporter escapes the lone half: valid JSON, which the protobuf
    message it is read into cannot hold. The span is kept with U+FFFD in its place (as a
    UTF-8 encoder writes it), and the spans beside it too."""

    def build(tracer: Tracer) -> None:
        plumbline(tracer)
        cut = {"plumbline.model": "support-bot", "plumbline.checkpoint": "v1"}
        with tracer.start_as_current_span("cut", attributes={**cut, "output.value": "Done! CUT"}):
            pass

    body = otlp_json(recorded(build)).replace(b"CUT", b"\\ud83d")
    response = http.post(
        "/v1/traces", content=body, headers={"content-type": "application/json", "X-Api-Key": key}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {}
    outputs = sorted(event["output"] for event in events_of(client, auth))
    assert outputs == ["Done! \ufffd", "Your printer is offline."]


def test_a_protobuf_export_holding_an_emoji_cut_in_half_is_stored(
    http: httpx.Client, client: TestClient, auth: Headers, key: str
) -> None:
    """protobuf.js, the JavaScript protobuf exporter's encoder, writes the lone half of a cut
    emoji as its three CESU-8 bytes, which no UTF-8 decoder reads: the span is kept with
    U+FFFD for them, and the spans beside it too; a body that is no request stays a 400."""

    def build(tracer: Tracer) -> None:
        plumbline(tracer)
        cut = {"plumbline.model": "support-bot", "plumbline.checkpoint": "v1"}
        with tracer.start_as_current_span("cut", attributes={**cut, "output.value": "Done! CUT"}):
            pass

    body = encode_spans(recorded(build)).SerializeToString()
    body = body.replace(b"CUT", b"\xed\xa0\xbd")  # U+D83D as protobuf.js writes it
    headers = {"content-type": PROTOBUF, "authorization": f"Bearer {key}"}
    response = http.post("/v1/traces", content=body, headers=headers)
    assert response.status_code == 200, response.content
    assert (
        ExportTraceServiceResponse.FromString(response.content).partial_success.rejected_spans == 0
    )
    outputs = sorted(event["output"] for event in events_of(client, auth))
    assert outputs == ["Done! \ufffd\ufffd\ufffd", "Your printer is offline."]
    assert http.post("/v1/traces", content=body[:-3], headers=headers).status_code == 400


def test_a_span_started_further_ahead_than_the_allowed_clock_skew_is_a_partial_success(
    http: httpx.Client, client: TestClient, auth: Headers, key: str
) -> None:
    """A host whose clock runs a day ahead: its span is refused and named in
    `partial_success`, the span beside it from a right clock is stored."""
    ahead_ns = time.time_ns() + 24 * 3600 * 10**9

    def build(tracer: Tracer) -> None:
        plumbline(tracer)
        attributes = {"plumbline.model": "support-bot", "plumbline.checkpoint": "v1"}
        span = tracer.start_span("wrong clock", attributes=attributes, start_time=ahead_ns)
        span.end(end_time=ahead_ns + 10**6)

    body = encode_spans(recorded(build)).SerializeToString()
    headers = {"content-type": PROTOBUF, "authorization": f"Bearer {key}"}
    response = http.post("/v1/traces", content=body, headers=headers)
    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert "ahead of the server's clock" in answer.partial_success.error_message
    assert [event["input"] for event in events_of(client, auth)] == ["Summarize my ticket"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [(PROTOBUF, b"\xff\xff not protobuf"), ("application/json", b'{"resourceSpans": 7')],
)
def test_undecodable_bodies_get_400_with_a_google_rpc_status(
    http: httpx.Client, key: str, content_type: str, body: bytes
) -> None:
    response = http.post(
        "/v1/traces", content=body, headers={"content-type": content_type, "api_key": key}
    )
    assert response.status_code == 400
    if content_type == PROTOBUF:
        status = status_pb2.Status.FromString(response.content)
        assert status.code == 3 and "protobuf" in status.message
    else:
        assert "not valid JSON" in response.json()["message"]


def test_a_body_too_large_once_inflated_is_413(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"max_body_bytes": 64 * 1024}))
    key = new_key(app, "acme")
    with TestClient(app) as client:
        response = client.post(
            "/v1/traces",
            content=gzip.compress(b"\0" * (200 * 1024)),
            headers={"content-type": PROTOBUF, "content-encoding": "gzip", "x-api-key": key},
        )
    assert response.status_code == 413
    assert "limit" in status_pb2.Status.FromString(response.content).message


def test_without_a_key_the_answer_is_401_as_a_status(http: httpx.Client) -> None:
    response = http.post("/v1/traces", content=b"", headers={"content-type": PROTOBUF})
    assert response.status_code == 401
    assert "API key" in status_pb2.Status.FromString(response.content).message


def test_full_gate_answers_503_with_retry_after(
    app: FastAPI, http: httpx.Client, client: TestClient, auth: Headers, key: str
) -> None:
    body = encode_spans(recorded(plumbline)).SerializeToString()
    headers = {"content-type": PROTOBUF, "authorization": f"Bearer {key}"}
    gate = ingest_gate(app)
    held = 0
    while gate.try_acquire():
        held += 1
    try:
        response = http.post("/v1/traces", content=body, headers=headers)
        assert response.status_code == 503
        assert response.headers["retry-after"] == str(gate.retry_after_s)
        assert "capacity" in status_pb2.Status.FromString(response.content).message
    finally:
        for _ in range(held):
            gate.release()
    assert events_of(client, auth) == []
    assert http.post("/v1/traces", content=body, headers=headers).status_code == 200
    assert len(events_of(client, auth)) == 1


def test_more_llm_spans_than_one_request_may_carry_is_413(
    settings: Settings, checkpoint: dict[str, Any]
) -> None:
    app = create_app(settings.model_copy(update={"max_events_per_request": 1}))
    key = new_key(app, "acme")
    body = encode_spans(recorded(plumbline) + recorded(genai)).SerializeToString()
    with TestClient(app) as client:
        response = client.post(
            "/v1/traces", content=body, headers={"content-type": PROTOBUF, "x-api-key": key}
        )
    assert response.status_code == 413
    assert "limit is 1" in status_pb2.Status.FromString(response.content).message
