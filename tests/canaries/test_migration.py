"""Migrations 0006 and 0021 on a database that already holds traffic (and canaries): events
survive the way up (as served traffic, shadow_of NULL) and the way back down, stored
canaries get no scope, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from app.canaries.plan import Plan
from app.core import migrate
from app.core.db import make_engine
from app.core.settings import Settings
from app.models import Canary
from tests.conftest import BACKENDS, create_pg_schema, drop_pg_schema

REVISION = "0006"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'traffic.db'}"
        return
    schema, url = create_pg_schema("plc")
    yield url
    drop_pg_schema(schema)


def _revision_before(url: str, revision: str) -> str:
    """The revision `revision` follows, whatever it is re-chained to at merge time."""
    script = ScriptDirectory.from_config(migrate.alembic_config(url))
    down = script.get_revision(revision).down_revision
    assert isinstance(down, str)
    return down


def _seed_traffic(url: str) -> None:
    """Rows as the schema before 0006 holds them (plain SQL: the models are newer)."""
    now = datetime(2024, 6, 1, 12, tzinfo=UTC)
    engine = make_engine(Settings(database_url=url))
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO projects (id, name, settings, created_at) VALUES (1, 'p', '{}', :t)"),
            {"t": now},
        )
        conn.execute(
            text("INSERT INTO models (id, project_id, name, created_at) VALUES (1, 1, 'm', :t)"),
            {"t": now},
        )
        conn.execute(
            text(
                "INSERT INTO checkpoints (id, project_id, model_id, version, kind, training, "
                "tags, status, spec_hash, created_at) "
                "VALUES (1, 1, 1, 'v1', 'full', '{}', '[]', 'champion', 'h', :t)"
            ),
            {"t": now},
        )
        for i in range(20):
            conn.execute(
                text(
                    "INSERT INTO events (project_id, model_id, checkpoint_id, trace_id, span_id, "
                    "ts, cohort, truncated, refusal, attributes, source, received_at) VALUES "
                    "(1, 1, 1, :trace, '', :t, '{\"region\": \"eu\"}', :no, :refused, '{}', "
                    "'rest', :t)"
                ),
                {"trace": f"t-{i}", "t": now, "no": False, "refused": i % 4 == 0},
            )
    engine.dispose()


def _events(url: str) -> list[tuple[str, bool]]:
    engine = make_engine(Settings(database_url=url))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT trace_id, refusal FROM events ORDER BY id")).all()
    engine.dispose()
    return [(trace, bool(refused)) for trace, refused in rows]


def _columns(url: str) -> tuple[set[str], set[str]]:
    engine = make_engine(Settings(database_url=url))
    inspector = inspect(engine)
    tables = set(inspector.get_table_names())
    columns = {c["name"] for c in inspector.get_columns("events")}
    engine.dispose()
    return tables, columns


def test_upgrade_over_stored_events_and_back(database_url: str) -> None:
    before = _revision_before(database_url, REVISION)
    migrate.upgrade(database_url, before)
    _seed_traffic(database_url)
    expected = [(f"t-{i}", i % 4 == 0) for i in range(20)]

    migrate.upgrade(database_url, "head")
    tables, columns = _columns(database_url)
    assert "canaries" in tables and "shadow_of" in columns
    assert _events(database_url) == expected
    engine = make_engine(Settings(database_url=database_url))
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT COUNT(*) FROM events WHERE shadow_of IS NULL")) == 20
    engine.dispose()

    migrate.downgrade(database_url, before)
    tables, columns = _columns(database_url)
    assert "canaries" not in tables and "shadow_of" not in columns
    assert _events(database_url) == expected


SCOPE_REVISION = "0021"


def _seed_canary(url: str) -> None:
    """A decided canary as the schema before 0021 holds it (plain SQL: the models are newer)."""
    now = datetime(2024, 6, 1, 12, tzinfo=UTC)
    engine = make_engine(Settings(database_url=url))
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO projects (id, name, settings, created_at) VALUES (1, 'p', '{}', :t)"),
            {"t": now},
        )
        conn.execute(
            text("INSERT INTO models (id, project_id, name, created_at) VALUES (1, 1, 'm', :t)"),
            {"t": now},
        )
        for id_, status in ((1, "champion"), (2, "blocked")):
            conn.execute(
                text(
                    "INSERT INTO checkpoints (id, project_id, model_id, version, kind, training, "
                    "tags, status, spec_hash, created_at) "
                    "VALUES (:id, 1, 1, :version, 'full', '{}', '[]', :status, :hash, :t)"
                ),
                {"id": id_, "version": f"v{id_}", "status": status, "hash": f"h{id_}", "t": now},
            )
        conn.execute(
            text(
                "INSERT INTO canaries (id, project_id, model_id, checkpoint_id, champion_id, "
                "status, decision, signals, cohorts, comparisons, margin, margins, alpha, "
                "max_days, min_hours, started_at, next_evaluation_at, actor, created_at) "
                "VALUES (1, 1, 1, 2, 1, 'rollback', 'rollback', '[\"refusal_rate\"]', "
                '\'[{"dimension": "region", "value": "eu"}]\', \'["served"]\', 0.01, '
                "'{}', 0.05, 14, 24, :t, :t, 'k', :t)"
            ),
            {"t": now},
        )
    engine.dispose()


def _canaries(url: str) -> list[tuple[Any, ...]]:
    engine = make_engine(Settings(database_url=url))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status, checkpoint_id FROM canaries")).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def _canary_columns(url: str) -> set[str]:
    engine = make_engine(Settings(database_url=url))
    columns = {c["name"] for c in inspect(engine).get_columns("canaries")}
    engine.dispose()
    return columns


def test_0021_adds_an_empty_scope_to_stored_canaries_and_drops_it(database_url: str) -> None:
    """Canaries started before 0021 compare the whole population: their scope is NULL, and
    they read as before through the models."""
    before = _revision_before(database_url, SCOPE_REVISION)
    migrate.upgrade(database_url, before)
    _seed_canary(database_url)
    migrate.upgrade(database_url, SCOPE_REVISION)
    assert "scope" in _canary_columns(database_url)
    assert _canaries(database_url) == [(1, "rollback", 2)]
    engine = make_engine(Settings(database_url=database_url))
    with Session(engine) as session:
        canary = session.scalars(select(Canary)).one()
        assert canary.scope is None and canary.cohorts == [{"dimension": "region", "value": "eu"}]
        assert Plan.of(canary).scope is None
    engine.dispose()

    migrate.downgrade(database_url, before)
    assert "scope" not in _canary_columns(database_url)
    assert _canaries(database_url) == [(1, "rollback", 2)]
    migrate.upgrade(database_url, "head")
    assert _canaries(database_url) == [(1, "rollback", 2)]
