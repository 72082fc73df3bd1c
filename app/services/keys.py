"""Projects and their API keys: random, shown once, stored as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import utcnow
from app.errors import Forbidden, NotFound, Unauthorized
from app.models import ApiKey, Project
from app.models.project import Role
from app.pagination import paginate

KEY_PREFIX = "pl_"
_PREFIX_CHARS = 10
# A used key's timestamp is refreshed at most this often, to keep reads free of writes.
_LAST_USED_RESOLUTION = timedelta(minutes=5)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the project the key belongs to and what it may do."""

    project_id: int
    key_id: int | None
    role: Role
    actor: str

    def require(self, role: Role) -> None:
        if self.role.rank < role.rank:
            raise Forbidden(f"this key has role '{self.role}'; '{role}' is required")


def _digest(key: str) -> str:
    # The key carries 190+ bits of randomness: a fast hash is enough, no stretching needed.
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(name=name, settings={})
        session.add(project)
        session.flush()
    return project


def create_key(session: Session, project_id: int, role: Role, name: str) -> tuple[ApiKey, str]:
    """Returns the row and the plaintext key, which exists nowhere else after this call."""
    lookup = secrets.token_hex(_PREFIX_CHARS // 2)
    plaintext = f"{KEY_PREFIX}{lookup}_{secrets.token_urlsafe(24)}"
    key = ApiKey(
        project_id=project_id, name=name, role=role, prefix=lookup, key_hash=_digest(plaintext)
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
    key = session.get(ApiKey, key_id)
    if key is None or key.project_id != project_id:
        raise NotFound(f"no API key {key_id} in this project")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def revoke_named(session: Session, project_id: int, name: str) -> None:
    session.execute(
        update(ApiKey)
        .where(ApiKey.project_id == project_id, ApiKey.name == name, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def authenticate(session: Session, plaintext: str | None) -> Principal:
    if not plaintext:
        raise Unauthorized(
            "an API key is required (Authorization: Bearer, X-Api-Key or api_key header)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    lookup = _parse_lookup(plaintext)
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == lookup)) if lookup else None
    if key is None or not hmac.compare_digest(key.key_hash, _digest(plaintext)):
        raise Unauthorized("the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
    if key.revoked_at is not None:
        raise Unauthorized("the API key was revoked", headers={"WWW-Authenticate": "Bearer"})
    _touch(session, key)
    return Principal(project_id=key.project_id, key_id=key.id, role=key.role, actor=key.name)


def _parse_lookup(plaintext: str) -> str | None:
    if not plaintext.startswith(KEY_PREFIX):
        return None
    lookup, sep, _ = plaintext[len(KEY_PREFIX) :].partition("_")
    return lookup if sep and len(lookup) == _PREFIX_CHARS else None


def _touch(session: Session, key: ApiKey) -> None:
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        session.commit()
