"""Every database test runs on SQLite and, when PLUMBLINE_TEST_DATABASE_URL is set, on
PostgreSQL too. Each test gets an empty, fully migrated database of its own:
SQLite by copying a migrated template file, PostgreSQL by truncating a per-worker schema."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from app.core import migrate
from app.core.db import make_engine
from app.core.settings import Settings
from app.keys import service as keys
from app.main import create_app
from app.models import Base
from app.models.project import Role

PG_URL = os.environ.get("PLUMBLINE_TEST_DATABASE_URL")
REQUIRE_PG = os.environ.get("PLUMBLINE_REQUIRE_POSTGRES") == "1"
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


def pg_url_for_schema(schema: str) -> str:
    assert PG_URL
    separator = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{separator}options=-csearch_path%3D{schema}"


def create_pg_schema(prefix: str) -> tuple[str, str]:
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = make_engine(Settings(database_url=PG_URL))
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return schema, pg_url_for_schema(schema)


def drop_pg_schema(schema: str) -> None:
    engine = make_engine(Settings(database_url=PG_URL))
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    # Fold the WAL into the main file so a plain file copy is a complete database.
    engine = create_engine(url)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_worker_url() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("PLUMBLINE_TEST_DATABASE_URL is not set")
    schema, url = create_pg_schema("plt")
    migrate.upgrade(url)
    yield url
    drop_pg_schema(schema)


def _truncate_all(url: str) -> None:
    engine = make_engine(Settings(database_url=url))
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        target = tmp_path / "plumbline.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("pg_worker_url")
    _truncate_all(url)
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path,
        secret_key="test-secret-key-not-for-production",
        run_workers=False,
        run_scheduler=False,
        public_url="http://plumbline.test",
        # Ingest refuses events older than the retention (PLUMBLINE_RETENTION_DAYS); tests
        # post events of fixed past dates (2024, tests/ingest/factories.py), so they keep
        # events for a century. Tests of retention set the window they test.
        retention_days=36500,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def db(app: FastAPI) -> Iterator[Session]:
    with app.state.sessionmaker() as session:
        yield session


def new_key(app: FastAPI, project: str, role: Role = Role.admin, name: str = "test") -> str:
    """A key for `project` (created if needed), made through the keys service."""
    with app.state.sessionmaker() as session:
        row = keys.get_or_create_project(session, project)
        _key, plaintext = keys.create_key(session, row.id, role, name)
        session.commit()
    return plaintext


@pytest.fixture
def admin_key(app: FastAPI) -> str:
    return new_key(app, "acme", Role.admin, "acme-admin")


@pytest.fixture
def auth(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """CI makes PostgreSQL mandatory: a run in which no PostgreSQL test passed is a failure."""
    if not REQUIRE_PG:
        return
    passed = terminalreporter.stats.get("passed", [])
    if not any("[postgresql" in report.nodeid for report in passed):
        terminalreporter.write_line(
            "FAILED: PLUMBLINE_REQUIRE_POSTGRES=1 but no PostgreSQL test passed", red=True
        )
        terminalreporter._session.exitstatus = 1  # type: ignore[attr-defined]
