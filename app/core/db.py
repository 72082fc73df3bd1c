"""Engine, sessions and the few places where SQLite and PostgreSQL differ."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fastapi import Request
from sqlalchemy import Engine, Table, bindparam, create_engine, event, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement, TextClause

from app.core.errors import NotFound
from app.core.settings import Settings
from app.models.base import UTCDateTime


def make_engine(settings: Settings) -> Engine:
    """`hide_parameters`: statement parameters appear neither in SQLAlchemy's statement log
    (when an operator turns it on) nor in the text of a failed statement's error (which the
    error handlers log): they carry what clients send, webhook URLs with their secret tokens
    among it."""
    url = settings.database_url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        pool_timeout=settings.db_pool_timeout_s,
        connect_args={"connect_timeout": settings.db_connect_timeout_s},
        hide_parameters=True,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling would defeat BEGIN IMMEDIATE below.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(conn: Connection) -> None:
    # One writer at a time: taking the write lock up front turns lock upgrades that would
    # fail with "database is locked" into a wait governed by busy_timeout.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def get_session(request: Request) -> Iterator[Session]:
    """FastAPI dependency: one session per request; services commit their own unit of work."""
    with request.app.state.sessionmaker() as session:
        yield session


def database_answers(session: Session) -> bool:
    try:
        session.execute(text("SELECT 1"))
    except Exception:  # any driver error means not ready; the reason is not the caller's business
        return False
    return True


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_ignoring_conflicts(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], conflict_columns: list[str]
) -> int:
    """Bulk insert that skips rows whose unique key already exists; returns rows inserted."""
    if not rows:
        return 0
    dialect_insert = postgresql.insert if is_postgres(session) else sqlite.insert
    stmt = (
        dialect_insert(table)
        .on_conflict_do_nothing(index_elements=conflict_columns)
        # SQLAlchemy 2.1 reports rowcount of executemany only when asked to keep it.
        .execution_options(preserve_rowcount=True)
    )
    result = session.execute(stmt, list(rows))
    return max(int(getattr(result, "rowcount", 0) or 0), 0)


def upsert(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    conflict_columns: list[str],
    update_columns: list[str],
) -> None:
    """Bulk insert-or-update on a unique key, in one statement per dialect."""
    if not rows:
        return
    dialect_insert = postgresql.insert if is_postgres(session) else sqlite.insert
    stmt = dialect_insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=conflict_columns,
        set_={col: stmt.excluded[col] for col in update_columns},
    )
    session.execute(stmt, list(rows))


def utc_day(session: Session, column: ColumnElement[Any]) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp column, as the database computes it."""
    if is_postgres(session):
        return func.date(func.timezone("UTC", column))
    return func.date(column)


def hour_bucket_sql(session: Session, column: str, start_param: str, hours_param: str) -> str:
    """Raw SQL: which bucket of `:hours_param` hours since `:start_param` the timestamp
    `column` falls in (0, 1, ...; for timestamps at or after the start)."""
    if is_postgres(session):
        # date_part is double precision; EXTRACT's numeric arithmetic is several times slower.
        elapsed = f"date_part('epoch', {column} - :{start_param}) / 3600.0"
        return f"CAST(FLOOR({elapsed} / :{hours_param}) AS INTEGER)"
    # CAST truncates toward zero, which is the floor here: the elapsed time is not negative.
    elapsed = f"(julianday({column}) - julianday(:{start_param})) * 24.0"
    return f"CAST({elapsed} / :{hours_param} AS INTEGER)"


def text_with_times(sql: str, *time_params: str) -> TextClause:
    """A raw-SQL statement whose named parameters are UTC timestamps, bound as the models
    store them (naive UTC text on SQLite, timestamptz on PostgreSQL)."""
    return text(sql).bindparams(*(bindparam(name, type_=UTCDateTime()) for name in time_params))


def json_text_equals_sql(session: Session, column: str, key_param: str, value_param: str) -> str:
    """Raw SQL: the JSON object `column` has key `:key_param` with text value `:value_param`.
    Any key works (no JSON-path quoting): PostgreSQL's ->>, SQLite's json_each."""
    if is_postgres(session):
        return f"({column} ->> :{key_param}) = :{value_param}"
    return (
        f"EXISTS (SELECT 1 FROM json_each({column}) AS kv "
        f"WHERE kv.key = :{key_param} AND CAST(kv.value AS TEXT) = :{value_param})"
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def today_utc() -> date:
    return utcnow().date()


class _Owned(Protocol):
    id: Any
    project_id: Any


OwnedT = TypeVar("OwnedT", bound=_Owned)


def get_owned(
    session: Session,
    entity: type[OwnedT],
    project_id: int,
    row_id: int,
    what: str,
    field: str | None = None,
) -> OwnedT:
    """The row of `entity` with this id, if it belongs to `project_id`: the one tenant check.

    Another project's row answers exactly as a missing one (404 "no <what> <id>"), so ids of
    other tenants cannot be probed. `field` names the request field the id came from. The
    statement names the project, so a store distributed by project_id reads one shard."""
    row = session.scalar(select(entity).where(entity.id == row_id, entity.project_id == project_id))
    if row is None:
        if field is None:
            raise NotFound(f"no {what} {row_id}")
        raise NotFound(f"{field}: no {what} {row_id}", field=field)
    return row
