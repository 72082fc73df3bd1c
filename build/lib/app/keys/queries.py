"""Read-only questions about keys that pages ask (the dashboard's project switcher)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import (
    ApiKey,
    Project,
)
from app.models.project import Role


@dataclass(frozen=True)
class SessionKey:
    key_id: int
    project_id: int
    project_name: str
    name: str
    role: Role


def session_keys(session: Session, key_ids: Sequence[int]) -> list[SessionKey]:
    """The session's keys that still work, with their projects (for the project switcher)."""
    if not key_ids:
        return []
    rows = session.execute(
        select(ApiKey.id, ApiKey.project_id, Project.name, ApiKey.name, ApiKey.role)
        .join(Project, Project.id == ApiKey.project_id)
        .where(ApiKey.id.in_(key_ids), ApiKey.revoked_at.is_(None))
        .order_by(Project.name, ApiKey.id)
    ).all()
    return [SessionKey(*row) for row in rows]
