"""Typed reads of datasets, versions and rows, shared by the API and the pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, aliased

from app.core.errors import NotFound
from app.models import (
    Dataset,
    DatasetRow,
    DatasetVersion,
)


def dataset_names(session: Session, project_id: int) -> list[str]:
    return list(
        session.scalars(
            select(Dataset.name).where(Dataset.project_id == project_id).order_by(Dataset.name)
        )
    )


def dataset_with_versions(
    session: Session, project_id: int, name: str
) -> tuple[Dataset, Sequence[DatasetVersion]]:
    dataset = session.scalar(
        select(Dataset).where(Dataset.project_id == project_id, Dataset.name == name)
    )
    if dataset is None:
        raise NotFound(f"no dataset named '{name}' in this project")
    versions = session.scalars(
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset.id)
        .order_by(DatasetVersion.version.desc())
    ).all()
    return dataset, versions


def dataset_rows(
    session: Session, version_id: int, offset: int, limit: int
) -> Sequence[DatasetRow]:
    return session.scalars(
        select(DatasetRow)
        .where(DatasetRow.version_id == version_id)
        .order_by(DatasetRow.key)
        .offset(offset)
        .limit(limit)
    ).all()


@dataclass(frozen=True)
class VersionDiff:
    added: list[str]
    removed: list[str]
    changed: list[str]


def version_diff(session: Session, old_id: int, new_id: int) -> VersionDiff:
    """Keys added, removed and changed (row hash differs) between two versions, in SQL."""
    old = aliased(DatasetRow)
    new = aliased(DatasetRow)
    added = session.scalars(
        select(new.key)
        .outerjoin(old, and_(old.version_id == old_id, old.key == new.key))
        .where(new.version_id == new_id, old.id.is_(None))
        .order_by(new.key)
    ).all()
    removed = session.scalars(
        select(old.key)
        .outerjoin(new, and_(new.version_id == new_id, new.key == old.key))
        .where(old.version_id == old_id, new.id.is_(None))
        .order_by(old.key)
    ).all()
    changed = session.scalars(
        select(new.key)
        .join(old, and_(old.version_id == old_id, old.key == new.key))
        .where(new.version_id == new_id, old.row_hash != new.row_hash)
        .order_by(new.key)
    ).all()
    return VersionDiff(list(added), list(removed), list(changed))
