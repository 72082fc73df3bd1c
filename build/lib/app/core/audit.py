"""The audit log: every change, with the key that made it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.core.auth import Principal
from app.models import AuditLog


def record(
    session: Session,
    principal: Principal,
    action: str,
    target_type: str,
    target_id: int | str,
    details: dict[str, Any] | None = None,
    note: str | None = None,
) -> None:
    """Adds the entry to the caller's transaction, so it commits or rolls back with the change."""
    session.add(
        AuditLog(
            project_id=principal.project_id,
            actor=principal.actor,
            api_key_id=principal.key_id,
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            details=details or {},
            note=note,
        )
    )
