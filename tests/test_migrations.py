"""The migrations build the schema the models describe, and come back down, on both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from app.core import migrate
from app.core.db import make_engine
from app.core.settings import Settings
from app.models import Base
from app.models.base import PG_PRIMARY_KEY
from tests.conftest import BACKENDS, create_pg_schema, drop_pg_schema


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    schema, url = create_pg_schema("plm")
    yield url
    drop_pg_schema(schema)


def table_names(url: str) -> set[str]:
    """The tables a model describes: day partitions of events are left out."""
    engine = make_engine(Settings(database_url=url))
    try:
        names = set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()
    return {name for name in names if migrate.include_name(name, "table", {})}


def test_upgrade_to_head_then_down_to_base(empty_database_url: str) -> None:
    assert table_names(empty_database_url) == set()
    migrate.upgrade(empty_database_url)
    assert table_names(empty_database_url) == set(Base.metadata.tables)
    migrate.downgrade(empty_database_url, "base")
    assert table_names(empty_database_url) == set()
    migrate.upgrade(empty_database_url)
    assert table_names(empty_database_url) == set(Base.metadata.tables)


def test_models_and_migrations_agree(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    engine = make_engine(Settings(database_url=empty_database_url))
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": migrate.include_name}
        )
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


SEED_0003 = [
    "INSERT INTO projects (id, name, settings, created_at) VALUES (1, 'p', '{}', :now)",
    "INSERT INTO models (id, project_id, name, created_at) VALUES (1, 1, 'bot', :now)",
    "INSERT INTO checkpoints (id, project_id, model_id, version, kind, status, training, tags, "
    "spec_hash, created_at) VALUES (1, 1, 1, 'v1', 'full', 'champion', '{}', '[]', 'a', :now), "
    "(2, 1, 1, 'v2', 'lora', 'blocked', '{}', '[]', 'b', :now)",
    "INSERT INTO datasets (id, project_id, name, created_at) VALUES (1, 1, 'golden', :now)",
    "INSERT INTO dataset_versions (id, project_id, dataset_id, version, content_hash, row_count, "
    "source, created_at) VALUES (1, 1, 1, 1, 'h1', 2, 'json', :now), "
    "(2, 1, 1, 2, 'h2', 2, 'json', :now)",
    "INSERT INTO dataset_rows (id, version_id, key, input, cohort, risk, metadata, row_hash) "
    "VALUES (1, 1, 'k1', '\"q\"', '{}', 'high', '{}', 'r1'), "
    "(2, 1, 'k2', '\"q\"', '{}', 'low', '{}', 'r2')",
    "INSERT INTO evaluation_runs (id, project_id, checkpoint_id, dataset_version_id, evaluators, "
    "status, output_source, progress_done, progress_total, attempts, created_at) VALUES "
    "(1, 1, 1, 1, '[]', 'succeeded', 'uploaded', 2, 2, 1, :now), "
    "(2, 1, 2, 1, '[]', 'succeeded', 'uploaded', 2, 2, 1, :now), "
    "(3, 1, 2, 2, '[]', 'succeeded', 'uploaded', 2, 2, 1, :now)",
    "INSERT INTO run_outputs (id, run_id, key) VALUES (1, 2, 'k1'), (2, 2, 'k2')",
    "INSERT INTO eval_results (id, run_id, key, evaluator, score, passed) VALUES "
    "(1, 2, 'k1', 'exact_match', 1.0, true), (2, 2, 'k2', 'exact_match', 0.0, false)",
    # Checkpoint 2 gated three times on version 1 (block, then inconclusive, then pass) and
    # once on version 2.
    "INSERT INTO gates (id, project_id, model_id, checkpoint_id, candidate_run_id, "
    "baseline_run_id, policy, verdict, reasons, comparisons, notes, created_at) VALUES "
    "(1, 1, 1, 2, 2, 1, '{}', 'block', '[]', '[]', '{}', :now), "
    "(2, 1, 1, 2, 2, 1, '{}', 'inconclusive', '[]', '[]', '{}', :now), "
    "(3, 1, 1, 2, 3, 1, '{}', 'pass', '[]', '[]', '{}', :now), "
    "(4, 1, 1, 2, 2, 1, '{}', 'pass', '[]', '[]', '{}', :now)",
]


def test_0004_upgrades_and_downgrades_a_database_holding_rows(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url, "0003")
    engine = make_engine(Settings(database_url=empty_database_url))
    try:
        with engine.begin() as conn:
            for statement in SEED_0003:
                conn.execute(text(statement), {"now": datetime(2026, 1, 1, tzinfo=UTC)})
        migrate.upgrade(empty_database_url, "0004")
        with engine.begin() as conn:
            gates = conn.execute(
                text(
                    "SELECT id, dataset_version_id, attempt, previously_blocked, alpha, "
                    "candidate_run_ids, baseline_run_ids FROM gates ORDER BY id"
                )
            ).all()
            assert [
                (g.id, g.dataset_version_id, g.attempt, bool(g.previously_blocked)) for g in gates
            ] == [
                (1, 1, 1, False),
                (2, 1, 2, True),
                (3, 2, 1, False),
                (4, 1, 3, True),
            ]
            assert {g.alpha for g in gates} == {None}
            assert [(as_json(g.candidate_run_ids), as_json(g.baseline_run_ids)) for g in gates] == [
                ([2], [1]),
                ([2], [1]),
                ([3], [1]),
                ([2], [1]),
            ]
            assert conn.execute(text("SELECT DISTINCT repeats FROM evaluation_runs")).all() == [
                (1,)
            ]
            assert conn.execute(text("SELECT DISTINCT repeat FROM eval_results")).all() == [(0,)]
            assert conn.execute(text("SELECT DISTINCT repeat FROM run_outputs")).all() == [(0,)]
            risks = conn.execute(text("SELECT cohort_risk FROM dataset_versions")).scalars()
            assert [as_json(r) for r in risks] == [{}, {}]
            # A second call of a row is now storable; the old key refused it.
            conn.execute(
                text(
                    "INSERT INTO eval_results (id, run_id, key, evaluator, repeat, score, passed) "
                    "VALUES (3, 2, 'k1', 'exact_match', 1, 0.0, false)"
                )
            )
            conn.execute(
                text("INSERT INTO run_outputs (id, run_id, key, repeat) VALUES (3, 2, 'k1', 1)")
            )
        migrate.downgrade(empty_database_url, "0003")
        with engine.begin() as conn:
            results = conn.execute(text("SELECT id, key FROM eval_results ORDER BY id")).all()
            assert [tuple(r) for r in results] == [(1, "k1"), (2, "k2")]
            assert conn.execute(text("SELECT COUNT(*) FROM run_outputs")).scalar() == 2
            assert conn.execute(text("SELECT COUNT(*) FROM gates")).scalar() == 4
            assert "attempt" not in {c["name"] for c in inspect(conn).get_columns("gates")}
        migrate.upgrade(empty_database_url)
    finally:
        engine.dispose()


def as_json(value: Any) -> Any:
    """JSON columns read back as text on SQLite and decoded on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


SEED_0006 = [
    *SEED_0003[:3],
    "INSERT INTO events (id, project_id, model_id, checkpoint_id, trace_id, span_id, ts, cohort, "
    "truncated, attributes, source, received_at, feedback) VALUES "
    "(1, 1, 1, 1, 't1', '', '2026-01-01 10:00:00', '{}', false, '{}', 'rest', :now, -1), "
    "(2, 1, 1, 1, 't1', 's2', '2026-01-01 23:59:59', '{}', false, '{}', 'rest', :now, -1), "
    "(3, 1, 1, 2, 't2', '', '2026-01-02 00:00:00', '{}', false, '{}', 'otlp', :now, NULL)",
    # Feedback on a stored trace, and feedback waiting for its trace.
    "INSERT INTO feedback (id, project_id, trace_id, value, created_at) VALUES "
    "(1, 1, 't1', -1, :now), (2, 1, 't9', 1, :now)",
]
NEW_EVENT = (
    "INSERT INTO events (project_id, model_id, checkpoint_id, trace_id, span_id, ts, cohort, "
    "truncated, attributes, source, received_at) VALUES "
    "(1, 1, 1, :trace, '', :ts, '{}', false, '{}', 'rest', :now)"
)


