"""Keyset pagination over integer ids, newest first: stable under concurrent inserts."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.core.errors import Problem

T = TypeVar("T")


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        kind, _, value = base64.urlsafe_b64decode(padded).decode().partition(":")
        if kind != "id":
            raise ValueError(kind)
        return int(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem("cursor: not a cursor this API issued", status=400) from exc


def paginate(
    session: Session,
    stmt: Select[Any],
    id_column: InstrumentedAttribute[int],
    cursor: str | None,
    limit: int,
    *,
    oldest_first: bool = False,
) -> tuple[Sequence[Any], str | None]:
    """One page of `stmt` (which selects ORM entities) and the cursor of the next page.
    Newest first by default; `oldest_first` for rows read in their own order (dataset rows,
    per-row results)."""
    if cursor:
        after = decode_cursor(cursor)
        stmt = stmt.where(id_column > after if oldest_first else id_column < after)
    order = id_column if oldest_first else id_column.desc()
    rows = session.scalars(stmt.order_by(order).limit(limit + 1)).all()
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, encode_cursor(getattr(page[-1], id_column.key))
