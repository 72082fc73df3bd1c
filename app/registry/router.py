"""Checkpoints and models: register, list, promote, roll back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import Query, Response, status
from sqlalchemy.orm import Session

from app.core.deps import Paging, Reader, SessionDep, Writer, api_router
from app.core.schemas import Page
from app.models import Checkpoint
from app.registry import service as registry
from app.registry.schemas import (
    CheckpointIn,
    CheckpointOut,
    CheckpointRef,
    HistoryEntryOut,
    ModelOut,
    PromoteIn,
    RollbackIn,
)

router = api_router("/api/v1", "registry")


def checkpoints_out(session: Session, checkpoints: Sequence[Checkpoint]) -> list[CheckpointOut]:
    ids = {c.id for c in checkpoints} | {c.parent_id for c in checkpoints if c.parent_id}
    names = registry.names_by_id(session, ids)
    return [
        CheckpointOut(
            id=c.id,
            model=names[c.id][0],
            version=c.version,
            kind=c.kind,
            parent_id=c.parent_id,
            parent_version=names[c.parent_id][1] if c.parent_id else None,
            base_model=c.base_model,
            artifact_uri=c.artifact_uri,
            endpoint=c.endpoint,
            training=c.training,
            tags=c.tags,
            status=c.status,
            created_at=c.created_at,
        )
        for c in checkpoints
    ]


def model_out(session: Session, state: registry.ModelState) -> ModelOut:
    ids = {h.checkpoint_id for h in state.history}
    ids |= {h.previous_checkpoint_id for h in state.history if h.previous_checkpoint_id}
    names = registry.names_by_id(session, ids)
    target = state.rollback_target
    return ModelOut(
        name=state.model.name,
        champion=checkpoints_out(session, [state.champion])[0] if state.champion else None,
        rollback_target=CheckpointRef(checkpoint_id=target.id, version=target.version)
        if target
        else None,
        history=[
            HistoryEntryOut(
                id=h.id,
                action=h.action,
                checkpoint_id=h.checkpoint_id,
                checkpoint_version=names[h.checkpoint_id][1],
                previous_checkpoint_id=h.previous_checkpoint_id,
                previous_checkpoint_version=names[h.previous_checkpoint_id][1]
                if h.previous_checkpoint_id
                else None,
                reason=h.reason,
                forced=h.forced,
                gate_id=h.gate_id,
                alert_id=h.alert_id,
                actor=h.actor,
                at=h.created_at,
            )
            for h in reversed(state.history)
        ],
    )


@router.post(
    "/checkpoints",
    response_model=CheckpointOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": CheckpointOut, "description": "Already registered, same body"}},
)
def register_checkpoint(
    body: CheckpointIn, principal: Writer, session: SessionDep, response: Response
) -> CheckpointOut:
    checkpoint, created = registry.register_checkpoint(session, principal, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return checkpoints_out(session, [checkpoint])[0]


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
    return Page(items=checkpoints_out(session, rows), next_cursor=cursor)


@router.get("/checkpoints/{checkpoint_id}", response_model=CheckpointOut)
def get_checkpoint(checkpoint_id: int, principal: Reader, session: SessionDep) -> CheckpointOut:
    checkpoint = registry.get_checkpoint(session, principal.project_id, checkpoint_id)
    return checkpoints_out(session, [checkpoint])[0]


@router.get("/models/{model}", response_model=ModelOut)
def get_model(model: str, principal: Reader, session: SessionDep) -> ModelOut:
    return model_out(session, registry.model_state(session, principal.project_id, model))


@router.post("/models/{model}/promote", response_model=ModelOut)
def promote(model: str, body: PromoteIn, principal: Writer, session: SessionDep) -> ModelOut:
    state = registry.promote(
        session, principal, model, body.checkpoint_id, body.gate_id, body.force, body.reason
    )
    return model_out(session, state)


@router.post("/models/{model}/rollback", response_model=ModelOut)
def rollback(model: str, body: RollbackIn, principal: Writer, session: SessionDep) -> ModelOut:
    state = registry.rollback(session, principal, model, body.to, body.reason, body.alert_id)
    return model_out(session, state)