def primary_keys(conn: Any) -> dict[str, list[str]]:
    """Of the model tables the database holds at its revision."""
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    return {
        table: inspector.get_pk_constraint(table)["constrained_columns"]
        for table in Base.metadata.tables
        if table in present
    }


def test_0008_partitions_a_database_holding_events_and_comes_back(
    empty_database_url: str,
) -> None:
    migrate.upgrade(empty_database_url, "0006")
    engine = make_engine(Settings(database_url=empty_database_url))
    postgres = engine.dialect.name == "postgresql"
    now = datetime(2026, 1, 3, tzinfo=UTC)
    stored_day = datetime(2026, 1, 2, 12, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            for statement in SEED_0006:
                conn.execute(text(statement), {"now": now})
            if postgres:  # where the sequence stands when ids 1-3 came from it
                conn.execute(text("SELECT setval('events_id_seq', 3)"))
        migrate.upgrade(empty_database_url, "0008")
        with engine.begin() as conn:
            events = conn.execute(
                text("SELECT id, trace_id, span_id, feedback FROM events ORDER BY id")
            ).all()
            assert [tuple(e) for e in events] == [
                (1, "t1", "", -1),
                (2, "t1", "s2", -1),
                (3, "t2", "", None),
            ]
            keys = conn.execute(
                text("SELECT project_id, trace_id, span_id FROM event_keys ORDER BY 2, 3")
            ).all()
            assert [tuple(k) for k in keys] == [(1, "t1", ""), (1, "t1", "s2"), (1, "t2", "")]
            assert conn.execute(text("SELECT COUNT(*) FROM feedback")).scalar() == 2
            # The id sequence survived the rebuild: a new row takes the next id.
            conn.execute(text(NEW_EVENT), {"trace": "t3", "ts": stored_day, "now": now})
            assert conn.execute(text("SELECT MAX(id) FROM events")).scalar() == 4
            if postgres:
                partitions = conn.execute(
                    text(
                        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                        "JOIN pg_class c ON c.oid = i.inhrelid "
                        "WHERE i.inhparent = 'events'::regclass ORDER BY 1"
                    )
                ).all()
                bounds = dict(partitions)
                today = f"events_{datetime.now(UTC):%Y%m%d}"
                assert {"events_20260101", "events_20260102", today} <= set(bounds)
                assert "'2026-01-01 00:00:00+00'" in bounds["events_20260101"]
                assert conn.execute(text("SELECT COUNT(*) FROM events_20260101")).scalar() == 2
                assert conn.execute(text("SELECT COUNT(*) FROM events_20260102")).scalar() == 2
                # A second row of a key is not refused by events (its unique key would need
                # ts) but by event_keys, which ingest claims first.
                conn.execute(text(NEW_EVENT), {"trace": "t1", "ts": stored_day, "now": now})
                assert primary_keys(conn)["events"] == ["project_id", "id", "ts"]
                conn.execute(text("DELETE FROM events WHERE id = 5"))
        migrate.downgrade(empty_database_url, "0006")
        with engine.begin() as conn:
            ids = conn.execute(text("SELECT id FROM events ORDER BY id")).scalars().all()
            assert ids == [1, 2, 3, 4]
            assert "event_keys" not in inspect(conn).get_table_names()
            assert inspect(conn).get_pk_constraint("events")["constrained_columns"] == ["id"]
            uniques = inspect(conn).get_unique_constraints("events")
            assert [u["column_names"] for u in uniques] == [["project_id", "trace_id", "span_id"]]
            conn.execute(text(NEW_EVENT), {"trace": "t5", "ts": stored_day, "now": now})
            assert conn.execute(text("SELECT MAX(id) FROM events")).scalar() > 4
        migrate.upgrade(empty_database_url)
    finally:
        engine.dispose()


def test_tenant_primary_keys_carry_project_id_on_postgresql(empty_database_url: str) -> None:
    """The keys the models declare for PostgreSQL (`postgresql_primary_key`) are the keys the
    migrations built; every unique key of a table whose primary key carries project_id
    carries it too (Citus distributes such a table by project_id)."""
    migrate.upgrade(empty_database_url)
    engine = make_engine(Settings(database_url=empty_database_url))
    try:
        with engine.connect() as conn:
            built = primary_keys(conn)
            inspector = inspect(conn)
            postgres = conn.dialect.name == "postgresql"
            for name, table in Base.metadata.tables.items():
                declared = [column.name for column in table.primary_key.columns]
                expected = list(table.info.get(PG_PRIMARY_KEY, declared)) if postgres else declared
                assert built[name] == expected, name
                if "project_id" in expected:
                    uniques = [u["column_names"] for u in inspector.get_unique_constraints(name)]
                    uniques += [
                        i["column_names"] for i in inspector.get_indexes(name) if i["unique"]
                    ]
                    assert all("project_id" in columns for columns in uniques), (name, uniques)
    finally:
        engine.dispose()


SEED_DRIFT_0006 = [
    "INSERT INTO projects (id, name, settings, created_at) VALUES (1, 'p', '{}', :now)",
    "INSERT INTO models (id, project_id, name, created_at) VALUES (1, 1, 'bot', :now)",
    "INSERT INTO checkpoints (id, project_id, model_id, version, kind, status, training, tags, "
    "spec_hash, created_at) VALUES (1, 1, 1, 'v1', 'full', 'champion', '{}', '[]', 'a', :now)",
    "INSERT INTO events (id, project_id, model_id, checkpoint_id, trace_id, span_id, ts, cohort, "
    "truncated, latency_ms, attributes, source, received_at) VALUES "
    "(1, 1, 1, 1, 't1', '', :now, '{}', false, 120.5, '{}', 'rest', :now)",
    "INSERT INTO monitors (id, project_id, model_id, signal, band, min_volume, cooldown_hours, "
    "resolve_after_days, enabled, is_default, created_at, updated_at) VALUES "
    "(1, 1, 1, 'refusal_rate', :old_band, 100, 24, 2, true, true, :now, :now), "
    '(2, 1, 1, \'fallback_rate\', \'{"type": "fixed", "high": 0.5}\', 10, 24, 2, true, '
    "false, :now, :now)",
    "INSERT INTO alerts (id, project_id, monitor_id, model_id, checkpoint_id, signal, dimension, "
    "value, day, last_day, status, observed, volume, sample_trace_ids, days_in_band, opened_at, "
    "annotations) VALUES (1, 1, 1, 1, 1, 'refusal_rate', 'all', 'all', '2026-01-01', "
    "'2026-01-01', 'open', 0.3, 400, '[]', 0, :now, '[]')",
]
OLD_DEFAULT_BAND = {
    "type": "baseline",
    "window_days": 14,
    "alpha": 0.001,
    "min_days": 3,
    "source": "champion",
}


def test_0007_upgrades_and_downgrades_a_database_holding_rows(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url, "0006")
    engine = make_engine(Settings(database_url=empty_database_url))
    params = {"now": datetime(2026, 1, 1, tzinfo=UTC), "old_band": json.dumps(OLD_DEFAULT_BAND)}
    try:
        with engine.begin() as conn:
            for statement in SEED_DRIFT_0006:
                conn.execute(text(statement), params)
        migrate.upgrade(empty_database_url, "0007")
        with engine.begin() as conn:
            event = conn.execute(
                text("SELECT latency_ms, input_tokens, output_tokens FROM events")
            ).one()
            assert tuple(event) == (120.5, None, None)
            monitors = conn.execute(
                text("SELECT id, band, min_volume, resolve_after_days FROM monitors ORDER BY id")
            ).all()
            # The default monitor now judges against the frozen reference; a configured one
            # keeps its settings.
            assert [
                (m.id, as_json(m.band), m.min_volume, m.resolve_after_days) for m in monitors
            ] == [
                (1, {"type": "baseline", "side": "upper"}, 1, 3),
                (2, {"type": "fixed", "high": 0.5}, 10, 2),
            ]
            assert conn.execute(text("SELECT evidence FROM alerts")).scalar() is None
            conn.execute(
                text(
                    "INSERT INTO drift_references (project_id, model_id, version, checkpoint_id, "
                    "status, trigger, first_day, last_day, days, stats, created_at) VALUES "
                    "(1, 1, 1, 1, 'active', 'warmup', '2026-01-01', '2026-01-28', '[]', '{}', "
                    ":now)"
                ),
                params,
            )
            conn.execute(
                text(
                    "INSERT INTO drift_judgements (project_id, model_id, day, signal, dimension, "
                    "value, checkpoint_id, reference_version, side, volume, band_alpha, cusum, "
                    "cusum_lower, rules) VALUES (1, 1, '2026-02-01', 'refusal_rate', 'all', "
                    "'all', 1, 1, 'upper', 400, 0.0001, 1.5, 0, 2)"
                )
            )
            keys = inspect(conn).get_pk_constraint("drift_judgements")["constrained_columns"]
            assert keys[0] == "project_id"
            refs = inspect(conn).get_pk_constraint("drift_references")["constrained_columns"]
            assert refs == ["project_id", "model_id", "version"]
        migrate.downgrade(empty_database_url, "0006")
        with engine.begin() as conn:
            assert "drift_references" not in inspect(conn).get_table_names()
            assert "drift_judgements" not in inspect(conn).get_table_names()
            assert "input_tokens" not in {c["name"] for c in inspect(conn).get_columns("events")}
            assert "evidence" not in {c["name"] for c in inspect(conn).get_columns("alerts")}
            assert conn.execute(text("SELECT COUNT(*) FROM events")).scalar() == 1
            assert conn.execute(text("SELECT COUNT(*) FROM alerts")).scalar() == 1
            monitor = conn.execute(
                text("SELECT band, min_volume, resolve_after_days FROM monitors WHERE id = 1")
            ).one()
            assert (as_json(monitor.band), monitor.min_volume, monitor.resolve_after_days) == (
                OLD_DEFAULT_BAND,
                100,
                2,
            )
        migrate.upgrade(empty_database_url)
    finally:
        engine.dispose()


SEED_0008 = [
    "INSERT INTO projects (id, name, settings, created_at) VALUES "
    "(1, 'p', '{}', :now), (2, 'q', '{}', :now)",
    "INSERT INTO models (id, project_id, name, created_at) VALUES "
    "(1, 1, 'bot', :now), (2, 2, 'bot', :now)",
    "INSERT INTO checkpoints (id, project_id, model_id, version, kind, status, training, tags, "
    "spec_hash, created_at) VALUES (1, 1, 1, 'v1', 'full', 'champion', '{}', '[]', 'a', :now), "
    "(2, 2, 2, 'v1', 'full', 'champion', '{}', '[]', 'b', :now)",
    "INSERT INTO datasets (id, project_id, name, created_at) VALUES "
    "(1, 1, 'golden', :now), (2, 2, 'golden', :now)",
    "INSERT INTO dataset_versions (id, project_id, dataset_id, version, content_hash, row_count, "
    "source, created_at) VALUES (1, 1, 1, 1, 'h1', 2, 'json', :now), "
    "(2, 2, 2, 1, 'h2', 1, 'json', :now)",
    # Both projects have a row keyed 'k1': the key is unique per version, not per table.
    "INSERT INTO dataset_rows (id, version_id, key, input, cohort, risk, metadata, row_hash) "
    "VALUES (1, 1, 'k1', '\"q\"', '{}', 'high', '{}', 'r1'), "
    "(2, 1, 'k2', '\"q\"', '{}', 'low', '{}', 'r2'), "
    "(3, 2, 'k1', '\"q\"', '{}', 'low', '{}', 'r3')",
    "INSERT INTO evaluation_runs (id, project_id, checkpoint_id, dataset_version_id, evaluators, "
    "status, output_source, progress_done, progress_total, attempts, created_at) VALUES "
    "(1, 1, 1, 1, '[]', 'succeeded', 'uploaded', 2, 2, 1, :now), "
    "(2, 2, 2, 2, '[]', 'succeeded', 'uploaded', 1, 1, 1, :now)",
    "INSERT INTO run_outputs (id, run_id, key, repeat) VALUES "
    "(1, 1, 'k1', 0), (2, 1, 'k2', 0), (3, 2, 'k1', 0)",
    "INSERT INTO eval_results (id, run_id, key, evaluator, repeat, score, passed) VALUES "
    "(1, 1, 'k1', 'exact_match', 0, 1.0, true), (2, 1, 'k2', 'exact_match', 0, 0.0, false), "
    "(3, 2, 'k1', 'exact_match', 0, 1.0, true)",
]
CHILD_UNIQUES = {
    "dataset_rows": ["version_id", "key"],
    "run_outputs": ["run_id", "key", "repeat"],
    "eval_results": ["run_id", "key", "evaluator", "repeat"],
}
CHILD_TABLES = tuple(CHILD_UNIQUES)


def test_0009_gives_child_tables_their_parents_project_and_comes_back(
    empty_database_url: str,
) -> None:
    migrate.upgrade(empty_database_url, "0008")
    engine = make_engine(Settings(database_url=empty_database_url))
    postgres = engine.dialect.name == "postgresql"
    try:
        with engine.begin() as conn:
            for statement in SEED_0008:
                conn.execute(text(statement), {"now": datetime(2026, 1, 1, tzinfo=UTC)})
            if postgres:  # where the sequences stand when ids 1-3 came from them
                for table in CHILD_TABLES:
                    conn.execute(text(f"SELECT setval('{table}_id_seq', 3)"))
        migrate.upgrade(empty_database_url, "0009")
        with engine.begin() as conn:
            for table in CHILD_TABLES:
                owners = conn.execute(text(f"SELECT id, project_id FROM {table} ORDER BY id"))
                assert [tuple(row) for row in owners] == [(1, 1), (2, 1), (3, 2)], table
                column = next(
                    c for c in inspect(conn).get_columns(table) if c["name"] == "project_id"
                )
                assert column["nullable"] is False, table
                uniques = [u["column_names"] for u in inspect(conn).get_unique_constraints(table)]
                assert uniques == [["project_id", *CHILD_UNIQUES[table]]], table
            keys = primary_keys(conn)
            expected_key = ["project_id", "id"] if postgres else ["id"]
            assert [keys[table] for table in CHILD_TABLES] == [expected_key] * 3
            # New rows take the next id and must name their project.
            conn.execute(
                text(
                    "INSERT INTO eval_results (project_id, run_id, key, evaluator, repeat, "
                    "score, passed) VALUES (2, 2, 'k1', 'exact_match', 1, 0.0, false)"
                )
            )
            assert conn.execute(text("SELECT MAX(id) FROM eval_results")).scalar() == 4
            conn.execute(text("DELETE FROM eval_results WHERE id = 4"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("INSERT INTO run_outputs (run_id, key, repeat) VALUES (2, 'k9', 0)"))
        migrate.downgrade(empty_database_url, "0008")
        with engine.begin() as conn:
            for table in CHILD_TABLES:
                assert "project_id" not in {c["name"] for c in inspect(conn).get_columns(table)}
                uniques = [u["column_names"] for u in inspect(conn).get_unique_constraints(table)]
                assert uniques == [CHILD_UNIQUES[table]], table
                assert conn.execute(
                    text(f"SELECT id FROM {table} ORDER BY id")
                ).scalars().all() == [
                    1,
                    2,
                    3,
                ]
            assert [primary_keys(conn)[table] for table in CHILD_TABLES] == [["id"]] * 3
            rows = conn.execute(text("SELECT version_id, key, risk FROM dataset_rows ORDER BY id"))
            assert [tuple(row) for row in rows] == [
                (1, "k1", "high"),
                (1, "k2", "low"),
                (2, "k1", "low"),
            ]
            scores = conn.execute(text("SELECT run_id, key, score FROM eval_results ORDER BY id"))
            assert [tuple(row) for row in scores] == [
                (1, "k1", 1.0),
                (1, "k2", 0.0),
                (2, "k1", 1.0),
            ]
            # The old schema takes a row without a project again.
            conn.execute(text("INSERT INTO run_outputs (run_id, key, repeat) VALUES (2, 'k9', 0)"))
        migrate.upgrade(empty_database_url)
        with engine.begin() as conn:
            owners = conn.execute(text("SELECT key, project_id FROM run_outputs ORDER BY id"))
            assert [tuple(row) for row in owners] == [("k1", 1), ("k2", 1), ("k1", 2), ("k9", 2)]
    finally:
        engine.dispose()


def test_0010_adds_interned_cohorts_beside_stored_events_and_comes_back(
    empty_database_url: str,
) -> None:
    migrate.upgrade(empty_database_url, "0009")
    engine = make_engine(Settings(database_url=empty_database_url))
    postgres = engine.dialect.name == "postgresql"
    now = datetime.now(UTC)  # today has a day partition on PostgreSQL
    try:
        with engine.begin() as conn:
            for statement in SEED_0008[:3]:
                conn.execute(text(statement), {"now": now})
            for trace in ("t1", "t2"):
                conn.execute(text(NEW_EVENT), {"trace": trace, "ts": now, "now": now})
        migrate.upgrade(empty_database_url, "0010")
        with engine.begin() as conn:
            # Stored events keep their rows, without a cohort id: drift groups them by JSON.
            stored = conn.execute(text("SELECT trace_id, cohort_id FROM events ORDER BY trace_id"))
            assert [tuple(row) for row in stored] == [("t1", None), ("t2", None)]
            assert conn.execute(text("SELECT COUNT(*) FROM event_cohorts")).scalar() == 0
            assert primary_keys(conn)["event_cohorts"] == (
                ["project_id", "id"] if postgres else ["id"]
            )
            cohort = {"project_id": 1, "digest": "d", "cohort": '{"route": "/a"}', "route": "/a"}
            insert_cohort = text(
                "INSERT INTO event_cohorts (project_id, digest, cohort, route) "
                "VALUES (:project_id, :digest, :cohort, :route)"
            )
            conn.execute(insert_cohort, cohort)
            conn.execute(text("UPDATE events SET cohort_id = 1 WHERE trace_id = 't1'"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert_cohort, cohort)  # one row per project and digest
        migrate.downgrade(empty_database_url, "0009")
        with engine.begin() as conn:
            assert "event_cohorts" not in inspect(conn).get_table_names()
            assert "cohort_id" not in {c["name"] for c in inspect(conn).get_columns("events")}
            traces = conn.execute(text("SELECT trace_id FROM events ORDER BY trace_id"))
            assert traces.scalars().all() == ["t1", "t2"]
        migrate.upgrade(empty_database_url)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT COUNT(cohort_id) FROM events")).scalar() == 0
    finally:
        engine.dispose()


def test_0011_adds_unpriced_checkpoint_prices_and_comes_back(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url, "0010")
    engine = make_engine(Settings(database_url=empty_database_url))
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            for statement in SEED_0008[:3]:
                conn.execute(text(statement), {"now": now})
        migrate.upgrade(empty_database_url, "0011")
        prices = text(
            "SELECT id, usd_per_million_input_tokens, usd_per_million_output_tokens "
            "FROM checkpoints ORDER BY id"
        )
        with engine.begin() as conn:
            # Registered checkpoints stay, unpriced: no cost signals until someone prices them.
            assert [tuple(r) for r in conn.execute(prices)] == [(1, None, None), (2, None, None)]
            conn.execute(
                text(
                    "UPDATE checkpoints SET usd_per_million_input_tokens = 0.5, "
                    "usd_per_million_output_tokens = 1.5 WHERE id = 1"
                )
            )
            assert [tuple(r) for r in conn.execute(prices)] == [(1, 0.5, 1.5), (2, None, None)]
        # Both prices or neither: a cost needs the pair.
        for half in ("usd_per_million_input_tokens = NULL", "usd_per_million_output_tokens = 2"):
            with pytest.raises(IntegrityError), engine.begin() as conn:
                conn.execute(text(f"UPDATE checkpoints SET {half} WHERE id IN (1, 2)"))
        migrate.downgrade(empty_database_url, "0010")
        with engine.begin() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("checkpoints")}
            assert not columns & {"usd_per_million_input_tokens", "usd_per_million_output_tokens"}
            versions = conn.execute(text("SELECT id, version, spec_hash FROM checkpoints"))
            assert sorted(tuple(r) for r in versions) == [(1, "v1", "a"), (2, "v1", "b")]
        migrate.upgrade(empty_database_url)
        with engine.begin() as conn:
            assert [tuple(r) for r in conn.execute(prices)] == [(1, None, None), (2, None, None)]
    finally:
        engine.dispose()


def test_0012_marks_stored_evaluator_errors_and_comes_back(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url, "0011")
    engine = make_engine(Settings(database_url=empty_database_url))
    postgres = engine.dialect.name == "postgresql"
    now = datetime.now(UTC)
    # (key, evaluator, score, passed, reason, details) as the worker stored them before 0012:
    # a verdict, a row's invalid input, a missing endpoint output, a judge without its key,
    # a crashed evaluator.
    stored = [
        ("k1", "exact_match", 1.0, True, "match", {}),
        ("k2", "exact_match", 0.0, False, "invalid input: output must be a string", {"error": "x"}),
        ("k1", "contains", 0.0, False, "no output: HTTP 503", {"error": "HTTP 503"}),
        ("k1", "llm_judge", 0.0, False, "environment variable K is not set", {"error": "K"}),
        ("k2", "llm_judge", 0.0, False, "evaluator error: ZeroDivisionError", {"error": "Z"}),
    ]
    json_value = "CAST(:details AS jsonb)" if postgres else ":details"
    try:
        with engine.begin() as conn:
            # Projects to dataset versions, and the runs (their rows and outputs predate 0009).
            for statement in (*SEED_0008[:5], SEED_0008[6]):
                conn.execute(text(statement), {"now": now})
            for key, evaluator, score, passed, reason, details in stored:
                conn.execute(
                    text(
                        "INSERT INTO eval_results (project_id, run_id, key, evaluator, repeat, "
                        "score, passed, reason, details) VALUES (1, 1, :key, :evaluator, 0, "
                        f":score, :passed, :reason, {json_value})"
                    ),
                    {
                        "key": key,
                        "evaluator": evaluator,
                        "score": score,
                        "passed": passed,
                        "reason": reason,
                        "details": json.dumps(details),
                    },
                )
        migrate.upgrade(empty_database_url, "0012")
        errors = text("SELECT id, error FROM eval_results ORDER BY id")
        with engine.begin() as conn:
            # Only what the evaluator could not judge becomes an error; fails stay fails.
            marked = [(i, bool(e)) for i, e in conn.execute(errors)]
            assert marked == [(1, False), (2, False), (3, False), (4, True), (5, True)]
            conn.execute(
                text(
                    "INSERT INTO eval_results (project_id, run_id, key, evaluator, repeat, "
                    "score, passed) VALUES (1, 1, 'k2', 'contains', 0, 1.0, true)"
                )
            )
            assert conn.execute(text("SELECT error FROM eval_results WHERE id = 6")).scalar() in (
                False,
                0,
            )
        migrate.downgrade(empty_database_url, "0011")
        with engine.begin() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("eval_results")}
            assert "error" not in columns
            kept = conn.execute(text("SELECT id, reason FROM eval_results ORDER BY id"))
            assert [tuple(r) for r in kept] == [
                *((i, reason) for i, (*_, reason, _) in enumerate(stored, 1)),
                (6, None),
            ]
            if postgres:
                primary = primary_keys(conn)["eval_results"]
                assert primary == ["project_id", "id"]
        migrate.upgrade(empty_database_url)
        with engine.begin() as conn:
            marked = [(i, bool(e)) for i, e in conn.execute(errors)]
            assert [i for i, error in marked if error] == [4, 5]
    finally:
        engine.dispose()


def test_0013_records_cohorts_added_to_references_and_comes_back(
    empty_database_url: str,
) -> None:
    migrate.upgrade(empty_database_url, "0012")
    engine = make_engine(Settings(database_url=empty_database_url))
    postgres = engine.dialect.name == "postgresql"
    json_value = "CAST(:stats AS jsonb)" if postgres else ":stats"
    stats = {"refusal_rate|all|all": [0.05, 0.0, 1e-6, 14, 0]}
    reference = text(
        "INSERT INTO drift_references (project_id, model_id, version, checkpoint_id, status, "
        "trigger, first_day, last_day, days, stats, created_at) VALUES (1, 1, 1, 1, 'active', "
        f"'warmup', '2026-01-01', '2026-01-14', '[]', {json_value}, :now)"
    )
    added = text(
        "INSERT INTO drift_reference_cohorts (project_id, model_id, version, dimension, value, "
        "added_on, first_day, last_day, days, entries, created_at) VALUES (1, 1, :version, "
        "'route', '/new', '2026-02-05', '2026-01-22', '2026-02-04', '[]', 2, :now)"
    )
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            for statement in SEED_0008[:3]:
                conn.execute(text(statement), {"now": now})
            conn.execute(reference, {"now": now, "stats": json.dumps(stats)})
        migrate.upgrade(empty_database_url, "0013")
        with engine.begin() as conn:
            # Stored references keep their entries, with nothing recorded as added.
            kept = conn.execute(text("SELECT version, stats FROM drift_references")).one()
            assert (kept.version, as_json(kept.stats)) == (1, stats)
            assert conn.execute(text("SELECT COUNT(*) FROM drift_reference_cohorts")).scalar() == 0
            conn.execute(added, {"version": 1, "now": now})
            keys = inspect(conn).get_pk_constraint("drift_reference_cohorts")
            assert keys["constrained_columns"] == [
                "project_id",
                "model_id",
                "version",
                "dimension",
                "value",
            ]
        # A record names a reference version that exists.
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(added, {"version": 2, "now": now})
        migrate.downgrade(empty_database_url, "0012")
        with engine.begin() as conn:
            assert "drift_reference_cohorts" not in inspect(conn).get_table_names()
            kept = conn.execute(text("SELECT version, stats FROM drift_references")).one()
            assert (kept.version, as_json(kept.stats)) == (1, stats)
        migrate.upgrade(empty_database_url)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM drift_reference_cohorts")).scalar() == 0
    finally:
        engine.dispose()


ENDPOINT_1 = (
    "INSERT INTO webhook_endpoints (id, project_id, url, events, secret_encrypted, status, "
    "consecutive_failures, updated_at, created_at) "
    "VALUES (1, 1, 'http://h/', '[]', 's', 'active', 0, :now, :now)"
)
"""Webhook endpoint 1 of project 1 (SEED_0008), as the 0014 and 0015 tests start from."""


def test_0014_adds_a_null_subject_to_queued_deliveries_and_comes_back(
    empty_database_url: str,
) -> None:
    migrate.upgrade(empty_database_url, "0013")
    engine = make_engine(Settings(database_url=empty_database_url))
    now = datetime.now(UTC)
    delivery = (
        "INSERT INTO webhook_deliveries (id, project_id, endpoint_id, event_type, msg_id, "
        "payload, status, attempts, next_attempt_at, created_at{subject_column}) VALUES "
        "(:id, 1, 1, 'alert.opened', :msg_id, '{{}}', 'pending', 0, :now, :now{subject_value})"
    )
    try:
        with engine.begin() as conn:
            conn.execute(text(SEED_0008[0]), {"now": now})
            conn.execute(text(ENDPOINT_1), {"now": now})
            conn.execute(
                text(delivery.format(subject_column="", subject_value="")),
                {"id": 1, "msg_id": "alert.opened.1", "now": now},
            )
        migrate.upgrade(empty_database_url, "0014")
        subjects = text("SELECT id, msg_id, subject FROM webhook_deliveries ORDER BY id")
        with engine.begin() as conn:
            # Queued before: no subject, so sent unordered as before.
            assert [tuple(r) for r in conn.execute(subjects)] == [(1, "alert.opened.1", None)]
            conn.execute(
                text(delivery.format(subject_column=", subject", subject_value=", 'alert:1'")),
                {"id": 2, "msg_id": "alert.resolved.1", "now": now},
            )
            assert [tuple(r) for r in conn.execute(subjects)][1] == (
                2,
                "alert.resolved.1",
                "alert:1",
            )
        migrate.downgrade(empty_database_url, "0013")
        with engine.begin() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("webhook_deliveries")}
            assert "subject" not in columns
            kept = conn.execute(text("SELECT id, msg_id FROM webhook_deliveries ORDER BY id"))
            assert [tuple(r) for r in kept] == [(1, "alert.opened.1"), (2, "alert.resolved.1")]
        migrate.upgrade(empty_database_url)
        with engine.begin() as conn:
            assert [r.subject for r in conn.execute(subjects)] == [None, None]
    finally:
        engine.dispose()


