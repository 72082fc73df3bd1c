"""Stored traffic: the filtered event list and one trace."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import HTMLResponse
from pydantic import StringConstraints

from app.core.deps import SessionDep
from app.core.errors import NotFound, Unprocessable
from app.ingest import queries as event_queries
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
    before: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    if flag and flag not in event_queries.EVENT_FLAGS:
        raise Unprocessable(f"flag: one of {', '.join(event_queries.EVENT_FLAGS)}", field="flag")
    filters = event_queries.EventFilter(
        model=model or None,
        checkpoint_id=checkpoint,
        route=route or None,
        user_segment=user_segment or None,
        prompt_version=prompt_version or None,
        flag=flag or None,
        start=datetime.combine(start, time(), UTC) if start else None,
        end=datetime.combine(end, time.max, UTC) if end else None,
    )
    rows, next_before = event_queries.events(
        session, viewer.principal.project_id, filters, before, PAGE_SIZE
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
        "rows": rows,
        "next_before": next_before,
        "filters": params,
        "models": registry_queries.model_names(session, viewer.principal.project_id),
        "flags": list(event_queries.EVENT_FLAGS),
    }
    return render(request, "ingest/traces.html", context)


@router.get("/traces/{trace_id}", response_class=HTMLResponse)
def trace_page(
    request: Request,
    trace_id: Annotated[str, StringConstraints(max_length=64)],
    viewer: ViewerDep,
    session: SessionDep,
) -> HTMLResponse:
    rows, feedback = event_queries.trace_events(session, viewer.principal.project_id, trace_id)
    if not rows and feedback is None:
        raise NotFound(f"no trace '{trace_id}' in this project")
    context = {"viewer": viewer, "trace_id": trace_id, "rows": rows, "feedback": feedback}
    return render(request, "ingest/trace.html", context)
