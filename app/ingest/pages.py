"""Stored traffic: the filtered event list and one trace."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import HTMLResponse
from pydantic import StringConstraints

from app.core.deps import SessionDep
from app.core.errors import Unprocessable
from app.ingest import queries as event_queries
from app.ingest.schemas import EventOut, TraceOut
from app.registry import queries as registry_queries
from app.web.auth import ViewerDep
from app.web.rendering import (
    PAGE_SIZE,
    OptionalText,
    render,
    web_router,
)

router = web_router()


@router.get("/traces", response_class=HTMLResponse)
def traces_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    model: OptionalText = None,
    checkpoint: Annotated[int | None, Query(ge=1)] = None,
    route: OptionalText = None,
    user_segment: OptionalText = None,
    prompt_version: OptionalText = None,
    flag: Annotated[str | None, Query(max_length=32)] = None,
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
    cursor: OptionalText = None,
) -> HTMLResponse:
    if flag and flag not in event_queries.FLAGS:
        raise Unprocessable(f"flag: one of {', '.join(event_queries.FLAGS)}", field="flag")
    filters = event_queries.EventFilters(
        model=model or None,
        checkpoint_id=checkpoint,
        route=route or None,
        user_segment=user_segment or None,
        prompt_version=prompt_version or None,
        start=datetime.combine(start, time(), UTC) if start else None,
        end=datetime.combine(end + timedelta(days=1), time(), UTC) if end else None,
        **(event_queries.FLAGS[flag] if flag else {}),
    )
    rows, next_cursor = event_queries.list_events(
        session, viewer.principal.project_id, filters, cursor, PAGE_SIZE
    )
    params = {
        "model": model,
        "checkpoint": checkpoint,
        "route": route,
        "user_segment": user_segment,
        "prompt_version": prompt_version,
        "flag": flag,
        "from": start.isoformat() if start else None,
        "to": end.isoformat() if end else None,
    }
    context = {
        "viewer": viewer,
        "rows": [EventOut.model_validate(event) for event in rows],
        "next_cursor": next_cursor,
        "filters": params,
        "models": registry_queries.model_names(session, viewer.principal.project_id),
        "flags": list(event_queries.FLAGS),
    }
    return render(request, "ingest/traces.html", context)


@router.get("/traces/{trace_id:path}", response_class=HTMLResponse)
def trace_page(
    request: Request,
    trace_id: Annotated[str, StringConstraints(max_length=64)],
    viewer: ViewerDep,
    session: SessionDep,
) -> HTMLResponse:
    """A path parameter: trace ids may hold '/', which the links encode as %2F and the server
    decodes before routing."""
    trace = event_queries.get_trace(session, viewer.principal.project_id, trace_id)
    context = {"viewer": viewer, "trace": TraceOut.model_validate(trace)}
    return render(request, "ingest/trace.html", context)