def test_0015_adds_an_unrotated_previous_secret_to_endpoints_and_comes_back(
    empty_database_url: str,
) -> None:
    migrate.upgrade(empty_database_url, "0014")
    engine = make_engine(Settings(database_url=empty_database_url))
    now = datetime.now(UTC)
    previous = text(
        "SELECT id, secret_encrypted, previous_secret_encrypted, previous_secret_expires_at "
        "FROM webhook_endpoints ORDER BY id"
    )
    try:
        with engine.begin() as conn:
            conn.execute(text(SEED_0008[0]), {"now": now})
            conn.execute(text(ENDPOINT_1), {"now": now})
            conn.execute(
                text(
                    "INSERT INTO webhook_deliveries (id, project_id, endpoint_id, event_type, "
                    "msg_id, payload, status, attempts, next_attempt_at, created_at) VALUES "
                    "(1, 1, 1, 'alert.opened', 'alert.opened.1', '{}', 'pending', 0, :now, :now)"
                ),
                {"now": now},
            )
        migrate.upgrade(empty_database_url, "0015")
        with engine.begin() as conn:
            # Never rotated; the endpoint's queued delivery survives SQLite's table copy.
            assert [tuple(r) for r in conn.execute(previous)] == [(1, "s", None, None)]
            assert conn.execute(text("SELECT COUNT(*) FROM webhook_deliveries")).scalar() == 1
            conn.execute(
                text(
                    "UPDATE webhook_endpoints SET previous_secret_encrypted = 's', "
                    "secret_encrypted = 't', previous_secret_expires_at = :now"
                ),
                {"now": now},
            )
        # A previous secret and its expiry come together.
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE webhook_endpoints SET previous_secret_expires_at = NULL"))
        migrate.downgrade(empty_database_url, "0014")
        with engine.begin() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("webhook_endpoints")}
            assert not columns & {"previous_secret_encrypted", "previous_secret_expires_at"}
            kept = conn.execute(text("SELECT id, secret_encrypted FROM webhook_endpoints"))
            assert [tuple(r) for r in kept] == [(1, "t")]
            assert conn.execute(text("SELECT COUNT(*) FROM webhook_deliveries")).scalar() == 1
        migrate.upgrade(empty_database_url)
        with engine.begin() as conn:
            assert [tuple(r) for r in conn.execute(previous)] == [(1, "t", None, None)]
    finally:
        engine.dispose()


