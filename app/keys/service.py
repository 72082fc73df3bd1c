"""Projects and their API keys: created (the plaintext is returned once), listed, revoked.

How a key authenticates a request is app/core/auth."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from app.core import audit
from app.core.auth import KEY_PREFIX, LOOKUP_CHARS, Principal, key_digest
from app.core.db import get_owned, utcnow
from app.core.errors import NotFound
from app.core.pagination import paginate
from app.models import ApiKey, Project
from app.models.project import Role


def get_or_create_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(name=name, settings={})
        session.add(project)
        session.flush()
    return project


def create_key(session: Session, project_id: int, role: Role, name: str) -> tuple[ApiKey, str]:
    """Returns the row and the plaintext key, which exists nowhere else after this call."""
    lookup = secrets.token_hex(LOOKUP_CHARS // 2)
    plaintext = f"{KEY_PREFIX}{lookup}_{secrets.token_urlsafe(24)}"
    key = ApiKey(
        project_id=project_id, name=name, role=role, prefix=lookup, key_hash=key_digest(plaintext)
    )
    session.add(key)
    session.flush()
    return key, plaintext


def list_keys(
    session: Session, project_id: int, cursor: str | None, limit: int
) -> tuple[Sequence[ApiKey], str | None]:
    stmt = select(ApiKey).where(ApiKey.project_id == project_id)
    return paginate(session, stmt, ApiKey.id, cursor, limit)


def revoke_key(session: Session, project_id: int, key_id: int) -> ApiKey:
    key = get_owned(session, ApiKey, project_id, key_id, "API key")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def revoke_named(session: Session, project_id: int, name: str) -> None:
    session.execute(
        update(ApiKey)
        .where(ApiKey.project_id == project_id, ApiKey.name == name, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def issue_key(session: Session, principal: Principal, role: Role, name: str) -> tuple[ApiKey, str]:
    """A key made through the API by an admin: audited with the key that made it."""
    key, plaintext = create_key(session, principal.project_id, role, name)
    audit.record(session, principal, "key.created", "api_key", key.id, {"role": role.value})
    session.commit()
    return key, plaintext


def revoke(session: Session, principal: Principal, key_id: int) -> ApiKey:
    key = revoke_key(session, principal.project_id, key_id)
    audit.record(session, principal, "key.revoked", "api_key", key.id)
    session.commit()
    return key


_SETTINGS = select(Project.settings).where(Project.id == bindparam("project_id"))
"""Built once: every ingest request reads the settings (app/ingest/service.py says why)."""


def project_settings(session: Session, project_id: int) -> dict[str, Any]:
    """The project's settings: one JSON object, a key per noun that keeps some ("online_eval"
    for ingest, "drift" for the drift job)."""
    return dict(session.scalar(_SETTINGS, {"project_id": project_id}) or {})


def set_project_setting(
    session: Session, principal: Principal, key: str, value: Any
) -> dict[str, Any]:
    """Replaces one key of the principal's project settings, keeping the others; audited as
    project.settings_changed; commits. Returns the settings as stored."""
    project = session.get(Project, principal.project_id)
    if project is None:
        raise NotFound("project not found")
    project.settings = {**(project.settings or {}), key: value}
    audit.record(
        session, principal, "project.settings_changed", "project", project.id, {key: value}
    )
    session.commit()
    return dict(project.settings)
