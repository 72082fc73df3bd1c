"""Backs the scale-out claim (docs/scale-out.md): every statement the service sends to a
tenant table names one project, so a store distributed by project_id (Citus) routes it to one
shard. The statements are captured from real flows — one of everything seeded through the
API, every GET route, the dashboards, the background workers, the daily jobs and retention —
not listed by hand. Exceptions are listed in UNSCOPED_ALLOWED, each with its reason."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import ClauseElement, Connection, event

from app.canaries.service import evaluate_due_canaries
from app.core.db import today_utc
from app.drift.references import freeze
from app.gates import pairs
from app.ingest.retention import purge_expired_events
from app.models import Base, Checkpoint
from app.models.base import PG_PRIMARY_KEY
from app.models.project import Role
from app.schedule import run_daily_jobs
from app.webhooks.sender import deliver_webhooks
from tests.conftest import new_key
from tests.datasets.support import drain_worker
from tests.ingest.factories import event as event_body
from tests.test_authorization import fill_path, protected_routes, seed_project_a
from tests.web.test_pages import sign_in

GLOBAL_TABLES = {"projects", "job_runs"}
"""Not tenant data: the tenants themselves and the scheduler's claims (Citus reference
tables, replicated to every node)."""
DISTRIBUTED_TABLES = {
    table.name
    for table in Base.metadata.sorted_tables
    if "project_id" in table.info.get(PG_PRIMARY_KEY, ())
    or "project_id" in {column.name for column in table.primary_key.columns}
}
"""Tenant tables whose PostgreSQL keys carry project_id: distributed by it on Citus."""
REFERENCE_TENANT_TABLES = {
    table.name for table in Base.metadata.sorted_tables if "project_id" in table.c
} - DISTRIBUTED_TABLES
"""Exception, by table: small tenant tables that other tables' foreign keys point at by `id`
(models, checkpoints, monitors, alerts, gates, runs, datasets, versions, keys, endpoints).
On Citus they are reference tables, replicated to every node, so a statement on them never
needs routing, and foreign keys into them stay valid (docs/scale-out.md). The ORM reaches
them by `id` (relationship loads, flushes); their tenant check is `get_owned`."""
TENANT_TABLES = DISTRIBUTED_TABLES | REFERENCE_TENANT_TABLES
LISTED_BY_PROJECT = {
    "gates",
    "evaluation_runs",
    "checkpoints",
    "dataset_versions",
    "datasets",
    "models",
    "monitors",
}
"""Reference tables read in lists (by checkpoint, by version, by model, by dataset, by
parent, by ids a caller passes) whose every statement names the project all the same, but one
that loads rows by their ids alone (an ORM load, relationship load or flush, whose tenant
check is `get_owned` on the row that points at them): defence in depth, so that no list of
one project's gate decisions, pooled runs, checkpoints, dataset versions, datasets, models or
monitors can take in another's, whatever ids its caller holds."""
_BY_ID = r"(?:\?|%\(\w+\)s(?:::\w+)?|\d+)"
_ONE_ROW = re.compile(
    r"\b(?:{names})\.id = {value}(?:\s|$)".format(names="|".join(LISTED_BY_PROJECT), value=_BY_ID)
)
"""A statement on one row of those tables by its id: `t.id = ?` (SQLite), `t.id =
%(pk_1)s::INTEGER` (psycopg)."""
_ORM_LOAD = re.compile(
    r"^SELECT ({names})\.id, \1\.project_id, .* FROM \1 "
    r"WHERE \1\.id IN \({value}(?:, {value})*\)$".format(
        names="|".join(LISTED_BY_PROJECT), value=_BY_ID
    )
)
"""A relationship load (`lazy="selectin"`) of whole rows of those tables by the ids the rows
pointing at them hold: `SELECT t.id, t.project_id, ... FROM t WHERE t.id IN (?, ?)`."""

UNSCOPED_ALLOWED: dict[str, str] = {
    r"^SELECT canaries\.project_id, canaries\.id FROM canaries WHERE canaries\.status = ": (
        "the queue of due canaries looks across projects by design (one multi-shard read "
        "per poll); everything after it names the claimed canary's project"
    ),
    r"^SELECT webhook_deliveries\..* FROM webhook_deliveries JOIN webhook_endpoints .* "
    r"WHERE webhook_deliveries\.status = ": (
        "the queue of due deliveries looks across projects by design, like the canary queue"
    ),
    r"^SELECT evaluation_runs\.id FROM evaluation_runs WHERE evaluation_runs\.status = ": (
        "the evaluation worker's queue of queued runs looks across projects by design, like "
        "the canary queue; the claim and everything after it name the run by its id"
    ),
    r"^UPDATE evaluation_runs SET .* WHERE evaluation_runs\.status = .* "
    r"evaluation_runs\.heartbeat_at < ": (
        "the worker's reaper requeues or fails runs whose heartbeat stopped, in every project "
        "(one multi-shard statement per poll)"
    ),
    r"^CREATE TEMP TABLE IF NOT EXISTS plumbline_events_staging .* WITH NO DATA$": (
        "copies the shape of events into a session-local staging table, reading no row"
    ),
}
"""Statement pattern on a distributed or listed table -> why it may leave the project out."""

