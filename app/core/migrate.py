"""Apply Alembic migrations from code: `plumbline migrate`, `serve` and the tests use this."""

from __future__ import annotations

import re
from typing import Any

from alembic import command
from alembic.config import Config

from app.core.resources import resource_dir

_EVENT_PARTITION = re.compile(r"(expired_)?events_\d{8}")


def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    """Autogenerate's filter: the day partitions of `events` (PostgreSQL) are made at run time
    (app/ingest/partitions.py), not described by a model, so comparisons leave them out."""
    return not (type_ == "table" and name is not None and _EVENT_PARTITION.fullmatch(name))


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resource_dir("migrations")))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)
