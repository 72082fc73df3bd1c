"""Production traffic over REST: event batches, feedback, trace explorer, online evaluation."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, ValidationError

from app.core.deps import Admin, Paging, Reader, SessionDep, SettingsDep, Writer, api_router
from app.core.schemas import Page, nfc_or_none
from app.ingest import queries as event_queries
from app.ingest import service as ingest
from app.ingest.deps import RawBody, RestSlot
from app.ingest.schemas import (
    EventIn,
    EventOut,
    FeedbackIn,
    FeedbackOut,
    FeedbackValue,
    IngestResult,
    ProjectSettingsIn,
    ProjectSettingsOut,
    TraceOut,
    UtcDateTime,
    body_is_plainly_storable,
)
from app.keys import service as projects

router = api_router("/api/v1", "events")


def _validate_batch(body: bytes) -> ingest.ValidatedBatch:
    try:
        return ingest.validate_batch_json(body, body_is_plainly_storable(body))
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


_BATCH_SCHEMA = {
    "type": "object",
    "required": ["events"],
    "properties": {"events": {"type": "array", "items": EventIn.model_json_schema()}},
}


@router.post(
    "/events",
    response_model=IngestResult,
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _BATCH_SCHEMA}},
        }
    },
    responses={413: {"description": "More events than PLUMBLINE_MAX_EVENTS_PER_REQUEST"}},
)
async def post_events(
    _slot: RestSlot, body: RawBody, principal: Writer, session: SessionDep, settings: SettingsDep
) -> IngestResult:
    """Stores valid events, reports the rest by index; answered only after commit."""
    batch = await run_in_threadpool(_validate_batch, body)
    del body  # the validated events replace it: one copy of the batch in memory, not two
    outcome = await run_in_threadpool(
        ingest.ingest_events, session, principal.project_id, batch, settings, "rest"
    )
    return IngestResult.model_validate(outcome)


@router.get("/events", response_model=Page[EventOut])
def list_events(
    principal: Reader,
    session: SessionDep,
    paging: Paging,
    model: Annotated[str | None, Query(max_length=200)] = None,
    checkpoint_id: int | None = None,
    start: Annotated[UtcDateTime | None, Query(alias="from", description="naive = UTC")] = None,
    end: Annotated[UtcDateTime | None, Query(alias="to", description="exclusive")] = None,
    route: Annotated[str | None, Query(max_length=200), AfterValidator(nfc_or_none)] = None,
    user_segment: Annotated[str | None, Query(max_length=100), AfterValidator(nfc_or_none)] = None,
    prompt_version: Annotated[
        str | None, Query(max_length=100), AfterValidator(nfc_or_none)
    ] = None,
    eval_passed: bool | None = None,
    fallback: bool | None = None,
    refusal: bool | None = None,
    feedback: FeedbackValue | None = None,
) -> Page[EventOut]:
    filters = event_queries.EventFilters(
        model=model,
        checkpoint_id=checkpoint_id,
        start=start,
        end=end,
        route=route,
        user_segment=user_segment,
        prompt_version=prompt_version,
        eval_passed=eval_passed,
        fallback=fallback,
        refusal=refusal,
        feedback=feedback,
    )
    rows, cursor = event_queries.list_events(
        session, principal.project_id, filters, paging.cursor, paging.limit
    )
    return Page(items=[EventOut.model_validate(e) for e in rows], next_cursor=cursor)


@router.get("/traces/{trace_id:path}", response_model=TraceOut)
def get_trace(trace_id: str, principal: Reader, session: SessionDep) -> TraceOut:
    return TraceOut.model_validate(event_queries.get_trace(session, principal.project_id, trace_id))


# --- Feedback -------------------------------------------------------------------------------


@router.post("/feedback", response_model=FeedbackOut)
def post_feedback(body: FeedbackIn, principal: Writer, session: SessionDep) -> FeedbackOut:
    """Before or after its events: the stored state ends the same either way."""
    updated = ingest.record_feedback(
        session, principal.project_id, body.trace_id, body.value, body.comment
    )
    return FeedbackOut(
        trace_id=body.trace_id, value=body.value, comment=body.comment, events_updated=updated
    )


# --- Project settings -----------------------------------------------------------------------


@router.get("/project/settings", response_model=ProjectSettingsOut)
def get_project_settings(principal: Admin, session: SessionDep) -> ProjectSettingsOut:
    stored = projects.project_settings(session, principal.project_id)
    return ProjectSettingsOut(online_eval=stored.get("online_eval") or {})


@router.put("/project/settings", response_model=ProjectSettingsOut)
def put_project_settings(
    body: ProjectSettingsIn, principal: Admin, session: SessionDep
) -> ProjectSettingsOut:
    stored = ingest.set_online_eval(session, principal, body.online_eval)
    return ProjectSettingsOut(online_eval=stored["online_eval"])