def test_0016_adds_run_idempotency_keys_unique_per_project_and_comes_back(
    empty_database_url: str,
) -> None:
    migrate.upgrade(empty_database_url, "0015")
    engine = make_engine(Settings(database_url=empty_database_url))
    now = datetime.now(UTC)
    new_run = text(
        "INSERT INTO evaluation_runs (project_id, checkpoint_id, dataset_version_id, evaluators, "
        "status, output_source, progress_done, progress_total, attempts, created_at, "
        "idempotency_key, request_digest) VALUES (1, 1, 1, '[]', 'queued', 'uploaded', 0, 2, 0, "
        ":now, :key, :digest)"
    )
    keys = text("SELECT id, project_id, idempotency_key, request_digest FROM evaluation_runs")
    try:
        with engine.begin() as conn:
            # Two projects, a run in each (created before keys existed).
            for statement in (*SEED_0008[:5], SEED_0008[6]):
                conn.execute(text(statement), {"now": now})
            if engine.dialect.name == "postgresql":  # where the sequence stands after ids 1-2
                conn.execute(text("SELECT setval('evaluation_runs_id_seq', 2)"))
        migrate.upgrade(empty_database_url, "0016")
        with engine.begin() as conn:
            assert sorted(tuple(r) for r in conn.execute(keys)) == [
                (1, 1, None, None),
                (2, 2, None, None),
            ]
            # One key may name a run in each project; unkeyed runs never collide.
            conn.execute(
                text(
                    "UPDATE evaluation_runs SET idempotency_key = 'k', request_digest = 'd' "
                    "WHERE id IN (1, 2)"
                )
            )
            conn.execute(new_run, {"now": now, "key": None, "digest": None})
            conn.execute(new_run, {"now": now, "key": None, "digest": None})
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(new_run, {"now": now, "key": "k", "digest": "e"})  # one run per key
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(new_run, {"now": now, "key": "k2", "digest": None})  # key and digest
        migrate.downgrade(empty_database_url, "0015")
        with engine.begin() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("evaluation_runs")}
            assert not columns & {"idempotency_key", "request_digest"}
            assert conn.execute(text("SELECT COUNT(*) FROM evaluation_runs")).scalar() == 4
        migrate.upgrade(empty_database_url)
        with engine.begin() as conn:
            assert {tuple(r)[2:] for r in conn.execute(keys)} == {(None, None)}
    finally:
        engine.dispose()


