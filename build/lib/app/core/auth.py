"""Who is calling: API keys turned into a Principal (project, role, actor).

Keys are random (`pl_<lookup>_<secret>`) and stored as a SHA-256 digest; the lookup part finds
the row, a constant-time comparison of digests checks the secret. Key management (create,
list, revoke) lives in app/keys; this module is what every request needs."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import Forbidden, Unauthorized
from app.models import ApiKey
from app.models.project import Role

KEY_PREFIX = "pl_"
LOOKUP_CHARS = 10
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


def key_digest(key: str) -> str:
    # The key carries 190+ bits of randomness: a fast hash is enough, no stretching needed.
    return hashlib.sha256(key.encode()).hexdigest()


def authenticate(session: Session, plaintext: str | None) -> Principal:
    if not plaintext:
        raise Unauthorized(
            "an API key is required (Authorization: Bearer, X-Api-Key or api_key header)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    lookup = _parse_lookup(plaintext)
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == lookup)) if lookup else None
    if key is None or not hmac.compare_digest(key.key_hash, key_digest(plaintext)):
        raise Unauthorized("the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
    if key.revoked_at is not None:
        raise Unauthorized("the API key was revoked", headers={"WWW-Authenticate": "Bearer"})
    _touch(session, key)
    return Principal(project_id=key.project_id, key_id=key.id, role=key.role, actor=key.name)


def _parse_lookup(plaintext: str) -> str | None:
    if not plaintext.startswith(KEY_PREFIX):
        return None
    lookup, sep, _ = plaintext[len(KEY_PREFIX) :].partition("_")
    return lookup if sep and len(lookup) == LOOKUP_CHARS else None


def _touch(session: Session, key: ApiKey) -> None:
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        session.commit()
