"""Typed reads of models, checkpoints and champion history, shared by the API and the pages.

Every function filters by the project it is given: a caller never sees another tenant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from app.models import (
    ChampionHistory,
    Checkpoint,
    GatePolicy,
    Model,
)


@dataclass(frozen=True)
class ModelSummary:
    name: str
    champion_id: int | None
    champion_version: str | None
    champion_kind: str | None
    champion_since: datetime | None
    checkpoints: int


def model_summaries(session: Session, project_id: int) -> list[ModelSummary]:
    latest = (
        select(ChampionHistory.model_id, func.max(ChampionHistory.id).label("last_id"))
        .where(ChampionHistory.project_id == project_id)
        .group_by(ChampionHistory.model_id)
        .subquery()
    )
    counts = (
        select(Checkpoint.model_id, func.count().label("n"))
        .where(Checkpoint.project_id == project_id)
        .group_by(Checkpoint.model_id)
        .subquery()
    )
    entry = aliased(ChampionHistory)
    rows = session.execute(
        select(
            Model.name,
            Checkpoint.id,
            Checkpoint.version,
            Checkpoint.kind,
            entry.created_at,
            func.coalesce(counts.c.n, 0),
        )
        .select_from(Model)
        .outerjoin(latest, latest.c.model_id == Model.id)
        .outerjoin(entry, entry.id == latest.c.last_id)
        .outerjoin(Checkpoint, Checkpoint.id == entry.checkpoint_id)
        .outerjoin(counts, counts.c.model_id == Model.id)
        .where(Model.project_id == project_id)
        .order_by(Model.name)
    ).all()
    return [
        ModelSummary(name, cid, version, kind.value if kind else None, since, n)
        for name, cid, version, kind, since, n in rows
    ]


def model_names(session: Session, project_id: int) -> list[str]:
    return list(
        session.scalars(
            select(Model.name).where(Model.project_id == project_id).order_by(Model.name)
        )
    )


def model_checkpoints(session: Session, model_id: int) -> Sequence[Checkpoint]:
    return session.scalars(
        select(Checkpoint).where(Checkpoint.model_id == model_id).order_by(Checkpoint.id)
    ).all()


def model_by_id(session: Session, model_id: int) -> Model:
    model = session.get(Model, model_id)
    assert model is not None  # foreign keys guarantee it
    return model


def versions_by_id(session: Session, checkpoint_ids: set[int]) -> dict[int, str]:
    if not checkpoint_ids:
        return {}
    rows = session.execute(
        select(Checkpoint.id, Checkpoint.version).where(Checkpoint.id.in_(checkpoint_ids))
    ).all()
    return {cid: version for cid, version in rows}


def checkpoint_children(session: Session, checkpoint_id: int) -> Sequence[Checkpoint]:
    return session.scalars(
        select(Checkpoint).where(Checkpoint.parent_id == checkpoint_id).order_by(Checkpoint.id)
    ).all()


def champion_changes(
    session: Session, project_id: int, model: str | None, start: date, end: date
) -> list[tuple[str, datetime, str, str]]:
    """(model, when, action, version) of every champion change in the window."""
    stmt = (
        select(Model.name, ChampionHistory.created_at, ChampionHistory.action, Checkpoint.version)
        .join(Model, Model.id == ChampionHistory.model_id)
        .join(Checkpoint, Checkpoint.id == ChampionHistory.checkpoint_id)
        .where(
            ChampionHistory.project_id == project_id,
            ChampionHistory.created_at >= datetime.combine(start, time(), UTC),
            ChampionHistory.created_at < datetime.combine(end + timedelta(days=1), time(), UTC),
        )
        .order_by(ChampionHistory.id)
    )
    if model is not None:
        stmt = stmt.where(Model.name == model)
    return [
        (name, when, action.value, version) for name, when, action, version in session.execute(stmt)
    ]


def latest_policy(session: Session, project_id: int, model_id: int) -> GatePolicy | None:
    """The model's current gate policy version; None until one is stored (the default)."""
    return session.scalar(
        select(GatePolicy)
        .where(GatePolicy.project_id == project_id, GatePolicy.model_id == model_id)
        .order_by(GatePolicy.version.desc())
        .limit(1)
    )
