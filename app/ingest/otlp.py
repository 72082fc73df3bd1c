"""Pure half of the OTLP/HTTP trace receiver: decode export bodies, map LLM spans to events.

Nothing here touches the database or the web framework, so the route stays a thin shell and
the mapping is tested against the wire bytes the real OpenTelemetry SDK produces.

Decisions worth knowing before changing anything:

* Which spans become events. A span is an LLM span when ``openinference.span.kind`` or
  ``gen_ai.span.kind`` is ``LLM`` (any case); when it has no kind, when
  ``gen_ai.operation.name`` is a generation (chat, text_completion, generate_content) or,
  lacking an operation, when it carries ``gen_ai.request.model`` and is no OpenLLMetry
  embedding or rerank call (``llm.request.type``); and whenever it carries a
  ``plumbline.model`` attribute. An LLM span with another LLM span below it in the batch is
  treated as context instead: it is either an app span tagged ``plumbline.model`` around an
  instrumented call, or a stacked instrumentor (LangChain over OpenAI) describing the same
  call, and turning both into events would count that call twice.
* Context. All spans hand down ``plumbline.*`` keys, ``metadata``, ``session.id`` (traceAI:
  ``gen_ai.conversation.id``), ``user.id``, ``tag.tags`` and ``http.route`` to their
  descendants in the same trace and the same export request. The nearest ancestor wins and
  the span's own attributes win over every ancestor; on one span an explicit ``plumbline.*``
  attribute wins over the same key in its metadata. The resource's attributes are the
  outermost layer, so a deployment can set ``OTEL_RESOURCE_ATTRIBUTES=plumbline.model=...``
  once. A parent exported in a later request is not seen.
* Model versus checkpoint. ``model`` is the Plumbline model: ``plumbline.model``, else
  ``model`` in the metadata. The model name the LLM reports (``llm.model_name``,
  ``gen_ai.response.model``, ``gen_ai.request.model``) becomes ``checkpoint_version`` only
  when no ``plumbline.checkpoint`` is given, because apps serving a fine-tune usually report
  the served checkpoint (``ft:gpt-4o:acme:v7``) as the model name. That name never becomes
  ``model``: an LLM span without a Plumbline model is rejected with a reason instead of being
  filed under a model nobody registered.
* Explicit beats derived wherever each was set: ``plumbline.route`` over ``http.route``,
  ``plumbline.prompt_version`` over the prompt template version.
* Shadow answers. ``plumbline.shadow_of`` (the served request's trace id) marks a span as the
  candidate answering that request off the serving path; like every ``plumbline.*`` key it is
  handed down to descendants, so it may sit on the shadow call's wrapper span.
* ``google.rpc.Status`` is declared here in a private descriptor pool because its generated
  module ships with googleapis-common-protos, which only the dev dependencies install.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
JSON_CONTENT_TYPE = "application/json"


class OtlpRequestError(ValueError):
    """A body the receiver refuses; ``http_status`` is the answer OTLP/HTTP prescribes."""

    http_status: ClassVar[int] = 400


class DecodeError(OtlpRequestError):
    """The body is not a readable OTLP trace export; the message is meant for the sender."""


class UnsupportedMediaType(DecodeError):
    """A Content-Type or Content-Encoding this receiver does not speak."""

    http_status = 415


class PayloadTooLarge(OtlpRequestError):
    """The body exceeds the cap once decompressed, which is what refuses gzip bombs."""

    http_status = 413


@dataclass(frozen=True, slots=True)
class SpanRejection:
    """An LLM span that could not become an event: reported back, never dropped silently."""

    trace_id: str
    span_id: str
    reason: str


# --- Decoding -------------------------------------------------------------------------------

_INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


def decode_export_request(
    body: bytes, content_type: str, content_encoding: str | None, max_decompressed_bytes: int
) -> ExportTraceServiceRequest:
    """Parse an OTLP/HTTP trace export body in either encoding, compressed or not.

    Raises UnsupportedMediaType, PayloadTooLarge or DecodeError, each carrying a message fit
    to send back to the client.
    """
    media_type = _media_type(content_type)
    if media_type not in (PROTOBUF_CONTENT_TYPE, JSON_CONTENT_TYPE):
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}: "
            f"send {PROTOBUF_CONTENT_TYPE} or {JSON_CONTENT_TYPE}"
        )
    payload = _decompress(body, content_encoding, max_decompressed_bytes)
    if media_type == JSON_CONTENT_TYPE:
        return _parse_json(payload)
    return _parse_protobuf(payload)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    encoding = (content_encoding or "").strip().lower() or "identity"
    if encoding == "identity":
        if len(body) > limit:
            raise PayloadTooLarge(f"body exceeds the {limit}-byte limit")
        return body
    wbits = _INFLATE_WBITS.get(encoding)
    if wbits is None:
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {content_encoding!r}: use gzip, deflate or none"
        )
    return _inflate(body, wbits, encoding, limit)


def _inflate(body: bytes, wbits: int, encoding: str, limit: int) -> bytes:
    """Inflate member after member (gzip allows concatenated members), never past ``limit``.

    Asking zlib for one byte more than the remaining budget is what detects a bomb without
    ever holding more than the budget in memory.
    """
    members: list[bytes] = []
    budget = limit
    pending = body
    while pending:
        inflater = zlib.decompressobj(wbits)
        try:
            member = inflater.decompress(pending, budget + 1)
        except zlib.error as exc:
            raise DecodeError(f"body is not valid {encoding} data: {exc}") from exc
        if len(member) > budget:
            raise PayloadTooLarge(f"body inflates past the {limit}-byte limit")
        if not inflater.eof:
            raise DecodeError(f"{encoding} body is truncated")
        members.append(member)
        budget -= len(member)
        pending = inflater.unused_data
    return b"".join(members)


def _parse_protobuf(payload: bytes) -> ExportTraceServiceRequest:
    try:
        return ExportTraceServiceRequest.FromString(payload)
    except ProtobufDecodeError as exc:
        repaired = _with_utf8_repaired(payload)
        if repaired is None:
            raise DecodeError(f"body is not a protobuf ExportTraceServiceRequest: {exc}") from exc
        return repaired


def _with_utf8_repaired(payload: bytes) -> ExportTraceServiceRequest | None:
    """The request, its string fields' invalid UTF-8 replaced by U+FFFD; None when the body is
    not a request even so. protobuf.js (the OpenTelemetry JavaScript protobuf exporter's
    encoder) writes a lone UTF-16 surrogate, half an emoji cut by an attribute-length limit
    or the app's own slice, as its three CESU-8 bytes, which no UTF-8 decoder accepts: the
    whole export was refused, every span of it lost (an exporter does not retry a 400). Read
    with every string field as bytes (`_LenientRequest`), mended, then read again."""
    try:
        lenient = _LenientRequest.FromString(payload)
    except ProtobufDecodeError:
        return None
    _mend_strings(lenient)
    return ExportTraceServiceRequest.FromString(lenient.SerializeToString())


def _string_fields(root: Descriptor) -> frozenset[str]:
    """Full names of the string fields of `root` and of every message type it holds."""
    strings: set[str] = set()
    seen = {root.full_name}
    pending = [root]
    while pending:
        for field in pending.pop().fields:
            if field.type == FieldDescriptor.TYPE_STRING:
                strings.add(field.full_name)
            elif field.message_type is not None and field.message_type.full_name not in seen:
                seen.add(field.message_type.full_name)
                pending.append(field.message_type)
    return frozenset(strings)


_STRING_FIELDS = _string_fields(ExportTraceServiceRequest.DESCRIPTOR)


def _lenient_request_class() -> type[Message]:
    """ExportTraceServiceRequest with every string field declared bytes (the same wire type,
    so any body the real class reads, this one reads the same), in a private pool."""
    files: dict[str, FileDescriptor] = {}

    def add(file: FileDescriptor) -> None:
        for dependency in file.dependencies:
            add(dependency)
        files.setdefault(file.name, file)

    add(ExportTraceServiceRequest.DESCRIPTOR.file)
    pool = descriptor_pool.DescriptorPool()
    for file in files.values():
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pending = list(proto.message_type)
        while pending:
            message = pending.pop()
            pending.extend(message.nested_type)
            for field in message.field:
                if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
                    field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
        pool.Add(proto)
    name = ExportTraceServiceRequest.DESCRIPTOR.full_name
    lenient: type[Message] = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    return lenient


_LenientRequest = _lenient_request_class()


def _mend_strings(message: Message) -> None:
    """Every string field (bytes here) of the lenient message made valid UTF-8 in place."""
    for field, value in message.ListFields():
        if field.message_type is not None:
            for item in value if field.is_repeated else [value]:
                _mend_strings(item)
        elif field.full_name in _STRING_FIELDS:
            if field.is_repeated:
                value[:] = [item.decode("utf-8", "replace").encode() for item in value]
            else:
                setattr(message, field.name, value.decode("utf-8", "replace").encode())


def _parse_json(payload: bytes) -> ExportTraceServiceRequest:
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise DecodeError("body must be a JSON object holding an ExportTraceServiceRequest")
    _hex_ids_to_base64(document)
    if _SURROGATE_ESCAPE.search(payload) is not None:
        try:
            document = _without_lone_surrogates(document)
        except RecursionError as exc:
            raise DecodeError("body is nested too deeply") from exc
    try:
        # OTLP/JSON receivers must ignore unknown fields, so newer senders stay readable.
        return json_format.ParseDict(
            document, ExportTraceServiceRequest(), ignore_unknown_fields=True
        )
    except json_format.ParseError as exc:
        raise DecodeError(f"body is not an OTLP/JSON ExportTraceServiceRequest: {exc}") from exc


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """OTLP/JSON spells span and link ids in hex, json_format reads bytes fields as base64.

    Span events carry no ids, so spans and their links are the only places to rewrite.
    """
    for resource_spans in _json_children(document, "resourceSpans", "resource_spans"):
        for scope_spans in _json_children(resource_spans, "scopeSpans", "scope_spans"):
            for span in _json_children(scope_spans, "spans"):
                _rewrite_ids(span)
                for link in _json_children(span, "links"):
                    _rewrite_ids(link)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
"""What a JSON body needs to carry a lone UTF-16 surrogate (raw bytes cannot: they are no
UTF-8); escaped surrogate pairs (emoji written by an ASCII-only encoder) match too."""


def _without_lone_surrogates(value: Any) -> Any:
    """The JSON value with every lone UTF-16 surrogate replaced by U+FFFD. JSON allows the
    escape and JavaScript exporters send it (an SDK's attribute-length limit cuts a string
    between an emoji's halves); a protobuf string cannot hold it, so the whole export was
    refused, every span of it lost (an exporter does not retry a 400). U+FFFD is what a
    UTF-8 encoder writes for it (WHATWG's, JavaScript's TextEncoder); the rest of the span,
    its call counted in every signal, is kept."""
    if isinstance(value, str):
        return _repaired(value)
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_repaired(k): _without_lone_surrogates(v) for k, v in value.items()}
    return value


def _repaired(text: str) -> str:
    if text.isascii():
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _json_children(container: dict[str, Any], *keys: str) -> Iterable[dict[str, Any]]:
    """Objects listed under any spelling of a field; json_format reports malformed ones."""
    for key in keys:
        items = container.get(key)
        if isinstance(items, list):
            yield from (item for item in items if isinstance(item, dict))


def _rewrite_ids(holder: dict[str, Any]) -> None:
    for key in _ID_FIELDS:
        value = holder.get(key)
        if isinstance(value, str):
            holder[key] = _hex_to_base64(key, value)


def _hex_to_base64(key: str, value: str) -> str:
    try:
        raw = binascii.a2b_hex(value)
    except ValueError as exc:
        raise DecodeError(f"{key} {value[:64]!r} is not hex (OTLP/JSON ids are hex)") from exc
    return base64.b64encode(raw).decode("ascii")


# --- Responses ------------------------------------------------------------------------------

_INVALID_ARGUMENT = 3  # google.rpc.Code for a request that is itself at fault


def _status_message_class() -> type[Message]:
    """Declare google.rpc.Status with the same package, names and field numbers as upstream.

    ``details`` (repeated Any) is left out: we never send any, and leaving it out changes
    neither encoding of what we do send.
    """
    field = descriptor_pb2.FieldDescriptorProto
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="plumbline/google_rpc_status.proto", package="google.rpc", syntax="proto3"
    )
    status = file_proto.message_type.add(name="Status")
    status.field.add(
        name="code", json_name="code", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL
    )
    status.field.add(
        name="message",
        json_name="message",
        number=2,
        type=field.TYPE_STRING,
        label=field.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    message_class: type[Message] = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("google.rpc.Status")
    )
    return message_class


_RpcStatus = _status_message_class()


def response_content_type(request_content_type: str | None) -> str:
    """OTLP/HTTP answers in the request's encoding; anything but JSON gets protobuf."""
    if _media_type(request_content_type) == JSON_CONTENT_TYPE:
        return JSON_CONTENT_TYPE
    return PROTOBUF_CONTENT_TYPE


def status_body(message: str, content_type: str | None) -> bytes:
    """The google.rpc.Status body OTLP/HTTP sends with a 4xx, in the request's encoding."""
    return _encode(_RpcStatus(code=_INVALID_ARGUMENT, message=message), content_type)


def export_response(rejected: int, error_message: str, content_type: str | None) -> bytes:
    """ExportTraceServiceResponse: empty on full success, ``partial_success`` otherwise."""
    response = ExportTraceServiceResponse()
    if rejected > 0:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = error_message
    return _encode(response, content_type)


def _encode(message: Message, content_type: str | None) -> bytes:
    if response_content_type(content_type) == JSON_CONTENT_TYPE:
        return json_format.MessageToJson(message, indent=None).encode()
    serialized: bytes = message.SerializeToString()
    return serialized


# --- Attribute values -----------------------------------------------------------------------


def _flatten(key_values: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP attributes as a plain dict; a repeated key keeps its last value."""
    flat: dict[str, Any] = {}
    for key_value in key_values:
        value = key_value.value
        # Most attributes are non-empty strings, and a oneof holding a non-empty string
        # holds nothing else: one read of it answers where WhichOneof + getattr took two.
        text = value.string_value
        if text:
            flat[key_value.key] = text
            continue
        kind = value.WhichOneof("value")
        # The other scalars are read here without another call.
        flat[key_value.key] = getattr(value, kind) if kind in _SCALARS else _any_value(value)
    return flat


_SCALARS = frozenset({"string_value", "bool_value", "int_value", "double_value"})


def _any_value(value: AnyValue) -> Any:
    """Plain Python for an AnyValue; bytes become base64 text so events stay JSON-safe."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _flatten(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None if kind is None else getattr(value, kind)


def _as_text(value: Any) -> str | None:
    """Identifiers may arrive as numbers (``"prompt_version": 3`` in metadata JSON)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


_TRUE_TEXT = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE_TEXT = frozenset({"0", "off", "f", "false", "n", "no"})


def _as_bool(value: Any) -> bool | None:
    """A flag spelled any way a REST event may spell it (pydantic's lax bool: 0/1 and the
    words above, any case), so one call carries the same flag over both paths; resource
    attributes set through OTEL_RESOURCE_ATTRIBUTES are always strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return value == 1
    if isinstance(value, str):
        text = value.lower()
        if text in _TRUE_TEXT or text in _FALSE_TEXT:
            return text in _TRUE_TEXT
    return None


def _as_float(value: Any) -> float | None:
    """A number, or its text (resource attributes); NaN and infinities are not probabilities."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _as_count(value: Any) -> int | None:
    """Some JavaScript emitters send whole numbers as doubles."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _as_cohort_value(value: Any) -> str | int | float | bool | None:
    """A cohort value as REST takes it: text, or a number or flag that ingest writes as text
    (app/ingest/schemas.ScalarText: a whole float as its integer), so a value sent over both
    is one cohort."""
    if isinstance(value, str):
        return value or None
    return value if isinstance(value, int | float | bool) else None


def _as_checkpoint(value: Any) -> int | str | None:
    """An integer names a checkpoint by id, anything else by version."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _as_text(value)


def _as_label(value: Any) -> str | int | float | bool | None:
    """A label may be a class name, a class index or a flag; any scalar is kept as sent."""
    return value if isinstance(value, str | int | float | bool) else None


def _as_tags(value: Any) -> list[str] | None:
    items = value if isinstance(value, list) else [value]
    tags = [tag for tag in map(_as_text, items) if tag is not None]
    return tags or None


def _loads(text: str) -> Any:
    """JSON embedded in an attribute, or None when the attribute is plain text."""
    stripped = text.lstrip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):
        return None


_Coerce = Callable[[Any], Any]
_FactTable = tuple[tuple[str, tuple[str, ...], _Coerce], ...]


def _pick_facts(attributes: Mapping[str, Any], table: _FactTable) -> dict[str, Any]:
    """For each fact, the first of its attribute keys whose value has the right type."""
    facts: dict[str, Any] = {}
    for fact, keys, coerce in table:
        for key in keys:
            raw = attributes.get(key)
            value = None if raw is None else coerce(raw)
            if value is not None:
                facts[fact] = value
                break
    return facts


# --- Context facts --------------------------------------------------------------------------

# Facts are kept under flat canonical keys so that merging layers with dict.update resolves
# every key separately: a child's metadata can override one cohort dimension of its parent's.
_COHORT_PREFIX = "cohort."
_UNMAPPED_PREFIX = "unmapped."  # metadata Plumbline has no field for, kept in attributes
_PLUMBLINE_PREFIX = "plumbline."
_PLUMBLINE_FIELDS: dict[str, _Coerce] = {
    "model": _as_text,
    "checkpoint": _as_checkpoint,
    "route": _as_cohort_value,
    "user_segment": _as_cohort_value,
    "prompt_version": _as_cohort_value,
    "fallback": _as_bool,
    "refusal": _as_bool,
    "eval_passed": _as_bool,
    "should_refuse": _as_bool,
    "probability": _as_float,
    "label": _as_label,
    "shadow_of": _as_text,
}
_SHARED_FACTS: _FactTable = (
    ("session_id", ("session.id", "gen_ai.conversation.id"), _as_text),
    ("user_id", ("user.id",), _as_text),
    ("tags", ("tag.tags",), _as_tags),
    ("http_route", ("http.route",), _as_text),
)


def _context_facts(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """What one span (or resource) says about the call, under canonical keys."""
    facts = _pick_facts(attributes, _SHARED_FACTS)
    metadata = attributes.get("metadata")
    if metadata is not None:
        _add_metadata_facts(facts, metadata)
    for key, value in attributes.items():
        if key.startswith(_PLUMBLINE_PREFIX):
            _add_plumbline_fact(facts, key, key[len(_PLUMBLINE_PREFIX) :], value)
    return facts


def _add_metadata_facts(facts: dict[str, Any], metadata: Any) -> None:
    """Metadata is a JSON object (or a kvlist); Plumbline keys may drop the prefix there."""
    parsed = _loads(metadata) if isinstance(metadata, str) else metadata
    if not isinstance(parsed, dict):
        facts[_UNMAPPED_PREFIX + "metadata"] = metadata
        return
    for key, value in parsed.items():
        name = key.removeprefix(_PLUMBLINE_PREFIX)
        if name == "cohort" and isinstance(value, dict):
            for dimension, dimension_value in value.items():
                _add_plumbline_fact(
                    facts, f"{key}.{dimension}", f"cohort.{dimension}", dimension_value
                )
        else:
            _add_plumbline_fact(facts, key, name, value)


def _add_plumbline_fact(facts: dict[str, Any], key: str, name: str, value: Any) -> None:
    """File a Plumbline field under its canonical name; unknown or mistyped ones stay visible."""
    is_dimension = name.startswith(_COHORT_PREFIX) and len(name) > len(_COHORT_PREFIX)
    coerce = _as_cohort_value if is_dimension else _PLUMBLINE_FIELDS.get(name)
    coerced = None if coerce is None else coerce(value)
    if coerced is None:
        facts[_UNMAPPED_PREFIX + key] = value
    else:
        facts[name] = coerced


# --- Spans of one request -------------------------------------------------------------------

_SpanKey = bytes | tuple[bytes, bytes]


@dataclass(slots=True, eq=False)
class _Batch:
    """The spans of one request as a few dicts of plain values keyed by span.

    Not an object per span: the collector counts every tracked object a request allocates
    and the spans live until the last event is built, so a node, a key tuple and a kept
    protobuf wrapper per span each paid in collections (bench/otlp_phases.py, 2026-12-01:
    the map's young-generation collections 155 -> 112, their CPU 26 -> 13 ms). A key is
    the trace id and span id concatenated when the trace id has OTLP's 16 bytes (so the
    concatenation splits one way only); a malformed trace id keeps the pair, which never
    equals a concatenation. Only LLM spans keep their protobuf wrapper."""

    attributes: dict[_SpanKey, dict[str, Any]]  # in the order spans are first seen
    parents: dict[_SpanKey, _SpanKey | None]
    llm_spans: dict[_SpanKey, tuple[Span, bytes, bytes, dict[str, Any]]]  # + ids, resource
    contexts: dict[_SpanKey, dict[str, Any]]  # own facts over the ancestors', once computed


def _index_spans(request: ExportTraceServiceRequest) -> _Batch:
    batch = _Batch({}, {}, {}, {})
    attributes_of, parents, llm_spans = batch.attributes, batch.parents, batch.llm_spans
    for resource_spans in request.resource_spans:
        resource_facts = _context_facts(_flatten(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                trace_id = span.trace_id
                span_id = span.span_id
                parent_id = span.parent_span_id
                if len(trace_id) == 16:
                    key: _SpanKey = trace_id + span_id
                    parent = trace_id + parent_id if parent_id else None
                else:
                    key = (trace_id, span_id)
                    parent = (trace_id, parent_id) if parent_id else None
                attributes = _flatten(span.attributes)
                # A span sent twice in one request counts once, as its last copy.
                attributes_of[key] = attributes
                parents[key] = parent
                if _is_llm_span(attributes):
                    llm_spans[key] = (span, trace_id, span_id, resource_facts)
                else:
                    llm_spans.pop(key, None)
    return batch


_GENERATION_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
_OTHER_REQUEST_TYPES = frozenset({"embedding", "rerank"})
"""OpenLLMetry's `llm.request.type` values of calls that generate no answer (its others:
chat, completion, unknown). Its spans carry no `gen_ai.operation.name`, but an embedding or
rerank call names its `gen_ai.request.model` like a chat call does."""


def _is_llm_span(attributes: Mapping[str, Any]) -> bool:
    if _PLUMBLINE_PREFIX + "model" in attributes:
        return True
    kind = attributes.get("openinference.span.kind", attributes.get("gen_ai.span.kind"))
    if isinstance(kind, str):
        return kind.upper() == "LLM"
    operation = attributes.get("gen_ai.operation.name")
    if isinstance(operation, str):
        return operation.lower() in _GENERATION_OPERATIONS
    request_type = attributes.get("llm.request.type")
    if isinstance(request_type, str) and request_type.lower() in _OTHER_REQUEST_TYPES:
        return False
    return "gen_ai.request.model" in attributes


def _keys_above(batch: _Batch) -> set[_SpanKey]:
    """Every span with an LLM span below it; each ancestor is visited once overall."""
    parents = batch.parents
    above: set[_SpanKey] = set()
    for key in batch.llm_spans:
        parent = parents[key]
        while parent is not None and parent in parents and parent not in above:
            if parent == key:  # a span naming itself as parent is not its own wrapper
                break
            above.add(parent)
            parent = parents[parent]
    return above


def _chain_context(key: _SpanKey, batch: _Batch) -> dict[str, Any]:
    """The span's facts over its ancestors' (nearest wins), memoized along the chain."""
    parents, contexts = batch.parents, batch.contexts
    pending: list[_SpanKey] = []
    seen: set[_SpanKey] = set()  # a parent_span_id cycle must not loop forever
    current: _SpanKey | None = key
    while current is not None and current not in contexts and current not in seen:
        pending.append(current)
        seen.add(current)
        parent = parents[current]
        current = parent if parent in parents else None
    inherited = contexts.get(current, {}) if current is not None else {}
    for chain_key in reversed(pending):
        inherited = contexts[chain_key] = {
            **inherited,
            **_context_facts(batch.attributes[chain_key]),
        }
    return inherited


def spans_to_events(
    request: ExportTraceServiceRequest,
) -> tuple[list[dict[str, Any]], list[SpanRejection]]:
    """Map the LLM spans of one export request to events for /api/v1/events.

    Event keys: trace_id, span_id, timestamp (UTC datetime), model, checkpoint_version (str)
    or checkpoint_id (int) when known, cohort, input, output, eval_passed, fallback, refusal,
    should_refuse, latency_ms, input_tokens, output_tokens, probability, label, attributes.
    Each LLM span yields one event or one rejection, unless an LLM span below it describes
    the same call (see the module docstring); every other span only lends context.
    """
    batch = _index_spans(request)
    llm_spans = batch.llm_spans
    above_llm_spans = _keys_above(batch)
    events: list[dict[str, Any]] = []
    rejections: list[SpanRejection] = []
    for key, attributes in batch.attributes.items():  # events in the order spans were sent
        llm = llm_spans.get(key)
        if llm is None or key in above_llm_spans:
            continue
        span, trace_id, span_id, resource_facts = llm
        context = _chain_context(key, batch)  # memoized in the batch: never mutated
        facts = {**resource_facts, **context} if resource_facts else context
        outcome = _to_event(span, trace_id, span_id, attributes, facts)
        if isinstance(outcome, SpanRejection):
            rejections.append(outcome)
        else:
            events.append(outcome)
    return events, rejections


# --- One event ------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUS_NAMES = {1: "OK", 2: "ERROR"}
_NO_MODEL = (
    "no Plumbline model: set plumbline.model on the span, an ancestor span or the resource, "
    "or model in its metadata"
)
_LLM_FACTS: _FactTable = (
    ("model_name", ("llm.model_name", "gen_ai.response.model", "gen_ai.request.model"), _as_text),
    (
        "prompt_template_version",
        ("llm.prompt_template.version", "gen_ai.prompt.template.version"),
        _as_cohort_value,
    ),
    (
        "input_tokens",
        ("llm.token_count.prompt", "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        _as_count,
    ),
    (
        "output_tokens",
        (
            "llm.token_count.completion",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
        ),
        _as_count,
    ),
    (
        "total_tokens",
        ("llm.token_count.total", "gen_ai.usage.total_tokens", "llm.usage.total_tokens"),
        _as_count,
    ),
)
"""Each fact's keys in every GenAI convention still emitted: OpenInference's, the OTel GenAI
semantic conventions' from 1.27 on (input/output tokens), and up to 1.26 as OpenLLMetry
(Traceloop) still writes them (prompt/completion tokens, `llm.usage.total_tokens`)."""


def _to_event(
    span: Span,
    trace_id: bytes,
    span_id: bytes,
    attributes: dict[str, Any],
    facts: Mapping[str, Any],
) -> dict[str, Any] | SpanRejection:
    start = span.start_time_unix_nano
    problem = _identity_problem(trace_id, span_id, start) or (
        None if "model" in facts else _NO_MODEL
    )
    if problem is not None:
        return SpanRejection(trace_id.hex(), span_id.hex(), problem)
    llm = _pick_facts(attributes, _LLM_FACTS)
    indexed = _indexed_messages(attributes)
    texts = _with_event_messages(span, attributes)
    cohort, unmapped = _prefixed_facts(facts)
    end = span.end_time_unix_nano
    return {
        "trace_id": trace_id.hex(),
        "span_id": span_id.hex(),
        "timestamp": _EPOCH + timedelta(microseconds=start // 1000),
        "model": facts["model"],
        **_checkpoint(facts.get("checkpoint", llm.get("model_name"))),
        "cohort": _cohort(cohort, facts, llm),
        "input": _input_text(texts, indexed),
        "output": _output_text(texts, indexed),
        "eval_passed": facts.get("eval_passed"),
        "fallback": facts.get("fallback"),
        "refusal": facts.get("refusal"),
        "should_refuse": facts.get("should_refuse"),
        "latency_ms": (end - start) / 1e6 if end >= start else None,
        "input_tokens": llm.get("input_tokens"),
        "output_tokens": llm.get("output_tokens"),
        "probability": facts.get("probability"),
        "label": facts.get("label"),
        "attributes": _event_attributes(span, facts, llm, unmapped),
        "shadow_of": facts.get("shadow_of"),
    }


_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


def _identity_problem(trace_id: bytes, span_id: bytes, start: int) -> str | None:
    """Events are keyed by trace and span id and placed in time by the start."""
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID:
        return "trace_id must be 16 bytes, not all zero"
    if len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
        return "span_id must be 8 bytes, not all zero"
    if start == 0:
        return "span has no start time"
    return None


def _checkpoint(checkpoint: int | str | None) -> dict[str, int | str]:
    if isinstance(checkpoint, int):
        return {"checkpoint_id": checkpoint}
    if isinstance(checkpoint, str):
        return {"checkpoint_version": checkpoint}
    return {}


def _prefixed_facts(facts: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(cohort dimensions, unmapped metadata) of the facts, prefixes removed, in one pass.
    Only these two kinds of fact name hold a dot, so every other fact costs one test."""
    cohort: dict[str, Any] = {}
    unmapped: dict[str, Any] = {}
    for key, value in facts.items():
        if "." not in key:
            continue
        if key.startswith(_COHORT_PREFIX):
            cohort[key[len(_COHORT_PREFIX) :]] = value
        elif key.startswith(_UNMAPPED_PREFIX):
            unmapped[key[len(_UNMAPPED_PREFIX) :]] = value
    return cohort, unmapped


def _cohort(
    dimensions: dict[str, Any], facts: Mapping[str, Any], llm: Mapping[str, Any]
) -> dict[str, Any]:
    """The named dimensions, where known, over the ``cohort.*`` ones (``dimensions``)."""
    route = facts.get("route", facts.get("http_route"))
    if route is not None:
        dimensions["route"] = route
    prompt_version = facts.get("prompt_version", llm.get("prompt_template_version"))
    if prompt_version is not None:
        dimensions["prompt_version"] = prompt_version
    user_segment = facts.get("user_segment")
    if user_segment is not None:
        dimensions["user_segment"] = user_segment
    return dimensions


def _event_attributes(
    span: Span, facts: Mapping[str, Any], llm: Mapping[str, Any], unmapped: dict[str, Any]
) -> dict[str, Any]:
    """What the event keeps of the call beside its fields, absent values left out, keys in
    this order: session_id, user_id, tags, the LLM facts, span_name, status_code,
    status_message, metadata, and last total_tokens when only its two parts were sent.
    Built key by key: a dict of every candidate filtered afterwards cost twice as much."""
    attributes: dict[str, Any] = {}
    for name in _SHARED_ATTRIBUTES:
        value = facts.get(name)
        if value is not None:
            attributes[name] = value
    attributes.update(llm)  # _pick_facts keeps no None
    attributes["span_name"] = span.name
    status = span.status
    attributes["status_code"] = _STATUS_NAMES.get(status.code, "UNSET")
    message = status.message
    if message:
        attributes["status_message"] = message
    if unmapped:
        attributes["metadata"] = unmapped
    if "total_tokens" not in llm and "input_tokens" in llm and "output_tokens" in llm:
        attributes["total_tokens"] = llm["input_tokens"] + llm["output_tokens"]
    return attributes


_SHARED_ATTRIBUTES = ("session_id", "user_id", "tags")


# --- Input and output text ------------------------------------------------------------------

_USER_ROLES = ("user", "human")
_ASSISTANT_ROLES = ("assistant", "model", "ai")
_TEXT_PART_TYPES = ("text", "input_text", "output_text")


def _input_text(attributes: Mapping[str, Any], indexed: _IndexedMessages) -> str | None:
    """The user's turn: the last user message, else ``input.value`` unwrapped if a request."""
    messages = _messages(attributes, indexed, _INPUT_MESSAGES)
    from_messages = _role_text(messages, _USER_ROLES, -1)
    return from_messages or _value_text(attributes.get("input.value"), _request_text)


def _output_text(attributes: Mapping[str, Any], indexed: _IndexedMessages) -> str | None:
    """The model's answer: the first assistant message, else ``output.value`` unwrapped."""
    messages = _messages(attributes, indexed, _OUTPUT_MESSAGES)
    from_messages = _role_text(messages, _ASSISTANT_ROLES, 0)
    return from_messages or _value_text(attributes.get("output.value"), _response_text)


# Newest convention first; ``gen_ai.prompt`` / ``gen_ai.completion`` are the GenAI
# semantic conventions up to 1.26 (indexed, as OpenLLMetry writes them, or a JSON list).
_INPUT_MESSAGES = ("llm.input_messages", "gen_ai.input.messages", "gen_ai.prompt")
_OUTPUT_MESSAGES = ("llm.output_messages", "gen_ai.output.messages", "gen_ai.completion")
# ``<name>.<i>.message.role`` / ``.message.content``; the ``message.`` segment is optional
# because some GenAI emitters write ``<name>.<i>.role``.
_INDEXED_MESSAGE_KEY = re.compile(
    r"(llm\.input_messages|llm\.output_messages|gen_ai\.input\.messages"
    r"|gen_ai\.output\.messages|gen_ai\.prompt|gen_ai\.completion)"
    r"\.(\d+)\.(?:message\.)?(role|content)"
)
_IndexedMessages = dict[str, list[dict[str, Any]]]


# Span events that carry messages: the GenAI semantic conventions 1.26-1.27 put the whole
# prompt and completion in one event each (event -> its attribute, a JSON list, the same as
# the span attribute of that name); 1.28-1.36 one event per message, its body as JSON in
# `gen_ai.event.content` (Azure AI Inference, Semantic Kernel) or as the event's attributes.
_CONTENT_EVENTS = {
    "gen_ai.content.prompt": "gen_ai.prompt",
    "gen_ai.content.completion": "gen_ai.completion",
}
_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_CHOICE_EVENT = "gen_ai.choice"


def _with_event_messages(span: Span, attributes: dict[str, Any]) -> dict[str, Any]:
    """The span's attributes and, under `gen_ai.prompt` / `gen_ai.completion` (where
    _INPUT_MESSAGES and _OUTPUT_MESSAGES look last), the messages its span events carry.
    The span's own attributes win; a span without such events is returned as it is."""
    events = span.events
    if not events:  # most spans: no dict or list is built for them
        return attributes
    found: dict[str, Any] = {}
    prompt: list[dict[str, Any]] = []
    completion: list[dict[str, Any]] = []
    for event in events:
        name = event.name
        if name in _CONTENT_EVENTS:
            key = _CONTENT_EVENTS[name]
            value = _flatten(event.attributes).get(key)
            if value is not None:
                found.setdefault(key, value)
        elif name in _MESSAGE_EVENTS:
            prompt.append({**_event_body(event.attributes), "role": _MESSAGE_EVENTS[name]})
        elif name == _CHOICE_EVENT:
            message = _event_body(event.attributes).get("message")
            if isinstance(message, dict):
                completion.append({"role": "assistant", **message})
    if prompt:
        found.setdefault("gen_ai.prompt", prompt)
    if completion:
        found.setdefault("gen_ai.completion", completion)
    return {**found, **attributes} if found else attributes


def _event_body(key_values: Iterable[KeyValue]) -> dict[str, Any]:
    """A message event's body: its `gen_ai.event.content` JSON, else its attributes."""
    flat = _flatten(key_values)
    content = flat.get("gen_ai.event.content")
    body = _loads(content) if isinstance(content, str) else None
    return body if isinstance(body, dict) else flat


def _messages(
    attributes: Mapping[str, Any], indexed: _IndexedMessages, names: tuple[str, ...]
) -> list[Any]:
    """Messages in whichever form the instrumentor wrote: indexed attributes or JSON."""
    for name in names:
        messages = indexed.get(name) or _json_list(attributes.get(name))
        if messages:
            return messages
    return []


def _indexed_messages(attributes: Mapping[str, Any]) -> _IndexedMessages:
    """Every message list spelled as indexed attributes, rebuilt into message dicts in one
    pass over the span's attributes (name -> messages in index order)."""
    by_name: dict[str, dict[int, dict[str, Any]]] = {}
    for key, value in attributes.items():
        # Every name _INDEXED_MESSAGE_KEY matches holds one of these: substring tests, a
        # tenth of the cost of any() over a tuple of them, in a loop over every attribute.
        if not ("messages." in key or "gen_ai.prompt." in key or "gen_ai.completion." in key):
            continue
        slot = _message_slot(key)
        if slot is not None:
            name, index, field = slot
            by_name.setdefault(name, {}).setdefault(index, {})[field] = value
    return {name: [found[i] for i in sorted(found)] for name, found in by_name.items()}


@functools.lru_cache(maxsize=4096)
def _message_slot(key: str) -> tuple[str, int, str] | None:
    """(list name, index, role or content) of an indexed message key. Every span of an
    instrumentor repeats the same few keys, so each is parsed once (bounded: a sender
    inventing keys only evicts)."""
    match = _INDEXED_MESSAGE_KEY.fullmatch(key)
    if match is None:
        return None
    name, index, field = match.groups()
    return name, int(index), field


def _json_list(value: Any) -> list[Any]:
    parsed = _loads(value) if isinstance(value, str) else value
    return parsed if isinstance(parsed, list) else []


def _role_text(messages: list[Any], roles: tuple[str, ...], position: int) -> str | None:
    """Text of the first (0) or last (-1) message whose role is one of ``roles``."""
    matching = [
        message
        for message in messages
        if isinstance(message, dict) and str(message.get("role", "")).lower() in roles
    ]
    return _content_text(matching[position]) if matching else None


def _content_text(message: Mapping[str, Any]) -> str | None:
    """Content as OpenAI (a string or typed parts) or OTel GenAI (``parts``) writes it."""
    content = message.get("content", message.get("parts"))
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [text for text in map(_part_text, content) if text is not None]
        return "\n".join(texts) or None
    return None


def _part_text(part: Any) -> str | None:
    if isinstance(part, str):
        return part
    if isinstance(part, dict) and part.get("type", "text") in _TEXT_PART_TYPES:
        text = part.get("text", part.get("content"))
        return text if isinstance(text, str) else None
    return None


def _value_text(raw: Any, unwrap: Callable[[Any], str | None]) -> str | None:
    """``input.value``/``output.value`` often hold the whole request/response as JSON."""
    if not isinstance(raw, str) or not raw:
        return None
    parsed = _loads(raw)
    return (None if parsed is None else unwrap(parsed)) or raw


def _request_text(request: Any) -> str | None:
    """The last user message of a chat request (or bare message list), a completion's prompt."""
    if isinstance(request, dict):
        prompt = request.get("prompt")
        if isinstance(prompt, str):
            return prompt
        request = request.get("messages")
    return _role_text(request, _USER_ROLES, -1) if isinstance(request, list) else None


def _response_text(response: Any) -> str | None:
    """The answer in a chat or completion response, or in a bare assistant message (list)."""
    if isinstance(response, dict):
        choices = response.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            return _choice_text(choices[0])
        response = [response]
    return _role_text(response, _ASSISTANT_ROLES, 0) if isinstance(response, list) else None


def _choice_text(choice: Mapping[str, Any]) -> str | None:
    message = choice.get("message")
    if isinstance(message, dict):
        return _content_text(message)
    text = choice.get("text")
    return text if isinstance(text, str) else None
