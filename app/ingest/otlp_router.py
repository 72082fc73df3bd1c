"""The OTLP/HTTP trace receiver: `/v1/traces` and traceAI's `/tracer/v1/traces`.

Answers the way the stock exporters expect: 200 with an ExportTraceServiceResponse
(`partial_success` when spans were refused), and for every error a google.rpc.Status body in
the request's encoding (OTLP/HTTP requires it), 503 with Retry-After when at capacity.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from app.core.deps import SessionDep, SettingsDep, StrictJSONRoute, Writer, api_router
from app.core.errors import Problem
from app.ingest import otlp
from app.ingest import service as ingest
from app.ingest.deps import RawBody, ingest_slot

# OTLP/HTTP answers errors as google.rpc.Status in the request's encoding, not problem+json.
_OTLP_BODIES = {
    "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
    "application/json": {"schema": {"type": "object"}},
}


def _rpc_status(description: str) -> dict[str, Any]:
    return {"description": f"{description} (google.rpc.Status)", "content": _OTLP_BODIES}


OTLP_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "ExportTraceServiceResponse", "content": _OTLP_BODIES},
    400: _rpc_status("Undecodable body"),
    401: _rpc_status("No API key, or a revoked or unknown one"),
    403: _rpc_status("The key cannot write"),
    413: _rpc_status("Too large once decompressed"),
    415: _rpc_status("Neither protobuf nor JSON"),
    429: _rpc_status("Write rate limit reached; retry after Retry-After seconds"),
    503: _rpc_status("At capacity or the database is unavailable; retry after Retry-After"),
}

router = api_router("", "otlp", responses=OTLP_RESPONSES)

MAX_LISTED_REJECTIONS = 5

OtlpSlot = Annotated[
    None, Depends(ingest_slot(status.HTTP_503_SERVICE_UNAVAILABLE), scope="function")
]  # given back before the answer is sent, as RestSlot


class OtlpRoute(StrictJSONRoute):
    """Renders every Problem (auth, overload, size) as google.rpc.Status, not problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def status_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Problem as exc:
                content_type = request.headers.get("content-type")
                return Response(
                    otlp.status_body(exc.detail, content_type),
                    status_code=exc.status,
                    media_type=otlp.response_content_type(content_type),
                    headers=exc.extra.get("headers"),
                )

        return status_handler


def _decode(
    body: bytes, content_type: str, content_encoding: str | None, limit: int
) -> tuple[list[dict[str, Any]], list[otlp.SpanRejection]]:
    request = otlp.decode_export_request(body, content_type, content_encoding, limit)
    return otlp.spans_to_events(request)


def _summary(reasons: list[str]) -> str:
    listed = "; ".join(reasons[:MAX_LISTED_REJECTIONS])
    more = len(reasons) - MAX_LISTED_REJECTIONS
    return listed + (f"; and {more} more" if more > 0 else "")


async def export_traces(
    request: Request,
    _slot: OtlpSlot,
    body: RawBody,
    principal: Writer,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    content_type = request.headers.get("content-type", "")
    media_type = otlp.response_content_type(content_type)
    try:
        events, span_rejections = await run_in_threadpool(
            _decode,
            body,
            content_type,
            request.headers.get("content-encoding"),
            settings.max_body_bytes,
        )
    except otlp.OtlpRequestError as exc:
        return Response(
            otlp.status_body(str(exc), content_type),
            status_code=exc.http_status,
            media_type=media_type,
        )
    batch = await run_in_threadpool(ingest.validate_built_events, events)
    outcome = await run_in_threadpool(
        ingest.ingest_events, session, principal.project_id, batch, settings, "otlp"
    )
    reasons = [f"span {r.trace_id}/{r.span_id}: {r.reason}" for r in span_rejections]
    reasons += [
        f"span {events[r.index]['trace_id']}/{events[r.index]['span_id']}: {r.error}"
        for r in outcome.rejected
    ]
    return Response(
        otlp.export_response(len(reasons), _summary(reasons), content_type),
        media_type=media_type,
    )


for path in ("/v1/traces", "/tracer/v1/traces"):
    router.add_api_route(
        path,
        export_traces,
        methods=["POST"],
        route_class_override=OtlpRoute,
        response_class=Response,
        summary="OTLP/HTTP trace export (protobuf or JSON, gzip)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "ExportTraceServiceRequest; Content-Encoding gzip or deflate",
                "content": _OTLP_BODIES,
            }
        },
    )
