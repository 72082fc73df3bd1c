"""Liveness, readiness (the database answers) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from app.core.db import database_answers
from app.core.deps import SessionDep
from app.core.observability import metrics_payload

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "The database does not answer"}})
def readyz(session: SessionDep) -> Response:
    if not database_answers(session):
        return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "up"})


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    payload, content_type = metrics_payload()
    return Response(payload, media_type=content_type)