def test_0017_marks_exploratory_gates_and_narrows_the_attempt_key_to_real_ones(
    empty_database_url: str,
) -> None:
    migrate.upgrade(empty_database_url, "0016")
    engine = make_engine(Settings(database_url=empty_database_url))
    postgres = engine.dialect.name == "postgresql"
    now = datetime.now(UTC)
    json_value = "CAST(:notes AS jsonb)" if postgres else ":notes"
    new_gate = (
        "INSERT INTO gates (id, project_id, model_id, checkpoint_id, candidate_run_id, "
        "baseline_run_id, dataset_version_id, attempt, policy, verdict, reasons, comparisons, "
        "notes, created_at{column}) VALUES (:id, 1, 1, 1, 1, 1, 1, :attempt, '{{}}', :verdict, "
        f"'[]', '[]', {json_value}, :now{{value}})"
    )
    legacy_override = {"messages": ["policy overridden in the request: margin"]}
    # (notes, verdict) of gates 1-5 of checkpoint 1 on version 1, attempts 1-5 as decided:
    # real; overrides stored; overrides only in a message (decided before they were stored);
    # another message; a request that sent the stored policy again (stored overrides win).
    stored = [
        ({"messages": [], "policy_overrides": []}, "pass"),
        ({"messages": [], "policy_overrides": ["margin"]}, "inconclusive"),
        (legacy_override, "block"),
        ({"messages": ["dataset versions differ"]}, "block"),
        ({**legacy_override, "policy_overrides": []}, "pass"),
    ]
    flags = text("SELECT id, attempt, exploratory FROM gates ORDER BY id")

    def insert(
        conn: Any, gate_id: int, attempt: int, notes: Any, verdict: str = "pass", explored: str = ""
    ) -> None:
        """A gate with `notes`; `explored` ('true'/'false') sets the column (from 0017)."""
        column, value = (", exploratory", f", {explored}") if explored else ("", "")
        values = {"id": gate_id, "attempt": attempt, "verdict": verdict, "now": now}
        conn.execute(
            text(new_gate.format(column=column, value=value)),
            {**values, "notes": json.dumps(notes)},
        )

    try:
        with engine.begin() as conn:
            for statement in (*SEED_0008[:5], SEED_0008[6]):
                conn.execute(text(statement), {"now": now})
            for gate_id, (notes, verdict) in enumerate(stored, 1):
                insert(conn, gate_id, gate_id, notes, verdict)
        migrate.upgrade(empty_database_url, "0017")
        with engine.begin() as conn:
            assert [(i, a, bool(e)) for i, a, e in conn.execute(flags)] == [
                (1, 1, False),
                (2, 2, True),
                (3, 3, True),
                (4, 4, False),
                (5, 5, False),
            ]
            # Exploratory gates share the next real gate's number, with one another too.
            insert(conn, 6, 6, {"policy_overrides": ["alpha"]}, explored="true")
            insert(conn, 7, 6, {"policy_overrides": ["margin"]}, explored="true")
            insert(conn, 8, 6, {"policy_overrides": []})  # real unless marked
            assert conn.execute(text("SELECT exploratory FROM gates WHERE id = 8")).scalar() in (
                False,
                0,
            )
        with pytest.raises(IntegrityError), engine.begin() as conn:
            insert(conn, 9, 6, {"policy_overrides": []}, explored="false")  # two real attempt 6s
        migrate.downgrade(empty_database_url, "0016")
        with engine.begin() as conn:
            assert "exploratory" not in {c["name"] for c in inspect(conn).get_columns("gates")}
            # Every gate counted again, in the order decided; the budgets stay as decided.
            attempts = conn.execute(text("SELECT id, attempt FROM gates ORDER BY id"))
            assert [tuple(r) for r in attempts] == [(i, i) for i in range(1, 9)]
        with pytest.raises(IntegrityError), engine.begin() as conn:
            insert(conn, 9, 2, {"policy_overrides": ["margin"]})  # the full key is back
        migrate.upgrade(empty_database_url)
        with engine.begin() as conn:
            explored = [i for i, _, e in conn.execute(flags) if e]
            assert explored == [2, 3, 6, 7]
    finally:
        engine.dispose()


