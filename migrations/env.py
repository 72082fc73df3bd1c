"""Alembic environment: one set of migrations for SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, Engine

from app.core import migrate
from app.core.db import make_engine
from app.core.settings import Settings
from app.models import Base

config = context.config
target_metadata = Base.metadata


def run_with_connection(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # Batch mode lets SQLite ALTER by copying the table.
        render_as_batch=True,
        compare_type=True,
        include_name=migrate.include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with_connection(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or Settings().database_url
    engine: Engine = make_engine(Settings(database_url=url))
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # A batch rebuild drops and recreates a table: enforced foreign keys would
            # delete or reject child rows on the way. The pragma only takes effect outside a
            # transaction, so it goes straight to the driver before anything begins.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        run_with_connection(conn)
    engine.dispose()


run_online()
