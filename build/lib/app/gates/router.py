"""The deploy gate: compare a candidate run with the champion's, and per-model gate policies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, status

from app.core.deps import Admin, LinksDep, Paging, Reader, SessionDep, Writer, api_router
from app.core.schemas import Page
from app.gates import policies
from app.gates import service as gates
from app.gates.schemas import (
    GateIn,
    GateOut,
    GatePolicyOut,
    GatePolicySpec,
    GateSummaryOut,
)

router = api_router("/api/v1", "gates")


@router.post("/gates", response_model=GateOut, status_code=status.HTTP_201_CREATED)
def create_gate(body: GateIn, principal: Writer, session: SessionDep, links: LinksDep) -> GateOut:
    return GateOut.model_validate(gates.create_gate(session, principal, links, body))


@router.get("/gates", response_model=Page[GateSummaryOut])
def list_gates(
    principal: Reader,
    session: SessionDep,
    paging: Paging,
    checkpoint_id: Annotated[int | None, Query()] = None,
) -> Page[GateSummaryOut]:
    rows, cursor = gates.list_gates(
        session, principal.project_id, checkpoint_id, paging.cursor, paging.limit
    )
    return Page(items=[GateSummaryOut.model_validate(g) for g in rows], next_cursor=cursor)


@router.get("/gates/{gate_id}", response_model=GateOut)
def get_gate(gate_id: int, principal: Reader, session: SessionDep) -> GateOut:
    return GateOut.model_validate(gates.get_gate(session, principal.project_id, gate_id))


@router.get("/models/{model}/gate-policy", response_model=GatePolicyOut)
def get_gate_policy(model: str, principal: Reader, session: SessionDep) -> GatePolicyOut:
    return GatePolicyOut.model_validate(policies.get_policy(session, principal.project_id, model))


@router.put("/models/{model}/gate-policy", response_model=GatePolicyOut)
def put_gate_policy(
    model: str, body: GatePolicySpec, principal: Admin, session: SessionDep
) -> GatePolicyOut:
    return GatePolicyOut.model_validate(policies.put_policy(session, principal, model, body))