def test_0018_counts_job_run_attempts_and_leaves_failed_periods_unretried_and_comes_back(
    empty_database_url: str,
) -> None:
    """Periods claimed before 0018 ran once and are not to be retried: attempts 1, retry_at
    NULL, so a day that failed before the upgrade stays failed as it was."""
    migrate.upgrade(empty_database_url, "0017")
    engine = make_engine(Settings(database_url=empty_database_url))
    now = datetime.now(UTC)
    claim = text(
        "INSERT INTO job_runs (job, period, owner, status, error, started_at) "
        "VALUES ('drift.daily', :period, 'host:1', :status, :error, :now)"
    )
    rows = text("SELECT period, status, attempts, retry_at FROM job_runs ORDER BY period")
    try:
        with engine.begin() as conn:
            conn.execute(
                claim, {"period": "2026-05-01", "status": "succeeded", "error": None, "now": now}
            )
            conn.execute(
                claim, {"period": "2026-05-02", "status": "failed", "error": "x", "now": now}
            )
        migrate.upgrade(empty_database_url, "0018")
        with engine.begin() as conn:
            assert [tuple(r) for r in conn.execute(rows)] == [
                ("2026-05-01", "succeeded", 1, None),
                ("2026-05-02", "failed", 1, None),
            ]
            conn.execute(
                text("UPDATE job_runs SET attempts = 2, retry_at = :now WHERE status = 'failed'"),
                {"now": now},
            )
        migrate.downgrade(empty_database_url, "0017")
        with engine.begin() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("job_runs")}
            assert not columns & {"attempts", "retry_at"}
            assert conn.execute(text("SELECT COUNT(*) FROM job_runs")).scalar() == 2
        migrate.upgrade(empty_database_url)
        with engine.begin() as conn:
            assert [tuple(r)[2:] for r in conn.execute(rows)] == [(1, None), (1, None)]
    finally:
        engine.dispose()


