"""Project API keys: list, create (shown once), revoke."""

from __future__ import annotations

from fastapi import status

from app.core.deps import Admin, Paging, SessionDep, api_router
from app.core.schemas import Page
from app.keys import service as keys
from app.keys.schemas import KeyCreated, KeyIn, KeyOut

router = api_router("/api/v1/keys", "keys")


@router.get("", response_model=Page[KeyOut])
def list_keys(principal: Admin, session: SessionDep, paging: Paging) -> Page[KeyOut]:
    rows, cursor = keys.list_keys(session, principal.project_id, paging.cursor, paging.limit)
    return Page(items=[KeyOut.model_validate(r) for r in rows], next_cursor=cursor)


@router.post("", response_model=KeyCreated, status_code=status.HTTP_201_CREATED)
def create_key(body: KeyIn, principal: Admin, session: SessionDep) -> KeyCreated:
    key, plaintext = keys.issue_key(session, principal, body.role, body.name)
    return KeyCreated(**KeyOut.model_validate(key).model_dump(), key=plaintext)


@router.delete("/{key_id}", response_model=KeyOut)
def revoke_key(key_id: int, principal: Admin, session: SessionDep) -> KeyOut:
    return KeyOut.model_validate(keys.revoke(session, principal, key_id))
