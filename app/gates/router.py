"""The deploy gate: compare a candidate run with the champion's, and per-model gate policies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import Query, status
from sqlalchemy.orm import Session

from app.core.deps import Admin, Paging, Reader, SessionDep, Writer, api_router
from app.core.schemas import Page
from app.gates import service as gates
from app.gates.schemas import (
    ComparisonOut,
    GateIn,
    GateOut,
    GatePolicyOut,
    GatePolicySpec,
    GateSummaryOut,
    ReasonOut,
)
from app.models import Gate

router = api_router("/api/v1", "gates")


def _summaries(session: Session, rows: Sequence[Gate]) -> list[GateSummaryOut]:
    names = gates.model_names(session, {g.model_id for g in rows})
    return [
        GateSummaryOut(
            id=g.id,
            verdict=g.verdict,
            model=names[g.model_id],
            checkpoint_id=g.checkpoint_id,
            candidate_run_id=g.candidate_run_id,
            baseline_run_id=g.baseline_run_id,
            policy_version=g.policy_version,
            reasons=[ReasonOut.model_validate(r) for r in g.reasons],
            notes=list(g.notes.get("messages", [])),
            created_at=g.created_at,
        )
        for g in rows
    ]


def _gate_out(session: Session, gate: Gate) -> GateOut:
    summary = _summaries(session, [gate])[0]
    return GateOut(
        **summary.model_dump(),
        policy=gate.policy,
        comparisons=[ComparisonOut.model_validate(c) for c in gate.comparisons],
    )


def _policy_out(state: gates.PolicyState) -> GatePolicyOut:
    return GatePolicyOut(
        model=state.model.name,
        version=state.stored.version if state.stored else None,
        policy=state.spec,
        actor=state.stored.actor if state.stored else None,
        created_at=state.stored.created_at if state.stored else None,
    )


@router.post("/gates", response_model=GateOut, status_code=status.HTTP_201_CREATED)
def create_gate(body: GateIn, principal: Writer, session: SessionDep) -> GateOut:
    return _gate_out(session, gates.create_gate(session, principal, body))


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
    return Page(items=_summaries(session, rows), next_cursor=cursor)


@router.get("/gates/{gate_id}", response_model=GateOut)
def get_gate(gate_id: int, principal: Reader, session: SessionDep) -> GateOut:
    return _gate_out(session, gates.get_gate(session, principal.project_id, gate_id))


@router.get("/models/{model}/gate-policy", response_model=GatePolicyOut)
def get_gate_policy(model: str, principal: Reader, session: SessionDep) -> GatePolicyOut:
    return _policy_out(gates.get_policy(session, principal.project_id, model))


@router.put("/models/{model}/gate-policy", response_model=GatePolicyOut)
def put_gate_policy(
    model: str, body: GatePolicySpec, principal: Admin, session: SessionDep
) -> GatePolicyOut:
    return _policy_out(gates.put_policy(session, principal, model, body))