RATED_EVENT = (
    "INSERT INTO events (project_id, model_id, checkpoint_id, trace_id, span_id, ts, cohort, "
    "truncated, attributes, source, received_at, feedback, shadow_of) VALUES "
    "(:project, :project, :checkpoint, :trace, :span, :ts, '{}', false, '{}', 'rest', :ts, "
    ":feedback, :shadow_of)"
)


def test_0019_places_a_carrier_per_rated_trace_and_checkpoint_and_comes_back(
    empty_database_url: str,
) -> None:
    """The backfill gives each rated trace x checkpoint one carrier, its latest served rated
    call (ts, then id), across day partitions on PostgreSQL; unrated traces, shadow answers
    and the other calls carry nothing. thumbs_down_rate's daily rows and reference entries,
    stored under the old meaning (rated calls), are removed; the other signals' stay."""
    migrate.upgrade(empty_database_url, "0018")
    engine = make_engine(Settings(database_url=empty_database_url))
    now = datetime.now(UTC)  # today and the next 7 days have day partitions on PostgreSQL
    tomorrow, later = now + timedelta(days=1), now + timedelta(days=2)
    # (project, checkpoint, trace, span, ts, feedback, shadow_of)
    events = [
        (1, 1, "a", "1", now, -1, None),
        (1, 1, "a", "2", tomorrow, -1, None),  # a's carrier on checkpoint 1: the latest
        (1, 1, "a", "3", now, -1, None),
        (1, 3, "a", "4", now, -1, None),  # the trace's call on another checkpoint
        (1, 1, "a", "shadow", later, 1, "a"),  # a shadow answer never carries
        (1, 1, "b", "1", now, 1, None),
        (1, 1, "b", "2", now, 1, None),  # same ts: the later id
        (1, 1, "c", "1", now, None, None),  # unrated
        (2, 2, "a", "1", now, -1, None),  # the same trace id in another project
    ]
    carriers = text(
        "SELECT project_id, checkpoint_id, trace_id, span_id, carried_feedback FROM events "
        "WHERE carried_feedback IS NOT NULL ORDER BY project_id, checkpoint_id, trace_id"
    )
    placed = [(1, 1, "a", "2", -1), (1, 1, "b", "2", 1), (1, 3, "a", "4", -1), (2, 2, "a", "1", -1)]
    postgres = engine.dialect.name == "postgresql"
    # Stored under the old meaning (rated calls): its daily rows and reference entries go.
    stats = {
        "thumbs_down_rate|all|all": [0.2, 0.0, 1e-4, 28, 0],
        "thumbs_down_rate|route|/a": [0.3, 0.0, 1e-3, 28, 0],
        "refusal_rate|all|all": [0.05, 1e-5, 1e-6, 28, 1],
    }
    reference = text(
        "INSERT INTO drift_references (project_id, model_id, version, checkpoint_id, status, "
        "trigger, first_day, last_day, days, stats, created_at) VALUES (1, 1, 1, 1, 'active', "
        "'warmup', '2026-01-01', '2026-01-28', '[]', "
        f"{'CAST(:stats AS jsonb)' if postgres else ':stats'}, :now)"
    )
    daily = text(
        "INSERT INTO daily_signals (project_id, model_id, checkpoint_id, day, signal, dimension, "
        "value, numerator, denominator, rate, computed_at) VALUES "
        "(1, 1, 1, '2026-01-02', 'thumbs_down_rate', 'all', 'all', 6, 30, 0.2, :now), "
        "(1, 1, 1, '2026-01-02', 'refusal_rate', 'all', 'all', 5, 100, 0.05, :now)"
    )
    monitor = text(
        "INSERT INTO monitors (id, project_id, model_id, signal, dimension, value, band, "
        "min_volume, cooldown_hours, resolve_after_days, enabled, is_default, created_at, "
        "updated_at) VALUES (:id, 1, 1, :signal, :dimension, :value, "
        f"{'CAST(:band AS jsonb)' if postgres else ':band'}, 1, 24, 3, true, true, :now, :now)"
    )
    alert = text(
        "INSERT INTO alerts (id, project_id, monitor_id, model_id, checkpoint_id, signal, "
        "dimension, value, day, last_day, status, observed, volume, sample_trace_ids, "
        "days_in_band, opened_at, annotations) VALUES (:id, 1, :monitor, 1, 1, :signal, 'route', "
        ":route, '2026-01-10', '2026-01-12', :status, 0.3, 400, '[]', 0, :now, '[]')"
    )
    # (id, monitor, signal, status): the two unresolved thumbs-down alerts of the baseline
    # monitor are resolved; the fixed-band monitor's is judged on, as the other signal's.
    alerts = [
        (1, 1, "thumbs_down_rate", "open"),
        (2, 1, "thumbs_down_rate", "acknowledged"),
        (3, 2, "refusal_rate", "open"),
        (4, 3, "thumbs_down_rate", "open"),
    ]
    statuses = text("SELECT id, status, resolution, annotations FROM alerts ORDER BY id")
    try:
        with engine.begin() as conn:
            for statement in SEED_0008[:3]:
                conn.execute(text(statement), {"now": now})
            conn.execute(
                text(
                    "INSERT INTO checkpoints (id, project_id, model_id, version, kind, status, "
                    "training, tags, spec_hash, created_at) "
                    "VALUES (3, 1, 1, 'v2', 'full', 'registered', '{}', '[]', 'c', :now)"
                ),
                {"now": now},
            )
            for monitor_id, signal, cohort, band in (
                (1, "thumbs_down_rate", (None, None), {"type": "baseline"}),
                (2, "refusal_rate", (None, None), {"type": "baseline"}),
                (3, "thumbs_down_rate", ("route", "/r4"), {"type": "fixed", "high": 0.3}),
            ):
                conn.execute(
                    monitor,
                    {
                        "id": monitor_id,
                        "signal": signal,
                        "dimension": cohort[0],
                        "value": cohort[1],
                        "band": json.dumps(band),
                        "now": now,
                    },
                )
            for alert_id, monitor_id, signal, status in alerts:
                conn.execute(
                    alert,
                    {
                        "id": alert_id,
                        "route": f"/r{alert_id}",
                        "monitor": monitor_id,
                        "signal": signal,
                        "status": status,
                        "now": now,
                    },
                )
            for project, checkpoint, trace, span, ts, feedback, shadow_of in events:
                conn.execute(
                    text(RATED_EVENT),
                    {
                        "project": project,
                        "checkpoint": checkpoint,
                        "trace": trace,
                        "span": span,
                        "ts": ts,
                        "feedback": feedback,
                        "shadow_of": shadow_of,
                    },
                )
            conn.execute(reference, {"now": now, "stats": json.dumps(stats)})
            conn.execute(daily, {"now": now})
        migrate.upgrade(empty_database_url, "0019")
        with engine.begin() as conn:
            assert [tuple(row) for row in conn.execute(carriers)] == placed
            kept = conn.execute(text("SELECT stats FROM drift_references")).scalar_one()
            assert as_json(kept) == {"refusal_rate|all|all": stats["refusal_rate|all|all"]}
            signals = conn.execute(text("SELECT signal FROM daily_signals")).scalars().all()
            assert signals == ["refusal_rate"]
            stored = [
                (row.id, row.status, row.resolution, [a["kind"] for a in as_json(row.annotations)])
                for row in conn.execute(statuses)
            ]
            assert stored == [
                (1, "resolved", "monitor_changed", ["note"]),
                (2, "resolved", "monitor_changed", ["note"]),
                (3, "open", None, []),
                (4, "open", None, []),
            ]
        migrate.downgrade(empty_database_url, "0018")
        with engine.begin() as conn:
            assert "carried_feedback" not in {
                c["name"] for c in inspect(conn).get_columns("events")
            }
            assert conn.execute(text("SELECT COUNT(*) FROM events")).scalar() == len(events)
        migrate.upgrade(empty_database_url)
        with engine.begin() as conn:
            assert [tuple(row) for row in conn.execute(carriers)] == placed
    finally:
        engine.dispose()


