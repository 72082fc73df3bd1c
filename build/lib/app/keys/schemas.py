"""API keys over the API (admin only): the plaintext appears once, in the create answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import StringConstraints

from app.core.schemas import OrmModel, StrictModel
from app.models.project import Role


class KeyIn(StrictModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    role: Role = Role.read


class KeyOut(OrmModel):
    id: int
    name: str
    role: Role
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str
