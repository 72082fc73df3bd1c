"""Checkpoints and models: register, list, promote, roll back."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response, status

from app.core.deps import LinksDep, Paging, Reader, SessionDep, SettingsDep, Writer, api_router
from app.core.schemas import Page
from app.registry import service as registry
from app.registry.schemas import (
    CheckpointIn,
    CheckpointOut,
    ModelOut,
    Pricing,
    PromoteIn,
    RollbackIn,
)

router = api_router("/api/v1", "registry")


@router.post(
    "/checkpoints",
    response_model=CheckpointOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": CheckpointOut, "description": "Already registered, same body"}},
)
def register_checkpoint(
    body: CheckpointIn,
    principal: Writer,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> CheckpointOut:
    checkpoint, created = registry.register_checkpoint(
        session, principal, body, settings.key_variables
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return CheckpointOut.model_validate(checkpoint)


@router.get("/checkpoints", response_model=Page[CheckpointOut])
def list_checkpoints(
    principal: Reader,
    session: SessionDep,
    paging: Paging,
    model: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[CheckpointOut]:
    rows, cursor = registry.list_checkpoints(
        session, principal.project_id, model, paging.cursor, paging.limit
    )
    return Page(items=[CheckpointOut.model_validate(c) for c in rows], next_cursor=cursor)


@router.get("/checkpoints/{checkpoint_id}", response_model=CheckpointOut)
def get_checkpoint(checkpoint_id: int, principal: Reader, session: SessionDep) -> CheckpointOut:
    checkpoint = registry.get_checkpoint(session, principal.project_id, checkpoint_id)
    return CheckpointOut.model_validate(checkpoint)


@router.put("/checkpoints/{checkpoint_id}/pricing", response_model=CheckpointOut)
def set_pricing(
    checkpoint_id: int, body: Pricing, principal: Writer, session: SessionDep
) -> CheckpointOut:
    checkpoint = registry.set_pricing(session, principal, checkpoint_id, body)
    return CheckpointOut.model_validate(checkpoint)


@router.delete("/checkpoints/{checkpoint_id}/pricing", status_code=status.HTTP_204_NO_CONTENT)
def clear_pricing(checkpoint_id: int, principal: Writer, session: SessionDep) -> None:
    registry.set_pricing(session, principal, checkpoint_id, None)


@router.get("/models/{model}", response_model=ModelOut)
def get_model(model: str, principal: Reader, session: SessionDep) -> ModelOut:
    return ModelOut.model_validate(registry.model_state(session, principal.project_id, model))


@router.post("/models/{model}/promote", response_model=ModelOut)
def promote(
    model: str, body: PromoteIn, principal: Writer, session: SessionDep, links: LinksDep
) -> ModelOut:
    state = registry.promote(
        session,
        principal,
        links,
        model,
        body.checkpoint_id,
        body.gate_id,
        body.force,
        body.reason,
        body.canary_id,
    )
    return ModelOut.model_validate(state)


@router.post("/models/{model}/rollback", response_model=ModelOut)
def rollback(
    model: str, body: RollbackIn, principal: Writer, session: SessionDep, links: LinksDep
) -> ModelOut:
    state = registry.rollback(session, principal, links, model, body.to, body.reason, body.alert_id)
    return ModelOut.model_validate(state)