def test_0020_redacts_webhook_urls_already_in_the_audit_log_and_downgrades_as_a_no_op(
    empty_database_url: str,
) -> None:
    """Audit rows of webhook endpoints kept the whole URL, secret token included; 0020 keeps
    scheme and host only, in those rows alone, and its downgrade cannot bring the token back."""
    migrate.upgrade(empty_database_url, "0019")
    engine = make_engine(Settings(database_url=empty_database_url))
    postgres = engine.dialect.name == "postgresql"
    now = datetime.now(UTC)
    token = "T0000/B0000/XXXXtokenXXXX"
    stored = [
        ("webhook.created", "webhook", {"url": f"https://hooks.slack.com/{token}", "events": []}),
        ("webhook.updated", "webhook", {"url": f"http://u:p@[::1]:8080/h?k={token}"}),
        ("webhook.updated", "webhook", {"description": "pager"}),
        ("webhook.secret_rotated", "webhook", {"previous_secret_expires_at": "2026-05-02"}),
        ("webhook.deleted", "webhook", {"url": "https://events.pagerduty.com/[redacted]"}),
        ("webhook.deleted", "webhook", {"url": f"not a url {token}"}),
        ("dataset.created", "dataset", {"url": "https://example.com/kept/as/is"}),
    ]
    json_value = "CAST(:details AS jsonb)" if postgres else ":details"
    details = text("SELECT details FROM audit_log ORDER BY id")
    try:
        with engine.begin() as conn:
            conn.execute(text(SEED_0008[0]), {"now": now})
            for action, target_type, detail in stored:
                conn.execute(
                    text(
                        "INSERT INTO audit_log (project_id, actor, action, target_type, "
                        "target_id, details, created_at) VALUES (1, 'admin', :action, "
                        f":target_type, '1', {json_value}, :now)"
                    ),
                    {
                        "action": action,
                        "target_type": target_type,
                        "details": json.dumps(detail),
                        "now": now,
                    },
                )
        redacted = [
            {"url": "https://hooks.slack.com/[redacted]", "events": []},
            {"url": "http://[::1]/[redacted]"},
            {"description": "pager"},
            {"previous_secret_expires_at": "2026-05-02"},
            {"url": "https://events.pagerduty.com/[redacted]"},
            {"url": "[redacted]"},
            {"url": "https://example.com/kept/as/is"},
        ]
        migrate.upgrade(empty_database_url, "0020")
        with engine.begin() as conn:
            assert [as_json(d) for (d,) in conn.execute(details)] == redacted
        migrate.downgrade(empty_database_url, "0019")
        with engine.begin() as conn:
            kept = [as_json(d) for (d,) in conn.execute(details)]
            assert kept == redacted and token not in json.dumps(kept)
        migrate.upgrade(empty_database_url)
        with engine.begin() as conn:
            assert [as_json(d) for (d,) in conn.execute(details)] == redacted
    finally:
        engine.dispose()


def test_0022_records_the_alerts_open_on_each_replaced_champion_and_comes_back(
    empty_database_url: str,
) -> None:
    """Checkpoints 1 (v1), 3 (v2) and 4 (v3) of model 1 were champions in turn; an alert about
    v2 opened before v3 replaced it and was resolved after, another was resolved before, and
    one was opened only after. The backfill records the first alone on v3's entry (v2 was
    replaced under it); the first entry replaced nothing. Project 2's alert is its own."""
    migrate.upgrade(empty_database_url, "0021")
    engine = make_engine(Settings(database_url=empty_database_url))
    t0 = datetime(2026, 11, 1, 12, tzinfo=UTC)
    hours = [t0 + timedelta(hours=h) for h in range(10)]
    history = text(
        "SELECT id, previous_open_alert_ids FROM champion_history ORDER BY project_id, id"
    )
    try:
        with engine.begin() as conn:
            for statement in SEED_0008[:3]:
                conn.execute(text(statement), {"now": t0})
            conn.execute(
                text(
                    "INSERT INTO checkpoints (id, project_id, model_id, version, kind, status, "
                    "training, tags, spec_hash, created_at) VALUES "
                    "(3, 1, 1, 'v2', 'full', 'retired', '{}', '[]', 'c', :now), "
                    "(4, 1, 1, 'v3', 'full', 'champion', '{}', '[]', 'd', :now)"
                ),
                {"now": t0},
            )
            conn.execute(
                text(
                    "INSERT INTO champion_history (id, project_id, model_id, checkpoint_id, "
                    "previous_checkpoint_id, action, forced, actor, created_at) VALUES "
                    "(1, 1, 1, 1, NULL, 'promote', false, 'a', :h0), "
                    "(2, 1, 1, 3, 1, 'promote', false, 'a', :h1), "
                    "(3, 1, 1, 4, 3, 'promote', false, 'a', :h5), "
                    "(4, 2, 2, 2, NULL, 'promote', false, 'a', :h0)"
                ),
                {"h0": hours[0], "h1": hours[1], "h5": hours[5]},
            )
            conn.execute(
                text(
                    "INSERT INTO monitors (id, project_id, model_id, signal, band, min_volume, "
                    "cooldown_hours, resolve_after_days, enabled, is_default, updated_at, "
                    "created_at) VALUES (1, 1, 1, 'refusal_rate', '{}', 1, 0, 3, true, true, "
                    ":h0, :h0), (2, 2, 2, 'refusal_rate', '{}', 1, 0, 3, true, true, :h0, :h0)"
                ),
                {"h0": hours[0]},
            )
            alert = text(
                "INSERT INTO alerts (id, project_id, monitor_id, model_id, checkpoint_id, signal, "
                "dimension, value, day, last_day, status, observed, volume, sample_trace_ids, "
                "days_in_band, opened_at, resolved_at, annotations) VALUES (:id, :project, "
                ":project, :project, :checkpoint, 'refusal_rate', 'route', :route, '2026-11-01', "
                "'2026-11-01', :status, 0.2, 100, '[]', 0, :opened, :resolved, '[]')"
            )
            for id_, project, checkpoint, opened, resolved in (
                (1, 1, 3, hours[2], hours[7]),  # open at the change: recorded
                (2, 1, 3, hours[2], hours[4]),  # resolved before it
                (3, 1, 3, hours[6], None),  # opened after it
                (4, 1, 1, hours[0], None),  # about v1, whose replacement was at h1: recorded
                (5, 2, 2, hours[0], None),  # project 2's champion was never replaced
            ):
                conn.execute(
                    alert,
                    {
                        "id": id_,
                        "project": project,
                        "checkpoint": checkpoint,
                        "route": f"r{id_}",
                        "status": "resolved" if resolved else "open",
                        "opened": opened,
                        "resolved": resolved,
                    },
                )
        migrate.upgrade(empty_database_url, "0022")
        with engine.begin() as conn:
            rows = [(id_, as_json(ids)) for id_, ids in conn.execute(history)]
            assert rows == [(1, []), (2, [4]), (3, [1]), (4, [])]
        migrate.downgrade(empty_database_url, "0021")
        with engine.begin() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("champion_history")}
            assert "previous_open_alert_ids" not in columns
        migrate.upgrade(empty_database_url)
        with engine.begin() as conn:
            assert [as_json(ids) for _, ids in conn.execute(history)] == [[], [4], [1], []]
    finally:
        engine.dispose()
