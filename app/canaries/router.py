"""Canaries: start one per model, read (a running canary is evaluated on every read),
evaluate now, stop, roll back. Promotion on a canary's decision is
`POST /api/v1/models/{model}/promote {"checkpoint_id", "canary_id"}`."""

from __future__ import annotations

from fastapi import status

from app.canaries import service as canaries
from app.canaries.schemas import CanaryIn, CanaryOut, CanaryRollbackIn, CanaryStopIn
from app.core.deps import LinksDep, Paging, Reader, SessionDep, SettingsDep, Writer, api_router
from app.core.schemas import Page

router = api_router("/api/v1", "canaries")


@router.post(
    "/models/{model}/canaries", response_model=CanaryOut, status_code=status.HTTP_201_CREATED
)
def create_canary(
    model: str,
    body: CanaryIn,
    principal: Writer,
    session: SessionDep,
    links: LinksDep,
    settings: SettingsDep,
) -> CanaryOut:
    canary = canaries.create_canary(session, principal, model, body, settings.retention_days)
    return canaries.canary_out(session, canary, links)


@router.get("/models/{model}/canaries", response_model=Page[CanaryOut])
def list_canaries(
    model: str, principal: Reader, session: SessionDep, paging: Paging, links: LinksDep
) -> Page[CanaryOut]:
    """Newest first, as last evaluated (reading one evaluates it)."""
    rows, cursor = canaries.list_canaries(
        session, principal.project_id, model, paging.cursor, paging.limit
    )
    return Page(items=[canaries.canary_out(session, c, links) for c in rows], next_cursor=cursor)


@router.get("/canaries/{canary_id}", response_model=CanaryOut)
def get_canary(
    canary_id: int, principal: Reader, session: SessionDep, links: LinksDep
) -> CanaryOut:
    """A running canary is evaluated first: looking costs nothing in error (every bound is a
    confidence sequence), so the answer is always current."""
    canary = canaries.get_canary(session, principal.project_id, canary_id)
    return canaries.canary_out(session, canaries.evaluate(session, links, canary, "read"), links)


@router.post("/canaries/{canary_id}/evaluate", response_model=CanaryOut)
def evaluate_canary(
    canary_id: int, principal: Writer, session: SessionDep, links: LinksDep
) -> CanaryOut:
    canary = canaries.get_canary(session, principal.project_id, canary_id)
    return canaries.canary_out(session, canaries.evaluate(session, links, canary, "api"), links)


@router.post("/canaries/{canary_id}/stop", response_model=CanaryOut)
def stop_canary(
    canary_id: int, body: CanaryStopIn, principal: Writer, session: SessionDep, links: LinksDep
) -> CanaryOut:
    return canaries.canary_out(
        session, canaries.stop(session, principal, canary_id, body.reason), links
    )


@router.post("/canaries/{canary_id}/rollback", response_model=CanaryOut)
def roll_back_canary(
    canary_id: int,
    body: CanaryRollbackIn,
    principal: Writer,
    session: SessionDep,
    links: LinksDep,
) -> CanaryOut:
    canary = canaries.roll_back(session, principal, links, canary_id, body.reason)
    return canaries.canary_out(session, canary, links)