_TABLE = r'\b(?:FROM|JOIN|INTO|UPDATE)\s+"?({names})"?(?:\s|$|\(|,)'
_SCOPED = re.compile(
    r"\bproject_id\s*(?:=|IN\b|= ANY)"
    # A composite key loaded by tuple, (t.project_id, t.model_id, ...) IN ((?, ?, ...)):
    # PostgreSQL turns a row IN list into ORs of ANDed column equalities, which Citus prunes
    # by the project_id equality in each.
    r"|\(\s*[\w.]*\bproject_id\s*,[^)]*\)\s*IN\b",
    re.IGNORECASE,
)


def tenant_tables_of(statement: str) -> set[str]:
    names = "|".join(sorted(TENANT_TABLES, key=len, reverse=True))
    return set(re.findall(_TABLE.format(names=names), statement, re.IGNORECASE))


def is_scoped(statement: str) -> bool:
    """A WHERE/ON predicate on project_id, or an INSERT that writes the column."""
    if statement.upper().startswith("INSERT"):
        head = statement.split(")", 1)[0]
        return "project_id" in head or bool(_SCOPED.search(statement))
    return bool(_SCOPED.search(statement))


def capture(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement sent to the database: through SQLAlchemy's cursor events, and the
    gate's row fetch, which goes through the driver's own cursor (past those events)."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()))

    def recorded_driver_rows(connection: Connection, statement: ClauseElement) -> Sequence[Any]:
        sql = statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
        record(connection, None, str(sql))
        return driver_rows(connection, statement)

    event.listen(app.state.engine, "before_cursor_execute", record)
    driver_rows = pairs._driver_rows
    monkeypatch.setattr(pairs, "_driver_rows", recorded_driver_rows)
    return statements


def test_every_tenant_statement_is_scoped_to_one_project(
    app: FastAPI, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements = capture(app, monkeypatch)
    key = new_key(app, "alpha", Role.admin, "alpha-admin")
    auth = {"Authorization": f"Bearer {key}"}
    ids = seed_project_a(client, key)
    batch = [event_body(i, eval_passed=i % 3 != 0, refusal=i % 5 == 0) for i in range(40)]
    batch = [{**body, "model": ids["model"], "checkpoint_version": "alpha-v1"} for body in batch]
    assert client.post("/api/v1/events", json={"events": batch}, headers=auth).status_code == 202
    client.post("/api/v1/feedback", json={"trace_id": "trace-00003", "value": "down"}, headers=auth)
    with app.state.sessionmaker() as session:
        # A frozen reference, so reads of references load the cohorts added to them.
        checkpoint = session.get(Checkpoint, ids["checkpoint_id"])
        assert checkpoint is not None
        freeze(session, checkpoint.model, checkpoint.id, [today_utc()], "rebaseline")
        session.commit()
    for method, route in protected_routes(app):
        if method == "GET":
            client.get(fill_path(route.path, ids), headers=auth)
    sessions, settings = app.state.sessionmaker, app.state.settings
    drain_worker(app)
    evaluate_due_canaries(sessions, settings)
    while deliver_webhooks(sessions, settings):
        pass
    run_daily_jobs(sessions, settings)
    while purge_expired_events(sessions, settings):
        pass
    sign_in(client, key)
    page_ids = {**ids, "name": ids["dataset_name"], "trace_id": "trace-00003"}
    for route in iter_route_contexts(app.routes):
        page = "GET" in (getattr(route, "methods", None) or ())
        if page and not route.path.startswith(("/api/", "/v1/")):
            client.get(fill_path(route.path, page_ids))

    touched: set[str] = set()
    unscoped: dict[str, None] = {}
    for statement in statements:
        tables = tenant_tables_of(statement)
        touched |= tables
        allowed = any(re.search(pattern, statement) for pattern in UNSCOPED_ALLOWED)
        if tables & DISTRIBUTED_TABLES and not is_scoped(statement) and not allowed:
            unscoped[statement] = None
        by_id = _ONE_ROW.search(statement) or _ORM_LOAD.search(statement)
        listed = tables & LISTED_BY_PROJECT and not by_id
        if listed and not is_scoped(statement) and not allowed:
            unscoped[statement] = None
    assert TENANT_TABLES - touched == set(), "the flows never touched these tenant tables"
    assert list(unscoped) == [], "\n".join(unscoped)


def test_the_table_lists_cover_every_table() -> None:
    """A new table must be placed: distributed, reference or global."""
    assert set(Base.metadata.tables) == TENANT_TABLES | GLOBAL_TABLES
    assert {"events", "event_keys", "feedback", "daily_signals", "audit_log"} <= DISTRIBUTED_TABLES
    assert {"dataset_rows", "run_outputs", "eval_results"} <= DISTRIBUTED_TABLES
