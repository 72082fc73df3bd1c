"""Typed reads of datasets, versions and rows, shared by the API and the pages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session, aliased

from app.core.errors import NotFound
from app.datasets import service
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
        .where(
            DatasetVersion.project_id == dataset.project_id,
            DatasetVersion.dataset_id == dataset.id,
        )
        .order_by(DatasetVersion.version.desc())
    ).all()
    return dataset, versions


def dataset_rows(
    session: Session, version: DatasetVersion, offset: int, limit: int
) -> Sequence[DatasetRow]:
    return session.scalars(
        select(DatasetRow)
        .where(DatasetRow.project_id == version.project_id, DatasetRow.version_id == version.id)
        .order_by(DatasetRow.key)
        .offset(offset)
        .limit(limit)
    ).all()


def diff_versions(
    session: Session, project_id: int, name: str, old: int, new: int, limit: int
) -> dict[str, Any]:
    """Keys added, removed and changed (different row hash) from version `old` to `new`.
    Both sides of each join name the project (one shard, joined on the distribution
    column)."""
    a = service.get_version(session, project_id, name, old)
    b = service.get_version(session, project_id, name, new)
    row_a, row_b = aliased(DatasetRow), aliased(DatasetRow)

    def of_version(row: type[DatasetRow], version: DatasetVersion) -> ColumnElement[bool]:
        return and_(row.project_id == project_id, row.version_id == version.id)

    same_key = row_a.key == row_b.key
    only_in_b = (
        select(row_b.key)
        .outerjoin(row_a, and_(of_version(row_a, a), same_key))
        .where(of_version(row_b, b), row_a.id.is_(None))
    )
    only_in_a = (
        select(row_a.key)
        .outerjoin(row_b, and_(of_version(row_b, b), same_key))
        .where(of_version(row_a, a), row_b.id.is_(None))
    )
    changed = (
        select(row_b.key)
        .join(row_a, and_(of_version(row_a, a), same_key))
        .where(of_version(row_b, b), row_a.row_hash != row_b.row_hash)
    )
    result: dict[str, Any] = {"from_version": a.version, "to_version": b.version, "counts": {}}
    truncated = False
    for label, stmt in (("added", only_in_b), ("removed", only_in_a), ("changed", changed)):
        count = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        keys = session.scalars(stmt.order_by(stmt.selected_columns[0]).limit(limit)).all()
        result[label] = list(keys)
        result["counts"][label] = count
        truncated = truncated or count > len(keys)
    result["truncated"] = truncated
    return result
