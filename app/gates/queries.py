"""Typed reads of gate decisions, shared by the API and the pages.

Every function filters by the project it is given, whatever ids the caller passes: a caller
never sees another tenant's decisions (the ids it holds are its own, but the filter does not
rely on that)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import (
    Gate,
)


def gates_for_checkpoints(
    session: Session, project_id: int, checkpoint_ids: Sequence[int]
) -> Sequence[Gate]:
    return session.scalars(
        select(Gate)
        .where(Gate.project_id == project_id, Gate.checkpoint_id.in_(checkpoint_ids))
        .order_by(Gate.id.desc())
    ).all()


def gate_verdicts(session: Session, project_id: int, gate_ids: set[int]) -> dict[int, str]:
    if not gate_ids:
        return {}
    rows = session.execute(
        select(Gate.id, Gate.verdict).where(Gate.project_id == project_id, Gate.id.in_(gate_ids))
    ).all()
    return {gid: verdict.value for gid, verdict in rows}
